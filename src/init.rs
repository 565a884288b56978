//! `natter --init`: the config wizard.
//!
//! On a terminal it asks, one question at a time, with the default in brackets (Enter takes it); the password is
//! read twice from the terminal without echo. For scripts, `--non-interactive` takes the same answers from flags and
//! fills the rest with the same defaults. Either way the config is checked as `natter` would check it at start,
//! written with mode 0600 (it holds the admin password's hash), and never over an existing file without `--force`.
//! It ends with the script tag to paste into the blog and the steps to run natter under systemd.
//!
//! What the wizard does not write: a session secret (sessions are random tokens kept hashed in the store, so there
//! is no secret to configure) and the VAPID key for Web Push (the server makes it on first start and keeps it in the
//! store, so a backup carries it).

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{Config, Origin, SmtpSecurity, TlsMode};
use crate::invocation;

/// The shortest admin password the wizard accepts: argon2id slows guessing, it does not make `1234` safe.
const MIN_PASSWORD_CHARS: usize = 10;

/// What the command line says; every field is optional, the wizard asks for (or defaults) the rest.
#[derive(Debug, Default, Clone)]
pub struct InitOptions {
    pub non_interactive: bool,
    pub force: bool,
    pub config_path: PathBuf,
    pub public_url: Option<String>,
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsMode>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub redirect_listen: Option<SocketAddr>,
    /// The contact address for the ACME CA (`--tls acme`).
    pub acme_email: Option<String>,
    pub admin_user: Option<String>,
    pub admin_password_file: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub data_dir: Option<PathBuf>,
}

/// Runs the wizard and writes the config; answers the config written.
pub fn run(options: &InitOptions) -> anyhow::Result<Config> {
    let path = &options.config_path;
    if path.exists() && !options.force {
        anyhow::bail!(
            "{} already exists; natter --init does not overwrite a config. Pass --force to replace it, or --config PATH to write elsewhere",
            path.display()
        );
    }
    let config = if options.non_interactive {
        from_flags(options)?
    } else {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "natter --init asks its questions on a terminal, and this is not one. Run {} --init on a terminal, or pass --non-interactive with --public-url URL --admin-password-file FILE (and --listen, --tls, --allowed-origin, --data-dir as needed)",
                invocation::command()
            );
        }
        let mut terminal = Terminal {
            input: std::io::stdin().lock(),
            output: std::io::stdout(),
        };
        ask(options, &mut terminal)?
    };
    config.validate()?;
    write_config(path, &config, options.force)?;
    print!("{}", closing_words(path, &config));
    Ok(config)
}

/// The config from flags alone: `--public-url` and `--admin-password-file` are required, the rest defaults.
fn from_flags(options: &InitOptions) -> anyhow::Result<Config> {
    let public_url = options
        .public_url
        .as_deref()
        .context("--non-interactive needs --public-url (the URL browsers reach natter at, e.g. https://chat.example.com)")?;
    let public_origin =
        Origin::parse(public_url).map_err(|error| anyhow::anyhow!("--public-url: {error}"))?;
    let password_file = options
        .admin_password_file
        .as_deref()
        .context("--non-interactive needs --admin-password-file FILE (a file holding the admin password on one line)")?;
    let password = std::fs::read_to_string(password_file).with_context(|| {
        format!(
            "cannot read the admin password from {}",
            password_file.display()
        )
    })?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    check_password(&password)?;
    let listen = options
        .listen
        .unwrap_or_else(|| default_listen(&public_origin));
    let tls = options
        .tls
        .unwrap_or_else(|| default_tls(&public_origin, listen));
    let mut config = base_config(options, &public_origin, listen, tls)?;
    if tls == TlsMode::Files {
        let (cert, key) = certbot_paths(&public_origin);
        config.tls.cert = options.cert.clone().unwrap_or(cert);
        config.tls.key = options.key.clone().unwrap_or(key);
    }
    config.tls.redirect_listen = options
        .redirect_listen
        .or_else(|| default_redirect(listen, tls));
    if tls == TlsMode::Acme {
        config.tls.acme_email = options.acme_email.clone().unwrap_or_default();
    }
    config.admin.password_hash = crate::password::hash(&password);
    config.widget.allowed_origins = parse_origins(&options.allowed_origins.join(","))?;
    Ok(config)
}

