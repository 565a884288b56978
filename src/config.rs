//! The configuration: one TOML file parsed into one typed struct, with every default written here.
//!
//! Precedence, lowest first: the defaults in this file, the TOML file, `NATTER_*` environment variables, command-line
//! flags. Values are parsed once at this boundary (addresses, origins, paths), so the rest of natter never re-checks
//! them. Unknown keys are an error: a typo in a security setting must not be silently ignored.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// The largest config file natter reads; a real one is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// Names on one ACME certificate. Let's Encrypt allows 100, but natter serves one chat under a name or two; the bound
/// keeps one order's challenges few.
const MAX_ACME_DOMAINS: usize = 10;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub widget: WidgetConfig,
    pub limits: LimitsConfig,
    pub push: PushConfig,
    pub metrics: MetricsConfig,
    pub email: EmailConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The address the HTTP(S) listener binds.
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// The public URL browsers use to reach natter (scheme, host, optional port). Empty: derived from `listen`.
    pub public_url: String,
    /// Where the store, the certificate and the keys live.
    pub data_dir: PathBuf,
    /// The log filter (`error`, `warn`, `info`, `debug`, or a `tracing` directive); `RUST_LOG` wins over it.
    pub log: String,
    /// Proxies whose `X-Forwarded-For` header is believed; every other peer's address is its own.
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP: natter sits behind a TLS-terminating proxy, or on localhost.
    Off,
    /// A certificate natter makes itself with rcgen and keeps in the data dir.
    SelfSigned,
    /// PEM files, for example from certbot, reloaded when they change.
    Files,
    /// A certificate natter obtains and renews itself from an ACME CA (Let's Encrypt by default).
    Acme,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain (mode `files`).
    pub cert: PathBuf,
    /// PEM private key (mode `files`).
    pub key: PathBuf,
    /// An optional plain-HTTP listener that redirects every request to the HTTPS public URL.
    pub redirect_listen: Option<SocketAddr>,
    /// The names the ACME certificate covers (mode `acme`); empty means the host of `server.public_url`.
    pub acme_domains: Vec<String>,
    /// The contact address the ACME CA may write to about the certificate (mode `acme`); optional.
    pub acme_email: String,
    /// The ACME directory (mode `acme`): `letsencrypt`, `letsencrypt-staging`, or the URL of any RFC 8555 CA.
    pub acme_directory: String,
    /// A PEM file of CA certificates trusted, besides the web's roots, for the ACME directory's own HTTPS (a
    /// private CA, tests); empty: none.
    pub acme_ca_root: PathBuf,
    /// The key identifier of an external account binding (RFC 8555 section 7.3.4), for a CA that issues only to
    /// accounts it knows (ZeroSSL, company CAs); with `acme_eab_hmac_key`, or both empty.
    pub acme_eab_kid: String,
    /// The binding's HMAC key, base64url as the CA hands it out. A secret: never logged; `NATTER_ACME_EAB_HMAC_KEY`
    /// keeps it out of the config file.
    pub acme_eab_hmac_key: Secret,
}

/// Let's Encrypt's directories, which `tls.acme_directory` names by alias.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

impl TlsConfig {
    /// The URL of `acme_directory`, with its aliases resolved.
    pub fn acme_directory_url(&self) -> &str {
        match self.acme_directory.as_str() {
            "letsencrypt" => LETSENCRYPT_DIRECTORY,
            "letsencrypt-staging" => LETSENCRYPT_STAGING_DIRECTORY,
            url => url,
        }
    }

