//! The `natter` command: parse the flags, then serve, run the `--init` wizard, take a backup or export.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use natter::auth::PasswordSource;
use natter::backup::{self, ExportFormat, Source};
use natter::config::{self, Config, Overrides, TlsMode};
use natter::init::{self, InitOptions};
use natter::server::Server;

/// `natter --version`: the version, then when and for what it was built (set by build.rs), then what it can do.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nbuilt ",
    env!("NATTER_BUILD_DATE"),
    " for ",
    env!("NATTER_BUILD_TARGET"),
    " (",
    env!("NATTER_BUILD_LINKAGE"),
    "), ",
    env!("NATTER_BUILD_RUSTC"),
    env!("NATTER_BUILD_COMMIT"),
    "\nfeatures: ",
    env!("NATTER_BUILD_FEATURES"),
);

/// Live chat for your static blog: one binary, one file of data.
#[derive(Parser, Debug)]
#[command(name = "natter", version, long_version = LONG_VERSION, about)]
struct Cli {
    /// The config file (TOML). Without one, natter runs with its defaults on http://127.0.0.1:3100. With --init, where
    /// the new config is written (default: ./natter.toml).
    #[arg(long, value_name = "PATH", env = "NATTER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The address to listen on, e.g. 0.0.0.0:443 (overrides server.listen).
    #[arg(long, value_name = "ADDR", value_parser = config::parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Where the store and keys live (overrides server.data_dir).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Write a config: asks on a terminal, or takes the flags below with --non-interactive.
    #[arg(long)]
    init: bool,
    /// With --init: take every answer from flags and defaults, ask nothing.
    #[arg(long, requires = "init")]
    non_interactive: bool,
    /// With --init: replace an existing config.
    #[arg(long, requires = "init")]
    force: bool,
    /// With --init: the URL browsers reach natter at, e.g. https://chat.example.com.
    #[arg(long, value_name = "URL", requires = "init")]
    public_url: Option<String>,
    /// With --init: acme (a trusted certificate from Let's Encrypt), off (plain HTTP or behind a proxy), self-signed,
    /// or files (PEM, e.g. from certbot).
    #[arg(long, value_name = "MODE", requires = "init")]
    tls: Option<TlsArg>,
    /// With --init --tls files: the PEM certificate chain.
    #[arg(long, value_name = "PATH", requires = "init")]
    cert: Option<PathBuf>,
    /// With --init --tls files: the PEM private key.
    #[arg(long, value_name = "PATH", requires = "init")]
    key: Option<PathBuf>,
    /// With --init --tls acme: the contact address for Let's Encrypt (optional).
    #[arg(long, value_name = "EMAIL", requires = "init")]
    acme_email: Option<String>,
    /// With --init: a plain-HTTP address that redirects to HTTPS, e.g. 0.0.0.0:80.
    #[arg(long, value_name = "ADDR", requires = "init", value_parser = config::parse_listen)]
    redirect_listen: Option<std::net::SocketAddr>,
    /// With --init: the dashboard's user name (default admin).
    #[arg(long, value_name = "NAME", requires = "init")]
    admin_user: Option<String>,
    /// With --init: a file holding the admin password on its first line (kept only as an argon2id hash).
    #[arg(long, value_name = "FILE", requires = "init")]
    admin_password_file: Option<PathBuf>,
    /// With --init: an origin of a site that embeds the chat, e.g. https://blog.example.com (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN", requires = "init")]
    allowed_origins: Vec<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a consistent copy of the store to FILE, also while natter runs (through its control socket).
    /// Restore: stop natter, copy FILE to <data_dir>/natter.redb, start natter.
    Backup {
        /// Where the copy goes; replaced in one step when the copy is complete and checked.
        file: PathBuf,
    },
    /// Print every conversation and message, as JSON or CSV, to standard output (or --output).
    Export {
        #[arg(long, value_name = "FORMAT", default_value = "json")]
        format: FormatArg,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Send a test email to ADDRESS through the relay in [email], and print the relay's answer or what failed
    /// (DNS, connect, TLS, authentication, a refused sender).
    EmailTest {
        /// Where the test email goes.
        address: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TlsArg {
    Off,
    SelfSigned,
    Files,
    Acme,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Json,
    Csv,
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

/// The end of `--help`: every environment variable natter reads, from the one list in `config`.
fn environment_help() -> String {
    let width = config::ENVIRONMENT
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from("Environment (over the config file, under the flags):\n");
    for (name, what) in config::ENVIRONMENT {
        text.push_str(&format!("  {name:width$}  {what}\n"));
    }
    text
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().after_help(environment_help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if cli.init {
        let options = init_options(&cli);
        init::run(&options)?;
        return Ok(());
    }
    let environment: HashMap<String, String> = std::env::vars().collect();
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir.clone(),
    };
    let config = Config::load(cli.config.as_deref(), &environment, &overrides)?;
    // The blocking pool does file work and password checks (one at a time); tokio's default of 512 threads would be
    // far over the unit's TasksMax.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?;
    match cli.command {
        None => {
            init_logging(&config.server.log);
            runtime.block_on(serve(
                config,
                environment.get("NATTER_ADMIN_PASSWORD").map(String::as_str),
            ))
        }
        Some(Command::Backup { file }) => {
            init_logging("warn");
            let report = runtime.block_on(backup::backup(&config, &file))?;
            let source = match report.source {
                Source::Server => "from the running server",
                Source::StoreFile => "from the store file (no server was running)",
            };
            eprintln!(
                "natter: backup written to {} ({}, {}, {}), {source}",
                file.display(),
                counted(report.bytes, "byte"),
                counted(report.conversations, "conversation"),
                counted(report.messages, "message")
            );
            Ok(())
        }
        Some(Command::Export { format, output }) => {
            init_logging("warn");
            let format = match format {
                FormatArg::Json => ExportFormat::Json,
                FormatArg::Csv => ExportFormat::Csv,
            };
            let report = match &output {
                Some(path) => runtime.block_on(backup::export_to_file(&config, format, path))?,
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                    runtime.block_on(backup::export(&config, format, &mut stdout))?
                }
            };
            eprintln!(
                "natter: exported {}, {}",
                counted(report.conversations, "conversation"),
                counted(report.messages, "message")
            );
            Ok(())
        }
        Some(Command::EmailTest { address }) => {
            init_logging("warn");
            let origin = config.public_origin(config.server.listen);
            let hello = origin.host().trim_matches(['[', ']']).to_string();
            let answer =
                runtime.block_on(natter::email::smtp::test(&config.email, &hello, &address))?;
            println!("natter: {answer}");
            Ok(())
        }
    }
}

/// "1 conversation", "2 conversations".
fn counted(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn init_options(cli: &Cli) -> InitOptions {
    InitOptions {
        non_interactive: cli.non_interactive,
        force: cli.force,
        config_path: cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("natter.toml")),
        public_url: cli.public_url.clone(),
        listen: cli.listen,
        tls: cli.tls.map(|mode| match mode {
            TlsArg::Off => TlsMode::Off,
            TlsArg::SelfSigned => TlsMode::SelfSigned,
            TlsArg::Files => TlsMode::Files,
            TlsArg::Acme => TlsMode::Acme,
        }),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
        redirect_listen: cli.redirect_listen,
        acme_email: cli.acme_email.clone(),
        admin_user: cli.admin_user.clone(),
        admin_password_file: cli.admin_password_file.clone(),
        allowed_origins: cli.allowed_origins.clone(),
        data_dir: cli.data_dir.clone(),
    }
}

async fn serve(config: Config, environment_password: Option<&str>) -> anyhow::Result<()> {
    let server = Server::build(config, environment_password).await?;
    let app = server.app().clone();
    let bound = server.local_addr();
    let scheme = if server.tls().is_some() {
        "https"
    } else {
        "http"
    };
    println!("natter listening on {scheme}://{bound}");
    if let Some(redirect) = server.redirect_addr() {
        println!("redirecting http://{redirect} to {}", app.public_origin);
    }
    if let Some(warning) = server
        .tls()
        .and_then(|tls| natter::server::self_signed_warning(tls))
    {
        println!("{warning}");
    }
    let allowed = &app.config.widget.allowed_origins;
    if allowed.is_empty() {
        println!(
            "allowed origins: none, so the widget opens only on natter's own pages; add your blog's with\n  widget.allowed_origins = [\"https://blog.example.com\"] in the config or NATTER_ALLOWED_ORIGINS=https://blog.example.com"
        );
    } else {
        let names: Vec<&str> = allowed.iter().map(config::Origin::as_str).collect();
        println!("allowed origins: {}", names.join(", "));
    }
    println!(
        "dashboard: {}/admin/  (user {:?})",
        app.public_origin, app.config.admin.username
    );
    match server.password_source() {
        PasswordSource::Generated(password) => println!(
            "admin password (shown once, stored hashed): {password}\n  set NATTER_ADMIN_PASSWORD or run {} --init to choose your own",
            natter::invocation::command()
        ),
        PasswordSource::Stored => println!("admin password: the one printed at first start (or set NATTER_ADMIN_PASSWORD)"),
        PasswordSource::Config | PasswordSource::Environment => {}
    }
    println!(
        "widget: <script src=\"{}/widget.js\" defer></script>",
        app.public_origin
    );
    server.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
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
    // Colours only on a terminal: under systemd, journald would store the escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}