/// The parts every path shares: public URL, listen address, TLS mode, data dir, admin user, trusted proxy.
fn base_config(
    options: &InitOptions,
    public_origin: &Origin,
    listen: SocketAddr,
    tls: TlsMode,
) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.server.public_url = public_origin.to_string();
    config.server.listen = listen;
    config.server.data_dir = options
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&options.config_path));
    config.tls.mode = tls;
    // natter on loopback with an https URL and no TLS of its own: a proxy on this host terminates TLS, and its
    // X-Forwarded-For is what tells visitors apart.
    if tls == TlsMode::Off && public_origin.is_https() && listen.ip().is_loopback() {
        config.server.trusted_proxies = vec![listen.ip()];
    }
    if let Some(user) = &options.admin_user {
        config.admin.username = check_user(user)?;
    }
    Ok(config)
}

/// Where the questions are asked: a terminal in real use, anything `BufRead`/`Write` in tests.
pub struct Terminal<R: BufRead, W: Write> {
    pub input: R,
    pub output: W,
}

impl<R: BufRead, W: Write> Terminal<R, W> {
    /// Asks one question; an empty answer takes `default`. `check` turns the answer into a value or says what is wrong,
    /// and the question is asked again.
    fn ask<T>(
        &mut self,
        question: &str,
        default: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        loop {
            if default.is_empty() {
                write!(self.output, "{question}: ")?;
            } else {
                write!(self.output, "{question} [{default}]: ")?;
            }
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                anyhow::bail!("the input ended before the wizard finished; nothing was written");
            }
            let answer = line.trim();
            let answer = if answer.is_empty() { default } else { answer };
            match check(answer) {
                Ok(value) => return Ok(value),
                Err(problem) => writeln!(self.output, "  {problem}")?,
            }
        }
    }

    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.output, "{text}")?;
        Ok(())
    }
}

