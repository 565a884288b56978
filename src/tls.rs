//! TLS served by natter itself: rustls with ring, TLS 1.2 and 1.3 only, ALPN `http/1.1`.
//!
//! Two sources of a certificate, chosen by `tls.mode`:
//! - `self-signed`: natter makes an ECDSA P-256 certificate with rcgen on first start and keeps it in
//!   `<data_dir>/tls/`, so its fingerprint survives restarts (a visitor who accepted it once is not asked again). Its
//!   names are the public host, `localhost` and the loopback addresses. Browsers do not trust it: natter says so at
//!   start, with the fingerprint to compare.
//! - `files`: PEM files such as certbot's `fullchain.pem` and `privkey.pem`. They are read again when they change on
//!   disk (checked every `RELOAD_INTERVAL`) or on SIGHUP, and the next handshake presents the new certificate; the
//!   connections already open keep theirs. A half-written renewal (a key that does not match its certificate, a file
//!   that does not parse) is refused with a warning and the old certificate stays until the pair is whole.
//!
//! - `acme`: a certificate natter obtains and renews itself (see `acme`). Until the first one arrives, handshakes are
//!   refused (with a log line a minute at most), and the `acme-tls/1` protocol answers TLS-ALPN-01 challenges.
//!
//! The certificate sits behind `Certificates`, a rustls `ResolvesServerCert`: the `ServerConfig` is built once and a
//! reload or renewal swaps one `Arc`, so a handshake never sees half a change and open connections keep theirs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Origin, TlsMode};

/// A client must finish its TLS handshake within this time; without a limit, a peer that opens a connection and
/// sends nothing would hold a socket and a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often mode `files` looks at the PEM files. Renewals happen every few weeks; a few seconds of delay is nothing,
/// and reading two small files costs nothing either.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Where mode `self-signed` keeps its certificate and key, under the data dir.
const SELF_SIGNED_DIR: &str = "tls";
const SELF_SIGNED_CERT: &str = "self-signed.crt";
const SELF_SIGNED_KEY: &str = "self-signed.key";
/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737): a handshake offering it gets the challenge certificate
/// for its server name, and the connection is closed after the handshake.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// How often, at most, a handshake refused for want of a certificate is logged: a bot knocking every second must not
/// flood the log, and one line a minute still tells the operator.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// natter's TLS side: the acceptor for the listener and what it needs to reload.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Certificates>,
    cert_path: PathBuf,
    key_path: PathBuf,
    mode: TlsMode,
}

impl Tls {
    /// Prepares TLS for `config`, or answers `None` when `tls.mode` is `off`. In mode `self-signed` this makes the
    /// certificate when the data dir has none yet.
    pub fn from_config(
        config: &Config,
        public_origin: &Origin,
        bound: SocketAddr,
    ) -> anyhow::Result<Option<Tls>> {
        let (cert_path, key_path) = match config.tls.mode {
            TlsMode::Off => return Ok(None),
            // The acme module installs the stored certificate, or the first one it obtains.
            TlsMode::Acme => return Ok(Some(Tls::without_certificate(config)?)),
            TlsMode::Files => (config.tls.cert.clone(), config.tls.key.clone()),
            TlsMode::SelfSigned => {
                ensure_self_signed(&config.server.data_dir, public_origin, bound)?
            }
        };
        let loaded = load_pair(&cert_path, &key_path).map_err(|error| {
            anyhow::anyhow!("{error:#}; check tls.cert and tls.key (PEM files), or choose tls.mode = \"self-signed\"")
        })?;
        let resolver = Arc::new(Certificates::default());
        resolver.install(loaded);
        let acceptor = TlsAcceptor::from(Arc::new(server_config(resolver.clone(), &[])?));
        Ok(Some(Tls {
            acceptor,
            resolver,
            cert_path,
            key_path,
            mode: config.tls.mode,
        }))
    }

