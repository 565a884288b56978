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
//! latency at fixed open-loop rates, persisted throughput with closed-loop senders, and a reconnect storm after a
//! restart. Each prints one Markdown table row with the command that reproduces it. docs/benchmark.md explains the
//! figures. Every loop here is bounded in count and in time, so the benchmark always ends by itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Barrier, Semaphore};
use tokio::task::JoinSet;

const VISITOR_CHANNEL: &str = r#"{"channel":"VisitorChannel"}"#;
const ADMIN_CHANNEL: &str = r#"{"channel":"AdminChannel"}"#;
const ADMIN_PASSWORD: &str = "natter load benchmark password";

/// Message text after the sequence number: with it a stored message is about 250 bytes of JSON, like a short chat
/// line with its id, conversation id, client id and timestamp.
const PADDING: &str = "hello, is anyone there? I have a question about the post on static sites";

/// How many 127.0.0.x source addresses the client spreads its sockets over: one address has ~28,000 ephemeral ports,
/// and the benchmark may hold more sockets than that across scenarios (TIME_WAIT included).
const SOURCE_ADDRESSES: usize = 16;

/// Handshakes in flight at once while a fleet connects: below the listener's backlog (1,024), so the figures measure
/// natter and not SYN retransmits. The reconnect storm deliberately has no such limit.
const DIAL_CONCURRENCY: usize = 256;

/// How long any single step may wait before the benchmark calls it a failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux architecture natter targets).
const TICKS_PER_SECOND: f64 = 100.0;

type Socket = WebSocket<TokioIo<Upgraded>>;

/// natter's load benchmark; see docs/benchmark.md.
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Options {
    /// The bigger size: more sockets and longer windows (also NATTER_BENCH_SIZE=large).
    #[arg(long)]
    large: bool,
    /// Run only these scenarios (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Benchmark a natter already running at this http:// URL (its public URL) instead of starting one. Its limits
    /// must allow the load (see docs/benchmark.md); no RSS, CPU or restart figures then.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The admin password of the natter at --url.
    #[arg(long, env = "NATTER_BENCH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The visitor Origin header; it must be in widget.allowed_origins of the natter at --url.
    #[arg(long, default_value = "http://blog.test")]
    origin: String,
    /// The natter binary to start (default: target/release/natter, which cargo builds with this benchmark).
    #[arg(long, value_name = "PATH")]
    natter: Option<PathBuf>,
    /// Also write the report (Markdown) to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Idle scenario: sockets to hold.
    #[arg(long)]
    sockets: Option<usize>,
    /// Latency scenario: connected visitors.
    #[arg(long)]
    visitors: Option<usize>,
    /// Latency scenario: open-loop message rates per second (comma-separated).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// Throughput scenario: concurrent senders (comma-separated).
    #[arg(long, value_delimiter = ',')]
    senders: Vec<usize>,
    /// Reconnect storm: visitors that reconnect at once.
    #[arg(long)]
    storm: Option<usize>,
    /// Passed by `cargo bench`. Without it (`cargo test --all-targets` runs this binary too) nothing is measured.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run as the echo server (the socket ceiling) and print its address.
    #[arg(long, hide = true)]
    echo_server: bool,
    /// Internal: with --echo-server, commit every frame to a redb file here (group commit, fsynced) before echoing it.
    #[arg(long, hide = true, value_name = "FILE")]
    echo_store: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Static,
    Idle,
    Latency,
    Throughput,
    Storm,
}

/// How big a run is. The default fits in a few minutes on a 2-core machine; `--large` takes longer and holds more.
struct Size {
    large: bool,
    idle_sockets: usize,
    latency_visitors: usize,
    rates: Vec<u64>,
    senders: Vec<usize>,
    storm_visitors: usize,
    throughput_window: Duration,
    /// Throughput: natter, echo and redb runs, interleaved, per sender count (see `throughput_rows`).
    throughput_rounds: usize,
    redb_window: Duration,
}

impl Size {
    fn new(options: &Options) -> Size {
        let large =
            options.large || std::env::var("NATTER_BENCH_SIZE").is_ok_and(|size| size == "large");
        let or = |list: &[u64], default: &[u64]| {
            if list.is_empty() {
                default.to_vec()
            } else {
                list.to_vec()
            }
        };
        Size {
            large,
            idle_sockets: options
                .sockets
                .unwrap_or(if large { 18_000 } else { 10_000 }),
            latency_visitors: options.visitors.unwrap_or(1_000),
            rates: or(&options.rates, &[100, 1_000, 5_000]),
            senders: if options.senders.is_empty() {
                vec![1, 10, 100, 1_000]
            } else {
                options.senders.clone()
            },
            storm_visitors: options.storm.unwrap_or(if large { 15_000 } else { 5_000 }),
            throughput_window: Duration::from_secs(if large { 15 } else { 4 }),
            throughput_rounds: if large { 5 } else { 3 },
            redb_window: Duration::from_secs(if large { 5 } else { 2 }),
        }
    }

    /// A latency window long enough for a meaningful p99.9: at least 1,000 samples (10,000 when large).
    fn latency_window(&self, rate: u64) -> Duration {
        let (seconds, samples) = if self.large { (30, 10_000) } else { (5, 1_000) };
        Duration::from_secs(seconds.max(samples / rate.max(1)))
    }

    /// The command that reproduces one row.
    fn command(&self, arguments: &str) -> String {
        let large = if self.large { "--large " } else { "" };
        format!("`cargo bench --bench load -- {large}{arguments}`")
    }
}

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

// ---- the run ----

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

// ---- the report ----

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn new(size: &Size, url: Option<&str>) -> Report {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let load = load_average();
        let target = url.map_or_else(
            || "natter started by the benchmark".to_string(),
            |url| format!("natter at {url}"),
        );
        let lines = vec![
            format!(
                "natter load benchmark, {} size; {target}; {cores} cores ({cpu}), Linux {}; client and server share \
                 the machine; load average at the start {load} (other work on the machine shows up in every figure).",
                if size.large { "large" } else { "default" },
                kernel.trim()
            ),
            String::new(),
            "| Scenario | natter | Ceiling | × ceiling | Target | Reproduce |".into(),
            "| --- | --- | --- | --- | --- | --- |".into(),
        ];
        for line in &lines {
            println!("{line}");
        }
        Report { lines }
    }

    fn row(&mut self, cells: &[&str; 6]) {
        let line = format!("| {} |", cells.join(" | "));
        println!("{line}");
        self.lines.push(line);
    }

    fn finish(mut self, out: Option<&Path>) -> anyhow::Result<()> {
        let end = format!("\nLoad average at the end: {}.", load_average());
        println!("{end}");
        self.lines.push(end);
        let text = self.lines.join("\n") + "\n";
        progress("done; the table:");
        eprintln!("{text}");
        if let Some(out) = out {
            std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(())
    }
}