/// The interactive wizard. Flags given on the command line become the defaults shown.
fn ask<R: BufRead, W: Write>(
    options: &InitOptions,
    terminal: &mut Terminal<R, W>,
) -> anyhow::Result<Config> {
    terminal.say(
        "natter --init: a few questions, then a config. Press Enter to take the [default].\n",
    )?;
    let public_origin = terminal.ask(
        "Public URL of natter (what browsers will open, e.g. https://chat.example.com)",
        options
            .public_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:3100"),
        Origin::parse,
    )?;
    let listen_default = options
        .listen
        .unwrap_or_else(|| default_listen(&public_origin))
        .to_string();
    let listen = terminal.ask("Address to listen on", &listen_default, |answer| {
        crate::config::parse_listen(answer)
    })?;
    let tls_default = options
        .tls
        .unwrap_or_else(|| default_tls(&public_origin, listen));
    let tls = terminal.ask(
        "TLS: \"acme\" (a trusted certificate from Let's Encrypt, renewed by natter), \"off\" (plain HTTP, or behind a proxy), \"self-signed\", or \"files\" (PEM files, e.g. from certbot)",
        tls_name(tls_default),
        parse_tls,
    )?;
    let mut config = base_config(options, &public_origin, listen, tls)?;
    if tls == TlsMode::Acme {
        let email = options.acme_email.as_deref().unwrap_or("none");
        config.tls.acme_email = terminal.ask(
            "Contact email for Let's Encrypt (optional, \"none\")",
            email,
            |answer| match answer {
                "none" | "" => Ok(String::new()),
                _ if answer.contains('@') && !answer.contains(char::is_whitespace) => {
                    Ok(answer.to_string())
                }
                _ => Err(format!("{answer:?} is not an email address, or none")),
            },
        )?;
    }
    if tls == TlsMode::Files {
        let (cert, key) = certbot_paths(&public_origin);
        let cert = options.cert.clone().unwrap_or(cert);
        let key = options.key.clone().unwrap_or(key);
        config.tls.cert = terminal.ask(
            "PEM certificate chain",
            &cert.display().to_string(),
            existing_file,
        )?;
        config.tls.key =
            terminal.ask("PEM private key", &key.display().to_string(), existing_file)?;
    }
    if tls != TlsMode::Off {
        let suggestion = options
            .redirect_listen
            .or_else(|| default_redirect(listen, tls))
            .map_or_else(|| "none".to_string(), |address| address.to_string());
        config.tls.redirect_listen = terminal.ask(
            "Plain-HTTP address that redirects to HTTPS (\"none\" for no redirect)",
            &suggestion,
            |answer| match answer {
                "none" | "no" | "off" => Ok(None),
                _ => answer
                    .parse::<SocketAddr>()
                    .map(Some)
                    .map_err(|_| format!("{answer:?} is not an address like 0.0.0.0:80, or none")),
            },
        )?;
    } else if public_origin.is_https() {
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        config.server.trusted_proxies = terminal.ask(
            "Addresses of the TLS proxy in front of natter, whose X-Forwarded-For is trusted (comma-separated, or none)",
            &if proxies.is_empty() { "none".to_string() } else { proxies.join(",") },
            parse_addresses,
        )?;
    }
    let user_default = options
        .admin_user
        .clone()
        .unwrap_or_else(|| config.admin.username.clone());
    config.admin.username = terminal.ask("Admin user name", &user_default, |answer| {
        check_user(answer).map_err(|error| error.to_string())
    })?;
    let password = match &options.admin_password_file {
        Some(file) => {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            check_password(&password)?;
            password
        }
        None => ask_password(terminal)?,
    };
    config.admin.password_hash = crate::password::hash(&password);
    let origins_default = if options.allowed_origins.is_empty() {
        default_blog_origin(&public_origin).unwrap_or_else(|| "none".to_string())
    } else {
        options.allowed_origins.join(",")
    };
    config.widget.allowed_origins = terminal.ask(
        "Origins of the blog(s) that embed the chat, e.g. https://blog.example.com (comma-separated, or none)",
        &origins_default,
        |answer| parse_origins(if answer == "none" { "" } else { answer }).map_err(|error| error.to_string()),
    )?;
    let data_dir_default = config.server.data_dir.display().to_string();
    config.server.data_dir = terminal.ask(
        "Data directory (the store and the keys)",
        &data_dir_default,
        |answer| Ok(PathBuf::from(answer)),
    )?;
    ask_email(terminal, &mut config)?;
    Ok(config)
}