    /// The external account binding, when both keys are set: the key identifier and the HMAC key's bytes. The
    /// error names the keys at fault and never shows the HMAC key.
    pub fn acme_external_account(&self) -> Result<Option<(String, Vec<u8>)>, String> {
        let (kid, key) = (self.acme_eab_kid.trim(), self.acme_eab_hmac_key.0.trim());
        match (kid.is_empty(), key.is_empty()) {
            (true, true) => return Ok(None),
            (false, false) => {}
            _ => return Err("tls.acme_eab_kid and tls.acme_eab_hmac_key go together: set both to the external account binding credentials your CA gives you (the HMAC key also as NATTER_ACME_EAB_HMAC_KEY), or neither".into()),
        }
        if kid.len() > MAX_EAB_LENGTH || key.len() > MAX_EAB_LENGTH {
            return Err(format!("tls.acme_eab_kid and tls.acme_eab_hmac_key are at most {MAX_EAB_LENGTH} characters each; copy them exactly as the CA shows them"));
        }
        use base64ct::Encoding;
        // CAs show the key base64url without padding; a copy with padding is taken too.
        let bytes = base64ct::Base64UrlUnpadded::decode_vec(key.trim_end_matches('='))
            .ok()
            .filter(|bytes| !bytes.is_empty())
            .ok_or("tls.acme_eab_hmac_key is not base64url (letters, digits, - and _): copy the HMAC key exactly as the CA shows it")?;
        Ok(Some((kid.to_string(), bytes)))
    }
}

/// The longest external account binding key identifier or HMAC key natter takes; CAs' are under 100 characters.
const MAX_EAB_LENGTH: usize = 1024;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub username: String,
    /// An argon2id PHC string. Empty: `NATTER_ADMIN_PASSWORD`, or a generated password printed once and kept hashed
    /// in the store.
    pub password_hash: String,
    /// How long a login lasts.
    pub session_days: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Right,
    Left,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WidgetConfig {
    /// The exact origins (scheme://host[:port]) of the sites that embed the widget.
    pub allowed_origins: Vec<Origin>,
    pub color: String,
    pub position: Position,
    pub title: String,
    pub greeting: String,
    pub away_message: String,
    /// `auto` (the browser's language) or a language code such as `en`, `de`, `fr`.
    pub language: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Socket connections held at once, all kinds together.
    pub max_connections: usize,
    /// Socket connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Messages one visitor may send per minute.
    pub messages_per_minute: u32,
    /// New conversations one IP address may start per hour.
    pub conversations_per_hour: u32,
    /// Failed logins one IP address may make per 15 minutes before it must wait.
    pub login_failures: u32,
    /// Seconds a socket may stay open without subscribing to a channel.
    pub idle_socket_seconds: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PushWhen {
    /// Every visitor message.
    Always,
    /// Only while no admin dashboard is connected.
    WhenAway,
    /// Never.
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    pub when: PushWhen,
    /// The contact the push services see in the VAPID token (`mailto:` or `https:`).
    pub subject: String,
    /// Seconds during which further messages of one conversation raise no new notification.
    pub cooldown_seconds: u64,
    /// Allow subscriptions whose endpoint is on loopback over plain HTTP: for tests only.
    pub allow_loopback: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// Plain TCP, then STARTTLS before anything else is said (port 587); refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption at all: only for a relay on loopback, which `validate` checks.
    None,
}

/// Email: replies to a visitor who left, and news of conversations for the owner (`email`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP relay's host name or address. Empty: natter sends no email.
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_security: SmtpSecurity,
    /// Empty: no AUTH.
    pub smtp_username: String,
    /// A file holding the SMTP password (its first line); `NATTER_SMTP_PASSWORD` instead keeps it out of any file.
    pub smtp_password_file: PathBuf,
    /// A PEM file of certificates trusted for the relay besides the public web roots (a private relay, tests).
    pub smtp_ca_root: PathBuf,
    /// The sender, `"Name <address>"` or a bare address.
    pub from: String,
    /// Where the owner hears of new conversations; also the `Reply-To` of the emails visitors get.
    pub owner_address: String,
    /// When the owner gets an email about a visitor message: "always", "when-away" (no dashboard open and no push
    /// delivered) or "never".
    pub owner_when: PushWhen,
    /// After an email to the owner about a conversation, further messages of it wait this long and go in one digest.
    pub owner_cooldown_seconds: u64,
    /// How long natter waits after the owner's reply before emailing it to a visitor whose chat is closed; replies
    /// within that time go in one email.
    pub reply_delay_seconds: u64,
    /// How long a reply may sit unread in an open chat before it is emailed anyway.
    pub unread_delay_seconds: u64,
    /// Seconds before the first retry of an email the relay did not take (no connection, a 4xx answer); each further
    /// retry waits twice as long, up to an hour.
    pub retry_seconds: u64,
    /// Emails one address may get per day.
    pub per_address_per_day: u32,
    /// Emails natter sends per hour in all.
    pub per_hour: u32,
    /// Days the link in a visitor's email reopens the conversation.
    pub link_days: u32,
    /// The SMTP password, from `NATTER_SMTP_PASSWORD` or `smtp_password_file`; never written, shown or logged.
    #[serde(skip)]
    pub smtp_password: Secret,
}

