//! The command line, and how big a run is.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// natter's load benchmark; see docs/benchmark.md.
#[derive(Parser, Debug)]
#[command(name = "load")]
pub struct Options {
    /// The bigger size: more sockets and longer windows (also NATTER_BENCH_SIZE=large).
    #[arg(long)]
    pub large: bool,
    /// Run only these scenarios (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Benchmark a natter already running at this http:// URL (its public URL) instead of starting one. Its limits
    /// must allow the load (see docs/benchmark.md); no RSS, CPU or restart figures then.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The admin password of the natter at --url.
    #[arg(long, env = "NATTER_BENCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The visitor Origin header; it must be in widget.allowed_origins of the natter at --url.
    #[arg(long, default_value = "http://blog.test")]
    pub origin: String,
    /// The natter binary to start (default: target/release/natter, which cargo builds with this benchmark).
    #[arg(long, value_name = "PATH")]
    pub natter: Option<PathBuf>,
    /// Also write the report (Markdown) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Idle scenario: sockets to hold.
    #[arg(long)]
    pub sockets: Option<usize>,
    /// Latency scenario: connected visitors.
    #[arg(long)]
    pub visitors: Option<usize>,
    /// Latency scenario: open-loop message rates per second (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<u64>,
    /// Throughput scenario: concurrent senders (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub senders: Vec<usize>,
    /// Reconnect storm: visitors that reconnect at once.
    #[arg(long)]
    pub storm: Option<usize>,
    /// Passed by `cargo bench`. Without it (`cargo test --all-targets` runs this binary too) nothing is measured.
    #[arg(long, hide = true)]
    pub bench: bool,
    /// Internal: run as the echo server (the socket ceiling) and print its address.
    #[arg(long, hide = true)]
    pub echo_server: bool,
    /// Internal: with --echo-server, commit every frame to a redb file here (group commit, fsynced) before echoing it.
    #[arg(long, hide = true, value_name = "FILE")]
    pub echo_store: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Static,
    Idle,
    Latency,
    Throughput,
    Storm,
    Logins,
}

/// How big a run is. The default fits in a few minutes on a 2-core machine; `--large` takes longer and holds more.
pub struct Size {
    pub large: bool,
    pub idle_sockets: usize,
    pub latency_visitors: usize,
    pub rates: Vec<u64>,
    pub senders: Vec<usize>,
    pub storm_visitors: usize,
    pub throughput_window: Duration,
    /// Throughput: natter, echo and redb runs, interleaved, per sender count (see `throughput_rows`).
    pub throughput_rounds: usize,
    pub redb_window: Duration,
}

impl Size {
    pub fn new(options: &Options) -> Size {
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
    pub fn latency_window(&self, rate: u64) -> Duration {
        let (seconds, samples) = if self.large { (30, 10_000) } else { (5, 1_000) };
        Duration::from_secs(seconds.max(samples / rate.max(1)))
    }

    /// The command that reproduces one row.
    pub fn command(&self, arguments: &str) -> String {
        let large = if self.large { "--large " } else { "" };
        format!("`cargo bench --bench load -- {large}{arguments}`")
    }
}