/// The `[email]` questions: off unless a relay is named.
fn ask_email<R: BufRead, W: Write>(
    terminal: &mut Terminal<R, W>,
    config: &mut Config,
) -> anyhow::Result<()> {
    let none = |answer: &str| -> String {
        if answer == "none" {
            String::new()
        } else {
            answer.to_string()
        }
    };
    let host = terminal.ask(
        "SMTP relay for email (replies to visitors who left, news for you), e.g. smtp.example.com, or none",
        "none",
        |answer| Ok(none(answer)),
    )?;
    if host.is_empty() {
        return Ok(());
    }
    let email = &mut config.email;
    email.smtp_host = host;
    email.smtp_port = terminal.ask(
        "SMTP port (587 for STARTTLS, 465 for TLS)",
        "587",
        |answer| {
            answer
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| "a port number, e.g. 587".to_string())
        },
    )?;
    let security_default = if email.smtp_port == 465 {
        "tls"
    } else {
        "starttls"
    };
    email.smtp_security = terminal.ask(
        "SMTP security: starttls, tls, or none (a relay on loopback only)",
        security_default,
        |answer| match answer {
            "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            _ => Err("starttls, tls or none".to_string()),
        },
    )?;
    email.smtp_username = terminal.ask("SMTP user name (or none)", "none", |answer| {
        Ok(none(answer))
    })?;
    if !email.smtp_username.is_empty() {
        email.smtp_password_file = terminal.ask(
            "File whose first line is the SMTP password (or none, and set NATTER_SMTP_PASSWORD)",
            "none",
            |answer| {
                if answer == "none" {
                    Ok(PathBuf::new())
                } else {
                    existing_file(answer)
                }
            },
        )?;
    }
    email.from = terminal.ask(
        "Sender of the emails, e.g. Blog chat <chat@example.com>",
        "",
        |answer| {
            answer
                .parse::<lettre::message::Mailbox>()
                .map(|_| answer.to_string())
                .map_err(|_| {
                    "an address, optionally with a name: Blog chat <chat@example.com>".to_string()
                })
        },
    )?;
    email.owner_address = terminal.ask(
        "Your address, for news of new conversations (or none)",
        "none",
        |answer| {
            if answer == "none" {
                return Ok(String::new());
            }
            answer
                .parse::<lettre::Address>()
                .map(|_| answer.to_string())
                .map_err(|_| "an email address like you@example.com".to_string())
        },
    )?;
    Ok(())
}

/// Asks for the password twice on the controlling terminal, without echo, until both agree and it is long enough.
fn ask_password<R: BufRead, W: Write>(terminal: &mut Terminal<R, W>) -> anyhow::Result<String> {
    loop {
        terminal.output.flush()?;
        let first = rpassword::prompt_password("Admin password (not shown): ")
            .context("cannot read the password from the terminal")?;
        if let Err(problem) = check_password(&first) {
            terminal.say(&format!("  {problem}"))?;
            continue;
        }
        let second = rpassword::prompt_password("The same password again: ")
            .context("cannot read the password from the terminal")?;
        if first == second {
            return Ok(first);
        }
        terminal.say("  The two passwords differ; once more.")?;
    }
}

fn check_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        anyhow::bail!("the admin password must have at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(())
}

fn check_user(user: &str) -> anyhow::Result<String> {
    let user = user.trim();
    if user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
        anyhow::bail!("the admin user name must be 1 to 64 printable characters");
    }
    Ok(user.to_string())
}

fn parse_tls(answer: &str) -> Result<TlsMode, String> {
    match answer {
        "off" => Ok(TlsMode::Off),
        "self-signed" => Ok(TlsMode::SelfSigned),
        "files" => Ok(TlsMode::Files),
        "acme" => Ok(TlsMode::Acme),
        _ => Err(format!(
            "{answer:?}: answer acme, off, self-signed or files"
        )),
    }
}

fn tls_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Off => "off",
        TlsMode::SelfSigned => "self-signed",
        TlsMode::Files => "files",
        TlsMode::Acme => "acme",
    }
}

fn existing_file(answer: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(answer);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{answer} is not a file (natter reads it at start; run certbot first, or choose self-signed)"))
    }
}

fn parse_addresses(answer: &str) -> Result<Vec<IpAddr>, String> {
    if answer == "none" {
        return Ok(Vec::new());
    }
    answer
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(|address| {
            address
                .parse()
                .map_err(|_| format!("{address:?} is not an IP address"))
        })
        .collect()
}

fn parse_origins(text: &str) -> anyhow::Result<Vec<Origin>> {
    text.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            Origin::parse(origin).map_err(|error| anyhow::anyhow!("allowed origin: {error}"))
        })
        .collect()
}

/// Where natter listens by default: port 443 on every address for an https URL on a public host (natter serves TLS
/// itself); for a loopback URL, exactly that address; otherwise the URL's port on every address.
fn default_listen(public_origin: &Origin) -> SocketAddr {
    let host = public_origin
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = public_origin
        .as_str()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or(if public_origin.is_https() { 443 } else { 80 });
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => SocketAddr::new(ip, port),
        _ if host == "localhost" => SocketAddr::from(([127, 0, 0, 1], port)),
        _ => SocketAddr::from(([0, 0, 0, 0], port)),
    }
}