/// A secret that `Debug` does not print.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl EmailConfig {
    pub fn enabled(&self) -> bool {
        !self.smtp_host.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A bearer token that opens `/metrics` to any address; without it only loopback may read it.
    pub token: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            public_url: String::new(),
            data_dir: PathBuf::from("./natter-data"),
            log: "info".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: TlsMode::Off,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            redirect_listen: None,
            acme_domains: Vec::new(),
            acme_email: String::new(),
            acme_directory: "letsencrypt".into(),
            acme_ca_root: PathBuf::new(),
            acme_eab_kid: String::new(),
            acme_eab_hmac_key: Secret::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            username: "admin".into(),
            password_hash: String::new(),
            session_days: 30,
        }
    }
}

impl Default for WidgetConfig {
    fn default() -> Self {
        WidgetConfig {
            allowed_origins: Vec::new(),
            color: "#2563eb".into(),
            position: Position::Right,
            title: "Chat with us".into(),
            greeting: "Hi! Ask us anything, we usually reply within a few hours.".into(),
            away_message: "We're away right now. Leave a message and we'll reply here.".into(),
            language: "auto".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 20_000,
            max_connections_per_ip: 64,
            messages_per_minute: 30,
            conversations_per_hour: 20,
            login_failures: 5,
            idle_socket_seconds: 30,
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            when: PushWhen::WhenAway,
            subject: "mailto:admin@localhost".into(),
            cooldown_seconds: 60,
            allow_loopback: false,
        }
    }
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: String::new(),
            smtp_password_file: PathBuf::new(),
            smtp_ca_root: PathBuf::new(),
            from: String::new(),
            owner_address: String::new(),
            owner_when: PushWhen::WhenAway,
            owner_cooldown_seconds: 900,
            reply_delay_seconds: 60,
            unread_delay_seconds: 300,
            retry_seconds: 30,
            per_address_per_day: 10,
            per_hour: 100,
            link_days: 30,
            smtp_password: Secret::default(),
        }
    }
}

/// A web origin, `scheme://host[:port]`, lower-cased, without a default port, path or trailing slash, so that
/// comparing two origins is comparing two strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Origin(String);

