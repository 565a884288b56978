//! natter's load benchmark (issue 7): `cargo bench --bench load`.
//!
//! It starts the release binary as a separate process on a temp data dir (so the server's memory and CPU are
//! measured alone, from `/proc`), or targets a running natter with `--url`, and drives it over real sockets with the
//! ActionCable protocol, as the widget and the dashboard do. Every figure sits next to its ceiling, measured in the same
//! run on the same machine:
//!
//! - the socket ceiling is a minimal fastwebsockets echo server on the same hyper stack, with no parsing and no
//!   storage; it runs as a second process (this same executable, started with `--echo-server`);
//! - the storage ceiling is raw redb: batches of messages of natter's size committed with `Durability::Immediate`;
//! - for persisted throughput, the two in one server: the echo server committing each frame to redb (group commit,
//!   fsynced) before it echoes it, with no parsing and nothing else (`--echo-server --echo-store FILE`).
//!
//! Scenarios: static figures (binary size, start-up, idle RSS, `widget.js` gzipped), idle capacity, visitor → admin
//! latency at fixed open-loop rates, persisted throughput with closed-loop senders, a reconnect storm after a
//! restart, and a burst of logins (the memory it takes and gives back). Each prints one Markdown table row with the command that reproduces it. docs/benchmark.md explains the
//! figures. Every loop here is bounded in count and in time, so the benchmark always ends by itself.
//!
//! The files: `options` (the command line and the run's size), `natter` (the server process), `echo` and
//! `echo_server` (the socket ceiling, as a child process and as the server it runs), `redb_ceiling` (the storage
//! ceiling), `client` (dialing and the frames sent), `fleet` (open-loop sockets and their probe), `closed_loop`
//! (senders that wait for each acknowledgement), `usage` (memory and CPU from `/proc`) and `report` (the table); one
//! file per scenario: `static_figures`, `idle`, `latency`, `throughput`, `storm`, `logins`.

mod client;
mod closed_loop;
mod echo;
mod echo_server;
mod fleet;
mod idle;
mod latency;
mod logins;
mod natter;
mod options;
mod redb_ceiling;
mod report;
mod static_figures;
mod storm;
mod throughput;
mod usage;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Parser;

use crate::client::Endpoint;
use crate::echo::EchoServer;
use crate::idle::idle_row;
use crate::latency::latency_rows;
use crate::logins::login_burst_row;
use crate::natter::{free_port, Natter, ADMIN_PASSWORD};
use crate::options::{Options, Scenario, Size};
use crate::report::Report;
use crate::static_figures::{static_rows, widget_gzipped};
use crate::storm::storm_row;
use crate::throughput::throughput_rows;

/// How long any single step may wait before the benchmark calls it a failure.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let options = Options::parse();
    let result = if options.echo_server {
        echo_server::run(options.echo_store.as_deref())
    } else if !options.bench && options.url.is_none() {
        println!("the load benchmark runs under `cargo bench --bench load`; nothing to do here");
        Ok(())
    } else {
        run_benchmark(options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_benchmark(options: Options) -> anyhow::Result<()> {
    // Thousands of sockets need thousands of descriptors; natter and the echo server inherit the raised limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => progress(&format!("open files limit: {limit}")),
        Err(error) => progress(&format!("could not raise the open files limit: {error}")),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(benchmark(options))
}

fn progress(line: &str) {
    eprintln!("[load] {line}");
}

async fn benchmark(options: Options) -> anyhow::Result<()> {
    let size = Size::new(&options);
    let wanted =
        |scenario: Scenario| options.scenario.is_empty() || options.scenario.contains(&scenario);
    let workspace = tempfile::Builder::new().prefix("natter-bench-").tempdir()?;
    let mut report = Report::new(&size, options.url.as_deref());

    let (mut natter, endpoint, password) = match &options.url {
        Some(url) => {
            let address = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_socket_addrs()
                .with_context(|| format!("--url {url}: give it as http://host:port"))?
                .next()
                .ok_or_else(|| anyhow!("--url {url} resolves to no address"))?;
            let endpoint = Endpoint::new(address, &options.origin, url.trim_end_matches('/'));
            (None, endpoint, options.password.clone())
        }
        None => {
            let binary = options
                .natter
                .clone()
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_natter")));
            let address = free_port()?;
            let (natter, startup) = Natter::start(&binary, workspace.path(), address).await?;
            let endpoint = Endpoint::new(address, &options.origin, &format!("http://{address}"));
            if wanted(Scenario::Static) {
                static_rows(&mut report, &size, &natter, &endpoint, &startup).await?;
            }
            (Some(natter), endpoint, Some(ADMIN_PASSWORD.to_string()))
        }
    };
    if natter.is_none() && wanted(Scenario::Static) {
        let widget = widget_gzipped(&endpoint).await?;
        report.row(&[
            "`widget.js` gzipped",
            &format!("{widget} B"),
            "",
            "",
            "",
            &size.command("--scenario static"),
        ]);
    }

    let needs_echo = [
        Scenario::Idle,
        Scenario::Latency,
        Scenario::Throughput,
        Scenario::Storm,
    ]
    .into_iter()
    .any(wanted);
    let echo = if needs_echo {
        Some(EchoServer::start(None)?)
    } else {
        None
    };
    let pid = natter.as_ref().map(Natter::pid);

    // First after the static figures, so the memory before the burst is natter's idle memory.
    if wanted(Scenario::Logins) {
        match pid {
            Some(pid) => login_burst_row(&mut report, &endpoint, pid).await?,
            None => progress("login burst skipped: it reads natter's memory, so it needs natter started by the benchmark"),
        }
    }

    if wanted(Scenario::Idle) {
        let echo = echo.as_ref().expect("started above");
        idle_row(&mut report, &size, &endpoint, echo, pid).await?;
    }
    if wanted(Scenario::Latency) {
        let echo = echo.as_ref().expect("started above");
        let password = password
            .as_deref()
            .ok_or_else(|| anyhow!("the latency scenario needs --password"))?;
        latency_rows(
            &mut report,
            &size,
            &endpoint,
            echo,
            password,
            pid,
            workspace.path(),
        )
        .await?;
    }
    if wanted(Scenario::Throughput) {
        let echo = echo.as_ref().expect("started above");
        throughput_rows(
            &mut report,
            &size,
            &endpoint,
            echo,
            password.as_deref(),
            pid,
            workspace.path(),
        )
        .await?;
    }
    if wanted(Scenario::Storm) {
        let echo = echo.as_ref().expect("started above");
        match natter.as_mut() {
            Some(natter) => storm_row(&mut report, &size, &endpoint, echo, natter).await?,
            None => progress("reconnect storm skipped: it restarts natter, so it needs natter started by the benchmark"),
        }
    }
    if let Some(natter) = natter.as_mut() {
        natter.stop().await;
    }
    report.finish(options.out.as_deref())
}