/// TLS by default when the URL is https and natter faces the network itself; `files` when certbot's files for the
/// host are already there, `acme` for a public domain, `self-signed` otherwise. Behind a proxy on loopback, off.
fn default_tls(public_origin: &Origin, listen: SocketAddr) -> TlsMode {
    if !public_origin.is_https() || listen.ip().is_loopback() {
        return TlsMode::Off;
    }
    let (cert, key) = certbot_paths(public_origin);
    if cert.is_file() && key.is_file() {
        TlsMode::Files
    } else if crate::config::is_acme_domain(public_origin.host()) {
        TlsMode::Acme
    } else {
        TlsMode::SelfSigned
    }
}

/// natter serving HTTPS on port 443 itself also redirects port 80 there, since that is where a typed address lands.
fn default_redirect(listen: SocketAddr, tls: TlsMode) -> Option<SocketAddr> {
    (tls != TlsMode::Off && listen.port() == 443).then(|| SocketAddr::new(listen.ip(), 80))
}

fn certbot_paths(public_origin: &Origin) -> (PathBuf, PathBuf) {
    let live = Path::new("/etc/letsencrypt/live").join(public_origin.host());
    (live.join("fullchain.pem"), live.join("privkey.pem"))
}

/// A config under /etc is for a system service, whose data lives in /var/lib/natter (systemd's StateDirectory);
/// anywhere else, next to the config.
fn default_data_dir(config_path: &Path) -> PathBuf {
    if config_path.starts_with("/etc") {
        PathBuf::from("/var/lib/natter")
    } else {
        match config_path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join("natter-data"),
            _ => PathBuf::from("./natter-data"),
        }
    }
}

/// `chat.example.com` suggests the blog at `https://example.com`.
fn default_blog_origin(public_origin: &Origin) -> Option<String> {
    let host = public_origin.host();
    let parent = host
        .strip_prefix("chat.")
        .or_else(|| host.strip_prefix("natter."))?;
    parent.contains('.').then(|| format!("https://{parent}"))
}

/// Writes the config with mode 0600: it holds the password hash. The text goes to a temp file next to the config
/// first, so the config is never half written: with `--force` the temp file replaces the old config in one rename;
/// without it, a hard link puts it in place only if no file has that name (checked atomically, in case one appeared
/// while the wizard asked).
fn write_config(path: &Path, config: &Config, force: bool) -> anyhow::Result<()> {
    let text = render(config)?;
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let temp = path.with_extension(format!("toml.{}.new", std::process::id()));
    crate::tls::write_private(&temp, text.as_bytes())?;
    let placed = if force {
        std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))
    } else {
        std::fs::hard_link(&temp, path).map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists; pass --force to replace it",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot write {}: {error}", path.display()),
        })
    };
    let _ = std::fs::remove_file(&temp);
    placed
}

/// The config as TOML, every key included (so the operator sees what can be changed), after a header that says
/// where it came from. It must parse back to the same config: checked here, so a wizard bug cannot write a file that
/// natter then refuses.
pub fn render(config: &Config) -> anyhow::Result<String> {
    let body = toml::to_string(config).context("the config renders as TOML")?;
    let text = format!(
        "# natter's configuration, written by `natter --init`. Every key is explained in config.example.toml.\n# It holds the admin password's hash: keep it readable by root and natter only (mode 0600).\n\n{body}"
    );
    let parsed = Config::parse(&text)
        .map_err(|error| anyhow::anyhow!("the written config does not parse: {error}"))?;
    anyhow::ensure!(
        parsed == *config,
        "the written config does not read back the same"
    );
    Ok(text)
}