impl Origin {
    /// Parses an origin as a browser sends it in the `Origin` header, or as an operator writes it in the config
    /// (where a trailing slash is forgiven). `null`, paths, queries, user info and unknown schemes are refused.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let trimmed = text.trim().trim_end_matches('/');
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not an origin like https://blog.example.com"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{text:?}: the scheme must be http or https")),
        };
        if rest.is_empty()
            || rest.len() > 253 + 6
            // Browsers send hosts in ASCII (punycode); anything else, a path, a query or user info is not an origin.
            || !rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-.:[]_".contains(&byte))
        {
            return Err(format!(
                "{text:?} is not an origin like https://blog.example.com (ASCII host, no path, no query)"
            ));
        }
        let rest = rest.to_ascii_lowercase();
        // An IPv6 literal in brackets, or a name or IPv4 address; then an optional port.
        let (host, port) = match rest.strip_prefix('[') {
            Some(inside) => {
                let (address, after) = inside
                    .split_once(']')
                    .ok_or_else(|| format!("{text:?} has an unclosed ["))?;
                address
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("{text:?} has an invalid IPv6 address"))?;
                let port = match after {
                    "" => None,
                    _ => Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| format!("{text:?} has text after the ]"))?,
                    ),
                };
                (&rest[..address.len() + 2], port)
            }
            None => match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest.as_str(), None),
            },
        };
        if host.is_empty() || (!host.starts_with('[') && host.contains(['[', ']', ':'])) {
            return Err(format!("{text:?} has no valid host"));
        }
        let port = match port {
            Some(port) => {
                // Digits only: `parse` alone would take "+80" and make it a different origin from "80".
                let number: u16 = port
                    .parse()
                    .ok()
                    .filter(|_| !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()))
                    .ok_or_else(|| format!("{text:?} has an invalid port"))?;
                if number == default_port {
                    None
                } else {
                    Some(number)
                }
            }
            None => None,
        };
        Ok(Origin(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// The host part, without scheme or port (IPv6 addresses keep their brackets).
    pub fn host(&self) -> &str {
        let rest = self.0.split_once("://").map_or("", |(_, rest)| rest);
        match rest.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.is_empty() => {
                host
            }
            _ => rest,
        }
    }
}

/// A DNS name a public CA can issue for: ASCII labels of letters, digits and hyphens, at least two of them, not an
/// IP address and not `localhost`.
pub fn is_acme_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && name.parse::<IpAddr>().is_err()
        && !name.eq_ignore_ascii_case("localhost")
        && !name.to_ascii_lowercase().ends_with(".localhost")
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Origin::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The languages the widget speaks; `widget.language` is `auto` or one of these (a region such as `de-AT` is
/// allowed and spoken as its language).
pub const WIDGET_LANGUAGES: &[&str] = &["en", "de", "fr", "es"];

/// The environment variables natter reads, each with what it sets; `--help` lists them from here.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("NATTER_CONFIG", "the config file, as --config"),
    ("NATTER_LISTEN", "server.listen, e.g. 127.0.0.1:3100"),
    ("NATTER_DATA_DIR", "server.data_dir"),
    (
        "NATTER_PUBLIC_URL",
        "server.public_url, e.g. https://chat.example.com",
    ),
    (
        "NATTER_ALLOWED_ORIGINS",
        "widget.allowed_origins, comma-separated, e.g. https://blog.example.com",
    ),
    (
        "NATTER_ADMIN_PASSWORD",
        "the admin password, when the config has no admin.password_hash",
    ),
    ("NATTER_LOG", "server.log, e.g. info or natter=debug"),
    ("NATTER_METRICS_TOKEN", "metrics.token"),
    (
        "NATTER_ACME_EAB_HMAC_KEY",
        "tls.acme_eab_hmac_key, the ACME external account binding's secret",
    ),
    (
        "NATTER_PUSH_ALLOW_LOOPBACK",
        "push.allow_loopback (1 or true; for tests only)",
    ),
    (
        "NATTER_SMTP_PASSWORD",
        "the SMTP relay's password, instead of email.smtp_password_file",
    ),
    ("RUST_LOG", "a log filter that wins over server.log"),
];

/// Parses a listen address, `IP:PORT`. `localhost` is taken as 127.0.0.1, since that is what anyone who writes it
/// means; any other host name is refused with what to write instead: natter binds an address, not a name.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(format!(
        "{text:?} is not an address to listen on: write an IP address and a port, e.g. 127.0.0.1:3100 (this machine \
         only) or 0.0.0.0:3100 (every network interface)"
    ))
}

fn deserialize_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