/// The 1-minute load average: how busy the machine was besides the benchmark.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `natter / ceiling` as "how many times the ceiling's cost": 1.0x is as good as the layer beneath allows.
fn times(cost: f64, ceiling: f64) -> String {
    if ceiling > 0.0 && cost.is_finite() {
        format!("{:.1}x", cost / ceiling)
    } else {
        "–".into()
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn milliseconds(microseconds: u64) -> String {
    let ms = microseconds as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

fn megabytes(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1_000_000.0)
}

fn thousands(value: f64) -> String {
    let whole = value.round() as u64;
    let text = whole.to_string();
    let mut grouped = String::new();
    for (index, digit) in text.chars().enumerate() {
        if index > 0 && (text.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

// ---- the natter process ----

/// A natter started by the benchmark, with a config that lifts the limits a real blog needs and a load test breaks.
struct Natter {
    child: Child,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    address: SocketAddr,
}

/// How long start-up took, from spawning the process.
struct Startup {
    /// Until the port accepts a TCP connection (the listener is bound; the store may still be opening).
    tcp: Duration,
    /// Until `/healthz` answers 200 (natter serves).
    healthy: Duration,
}

impl Natter {
    async fn start(
        binary: &Path,
        workspace: &Path,
        address: SocketAddr,
    ) -> anyhow::Result<(Natter, Startup)> {
        if !binary.exists() {
            bail!(
                "{} does not exist: run `cargo build --release` first, or pass --natter PATH",
                binary.display()
            );
        }
        let data_dir = workspace.join("natter-data");
        let config = workspace.join("natter.toml");
        std::fs::create_dir_all(&data_dir)?;
        // Generous limits: one machine plays thousands of visitors from a few addresses, at rates no single visitor
        // reaches. Push is off: there is no push service to talk to.
        let text = format!(
            "[server]\nlisten = \"{address}\"\ndata_dir = {data_dir:?}\nlog = \"warn\"\n\n\
             [widget]\nallowed_origins = [\"http://blog.test\"]\n\n\
             [limits]\nmax_connections = 1000000\nmax_connections_per_ip = 1000000\n\
             messages_per_minute = 1000000000\nconversations_per_hour = 1000000000\n\n\
             [push]\nwhen = \"never\"\n",
            data_dir = data_dir.display().to_string(),
        );
        std::fs::write(&config, text)?;
        let mut natter = Natter {
            child: Natter::spawn(binary, &config, &workspace.join("natter.log"))?,
            binary: binary.to_path_buf(),
            config,
            log: workspace.join("natter.log"),
            address,
        };
        let startup = natter.wait_until_serving(Instant::now()).await?;
        Ok((natter, startup))
    }

    fn spawn(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .env("NATTER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // The operator's own NATTER_* settings must not leak into the benchmark's server.
        for (name, _) in std::env::vars()
            .filter(|(name, _)| name.starts_with("NATTER_") && name != "NATTER_ADMIN_PASSWORD")
        {
            command.env_remove(name);
        }
        command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_until_serving(&mut self, spawned: Instant) -> anyhow::Result<Startup> {
        let deadline = spawned + PATIENCE;
        let tcp = loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "natter exited at start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect(self.address).await.is_ok() {
                break spawned.elapsed();
            }
            if Instant::now() > deadline {
                bail!(
                    "natter did not open {} within {PATIENCE:?}; its log:\n{}",
                    self.address,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let healthy = loop {
            if let Ok(answer) = http(self.address, "GET", "/healthz", &[], None).await {
                if answer.status == 200 {
                    break spawned.elapsed();
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "natter did not answer /healthz within {PATIENCE:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Ok(Startup { tcp, healthy })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait for natter to drain and exit; answers how long that took.
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if self.child.try_wait().ok().flatten().is_some() {
            return Duration::ZERO;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        while started.elapsed() < PATIENCE {
            if self.child.try_wait().ok().flatten().is_some() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        progress("natter did not stop within 30 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        started.elapsed()
    }

    /// Starts natter again on the same address and data dir. Answers the spawn instant.
    fn respawn(&mut self) -> anyhow::Result<Instant> {
        let spawned = Instant::now();
        self.child = Natter::spawn(&self.binary, &self.config, &self.log)?;
        Ok(spawned)
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Measures a process's CPU use over a stretch of time, as a percentage of one core.
struct CpuMeter {
    pid: Option<u32>,
    ticks: Option<u64>,
    started: Instant,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            ticks: pid.and_then(cpu_ticks),
            started: Instant::now(),
        }
    }

    fn percent(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid?)?;
        let seconds = (now.checked_sub(self.ticks?)?) as f64 / TICKS_PER_SECOND;
        Some(100.0 * seconds / self.started.elapsed().as_secs_f64())
    }
}

// ---- the echo server: the socket ceiling ----

/// The echo server as a child process, so its memory is measured alone, like natter's.
struct EchoServer {
    child: Child,
    address: SocketAddr,
}

impl EchoServer {
    /// `store`: commit every frame to a redb file there before echoing it.
    fn start(store: Option<&Path>) -> anyhow::Result<EchoServer> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--echo-server");
        if let Some(store) = store {
            command.arg("--echo-store").arg(store);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the echo server")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("echo listening on ")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| anyhow!("the echo server said {line:?}"))?;
        Ok(EchoServer { child, address })
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.address, "", "")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `senders` closed-loop senders through this server for `window`.
    async fn closed_loop(&self, senders: usize, window: Duration) -> anyhow::Result<ThroughputRun> {
        closed_loop(&self.endpoint(), true, senders, window, Some(self.pid())).await
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod echo_server {
    //! A WebSocket echo server on the same stack as natter (tokio, hyper's HTTP/1.1 upgrade, fastwebsockets), with no
    //! parsing, no state and no storage: what a socket costs before natter does anything with it. With a store, it
    //! also commits each frame to redb before echoing it, in group commits like natter's writer: what a socket and a
    //! durable write cost together, with nothing else.

    use super::*;
    use tokio::sync::oneshot;

    const FRAMES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("frames");

    /// A frame to commit, and who waits for it.
    type Pending = (Vec<u8>, oneshot::Sender<()>);

    pub fn run(store: Option<&Path>) -> anyhow::Result<()> {
        let committer = match store {
            Some(path) => {
                let database = redb::Database::create(path)?;
                let (queue, pending) = mpsc::channel::<Pending>(4096);
                std::thread::spawn(move || {
                    if let Err(error) = commit_frames(&database, pending) {
                        eprintln!("echo server: {error:#}");
                        std::process::exit(1);
                    }
                });
                Some(queue)
            }
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("echo listening on {}", listener.local_addr()?);
            // The parent holds our stdin; when it goes away (even killed), so do we.
            std::thread::spawn(|| {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                std::process::exit(0);
            });
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let committer = committer.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                            let committer = committer.clone();
                            async move {
                                let (response, upgrade) =
                                    fastwebsockets::upgrade::upgrade(&mut request)?;
                                tokio::spawn(async move {
                                    if let Ok(socket) = upgrade.await {
                                        let _ = echo(socket, committer).await;
                                    }
                                });
                                Ok::<_, WebSocketError>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        })
    }

    async fn echo(
        mut socket: Socket,
        committer: Option<mpsc::Sender<Pending>>,
    ) -> Result<(), WebSocketError> {
        loop {
            let frame = socket.read_frame().await?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    if let Some(committer) = &committer {
                        let (done, committed) = oneshot::channel();
                        if committer
                            .send((frame.payload.to_vec(), done))
                            .await
                            .is_err()
                            || committed.await.is_err()
                        {
                            return Ok(());
                        }
                    }
                    socket.write_frame(frame).await?
                }
                OpCode::Close => return Ok(()),
                _ => {}
            }
        }
    }

    /// Takes a frame, then every other frame already waiting, inserts them all in one transaction, commits it with
    /// an fsync (`Durability::Immediate`), and only then lets their sockets echo them.
    fn commit_frames(
        database: &redb::Database,
        mut pending: mpsc::Receiver<Pending>,
    ) -> anyhow::Result<()> {
        let mut batch = Vec::new();
        let mut next = 0u64;
        while let Some(first) = pending.blocking_recv() {
            batch.push(first);
            while let Ok(more) = pending.try_recv() {
                batch.push(more);
            }
            let transaction = database.begin_write()?;
            {
                let mut frames = transaction.open_table(FRAMES)?;
                for (payload, _) in &batch {
                    frames.insert(next, payload.as_slice())?;
                    next += 1;
                }
            }
            transaction.commit()?;
            for (_, done) in batch.drain(..) {
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

// ---- HTTP and WebSocket clients ----

struct HttpAnswer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<HttpAnswer> {
    let exchange = async {
        let stream = TcpStream::connect(address).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", address.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(HttpAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer in time"))?
}

/// natter's Prometheus counters, by metric name (labels included).
async fn metrics(address: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let answer = http(address, "GET", "/metrics", &[], None).await?;
    if answer.status != 200 {
        bail!("/metrics answered {}", answer.status);
    }
    Ok(String::from_utf8_lossy(&answer.body)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect())
}

async fn login(endpoint: &Endpoint, password: &str) -> anyhow::Result<String> {
    let body = json!({ "username": "admin", "password": password })
        .to_string()
        .into_bytes();
    let headers = [
        ("origin", endpoint.public_origin.as_str()),
        ("content-type", "application/json"),
    ];
    let answer = http(
        endpoint.address,
        "POST",
        "/auth/login",
        &headers,
        Some(body),
    )
    .await?;
    if answer.status != 200 {
        bail!(
            "admin login answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let cookie = answer
        .headers
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| anyhow!("login set no cookie"))?;
    Ok(cookie.split(';').next().unwrap_or_default().to_string())
}

/// Where sockets go, and with which origins.
#[derive(Clone)]
struct Endpoint {
    address: SocketAddr,
    visitor_origin: String,
    public_origin: String,
    /// Bind each client socket to one of several 127.0.0.x addresses (only when the server is on loopback).
    spread: bool,
}

impl Endpoint {
    fn new(address: SocketAddr, visitor_origin: &str, public_origin: &str) -> Endpoint {
        let spread = matches!(address.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Endpoint {
            address,
            visitor_origin: visitor_origin.into(),
            public_origin: public_origin.into(),
            spread,
        }
    }
}

/// Who a socket is.
#[derive(Clone)]
enum Peer {
    /// A visitor with this token: connects, is welcomed and subscribes to VisitorChannel.
    Visitor(String),
    /// The owner with this session cookie: subscribes to AdminChannel.
    Admin(String),
    /// A plain WebSocket to the echo server.
    Echo,
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

async fn connect_from(endpoint: &Endpoint, index: usize) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if endpoint.spread {
        let last = 2 + (index % SOURCE_ADDRESSES) as u8;
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))?;
    }
    let stream = socket.connect(endpoint.address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a socket; for natter, also waits for `welcome` and subscribes.
async fn dial(endpoint: &Endpoint, index: usize, peer: &Peer) -> anyhow::Result<Socket> {
    let stream = connect_from(endpoint, index).await?;
    let path = match peer {
        Peer::Visitor(token) => format!("/cable?token={token}"),
        Peer::Admin(_) | Peer::Echo => "/cable".to_string(),
    };
    let mut request = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", endpoint.address.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13");
    match peer {
        Peer::Visitor(_) => {
            request = request
                .header("sec-websocket-protocol", "actioncable-v1-json")
                .header("origin", &endpoint.visitor_origin);
        }
        Peer::Admin(cookie) => {
            request = request
                .header("sec-websocket-protocol", "actioncable-v1-json")
                .header("origin", &endpoint.public_origin)
                .header("cookie", cookie);
        }
        Peer::Echo => {}
    }
    let (mut socket, _) = fastwebsockets::handshake::client(
        &SpawnExecutor,
        request.body(Empty::<Bytes>::new())?,
        stream,
    )
    .await?;
    socket.set_max_message_size(16 << 20);
    let identifier = match peer {
        Peer::Visitor(_) => VISITOR_CHANNEL,
        Peer::Admin(_) => ADMIN_CHANNEL,
        Peer::Echo => return Ok(socket),
    };
    let welcome = next_text(&mut socket).await?;
    if !contains(&welcome, br#""type":"welcome""#) {
        bail!(
            "expected welcome, got {}",
            String::from_utf8_lossy(&welcome)
        );
    }
    send(
        &mut socket,
        json!({ "command": "subscribe", "identifier": identifier }).to_string(),
    )
    .await?;
    let answer = next_text(&mut socket).await?;
    if !contains(&answer, b"confirm_subscription") {
        bail!(
            "expected confirm_subscription, got {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(socket)
}

async fn send(socket: &mut Socket, text: String) -> anyhow::Result<()> {
    socket
        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
        .await?;
    Ok(())
}

/// The next text frame that is not an ActionCable ping.
async fn next_text(socket: &mut Socket) -> anyhow::Result<Vec<u8>> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.read_frame())
            .await
            .map_err(|_| anyhow!("no frame within {PATIENCE:?}"))??;
        match frame.opcode {
            OpCode::Text | OpCode::Binary if !is_ping(&frame.payload) => {
                return Ok(frame.payload.to_vec())
            }
            OpCode::Close => bail!("the server closed the socket"),
            _ => {}
        }
    }
}

fn is_ping(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"type":"ping""#)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A `speak` command, as the widget sends it.
fn speak(content: &str) -> String {
    // A time-ordered client id, as the widget makes them.
    let data = json!({ "action": "speak", "content": content, "client_id": uuid::Uuid::now_v7() })
        .to_string();
    json!({ "command": "message", "identifier": VISITOR_CHANNEL, "data": data }).to_string()
}

fn sync_command() -> String {
    json!({ "command": "message", "identifier": VISITOR_CHANNEL, "data": json!({ "action": "sync" }).to_string() }).to_string()
}

const MARKER: &[u8] = b"bench ";

fn numbered(sequence: usize) -> String {
    format!("bench {sequence:010} {PADDING}")
}

/// The sequence number of a `numbered` message inside a frame.
fn sequence_in(payload: &[u8]) -> Option<usize> {
    let at = payload
        .windows(MARKER.len())
        .position(|window| window == MARKER)?
        + MARKER.len();
    std::str::from_utf8(payload.get(at..at + 10)?)
        .ok()?
        .parse()
        .ok()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Open-loop latency bookkeeping: when each numbered message was due to be sent, and a histogram of how long after
/// that it arrived (so a stalled sender counts against the server, not for it).
struct Probe {
    origin: Instant,
    due: Vec<AtomicU64>,
    /// Only frames containing this count (natter's admin sees a conversation's first message twice: in `message`
    /// and in the new conversation's summary).
    require: &'static [u8],
    histogram: Mutex<Histogram<u64>>,
    received: AtomicU64,
}

impl Probe {
    fn new(capacity: usize, require: &'static [u8]) -> Probe {
        Probe {
            origin: Instant::now(),
            due: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            require,
            histogram: Mutex::new(histogram()),
            received: AtomicU64::new(0),
        }
    }

    fn record(&self, payload: &[u8]) {
        if !contains(payload, self.require) {
            return;
        }
        let Some(sequence) = sequence_in(payload) else {
            return;
        };
        let Some(due) = self
            .due
            .get(sequence)
            .map(|due| due.load(Ordering::Relaxed))
        else {
            return;
        };
        if due == 0 {
            return;
        }
        let now = self.origin.elapsed().as_nanos() as u64;
        let microseconds = now.saturating_sub(due) / 1000;
        self.histogram
            .lock()
            .expect("not poisoned")
            .saturating_record(microseconds.max(1));
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Many sockets, each split into a reader task (drains frames, feeds the probe) and a writer task (sends what it is
/// given), so one sender can drive all of them open-loop.
struct Fleet {
    queues: Vec<mpsc::Sender<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    /// Members that have seen a frame containing `first` (warm-up).
    answered: Arc<AtomicUsize>,
    /// Members whose socket closed (for natter's admin: kicked as a slow consumer).
    closed: Arc<AtomicUsize>,
}

impl Fleet {
    async fn open(
        endpoint: &Endpoint,
        peers: Vec<Peer>,
        probe: Option<Arc<Probe>>,
        first: &'static [u8],
    ) -> anyhow::Result<Fleet> {
        let sockets = dial_all(endpoint, &peers).await?;
        let answered = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut fleet = Fleet {
            queues: Vec::new(),
            readers: Vec::new(),
            writers: Vec::new(),
            answered: answered.clone(),
            closed: closed.clone(),
        };
        for socket in sockets {
            let (mut reader, mut writer) = socket.split(tokio::io::split);
            let (queue, mut outbox) = mpsc::channel::<String>(1024);
            fleet.writers.push(tokio::spawn(async move {
                while let Some(text) = outbox.recv().await {
                    if writer
                        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = writer.write_frame(Frame::close(1000, b"")).await;
            }));
            let (probe, answered, closed) = (probe.clone(), answered.clone(), closed.clone());
            fleet.readers.push(tokio::spawn(async move {
                let mut seen = false;
                let mut ignore = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
                while let Ok(frame) = reader.read_frame(&mut ignore).await {
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary => {
                            if let Some(probe) = &probe {
                                probe.record(&frame.payload);
                            }
                            if !seen && contains(&frame.payload, first) && !is_ping(&frame.payload)
                            {
                                seen = true;
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        OpCode::Close => break,
                        _ => {}
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            }));
            fleet.queues.push(queue);
        }
        Ok(fleet)
    }

    fn len(&self) -> usize {
        self.queues.len()
    }

    /// Queues a frame for member `index`; false when its queue is full (the server is not taking frames).
    fn send(&self, index: usize, text: String) -> bool {
        self.queues[index % self.queues.len()]
            .try_send(text)
            .is_ok()
    }

    async fn wait_answered(&self, count: usize, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE * 2;
        while self.answered.load(Ordering::Relaxed) < count {
            if Instant::now() > deadline {
                bail!(
                    "{what}: {} of {count} answered within {:?}",
                    self.answered.load(Ordering::Relaxed),
                    PATIENCE * 2
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn close(self) {
        drop(self.queues);
        for writer in self.writers {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// Dials every peer, `DIAL_CONCURRENCY` at a time; fails if any socket does not open.
async fn dial_all(endpoint: &Endpoint, peers: &[Peer]) -> anyhow::Result<Vec<Socket>> {
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut dials = JoinSet::new();
    for (index, peer) in peers.iter().enumerate() {
        let (endpoint, peer, permits) = (endpoint.clone(), peer.clone(), permits.clone());
        dials.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let socket = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer))
                .await
                .map_err(|_| anyhow!("handshake timed out"))?;
            Ok::<_, anyhow::Error>((index, socket?))
        });
    }
    let mut sockets: Vec<Option<Socket>> = (0..peers.len()).map(|_| None).collect();
    while let Some(joined) = dials.join_next().await {
        let (index, socket) = joined?.context("opening a socket")?;
        sockets[index] = Some(socket);
    }
    Ok(sockets
        .into_iter()
        .map(|socket| socket.expect("every dial answered"))
        .collect())
}

fn visitors(count: usize) -> Vec<Peer> {
    (0..count)
        .map(|_| Peer::Visitor(uuid::Uuid::new_v4().to_string()))
        .collect()
}

async fn wait_for_no_sockets(endpoint: &Endpoint) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match metrics(endpoint.address).await {
            Ok(figures)
                if figures
                    .get("natter_connections{kind=\"visitor\"}")
                    .copied()
                    .unwrap_or(0.0)
                    == 0.0 =>
            {
                return
            }
            Err(_) => return,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---- static figures ----

async fn static_rows(
    report: &mut Report,
    size: &Size,
    natter: &Natter,
    endpoint: &Endpoint,
    startup: &Startup,
) -> anyhow::Result<()> {
    let binary = std::fs::metadata(&natter.binary)?.len();
    report.row(&[
        "Binary size",
        &format!("{:.1} MB", binary as f64 / 1_000_000.0),
        "",
        "",
        "",
        "`ls -l target/release/natter`",
    ]);
    report.row(&[
        "Start-up (spawn → /healthz 200)",
        &format!(
            "{:.0} ms (port open after {:.0} ms)",
            startup.healthy.as_secs_f64() * 1000.0,
            startup.tcp.as_secs_f64() * 1000.0
        ),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(natter.pid()).unwrap_or(0);
    report.row(&[
        "Idle RSS (no sockets)",
        &megabytes(rss),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    let widget = widget_gzipped(endpoint).await?;
    report.row(&[
        "`widget.js` gzipped",
        &format!("{} B", thousands(widget as f64)),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    Ok(())
}

/// The bytes a browser downloads for the widget loader: natter's own gzip if it sends one, else `gzip -9` of the body.
async fn widget_gzipped(endpoint: &Endpoint) -> anyhow::Result<usize> {
    let answer = http(
        endpoint.address,
        "GET",
        "/widget.js",
        &[("accept-encoding", "gzip")],
        None,
    )
    .await?;
    if answer.status != 200 {
        bail!("/widget.js answered {}", answer.status);
    }
    let gzipped = answer
        .headers
        .get("content-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if gzipped {
        return Ok(answer.body.len());
    }
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&answer.body)?;
    Ok(encoder.finish()?.len())
}

// ---- 1. idle capacity ----

struct IdleRun {
    sockets: usize,
    connected: usize,
    answered: usize,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    cpu: Option<f64>,
}

impl IdleRun {
    fn per_socket_kib(&self) -> Option<f64> {
        Some((self.rss_after? as f64 - self.rss_before? as f64) / self.connected.max(1) as f64)
    }
}

/// Opens `count` sockets, subscribes them (natter), waits, measures the server's RSS and CPU, then checks that every
/// socket still answers a WebSocket ping.
async fn idle_run(
    endpoint: &Endpoint,
    echo: bool,
    count: usize,
    pid: Option<u32>,
) -> anyhow::Result<IdleRun> {
    let rss_before = pid.and_then(rss_kib);
    let (phase, phases) = watch::channel(0u8);
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let checked = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..count {
        let peer = if echo {
            Peer::Echo
        } else {
            Peer::Visitor(uuid::Uuid::new_v4().to_string())
        };
        let (endpoint, permits, mut phases) = (endpoint.clone(), permits.clone(), phases.clone());
        let (connected, failed, answered, checked) = (
            connected.clone(),
            failed.clone(),
            answered.clone(),
            checked.clone(),
        );
        tasks.spawn(async move {
            let permit = permits.acquire_owned().await.expect("never closed");
            let dialed = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer)).await;
            drop(permit);
            let mut socket = match dialed {
                Ok(Ok(socket)) => socket,
                Ok(Err(error)) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        progress(&format!("a socket did not open: {error:#}"));
                    }
                    return;
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let _ = phases.wait_for(|phase| *phase >= 1).await;
            let pinged = tokio::time::timeout(PATIENCE, async {
                socket
                    .write_frame(Frame::new(
                        true,
                        OpCode::Ping,
                        None,
                        Payload::Borrowed(b"still there?"),
                    ))
                    .await?;
                loop {
                    if socket.read_frame().await?.opcode == OpCode::Pong {
                        return Ok::<(), WebSocketError>(());
                    }
                }
            })
            .await;
            if matches!(pinged, Ok(Ok(()))) {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            checked.fetch_add(1, Ordering::Relaxed);
            let _ = phases.wait_for(|phase| *phase >= 2).await;
            let _ = socket.write_frame(Frame::close(1000, b"")).await;
        });
    }
    let deadline = started + PATIENCE + Duration::from_millis(count as u64 * 5);
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < count
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected_count = connected.load(Ordering::Relaxed);
    progress(&format!(
        "{connected_count} of {count} sockets open after {:.1} s; settling",
        started.elapsed().as_secs_f64()
    ));
    // Let the server finish what connecting started (subscriptions, first pings), then measure a quiet stretch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = CpuMeter::start(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = pid.and_then(rss_kib);
    let cpu = cpu.percent();
    let _ = phase.send(1);
    let deadline = Instant::now() + PATIENCE + Duration::from_secs(5);
    while checked.load(Ordering::Relaxed) < connected_count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = phase.send(2);
    while tasks.join_next().await.is_some() {}
    Ok(IdleRun {
        sockets: count,
        connected: connected_count,
        answered: answered.load(Ordering::Relaxed),
        rss_before,
        rss_after,
        cpu,
    })
}

async fn idle_row(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let count = size.idle_sockets;
    progress(&format!("idle: {count} visitor sockets to natter"));
    let natter = idle_run(endpoint, false, count, pid).await?;
    wait_for_no_sockets(endpoint).await;
    progress(&format!("idle: {count} sockets to the echo server"));
    let ceiling = idle_run(&echo.endpoint(), true, count, Some(echo.pid())).await?;
    let natter_per = natter.per_socket_kib();
    let ceiling_per = ceiling.per_socket_kib();
    let natter_cell = format!(
        "{}/{} subscribed, {}/{} answered a ping; RSS {} ({}/socket){}",
        natter.connected,
        natter.sockets,
        natter.answered,
        natter.connected,
        natter.rss_after.map_or_else(|| "–".into(), megabytes),
        natter_per.map_or_else(|| "–".into(), |kib| format!("{:.1} KB", kib * 1.024)),
        natter
            .cpu
            .map_or_else(String::new, |cpu| format!("; {cpu:.1}% CPU idle (pings)")),
    );
    let ceiling_cell = format!(
        "echo: RSS {} ({}/socket), {}/{} answered",
        ceiling.rss_after.map_or_else(|| "–".into(), megabytes),
        ceiling_per.map_or_else(|| "–".into(), |kib| format!("{:.1} KB", kib * 1.024)),
        ceiling.answered,
        ceiling.connected,
    );
    let ratio = match (natter_per, ceiling_per) {
        (Some(natter), Some(ceiling)) => format!("{} per socket", times(natter, ceiling)),
        _ => "–".into(),
    };
    // The target is for 10,000 sockets; other sizes are projected from the per-socket figure.
    let projected = match (natter.rss_before, natter_per) {
        (Some(before), Some(per)) => Some(before as f64 + per * 10_000.0),
        _ => None,
    };
    let target = match projected {
        Some(kib) => format!(
            "10k sockets < 100 MB: {} ({})",
            verdict(kib * 1024.0 < 100e6 && natter.answered == natter.sockets),
            if count == 10_000 {
                "measured".to_string()
            } else {
                format!("projected {}", megabytes(kib as u64))
            }
        ),
        None => String::new(),
    };
    report.row(&[
        &format!("Idle: {} visitor sockets", thousands(count as f64)),
        &natter_cell,
        &ceiling_cell,
        &ratio,
        &target,
        &size.command(&format!("--scenario idle --sockets {count}")),
    ]);
    Ok(())
}

// ---- 2. visitor → admin latency ----

struct LatencyRun {
    sent: u64,
    received: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    cpu: Option<f64>,
}

/// Sends numbered messages round-robin over the fleet at `rate` per second for `window`, open loop (each at its due
/// time, whether or not earlier ones were answered), and waits for the probe to see them.
async fn open_loop(
    fleet: &Fleet,
    probe: &Probe,
    first_sequence: usize,
    rate: u64,
    window: Duration,
    pid: Option<u32>,
) -> LatencyRun {
    let total = (rate as f64 * window.as_secs_f64()) as usize;
    let received_before = probe.received.load(Ordering::Relaxed);
    let cpu = CpuMeter::start(pid);
    let start = Instant::now() + Duration::from_millis(20);
    let interval = 1.0 / rate as f64;
    let mut refused = 0;
    for index in 0..total {
        let due = start + Duration::from_secs_f64(index as f64 * interval);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let sequence = first_sequence + index;
        probe.due[sequence].store(
            due.duration_since(probe.origin).as_nanos() as u64,
            Ordering::Relaxed,
        );
        if !fleet.send(index, speak(&numbered(sequence))) {
            refused += 1;
        }
    }
    let cpu = cpu.percent();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.received.load(Ordering::Relaxed) - received_before < (total - refused) as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let histogram = std::mem::replace(
        &mut *probe.histogram.lock().expect("not poisoned"),
        histogram(),
    );
    LatencyRun {
        sent: total as u64,
        received: probe.received.load(Ordering::Relaxed) - received_before,
        p50: histogram.value_at_quantile(0.50),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
        cpu,
    }
}

async fn latency_rows(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    password: &str,
    pid: Option<u32>,
    workspace: &Path,
) -> anyhow::Result<()> {
    let count = size.latency_visitors;
    let capacity: usize = size
        .rates
        .iter()
        .map(|rate| (*rate as f64 * size.latency_window(*rate).as_secs_f64()) as usize + 1)
        .sum();

    progress(&format!(
        "latency: {count} visitors and the admin connect; each visitor speaks once"
    ));
    let cookie = login(endpoint, password).await?;
    let probe = Arc::new(Probe::new(capacity, br#""type":"message""#));
    let open_admin = || {
        Fleet::open(
            endpoint,
            vec![Peer::Admin(cookie.clone())],
            Some(probe.clone()),
            b"",
        )
    };
    let mut admin = open_admin().await?;
    let fleet = Fleet::open(endpoint, visitors(count), None, br#""type":"message""#).await?;
    for index in 0..fleet.len() {
        fleet.send(
            index,
            speak("warming up: this visitor's conversation starts here"),
        );
        // Paced at about 1,000 per second: a burst of more than ~500 messages committed together overflows natter's
        // admin queue (two admin frames per message), and the admin would be kicked before the measurement starts.
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fleet.wait_answered(count, "warm-up").await?;
    if admin.closed.load(Ordering::Relaxed) > 0 {
        progress("latency: the admin was kicked during the warm-up; reconnecting it");
        admin.close().await;
        admin = open_admin().await?;
    }
    let mut natter_runs = Vec::new();
    let mut sequence = 0;
    for &rate in &size.rates {
        let window = size.latency_window(rate);
        progress(&format!("latency: natter at {rate} msg/s for {window:?}"));
        let run = open_loop(&fleet, &probe, sequence, rate, window, pid).await;
        sequence += (rate as f64 * window.as_secs_f64()) as usize + 1;
        // A kicked admin (too slow a consumer for natter's queue) misses everything after: say so, and reconnect
        // for the next rate.
        let kicked = admin.closed.load(Ordering::Relaxed) > 0;
        if kicked {
            admin.close().await;
            admin = open_admin().await?;
        }
        natter_runs.push((run, kicked));
    }
    fleet.close().await;
    admin.close().await;
    wait_for_no_sockets(endpoint).await;

    progress(&format!("latency: {count} sockets to the echo server"));
    let echo_probe = Arc::new(Probe::new(capacity, b""));
    let echoes = Fleet::open(
        &echo.endpoint(),
        vec![Peer::Echo; count],
        Some(echo_probe.clone()),
        b"",
    )
    .await?;
    for index in 0..echoes.len() {
        echoes.send(index, speak("warming up"));
    }
    echoes.wait_answered(count, "echo warm-up").await?;
    let mut sequence = 0;
    for (&rate, (natter, admin_kicked)) in size.rates.iter().zip(&natter_runs) {
        let window = size.latency_window(rate);
        progress(&format!("latency: echo at {rate} msg/s for {window:?}"));
        let ceiling = open_loop(&echoes, &echo_probe, sequence, rate, window, None).await;
        sequence += (rate as f64 * window.as_secs_f64()) as usize + 1;
        let lost = natter.sent - natter.received;
        let natter_cell = format!(
            "p50 {} · p99 {} · p99.9 {} · max {} ms{}{}{}",
            milliseconds(natter.p50),
            milliseconds(natter.p99),
            milliseconds(natter.p999),
            milliseconds(natter.max),
            if lost > 0 {
                format!("; **{lost} of {} not received**", natter.sent)
            } else {
                String::new()
            },
            if *admin_kicked {
                "; admin kicked as slow consumer"
            } else {
                ""
            },
            natter
                .cpu
                .map_or_else(String::new, |cpu| format!("; server CPU {cpu:.0}%")),
        );
        // natter tells nobody before the fsync, so its floor is a socket round trip plus one commit.
        let directory = workspace.to_path_buf();
        let (_, commits) = tokio::task::spawn_blocking(move || {
            redb_ceiling(&directory, 1, Duration::from_secs(1))
        })
        .await??;
        let floor = |echo: u64, quantile: f64| echo + commits.value_at_quantile(quantile);
        let floor_p99 = floor(ceiling.p99, 0.99);
        let ceiling_cell = format!(
            "echo round trip p50 {} · p99 {} · p99.9 {} ms + one redb commit p50 {} · p99 {} · p99.9 {} ms = floor p99 {} ms",
            milliseconds(ceiling.p50),
            milliseconds(ceiling.p99),
            milliseconds(ceiling.p999),
            milliseconds(commits.value_at_quantile(0.5)),
            milliseconds(commits.value_at_quantile(0.99)),
            milliseconds(commits.value_at_quantile(0.999)),
            milliseconds(floor_p99),
        );
        let target = if rate == 1_000 {
            format!(
                "p99 < 5 ms, ≤ 2x floor: {}",
                verdict(natter.p99 < 5_000 && lost == 0 && natter.p99 <= 2 * floor_p99.max(1))
            )
        } else {
            String::new()
        };
        report.row(&[
            &format!(
                "Visitor → admin, {} msg/s, {} visitors",
                thousands(rate as f64),
                thousands(count as f64)
            ),
            &natter_cell,
            &ceiling_cell,
            &format!("{} at p99", times(natter.p99 as f64, floor_p99 as f64)),
            &target,
            &size.command(&format!("--scenario latency --rates {rate}")),
        ]);
    }
    echoes.close().await;
    Ok(())
}

// ---- 3. persisted throughput ----

struct ThroughputRun {
    errors: u64,
    per_second: f64,
    p50: u64,
    p99: u64,
    fsyncs_per_message: Option<f64>,
    /// The server's CPU use (natter or the echo server), as a percentage of one core.
    cpu: Option<f64>,
    /// The load generator's own CPU use: on a shared machine, what the server could not have.
    generator_cpu: Option<f64>,
}

impl ThroughputRun {
    /// CPU microseconds per acknowledged message, from a CPU percentage of the same run.
    fn per_message(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.per_second > 0.0)
            .map(|cpu| cpu / 100.0 / self.per_second * 1e6)
    }

    /// `server 44 µs, load generator 17 µs` per message, or what of it was measured.
    fn cpu_per_message(&self, server: &str) -> String {
        let parts: Vec<String> = [
            (server, self.per_message(self.cpu)),
            ("load generator", self.per_message(self.generator_cpu)),
        ]
        .into_iter()
        .filter_map(|(who, micros)| micros.map(|micros| format!("{who} {micros:.0} µs")))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("CPU per message: {}", parts.join(", "))
        }
    }
}

/// One round of the throughput scenario: natter, then its ceilings, a few seconds apart.
struct Round {
    natter: ThroughputRun,
    echo: ThroughputRun,
    /// The echo server committing each frame to redb before echoing it.
    durable_echo: ThroughputRun,
    /// Raw redb commits in batches of the same size, messages per second.
    storage: f64,
}

impl Round {
    /// How many times faster than natter the durable echo was in this round: natter's ceiling for persisted
    /// throughput, as it pays for a socket and a durable write per message, like natter, and for nothing else.
    fn ratio(&self) -> f64 {
        self.durable_echo.per_second / self.natter.per_second.max(1e-9)
    }

    /// The same against the lower of the two single ceilings (the bare echo, raw redb), which each pay for only half
    /// of that.
    fn single_ratio(&self) -> f64 {
        self.storage.min(self.echo.per_second) / self.natter.per_second.max(1e-9)
    }
}

/// The round whose `key` is the median (the lower middle one of an even count).
fn median_by(rounds: &[Round], key: impl Fn(&Round) -> f64) -> &Round {
    let mut sorted: Vec<&Round> = rounds.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[(sorted.len() - 1) / 2]
}

/// The lowest and highest of several values; `None` for fewer than two.
fn range(values: &[f64]) -> Option<(f64, f64)> {
    (values.len() > 1).then(|| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

/// `senders` sockets each send a message and wait for its acknowledgement (natter: the visitor's own `message` echo,
/// which comes only after the fsync'd commit; echo server: the echo), then send the next, for `window`.
async fn closed_loop(
    endpoint: &Endpoint,
    echo: bool,
    senders: usize,
    window: Duration,
    pid: Option<u32>,
) -> anyhow::Result<ThroughputRun> {
    let barrier = Arc::new(Barrier::new(senders + 1));
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let acknowledgement: &'static [u8] = if echo { b"" } else { br#""type":"message""# };
    for index in 0..senders {
        let (endpoint, barrier, permits) = (endpoint.clone(), barrier.clone(), permits.clone());
        let peer = if echo {
            Peer::Echo
        } else {
            Peer::Visitor(uuid::Uuid::new_v4().to_string())
        };
        tasks.spawn(async move {
            // The first message opens the conversation, which is not what is measured.
            let ready = async {
                let permit = permits.acquire_owned().await.expect("never closed");
                let mut socket = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer))
                    .await
                    .map_err(|_| anyhow!("handshake timed out"))??;
                drop(permit);
                send(&mut socket, speak("warming up")).await?;
                while !contains(&next_text(&mut socket).await?, acknowledgement) {}
                Ok::<_, anyhow::Error>(socket)
            }
            .await;
            barrier.wait().await;
            let mut socket = ready?;
            let mut latencies = histogram();
            let (mut acknowledged, mut errors) = (0u64, 0u64);
            let deadline = Instant::now() + window;
            let mut last = Instant::now();
            let mut sequence = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                send(&mut socket, speak(&numbered(sequence))).await?;
                sequence += 1;
                loop {
                    let frame = next_text(&mut socket).await?;
                    if contains(&frame, br#""type":"error""#) {
                        errors += 1;
                        break;
                    }
                    if contains(&frame, acknowledgement) {
                        acknowledged += 1;
                        break;
                    }
                }
                last = Instant::now();
                latencies.saturating_record((last - sent).as_micros() as u64);
            }
            Ok::<_, anyhow::Error>((acknowledged, errors, latencies, last))
        });
    }
    barrier.wait().await;
    let before = if echo {
        None
    } else {
        metrics(endpoint.address).await.ok()
    };
    let started = Instant::now();
    let cpu = CpuMeter::start(pid);
    let generator = CpuMeter::start(Some(std::process::id()));
    let mut latencies = histogram();
    let (mut acknowledged, mut errors) = (0, 0);
    let mut last = started;
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((count, error_count, histogram, finished)) => {
                acknowledged += count;
                errors += error_count;
                latencies.add(&histogram).expect("same bounds");
                last = last.max(finished);
            }
            Err(error) => {
                if failures == 0 {
                    progress(&format!("a sender failed: {error:#}"));
                }
                failures += 1;
            }
        }
    }
    let cpu = cpu.percent();
    let generator_cpu = generator.percent();
    if failures > 0 {
        bail!("{failures} of {senders} senders failed");
    }
    let after = if echo {
        None
    } else {
        metrics(endpoint.address).await.ok()
    };
    let fsyncs_per_message = match (before, after) {
        (Some(before), Some(after)) => {
            let delta = |name: &str| {
                after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
            };
            let writes = delta("natter_store_writes_total");
            // A natter from before the write-ahead log has no such counter: no figure rather than a false 0.
            (writes > 0.0 && after.contains_key("natter_store_fsyncs_total"))
                .then(|| delta("natter_store_fsyncs_total") / writes)
        }
        _ => None,
    };
    Ok(ThroughputRun {
        errors,
        per_second: acknowledged as f64 / (last - started).as_secs_f64().max(1e-9),
        p50: latencies.value_at_quantile(0.5),
        p99: latencies.value_at_quantile(0.99),
        fsyncs_per_message,
        cpu,
        generator_cpu,
    })
}

/// The storage ceiling: `batch` messages of natter's size per redb transaction, each committed with an fsync.
/// Answers messages per second and the latency of each commit (microseconds).
fn redb_ceiling(
    directory: &Path,
    batch: usize,
    window: Duration,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    const MESSAGES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    let path = directory.join(format!("ceiling-{batch}.redb"));
    let database = redb::Database::create(&path)?;
    let value = vec![b'x'; 250];
    let started = Instant::now();
    let mut written = 0u64;
    let mut commits = histogram();
    while started.elapsed() < window {
        let commit_started = Instant::now();
        let mut transaction = database.begin_write()?;
        transaction.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = transaction.open_table(MESSAGES)?;
            for _ in 0..batch {
                table.insert(written, value.as_slice())?;
                written += 1;
            }
        }
        transaction.commit()?;
        commits.saturating_record(commit_started.elapsed().as_micros() as u64);
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    drop(database);
    let _ = std::fs::remove_file(&path);
    Ok((rate, commits))
}

async fn throughput_rows(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    password: Option<&str>,
    pid: Option<u32>,
    workspace: &Path,
) -> anyhow::Result<()> {
    let durable_echo = EchoServer::start(Some(&workspace.join("durable-echo.redb")))?;
    // The owner's dashboard is open, as it would be: every message also fans out to it.
    let cookie = match password {
        Some(password) => Some(login(endpoint, password).await?),
        None => None,
    };
    let open_admin =
        |cookie: &String| Fleet::open(endpoint, vec![Peer::Admin(cookie.clone())], None, b"");
    let mut admin = match &cookie {
        Some(cookie) => Some(open_admin(cookie).await?),
        None => None,
    };
    for &senders in &size.senders {
        // This machine's speed drifts from one minute to the next (the echo ceiling alone has measured 75k-118k msg/s
        // in consecutive runs), so one natter window against one echo window says little. natter, echo and redb run
        // in turns, several rounds; each round's ratio compares runs seconds apart, and the row shows the medians.
        let mut rounds = Vec::with_capacity(size.throughput_rounds);
        let mut admin_kicked = false;
        for round in 1..=size.throughput_rounds {
            progress(&format!(
                "throughput: {senders} natter senders for {:?} (round {round} of {})",
                size.throughput_window, size.throughput_rounds
            ));
            let natter = closed_loop(endpoint, false, senders, size.throughput_window, pid).await?;
            // A burst of acknowledgements larger than natter's admin queue kicks the dashboard: say so, reconnect it.
            if let (Some(fleet), Some(cookie)) = (admin.take(), &cookie) {
                if fleet.closed.load(Ordering::Relaxed) > 0 {
                    admin_kicked = true;
                    fleet.close().await;
                    admin = Some(open_admin(cookie).await?);
                } else {
                    admin = Some(fleet);
                }
            }
            wait_for_no_sockets(endpoint).await;
            progress(&format!(
                "throughput: {senders} echo senders, durable echo senders, then redb in batches of {senders} (round {round})"
            ));
            let echo_run = echo.closed_loop(senders, size.throughput_window).await?;
            let durable_echo_run = durable_echo
                .closed_loop(senders, size.throughput_window)
                .await?;
            let directory = workspace.to_path_buf();
            let window = size.redb_window;
            let storage = tokio::task::spawn_blocking(move || {
                redb_ceiling(&directory, senders, window).map(|(rate, _)| rate)
            })
            .await??;
            rounds.push(Round {
                natter,
                echo: echo_run,
                durable_echo: durable_echo_run,
                storage,
            });
        }
        let natter = median_by(&rounds, |round| round.natter.per_second);
        let socket_ceiling = median_by(&rounds, |round| round.echo.per_second);
        let durable_ceiling = median_by(&rounds, |round| round.durable_echo.per_second);
        let storage_ceiling = median_by(&rounds, |round| round.storage).storage;
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
        let ratio = median(&ratios);
        let single_ratios: Vec<f64> = rounds.iter().map(Round::single_ratio).collect();
        let spread = |rate: fn(&Round) -> f64| {
            let rates: Vec<f64> = rounds.iter().map(rate).collect();
            match range(&rates) {
                Some((low, high)) => format!(", rounds {}–{}", thousands(low), thousands(high)),
                None => String::new(),
            }
        };
        let natter_cell = format!(
            "{} msg/s acked{} (ack p50 {} · p99 {} ms){}{}{}{}{}",
            thousands(natter.natter.per_second),
            spread(|round| round.natter.per_second),
            milliseconds(natter.natter.p50),
            milliseconds(natter.natter.p99),
            natter
                .natter
                .fsyncs_per_message
                .map_or_else(String::new, |fsyncs| format!("; {fsyncs:.3} fsyncs/msg")),
            match rounds.iter().map(|round| round.natter.errors).sum::<u64>() {
                0 => String::new(),
                errors => format!("; **{errors} errors**"),
            },
            natter
                .natter
                .cpu
                .map_or_else(String::new, |cpu| format!("; server CPU {cpu:.0}%")),
            match natter.natter.cpu_per_message("natter") {
                text if text.is_empty() => text,
                text => format!("; {text}"),
            },
            if admin_kicked {
                "; admin dashboard kicked as a slow consumer"
            } else {
                ""
            },
        );
        let ceiling_cell = format!(
            "durable echo: {} msg/s{} (ack p50 {} · p99 {} ms; {}); echo: {} msg/s{} ({}); redb batches of {senders}: {} msg/s",
            thousands(durable_ceiling.durable_echo.per_second),
            spread(|round| round.durable_echo.per_second),
            milliseconds(durable_ceiling.durable_echo.p50),
            milliseconds(durable_ceiling.durable_echo.p99),
            durable_ceiling.durable_echo.cpu_per_message("server"),
            thousands(socket_ceiling.echo.per_second),
            spread(|round| round.echo.per_second),
            socket_ceiling.echo.cpu_per_message("echo server"),
            thousands(storage_ceiling),
        );
        let rounds_of = |ratios: &[f64]| match range(ratios) {
            Some((low, high)) => format!(" (rounds {low:.1}x–{high:.1}x)"),
            None => String::new(),
        };
        let ratio_cell = format!(
            "{ratio:.1}x of the durable echo{}; {:.1}x of the lower of echo and redb{} (medians of {} rounds)",
            rounds_of(&ratios),
            median(&single_ratios),
            rounds_of(&single_ratios),
            rounds.len(),
        );
        let target = if senders == 100 {
            format!(
                "≥ 20,000 msg/s, ≤ 2x ceiling: {}",
                verdict(natter.natter.per_second >= 20_000.0 && ratio <= 2.0)
            )
        } else {
            String::new()
        };
        report.row(&[
            &format!(
                "Persisted throughput, {} sender{}",
                thousands(senders as f64),
                if senders == 1 { "" } else { "s" }
            ),
            &natter_cell,
            &ceiling_cell,
            &ratio_cell,
            &target,
            &size.command(&format!("--scenario throughput --senders {senders}")),
        ]);
    }
    if let Some(admin) = admin {
        admin.close().await;
    }
    Ok(())
}

// ---- 4. reconnect storm ----

/// Every visitor in `tokens` (each with one stored message) reconnects as soon as `go` says so, syncs, and checks
/// that its message is in the history. Answers each visitor's time from `go` until its history was back.
async fn storm(
    endpoint: Endpoint,
    tokens: Arc<Vec<String>>,
    echo: bool,
    go: watch::Receiver<Option<Instant>>,
) -> (Vec<Duration>, usize) {
    let mut tasks = JoinSet::new();
    for index in 0..tokens.len() {
        let (endpoint, tokens, mut go) = (endpoint.clone(), tokens.clone(), go.clone());
        tasks.spawn(async move {
            let Ok(started) = go
                .wait_for(Option::is_some)
                .await
                .map(|started| started.expect("some"))
            else {
                return None;
            };
            let peer = if echo {
                Peer::Echo
            } else {
                Peer::Visitor(tokens[index].clone())
            };
            let back = async {
                let mut socket = loop {
                    match tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer)).await {
                        Ok(Ok(socket)) => break socket,
                        // Refused while natter starts: try again shortly, as the ActionCable client does.
                        _ if started.elapsed() < PATIENCE * 2 => {
                            tokio::time::sleep(Duration::from_millis(25)).await
                        }
                        _ => bail!("could not reconnect"),
                    }
                };
                if echo {
                    send(&mut socket, numbered(index)).await?;
                    next_text(&mut socket).await?;
                } else {
                    send(&mut socket, sync_command()).await?;
                    let mine = numbered(index).into_bytes();
                    loop {
                        let frame = next_text(&mut socket).await?;
                        if contains(&frame, br#""type":"history""#) {
                            if !contains(&frame, &mine) {
                                bail!("the history lacks the visitor's message");
                            }
                            break;
                        }
                    }
                }
                Ok::<_, anyhow::Error>((started.elapsed(), socket))
            };
            match back.await {
                Ok((elapsed, socket)) => Some((elapsed, socket)),
                Err(error) => {
                    progress(&format!("storm: visitor {index}: {error:#}"));
                    None
                }
            }
        });
    }
    let mut times = Vec::new();
    let mut sockets = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some((elapsed, socket))) = joined {
            times.push(elapsed);
            sockets.push(socket);
        }
    }
    let back = times.len();
    drop(sockets);
    (times, back)
}

fn spread(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    let at = |quantile: f64| times[((times.len() - 1) as f64 * quantile).round() as usize];
    (at(0.5), at(0.99), *times.last().expect("not empty"))
}

async fn storm_row(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    natter: &mut Natter,
) -> anyhow::Result<()> {
    let count = size.storm_visitors;
    progress(&format!("storm: {count} visitors connect and speak once"));
    let peers = visitors(count);
    let tokens: Arc<Vec<String>> = Arc::new(
        peers
            .iter()
            .map(|peer| match peer {
                Peer::Visitor(token) => token.clone(),
                _ => unreachable!("visitors"),
            })
            .collect(),
    );
    let fleet = Fleet::open(endpoint, peers, None, br#""type":"message""#).await?;
    for index in 0..count {
        fleet.send(index, speak(&numbered(index)));
    }
    fleet.wait_answered(count, "storm set-up").await?;
    let (go, going) = watch::channel(None);
    let storming = tokio::spawn(storm(endpoint.clone(), tokens.clone(), false, going));
    progress("storm: SIGTERM to natter, then start it again on the same port and data dir");
    let shutdown = natter.stop().await;
    // Every socket was told `server_restart` and closed; the clients' sockets are now dead.
    let closed = fleet.closed.load(Ordering::Relaxed);
    fleet.close().await;
    let spawned = natter.respawn()?;
    let _ = go.send(Some(spawned));
    let startup = natter.wait_until_serving(spawned).await?;
    let (mut natter_times, back) = storming.await?;
    let (p50, p99, all) = spread(&mut natter_times);

    progress(&format!(
        "storm: {count} sockets to the echo server at once"
    ));
    let (go, going) = watch::channel(None);
    let storming = tokio::spawn(storm(echo.endpoint(), tokens, true, going));
    let _ = go.send(Some(Instant::now()));
    let (mut echo_times, echo_back) = storming.await?;
    let (echo_p50, echo_p99, echo_all) = spread(&mut echo_times);
    let seconds = |duration: Duration| format!("{:.2} s", duration.as_secs_f64());
    report.row(&[
        &format!("Reconnect storm: {} visitors after a restart", thousands(count as f64)),
        &format!(
            "{back}/{count} had their history back {} after the new process started (p50 {}, p99 {}); natter up (/healthz) after {}; SIGTERM drain {} ({closed} sockets told to reconnect)",
            seconds(all),
            seconds(p50),
            seconds(p99),
            seconds(startup.healthy),
            seconds(shutdown)
        ),
        &format!("echo: {echo_back}/{count} connected and echoed in {} (p50 {}, p99 {})", seconds(echo_all), seconds(echo_p50), seconds(echo_p99)),
        &format!("{} (excluding start-up: {})", times(all.as_secs_f64(), echo_all.as_secs_f64()), times((all.saturating_sub(startup.tcp)).as_secs_f64(), echo_all.as_secs_f64())),
        "",
        &size.command(&format!("--scenario storm --storm {count}")),
    ]);
    Ok(())
}