/// What the wizard prints at the end: the tag to paste and how to run natter for good.
pub fn closing_words(path: &Path, config: &Config) -> String {
    let origin =
        Origin::parse(&config.server.public_url).expect("the wizard always sets a public URL");
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut text = format!("\nWrote {} (mode 0600).\n\n", path.display());
    text.push_str(&format!(
        "Paste this into your blog's pages, before </body>:\n\n    <script src=\"{origin}/widget.js\" defer></script>\n\n"
    ));
    text.push_str(&format!(
        "The dashboard is {origin}/admin/ (user {:?}).\n",
        config.admin.username
    ));
    match config.tls.mode {
        TlsMode::SelfSigned => text.push_str(
            "TLS: natter makes a self-signed certificate on first start; browsers will warn until it is accepted.\n     For visitors, use a real certificate (tls.mode = \"files\", e.g. certbot's fullchain.pem and privkey.pem).\n",
        ),
        TlsMode::Files => text.push_str(
            "TLS: natter reads the PEM files at start and again whenever they change (or on SIGHUP): certbot renewals need no restart.\n",
        ),
        TlsMode::Off if origin.is_https() => text.push_str(
            "TLS: off; the proxy in front of natter serves https and must pass X-Forwarded-For and the WebSocket upgrade of /cable.\n",
        ),
        TlsMode::Off => {}
        TlsMode::Acme => text.push_str(&format!(
            "TLS: natter obtains a trusted certificate for {} from {} at first start and renews it by itself.\n     Before that start: a DNS A (and AAAA, if this machine has IPv6) record for it must point to this machine,\n     and port 443 must be open from the internet (port 80 too, for the plain-HTTP listener). Until the first\n     certificate arrives TLS handshakes are refused; the log says what happened and what to do.\n",
            config.acme_domains().join(", "),
            config.tls.acme_directory
        )),
    }
    text.push_str("Web Push: natter makes its VAPID key on first start and keeps it in the store (backups carry it).\n\n");
    let command = invocation::command();
    let binary = invocation::binary();
    let unit = invocation::unit_file();
    text.push_str(&format!(
        "Try it now:\n\n    {command} --config {}\n\nRun it as a service (systemd):\n\n    sudo install -m 0755 {binary} /usr/local/bin/natter\n    sudo install -d -m 0700 /etc/natter\n    sudo install -m 0600 {} /etc/natter/natter.toml   # the unit reads it as a credential\n    sudo install -m 0644 {unit} /etc/systemd/system/natter.service\n    sudo systemctl daemon-reload && sudo systemctl enable --now natter\n    journalctl -u natter -f\n\n",
        path.display(),
        path.display()
    ));
    text.push_str(
        "Under systemd the data lives in /var/lib/natter (the unit's StateDirectory; it sets NATTER_DATA_DIR).\nBack it up with: sudo natter backup FILE --data-dir /var/lib/natter\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_public_url() {
        let public = Origin::parse("https://chat.example.com").unwrap();
        assert_eq!(default_listen(&public), "0.0.0.0:443".parse().unwrap());
        assert_eq!(
            default_tls(&public, "0.0.0.0:443".parse().unwrap()),
            TlsMode::Acme
        );
        let address = Origin::parse("https://203.0.113.7").unwrap();
        assert_eq!(
            default_tls(&address, "0.0.0.0:443".parse().unwrap()),
            TlsMode::SelfSigned
        );
        assert_eq!(
            default_tls(&public, "127.0.0.1:3100".parse().unwrap()),
            TlsMode::Off
        );
        assert_eq!(
            default_blog_origin(&public).as_deref(),
            Some("https://example.com")
        );
        let local = Origin::parse("http://127.0.0.1:3100").unwrap();
        assert_eq!(default_listen(&local), "127.0.0.1:3100".parse().unwrap());
        assert_eq!(default_tls(&local, default_listen(&local)), TlsMode::Off);
        assert_eq!(
            default_data_dir(Path::new("/etc/natter/natter.toml")),
            PathBuf::from("/var/lib/natter")
        );
        assert_eq!(
            default_data_dir(Path::new("natter.toml")),
            PathBuf::from("./natter-data")
        );
    }

    #[test]
    fn a_wrong_answer_is_asked_again_and_the_input_ending_writes_nothing() {
        let input = b"not a url\nhttps://chat.example.com\n" as &[u8];
        let mut terminal = Terminal {
            input,
            output: Vec::new(),
        };
        let origin = terminal
            .ask("Public URL", "http://127.0.0.1:3100", Origin::parse)
            .unwrap();
        assert_eq!(origin.as_str(), "https://chat.example.com");
        let shown = String::from_utf8(terminal.output.clone()).unwrap();
        assert_eq!(
            shown
                .matches("Public URL [http://127.0.0.1:3100]: ")
                .count(),
            2,
            "{shown}"
        );
        assert!(terminal
            .ask("Address", "", |answer| Ok(answer.to_string()))
            .is_err());
    }

    /// Issue 16: docs/ops.md said `--init --non-interactive` takes the wizard's defaults, but it left out the redirect
    /// from port 80 the wizard offers. Every default now agrees; only the allowed origins, which the wizard guesses
    /// from the public URL, a script must name.
    #[test]
    fn the_non_interactive_defaults_are_the_wizards() {
        let folder = std::env::temp_dir().join(format!("natter-init-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let password_file = folder.join("password");
        std::fs::write(&password_file, "a long enough password\n").unwrap();
        for url in [
            "https://chat.example.com",
            "http://127.0.0.1:3100",
            "https://chat.example.com:8443",
        ] {
            let options = InitOptions {
                non_interactive: true,
                config_path: PathBuf::from("/etc/natter/natter.toml"),
                public_url: Some(url.to_string()),
                admin_password_file: Some(password_file.clone()),
                ..InitOptions::default()
            };
            let mut from_flags = from_flags(&options).unwrap();
            let answers = "\n".repeat(20);
            let mut terminal = Terminal {
                input: answers.as_bytes(),
                output: Vec::new(),
            };
            let mut asked = ask(&options, &mut terminal).unwrap();
            for config in [&mut from_flags, &mut asked] {
                config.admin.password_hash.clear();
                config.widget.allowed_origins.clear();
            }
            assert_eq!(from_flags, asked, "{url}");
        }
        std::fs::remove_dir_all(folder).unwrap();
    }

    #[test]
    fn the_wizard_asks_for_an_smtp_relay_and_leaves_email_off_without_one() {
        let mut terminal = Terminal {
            input: "\n".as_bytes(),
            output: Vec::new(),
        };
        let mut config = Config::default();
        ask_email(&mut terminal, &mut config).unwrap();
        assert!(!config.email.enabled());
        let answers = "smtp.example.com\n\n\nnatter\nnone\nnot an address\nBlog chat <chat@example.com>\nme@example.com\n";
        let mut terminal = Terminal {
            input: answers.as_bytes(),
            output: Vec::new(),
        };
        ask_email(&mut terminal, &mut config).unwrap();
        let asked = String::from_utf8(terminal.output).unwrap();
        assert!(
            asked.contains("an address, optionally with a name"),
            "{asked}"
        );
        assert_eq!(config.email.smtp_host, "smtp.example.com");
        assert_eq!(config.email.smtp_port, 587);
        assert_eq!(config.email.smtp_security, SmtpSecurity::Starttls);
        assert_eq!(config.email.smtp_username, "natter");
        assert_eq!(config.email.from, "Blog chat <chat@example.com>");
        assert_eq!(config.email.owner_address, "me@example.com");
        config.validate().unwrap();
    }

    #[test]
    fn the_rendered_config_reads_back_the_same() {
        let mut config = Config::default();
        config.server.public_url = "https://chat.example.com".into();
        config.tls.mode = TlsMode::SelfSigned;
        config.tls.redirect_listen = Some("0.0.0.0:80".parse().unwrap());
        config.widget.allowed_origins = vec![Origin::parse("https://example.com").unwrap()];
        let text = render(&config).unwrap();
        assert_eq!(Config::parse(&text).unwrap(), config);
    }
}