/// What the command line says, applied over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads the config: the file when given (it must exist), then `NATTER_*` variables, then the flags.
    pub fn load(
        path: Option<&Path>,
        environment: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> anyhow::Result<Config> {
        let mut config = match path {
            Some(path) => Config::read_file(path)?,
            None => Config::default(),
        };
        config.apply_environment(environment)?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(data_dir) = &overrides.data_dir {
            config.server.data_dir = data_dir.clone();
        }
        config.validate()?;
        if config.email.enabled() {
            config.read_smtp_password()?;
        }
        Ok(config)
    }

    fn read_file(path: &Path) -> anyhow::Result<Config> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|error| {
            anyhow::anyhow!(
                "cannot open the config file {}: {error}; run `{} --init --config {}` to write one",
                path.display(),
                crate::invocation::command(),
                path.display()
            )
        })?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            anyhow::bail!(
                "{} is larger than 256 KiB; is it really natter's config?",
                path.display()
            );
        }
        Config::parse(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    /// Parses config text; the message names the key at fault.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string().trim().to_string())
    }

    fn apply_environment(&mut self, environment: &HashMap<String, String>) -> anyhow::Result<()> {
        let get = |name: &str| environment.get(name).filter(|value| !value.is_empty());
        if let Some(listen) = get("NATTER_LISTEN") {
            self.server.listen =
                parse_listen(listen).map_err(|error| anyhow::anyhow!("NATTER_LISTEN: {error}"))?;
        }
        if let Some(data_dir) = get("NATTER_DATA_DIR") {
            self.server.data_dir = PathBuf::from(data_dir);
        }
        if let Some(public_url) = get("NATTER_PUBLIC_URL") {
            self.server.public_url = public_url.clone();
        }
        if let Some(origins) = get("NATTER_ALLOWED_ORIGINS") {
            self.widget.allowed_origins = origins
                .split(',')
                .filter(|origin| !origin.trim().is_empty())
                .map(Origin::parse)
                .collect::<Result<_, _>>()
                .map_err(|error| anyhow::anyhow!("NATTER_ALLOWED_ORIGINS: {error}"))?;
        }
        if let Some(log) = get("NATTER_LOG") {
            self.server.log = log.clone();
        }
        if let Some(token) = get("NATTER_METRICS_TOKEN") {
            self.metrics.token = token.clone();
        }
        if let Some(password) = get("NATTER_SMTP_PASSWORD") {
            self.email.smtp_password = Secret(password.clone());
        }
        if let Some(key) = get("NATTER_ACME_EAB_HMAC_KEY") {
            self.tls.acme_eab_hmac_key = Secret(key.clone());
        }
        if let Some(allow) = get("NATTER_PUSH_ALLOW_LOOPBACK") {
            self.push.allow_loopback = allow == "1" || allow == "true";
        }
        Ok(())
    }

    /// Checks what the types cannot say; `load` calls it, and `natter --init` before it writes a config.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.server.public_url.is_empty() {
            Origin::parse(&self.server.public_url)
                .map_err(|error| anyhow::anyhow!("server.public_url: {error}"))?;
        }
        if self.admin.username.trim().is_empty() || self.admin.username.len() > 64 {
            anyhow::bail!("admin.username must be 1 to 64 characters");
        }
        if !self.admin.password_hash.is_empty()
            && !self.admin.password_hash.starts_with("$argon2id$")
        {
            anyhow::bail!(
                "admin.password_hash must be an argon2id hash ($argon2id$...); run `{} --init` to make one",
                crate::invocation::command()
            );
        }
        if !(1..=365).contains(&self.admin.session_days) {
            anyhow::bail!("admin.session_days must be between 1 and 365");
        }
        let color = self.widget.color.as_bytes();
        if !(color.len() == 7 || color.len() == 4)
            || color[0] != b'#'
            || !color[1..].iter().all(u8::is_ascii_hexdigit)
        {
            anyhow::bail!("widget.color must be a hex colour like #2563eb");
        }
        for (key, text, limit) in [
            ("widget.title", &self.widget.title, 80),
            ("widget.greeting", &self.widget.greeting, 500),
            ("widget.away_message", &self.widget.away_message, 500),
        ] {
            if text.chars().count() > limit {
                anyhow::bail!("{key} is longer than {limit} characters");
            }
        }
        let language = self.widget.language.as_str();
        let spoken = language.split('-').next().unwrap_or_default();
        if language != "auto" && !(WIDGET_LANGUAGES.contains(&spoken) && language.len() <= 16) {
            anyhow::bail!(
                "widget.language = {language:?} is not a language the widget speaks: use \"auto\" (the visitor's browser \
                 decides) or one of {}",
                WIDGET_LANGUAGES.join(", ")
            );
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_ip == 0 {
            anyhow::bail!(
                "limits.max_connections and limits.max_connections_per_ip must be at least 1"
            );
        }
        if self.tls.mode == TlsMode::Files
            && (self.tls.cert.as_os_str().is_empty() || self.tls.key.as_os_str().is_empty())
        {
            anyhow::bail!(
                "tls.mode = \"files\" needs tls.cert and tls.key (PEM files, e.g. from certbot)"
            );
        }
        if self.tls.mode == TlsMode::Off && self.tls.redirect_listen.is_some() {
            anyhow::bail!("tls.redirect_listen redirects to HTTPS, which needs tls.mode = \"self-signed\", \"files\" or \"acme\"");
        }
        if self.tls.mode == TlsMode::Acme {
            self.validate_acme()?;
        }
        if !(self.push.subject.starts_with("mailto:") || self.push.subject.starts_with("https:")) {
            anyhow::bail!("push.subject must start with mailto: or https:");
        }
        self.validate_email()
    }

    /// The `[email]` section, checked only when email is on (`smtp_host` set), so a half-written section that is off
    /// stops nothing.
    fn validate_email(&self) -> anyhow::Result<()> {
        let email = &self.email;
        if !email.enabled() {
            return Ok(());
        }
        if email.smtp_port == 0 {
            anyhow::bail!("email.smtp_port must be a port number (587 for STARTTLS, 465 for TLS)");
        }
        if email.smtp_security == SmtpSecurity::None {
            let loopback = email.smtp_host == "localhost"
                || email
                    .smtp_host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                anyhow::bail!(
                    "email.smtp_security = \"none\" is only for a relay on loopback (127.0.0.1, ::1, localhost); \
                     use \"starttls\" or \"tls\" for {}",
                    email.smtp_host
                );
            }
        }
        if email.from.parse::<lettre::message::Mailbox>().is_err() {
            anyhow::bail!(
                "email.from must be an address, optionally with a name: \"Blog chat <chat@example.com>\""
            );
        }
        if !email.owner_address.is_empty()
            && email.owner_address.parse::<lettre::Address>().is_err()
        {
            anyhow::bail!("email.owner_address must be an email address like you@example.com");
        }
        if email.retry_seconds == 0 {
            anyhow::bail!("email.retry_seconds must be at least 1");
        }
        if email.per_address_per_day == 0 || email.per_hour == 0 {
            anyhow::bail!("email.per_address_per_day and email.per_hour must be at least 1");
        }
        if !(1..=365).contains(&email.link_days) {
            anyhow::bail!("email.link_days must be between 1 and 365");
        }
        Ok(())
    }

    /// Reads `email.smtp_password_file` when it is set and no `NATTER_SMTP_PASSWORD` was given.
    pub fn read_smtp_password(&mut self) -> anyhow::Result<()> {
        let email = &mut self.email;
        if !email.smtp_password.0.is_empty() || email.smtp_password_file.as_os_str().is_empty() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&email.smtp_password_file).map_err(|error| {
            anyhow::anyhow!(
                "cannot read email.smtp_password_file {}: {error}",
                email.smtp_password_file.display()
            )
        })?;
        email.smtp_password = Secret(text.lines().next().unwrap_or_default().to_string());
        Ok(())
    }

    /// The names an ACME certificate is for: `tls.acme_domains`, or the host of `server.public_url`.
    pub fn acme_domains(&self) -> Vec<String> {
        if !self.tls.acme_domains.is_empty() {
            return self.tls.acme_domains.clone();
        }
        Origin::parse(&self.server.public_url)
            .map(|origin| vec![origin.host().to_string()])
            .unwrap_or_default()
    }

    fn validate_acme(&self) -> anyhow::Result<()> {
        let domains = self.acme_domains();
        if domains.is_empty() {
            anyhow::bail!("tls.mode = \"acme\" needs the domain the certificate is for: set server.public_url (e.g. https://chat.example.com) or tls.acme_domains");
        }
        if domains.len() > MAX_ACME_DOMAINS {
            anyhow::bail!("tls.acme_domains lists more than {MAX_ACME_DOMAINS} names; natter needs one or a few");
        }
        for domain in &domains {
            if !is_acme_domain(domain) {
                anyhow::bail!("{domain:?} cannot have an ACME certificate: it must be a public DNS name like chat.example.com (not an IP address, localhost or a name without a dot); set server.public_url or tls.acme_domains, or choose tls.mode = \"self-signed\"");
            }
        }
        let email = &self.tls.acme_email;
        if !email.is_empty()
            && (email.len() > 254
                || email.contains(char::is_whitespace)
                || !email.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && host.contains('.') && !host.contains('@')
                }))
        {
            anyhow::bail!("tls.acme_email {email:?} is not an email address like you@example.com (or leave it empty)");
        }
        let url = self.tls.acme_directory_url();
        if !url.starts_with("https://") || url.len() > 2048 {
            anyhow::bail!("tls.acme_directory must be \"letsencrypt\", \"letsencrypt-staging\" or an https:// URL of an ACME directory, not {:?}", self.tls.acme_directory);
        }
        self.tls
            .acme_external_account()
            .map_err(anyhow::Error::msg)?;
        Ok(())
    }

    /// The origin browsers see natter at: `server.public_url`, or one made from the bound address.
    pub fn public_origin(&self, bound: SocketAddr) -> Origin {
        if let Ok(origin) = Origin::parse(&self.server.public_url) {
            return origin;
        }
        let scheme = if self.tls.mode == TlsMode::Off {
            "http"
        } else {
            "https"
        };
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            match bound.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            }
        };
        Origin::parse(&format!("{scheme}://{host}:{}", bound.port()))
            .expect("a bound address is an origin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_lists_every_key_at_its_default() {
        let text = include_str!("../config.example.toml");
        let parsed = Config::parse(text).expect("config.example.toml parses");
        assert_eq!(parsed, Config::default());
        let rendered = toml::to_string(&Config::default()).unwrap();
        for line in rendered.lines().filter(|line| line.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                text.lines().any(|example| example
                    .trim_start_matches("# ")
                    .starts_with(&format!("{key} = "))),
                "config.example.toml does not document {key}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap_err();
        assert!(error.contains("listne"), "{error}");
    }

    #[test]
    fn origins_are_normalized_and_strict() {
        assert_eq!(
            Origin::parse("HTTPS://Blog.Example.com:443/")
                .unwrap()
                .as_str(),
            "https://blog.example.com"
        );
        // Found by the origin fuzz target: a signed or zero-padded port made a second spelling of one origin.
        assert!(Origin::parse("http://t:+80").is_err());
        assert!(Origin::parse("http://.f\u{5c2}\u{a0}:80").is_err());
        assert!(Origin::parse("http://h]z]]:000]z]]:80").is_err());
        assert!(Origin::parse("http://[::1:80").is_err());
        assert_eq!(
            Origin::parse("http://[::1]:80").unwrap().as_str(),
            "http://[::1]"
        );
        assert_eq!(Origin::parse("http://t:080").unwrap().as_str(), "http://t");
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host(), "[::1]");
        for bad in [
            "null",
            "blog.example.com",
            "ftp://x",
            "https://a.com/path",
            "https://u@a.com",
            "https://",
            "https://a.com:99999",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} must be refused");
        }
        assert_ne!(
            Origin::parse("https://example.com.evil.net").unwrap(),
            Origin::parse("https://example.com").unwrap()
        );
    }

    /// Issue 16: `widget.language = "it"` was accepted and silently shown in English.
    #[test]
    fn a_language_the_widget_does_not_speak_stops_natter_naming_the_key() {
        let config = Config::parse("[widget]\nlanguage = \"it\"\n").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("widget.language") && error.contains("auto") && error.contains("de"),
            "{error}"
        );
        for good in ["auto", "en", "de", "fr", "es", "de-AT"] {
            let config = Config::parse(&format!("[widget]\nlanguage = \"{good}\"\n")).unwrap();
            assert!(config.validate().is_ok(), "{good}");
        }
    }

    /// Issue 16: `--listen localhost:3100` answered "invalid socket address syntax".
    #[test]
    fn a_listen_address_takes_localhost_and_says_what_to_write_for_other_names() {
        assert_eq!(
            parse_listen("localhost:3100"),
            Ok("127.0.0.1:3100".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        let error = parse_listen("chat.example.com:3100").unwrap_err();
        assert!(
            error.contains("127.0.0.1:3100") && error.contains("0.0.0.0:3100"),
            "{error}"
        );
        let error = Config::parse("[server]\nlisten = \"example.com:1\"\n").unwrap_err();
        assert!(
            error.contains("listen") && error.contains("127.0.0.1:3100"),
            "{error}"
        );
        let config = Config::parse("[server]\nlisten = \"localhost:4000\"\n").unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let environment = HashMap::from([
            ("NATTER_LISTEN".to_string(), "127.0.0.1:4000".to_string()),
            (
                "NATTER_ALLOWED_ORIGINS".to_string(),
                "https://a.com, http://b.org:81".to_string(),
            ),
        ]);
        let overrides = Overrides {
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            data_dir: None,
        };
        let config = Config::load(None, &environment, &overrides).unwrap();
        assert_eq!(config.server.listen.port(), 5000);
        assert_eq!(config.widget.allowed_origins.len(), 2);
        let bad = HashMap::from([("NATTER_LISTEN".to_string(), "nope".to_string())]);
        assert!(Config::load(None, &bad, &Overrides::default())
            .unwrap_err()
            .to_string()
            .contains("NATTER_LISTEN"));
    }

    #[test]
    fn an_external_account_binding_needs_both_keys_a_base64url_key_and_takes_the_key_from_the_environment(
    ) {
        let acme = "[server]\npublic_url = \"https://chat.example.com\"\n[tls]\nmode = \"acme\"\n";
        let load = |text: &str, environment: &[(&str, &str)]| {
            let path = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(path.path(), format!("{acme}{text}")).unwrap();
            let environment = environment
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
            Config::load(Some(path.path()), &environment, &Overrides::default())
                .map_err(|error| error.to_string())
        };
        let config = load("", &[]).unwrap();
        assert_eq!(config.tls.acme_external_account(), Ok(None));
        let secret = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw";
        let alone = load(&format!("acme_eab_hmac_key = \"{secret}\"\n"), &[]).unwrap_err();
        assert!(
            alone.contains("tls.acme_eab_kid") && alone.contains("both"),
            "{alone}"
        );
        assert!(!alone.contains(secret));
        let error = load("acme_eab_kid = \"kid-1\"\n", &[]).unwrap_err();
        assert!(error.contains("go together"), "{error}");
        let bad = "not+base64/at all!";
        let error = load(
            &format!("acme_eab_kid = \"kid-1\"\nacme_eab_hmac_key = \"{bad}\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(error.contains("is not base64url"), "{error}");
        assert!(!error.contains(bad));
        let config = load(
            "acme_eab_kid = \"kid-1\"\n",
            &[("NATTER_ACME_EAB_HMAC_KEY", &format!("{secret}=="))],
        )
        .unwrap();
        assert_eq!(
            config.tls.acme_external_account(),
            Ok(Some((
                "kid-1".to_string(),
                b"secret-hmac-key-for-tests".to_vec()
            )))
        );
        assert!(!format!("{config:?}").contains(secret));
    }
}
