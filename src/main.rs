//! The `natter` command: parse the flags, load the config, run the server until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use natter::auth::PasswordSource;
use natter::config::{Config, Overrides};
use natter::server::Server;

/// Live chat for your static blog: one binary, one file of data.
#[derive(Parser, Debug)]
#[command(name = "natter", version, about)]
struct Cli {
    /// The config file (TOML). Without one, natter runs with its defaults on http://127.0.0.1:3100.
    #[arg(long, value_name = "PATH", env = "NATTER_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on, e.g. 0.0.0.0:443 (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Where the store and keys live (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("natter: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let environment: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides { listen: cli.listen, data_dir: cli.data_dir.clone() };
    let config = Config::load(cli.config.as_deref(), &environment, &overrides)?;
    init_logging(&config.server.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config, environment.get("NATTER_ADMIN_PASSWORD").map(String::as_str)))
}

async fn serve(config: Config, environment_password: Option<&str>) -> anyhow::Result<()> {
    let server = Server::build(config, environment_password).await?;
    let app = server.app().clone();
    let bound = server.local_addr();
    let scheme = if app.public_origin.is_https() { "https" } else { "http" };
    println!("natter listening on {scheme}://{bound}");
    println!("dashboard: {}/admin/  (user {:?})", app.public_origin, app.config.admin.username);
    match server.password_source() {
        PasswordSource::Generated(password) => println!(
            "admin password (shown once, stored hashed): {password}\n  set NATTER_ADMIN_PASSWORD or run natter --init to choose your own"
        ),
        PasswordSource::Stored => println!("admin password: the one printed at first start (or set NATTER_ADMIN_PASSWORD)"),
        PasswordSource::Config | PasswordSource::Environment => {}
    }
    println!("widget: <script src=\"{}/widget.js\" defer></script>", app.public_origin);
    server.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