    /// Mode `acme` before its certificate is known: handshakes are refused, `acme-tls/1` is offered.
    fn without_certificate(config: &Config) -> anyhow::Result<Tls> {
        let resolver = Arc::new(Certificates::default());
        let acceptor =
            TlsAcceptor::from(Arc::new(server_config(resolver.clone(), &[ACME_TLS_ALPN])?));
        let directory = config.server.data_dir.join("acme");
        Ok(Tls {
            acceptor,
            resolver,
            cert_path: directory.clone(),
            key_path: directory,
            mode: config.tls.mode,
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The SHA-256 fingerprint of the certificate served now, as browsers show it (`AB:CD:...`); empty while there
    /// is none.
    pub fn fingerprint(&self) -> String {
        self.resolver
            .fingerprint
            .read()
            .expect("the fingerprint lock is never poisoned")
            .clone()
    }

    /// Reads the PEM files again; answers whether the certificate changed. On an error the old one stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let loaded = load_pair(&self.cert_path, &self.key_path)?;
        if loaded.fingerprint == self.fingerprint() {
            return Ok(false);
        }
        self.resolver.install(loaded);
        Ok(true)
    }

    /// Serves this PEM chain and key from the next handshake on (a renewal's hot swap); open connections keep the
    /// certificate they started with.
    pub fn install_pem(&self, chain_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        self.resolver.install(parse_pair(chain_pem, key_pem)?);
        Ok(())
    }

    /// Answers TLS-ALPN-01 for `domain` with `certificate` (`None` withdraws it).
    pub fn set_challenge(&self, domain: &str, certificate: Option<CertifiedKey>) {
        let mut challenges = self
            .resolver
            .challenges
            .write()
            .expect("the challenge lock is never poisoned");
        match certificate {
            Some(certificate) => {
                challenges.insert(domain.to_ascii_lowercase(), Arc::new(certificate))
            }
            None => challenges.remove(&domain.to_ascii_lowercase()),
        };
    }

    /// In mode `files`, watches the PEM files and SIGHUP until `shutdown` flips, reloading on either.
    pub fn spawn_reloader(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.mode != TlsMode::Files {
            return;
        }
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut last_seen = file_stamp(&tls.cert_path, &tls.key_path);
            let mut interval = tokio::time::interval(RELOAD_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup_signal = async {
                    match hangup.as_mut() {
                        Some(signal) => drop(signal.recv().await),
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup_signal = std::future::pending::<()>();
                let forced = tokio::select! {
                    () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => return,
                    () = hangup_signal => true,
                    _ = interval.tick() => false,
                };
                let stamp = file_stamp(&tls.cert_path, &tls.key_path);
                if !forced && stamp == last_seen {
                    continue;
                }
                match tls.reload() {
                    Ok(true) => {
                        last_seen = stamp;
                        tracing::info!(fingerprint = %tls.fingerprint(), "TLS certificate reloaded");
                    }
                    Ok(false) => last_seen = stamp,
                    // A renewal caught half-written: keep the old certificate and look again at the next tick
                    // (`last_seen` stays, so the same change is tried again).
                    Err(error) => {
                        tracing::warn!("TLS certificate not reloaded, the old one stays: {error:#}")
                    }
                }
            }
        });
    }
}

/// What rustls presents: the certificate, swapped whole on reload or renewal, and the TLS-ALPN-01 challenge
/// certificates by server name while an ACME validation runs.
#[derive(Debug, Default)]
struct Certificates {
    /// `None` only in mode `acme` before the first certificate.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The fingerprint of `current`, empty while there is none.
    fingerprint: RwLock<String>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// When a refused handshake was last logged.
    refusal_logged: Mutex<Option<Instant>>,
}

impl Certificates {
    fn install(&self, loaded: Loaded) {
        *self
            .current
            .write()
            .expect("the certificate lock is never poisoned") = Some(Arc::new(loaded.key));
        *self
            .fingerprint
            .write()
            .expect("the fingerprint lock is never poisoned") = loaded.fingerprint;
    }

    fn log_refusal(&self) {
        let mut logged = self
            .refusal_logged
            .lock()
            .expect("the log lock is never poisoned");
        if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
            *logged = Some(Instant::now());
            tracing::warn!("TLS handshake refused: no certificate yet; the ACME lines of this log say why and when natter tries again");
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = client_hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|protocol| protocol == ACME_TLS_ALPN));
        if validation {
            let name = client_hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .expect("the challenge lock is never poisoned")
                .get(&name)
                .cloned();
        }
        let current = self
            .current
            .read()
            .expect("the certificate lock is never poisoned")
            .clone();
        if current.is_none() {
            self.log_refusal();
        }
        current
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 with ring's cipher suites (all AEAD with forward secrecy), ALPN `http/1.1` (natter speaks
/// HTTP/1.1 only; the WebSocket upgrade needs it) and `more_protocols` after it, so a browser never picks them.
fn server_config(
    resolver: Arc<Certificates>,
    more_protocols: &[&[u8]],
) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("ring supports TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
        .alpn_protocols
        .extend(more_protocols.iter().map(|protocol| protocol.to_vec()));
    Ok(config)
}

/// A certificate chain and its key, for rustls.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(chain, key, &provider())
}

struct Loaded {
    key: CertifiedKey,
    fingerprint: String,
}

/// Reads a PEM certificate chain and its private key and checks that they belong together.
fn load_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<Loaded> {
    let chain = std::fs::read(cert_path)
        .with_context(|| format!("cannot read the certificate {}", cert_path.display()))?;
    let key = std::fs::read(key_path)
        .with_context(|| format!("cannot read a PEM private key from {}", key_path.display()))?;
    parse_pair(&chain, &key).with_context(|| {
        format!(
            "{} and {} are not a certificate chain and its key",
            cert_path.display(),
            key_path.display()
        )
    })
}

fn parse_pair(chain_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .context("not a PEM certificate chain")?;
    let Some(leaf) = chain.first() else {
        anyhow::bail!("no certificate in the PEM chain");
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("not a PEM private key")?;
    let key = certified_key(chain, key).context("the key does not fit the certificate")?;
    Ok(Loaded { key, fingerprint })
}

/// SHA-256 of a certificate, `AB:CD:...`, as browsers and `openssl x509 -fingerprint -sha256` show it.
pub fn fingerprint(certificate: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What `file_stamp` compares: modification time and length of both files. certbot replaces the `live/` symlinks,
/// which `metadata` follows, so a renewal changes the stamp.
type Stamp = Option<(std::time::SystemTime, u64, std::time::SystemTime, u64)>;

fn file_stamp(cert_path: &Path, key_path: &Path) -> Stamp {
    let cert = std::fs::metadata(cert_path).ok()?;
    let key = std::fs::metadata(key_path).ok()?;
    Some((
        cert.modified().ok()?,
        cert.len(),
        key.modified().ok()?,
        key.len(),
    ))
}

/// The certificate and key of mode `self-signed`, made on first use and kept in `<data_dir>/tls/`.
fn ensure_self_signed(
    data_dir: &Path,
    public_origin: &Origin,
    bound: SocketAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let directory = data_dir.join(SELF_SIGNED_DIR);
    let cert_path = directory.join(SELF_SIGNED_CERT);
    let key_path = directory.join(SELF_SIGNED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&directory).with_context(|| {
        format!(
            "cannot create {}; check server.data_dir",
            directory.display()
        )
    })?;
    let (certificate, key) = generate_self_signed(&self_signed_names(public_origin, bound))?;
    // Each whole or not at all, the certificate last: a stop in between leaves no certificate, and the pair is made
    // again.
    replace_private(&key_path, key.as_bytes())?;
    replace_private(&cert_path, certificate.as_bytes())?;
    tracing::info!(path = %cert_path.display(), "made a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// The names a self-signed certificate covers: the public host, the address natter listens on, and loopback.
pub fn self_signed_names(public_origin: &Origin, bound: SocketAddr) -> Vec<String> {
    let host = public_origin
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut names = vec![host];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    for name in [
        "localhost".to_string(),
        Ipv4Addr::LOCALHOST.to_string(),
        Ipv6Addr::LOCALHOST.to_string(),
    ] {
        names.push(name);
    }
    let mut unique = Vec::new();
    for name in names {
        if !name.is_empty() && !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// An ECDSA P-256 certificate for `names` (DNS names or IP addresses), valid for ten years: natter cannot renew a
/// certificate that visitors pinned by hand, so it should not expire under them. Answers (certificate PEM, key PEM).
pub fn generate_self_signed(names: &[String]) -> anyhow::Result<(String, String)> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        params.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("{name:?} cannot be a certificate name"))?,
            ),
        });
    }
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("natter", String::as_str),
    );
    name.push(rcgen::DnType::OrganizationName, "natter (self-signed)");
    params.distinguished_name = name;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // One day back, so a client whose clock lags a little still accepts it.
    let not_before = i64::try_from(now).unwrap_or(i64::MAX) - 86_400;
    params.not_before = rcgen::date_time_ymd(1970, 1, 1)
        + Duration::from_secs(u64::try_from(not_before).unwrap_or(0));
    params.not_after = params.not_before + Duration::from_secs(10 * 365 * 86_400);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// Writes a secret: mode 0600 from the start (never world-readable, not even for a moment), replacing any old file.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces `path` with `contents` whole: written and synced under a temporary name (mode 0600), renamed over it, and
/// the directory synced, so a crash or a power cut leaves the old file or the new one, never a part of either.
pub fn replace_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    write_private(&temporary, contents)?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::File::open(directory)
            .and_then(|directory| directory.sync_all())
            .with_context(|| format!("cannot sync {}", directory.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop between the key's rename and the certificate's leaves a key alone: the pair is made again, and the
    /// certificate matches the key.
    #[test]
    fn a_self_signed_key_left_without_its_certificate_is_made_again_as_a_pair() {
        let data_dir = tempfile::tempdir().unwrap();
        let directory = data_dir.path().join(SELF_SIGNED_DIR);
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(
            directory.join(SELF_SIGNED_KEY),
            b"a key from before the stop",
        )
        .unwrap();
        std::fs::write(directory.join(format!("{SELF_SIGNED_CERT}.new")), b"torn").unwrap();
        let origin = Origin::parse("https://chat.example").unwrap();
        let (cert_path, key_path) =
            ensure_self_signed(data_dir.path(), &origin, "127.0.0.1:443".parse().unwrap()).unwrap();
        let certificate = std::fs::read(&cert_path).unwrap();
        let key = std::fs::read(&key_path).unwrap();
        assert!(certificate.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        parse_pair(&certificate, &key).expect("the certificate is the key's");
    }

    #[test]
    fn self_signed_names_cover_the_public_host_and_loopback_once() {
        let origin = Origin::parse("https://chat.example.com").unwrap();
        let names = self_signed_names(&origin, "0.0.0.0:443".parse().unwrap());
        assert_eq!(names, ["chat.example.com", "localhost", "127.0.0.1", "::1"]);
        let origin = Origin::parse("https://[::1]:8443").unwrap();
        let names = self_signed_names(&origin, "[::1]:8443".parse().unwrap());
        assert_eq!(names, ["::1", "localhost", "127.0.0.1"]);
    }

    #[test]
    fn a_generated_pair_loads_and_a_mismatched_key_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (cert, key) = generate_self_signed(&["localhost".to_string()]).unwrap();
        let (_, other_key) = generate_self_signed(&["localhost".to_string()]).unwrap();
        let cert_path = directory.path().join("cert.pem");
        let key_path = directory.path().join("key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let loaded = load_pair(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.fingerprint.len(), 32 * 3 - 1);
        std::fs::write(&key_path, other_key).unwrap();
        let error = load_pair(&cert_path, &key_path)
            .err()
            .expect("a foreign key is refused");
        assert!(format!("{error:#}").contains("does not fit"), "{error:#}");
    }
}
