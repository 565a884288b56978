//! `tls.mode = "acme"` against Debian's real Pebble (an RFC 8555 test CA from Let's Encrypt) and
//! pebble-challtestsrv (its DNS server, answering 127.0.0.1 for every name), all on loopback: natter obtains a
//! certificate through TLS-ALPN-01 and through HTTP-01, a client that trusts only Pebble's root gets `/healthz` and
//! a `wss://` socket, a restart serves the stored certificate without a new order, a renewal swaps the certificate
//! under an open socket, a validation that fails is logged, retried with backoff, and costs nothing served, and a
//! CA that requires an external account binding is told the two keys and then issues.
//!
//! These tests run the real binary with a config file, as an operator would, and read its log. Pebble keeps its
//! default rejection of 5% of nonces (a real CA sends `badNonce` too); `PEBBLE_VA_NOSLEEP=1` keeps validation fast.
//! `.ci/run` installs the `pebble` package; without it these tests fail and say so.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;

const NATTER: &str = env!("CARGO_BIN_EXE_natter");
const DOMAIN: &str = "chat.natter.test";
const BLOG: &str = "http://blog.test:8080";
/// How long a step may take on a loaded machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// A port free on loopback now. Pebble must be told natter's ports before either starts, so they are picked first
/// (natter binds them again with SO_REUSEADDR).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines a child process writes, kept for the test to read.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Waits until `needle` has appeared `times` times; answers the last such line.
    async fn wait_for(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let lines = self.0.lock().unwrap();
                if let Some(line) = lines
                    .iter()
                    .filter(|line| line.contains(needle))
                    .nth(times - 1)
                {
                    return line.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{times}) in the log:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Kills its processes when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pebble and its DNS server, with an HTTPS certificate made here (so natter trusts Pebble's API through
/// `tls.acme_ca_root`).
struct Pebble {
    directory: String,
    management: SocketAddr,
    dns_management: SocketAddr,
    /// The CA that signed Pebble's own HTTPS certificate.
    api_root: PathBuf,
    log: Log,
    _processes: Processes,
}

impl Pebble {
    /// Pebble validates TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port` of 127.0.0.1; `settings` (a JSON
    /// object) adds to its config, e.g. `certificateValidityPeriod`; `environment` adds Pebble variables.
    fn start(
        temp: &Path,
        tls_port: u16,
        http_port: u16,
        settings: serde_json::Value,
        environment: &[(&str, &str)],
    ) -> Pebble {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "natter test: Pebble's API CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let certificate = params.signed_by(&key, &ca).unwrap();
        let api_root = temp.join("pebble-api-ca.pem");
        std::fs::write(&api_root, ca.pem()).unwrap();
        std::fs::write(temp.join("pebble.pem"), certificate.pem()).unwrap();
        std::fs::write(temp.join("pebble.key"), key.serialize_pem()).unwrap();

        let (listen, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": temp.join("pebble.pem"),
            "privateKey": temp.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        for (key, value) in settings.as_object().unwrap() {
            config["pebble"][key] = value.clone();
        }
        let config_path = temp.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let log = Log::default();
        let spawn = |command: &mut Command| {
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start {command:?} ({error}); install Debian's pebble package")
                });
            log.follow(child.stdout.take().unwrap());
            log.follow(child.stderr.take().unwrap());
            child
        };
        let dns_server = spawn(Command::new("pebble-challtestsrv").args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-management",
            &format!("127.0.0.1:{dns_management}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ]));
        let pebble = spawn(
            Command::new("pebble")
                .args(["-config", config_path.to_str().unwrap()])
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .envs(environment.iter().copied()),
        );
        Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            dns_management: SocketAddr::from(([127, 0, 0, 1], dns_management)),
            api_root,
            log,
            _processes: Processes(vec![dns_server, pebble]),
        }
    }

    async fn ready(&self) {
        self.log.wait_for("ACME directory available", 1).await;
        self.log.wait_for("Starting management server", 1).await;
    }

    /// The root Pebble issues under, from its management port: what a client of natter trusts.
    async fn root(&self) -> Vec<CertificateDer<'static>> {
        let answer = https_get(
            self.management,
            "localhost",
            client_config(
                CertificateDer::pem_file_iter(&self.api_root)
                    .unwrap()
                    .map(Result::unwrap),
            ),
            "/roots/0",
        )
        .await
        .expect("Pebble's management port answers");
        assert_eq!(answer.status, StatusCode::OK);
        CertificateDer::pem_slice_iter(answer.body.as_bytes())
            .map(Result::unwrap)
            .collect()
    }

    /// New orders Pebble has taken so far.
    fn orders(&self) -> usize {
        self.log.count("POST /order-plz")
    }

    /// From now on, Pebble's DNS answers `ip` for every name.
    async fn resolve_everything_to(&self, ip: &str) {
        let stream = TcpStream::connect(self.dns_management).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::post("/set-default-ipv4")
            .header("host", self.dns_management.to_string())
            .body(http_body_util::Full::new(Bytes::from(
                serde_json::json!({"ip": ip}).to_string(),
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// A natter process in mode `acme`.
struct Natter {
    child: Child,
    address: SocketAddr,
    log: Log,
}

impl Natter {
    /// `tls` adds lines to the `[tls]` section.
    fn start(data_dir: &Path, pebble: &Pebble, tls_port: u16, tls: &str) -> Natter {
        let address = SocketAddr::from(([127, 0, 0, 1], tls_port));
        let config = format!(
            "[server]\nlisten = \"{address}\"\npublic_url = \"https://{DOMAIN}:{tls_port}\"\ndata_dir = {data_dir:?}\nlog = \"info\"\n\n[widget]\nallowed_origins = [\"{BLOG}\"]\n\n[tls]\nmode = \"acme\"\nacme_email = \"owner@natter.test\"\nacme_directory = \"{}\"\nacme_ca_root = {:?}\n{tls}\n",
            pebble.directory, pebble.api_root
        );
        let config_path = data_dir.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(NATTER)
            .args(["--config", config_path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env("NATTER_ADMIN_PASSWORD", "a long and secret password")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("natter starts");
        let log = Log::default();
        log.follow(child.stdout.take().unwrap());
        log.follow(child.stderr.take().unwrap());
        Natter {
            child,
            address,
            log,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until natter serves a certificate `roots` trust (other than `not`); answers the leaf.
    async fn trusted_certificate(
        &self,
        roots: &[CertificateDer<'static>],
        not: Option<&CertificateDer<'static>>,
    ) -> CertificateDer<'static> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match https_get(
                self.address,
                DOMAIN,
                client_config(roots.iter().cloned()),
                "/healthz",
            )
            .await
            {
                Ok(answer) if Some(&answer.leaf) != not => {
                    assert_eq!(answer.status, StatusCode::OK);
                    return answer.leaf;
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "natter serves no trusted certificate; its log:\n{}",
                self.log.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, roots: &[CertificateDer<'static>], path: &str) -> Answer {
        https_get(
            self.address,
            DOMAIN,
            client_config(roots.iter().cloned()),
            path,
        )
        .await
        .expect("a trusted HTTPS answer")
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client (ring) that trusts exactly `roots`.
fn client_config(roots: impl Iterator<Item = CertificateDer<'static>>) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    address: SocketAddr,
    name: &str,
    config: rustls::ClientConfig,
) -> Result<TlsStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| error.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), stream)
        .await
        .map_err(|error| error.to_string())
}

struct Answer {
    status: StatusCode,
    body: String,
    leaf: CertificateDer<'static>,
}

async fn https_get(
    address: SocketAddr,
    name: &str,
    config: rustls::ClientConfig,
    path: &str,
) -> Result<Answer, String> {
    let stream = connect(address, name, config).await?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", name)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        leaf,
    })
}

/// A visitor's socket over `wss://`, welcomed.
async fn visitor_over_wss(
    natter: &Natter,
    roots: &[CertificateDer<'static>],
) -> WebSocket<TokioIo<Upgraded>> {
    let stream = connect(natter.address, DOMAIN, client_config(roots.iter().cloned()))
        .await
        .unwrap();
    let request = Request::get(format!("/cable?token={}", uuid::Uuid::new_v4()))
        .header("host", DOMAIN)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "actioncable-v1-json")
        .header("origin", BLOG)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (mut socket, _) = fastwebsockets::handshake::client(&TokioExecutor::new(), request, stream)
        .await
        .expect("the wss:// handshake succeeds");
    socket.set_auto_pong(true);
    let welcome = next_message(&mut socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    socket
}

/// The next ActionCable message that is not a ping.
async fn next_message(socket: &mut WebSocket<TokioIo<Upgraded>>) -> serde_json::Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.read_frame())
            .await
            .expect("a frame in time")
            .expect("the socket is open");
        if frame.opcode != OpCode::Text {
            continue;
        }
        let message: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        if message["type"] != "ping" {
            return message;
        }
    }
}

async fn subscribe(socket: &mut WebSocket<TokioIo<Upgraded>>) {
    let command = serde_json::json!({
        "command": "subscribe",
        "identifier": r#"{"channel":"VisitorChannel"}"#,
    });
    socket
        .write_frame(Frame::text(Payload::Owned(
            command.to_string().into_bytes(),
        )))
        .await
        .unwrap();
    let answer = next_message(socket).await;
    assert_eq!(answer["type"], "confirm_subscription", "{answer}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn tls_alpn_01_gives_a_trusted_certificate_and_a_restart_reuses_it_without_a_new_order() {
    let temp = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let pebble = Pebble::start(temp.path(), tls_port, free_port(), json!({}), &[]);
    pebble.ready().await;
    let data_dir = temp.path().join("data");
    let started = Instant::now();
    let natter = Natter::start(&data_dir, &pebble, tls_port, "");
    let roots = pebble.root().await;
    let leaf = natter.trusted_certificate(&roots, None).await;
    eprintln!(
        "start to a trusted certificate (TLS-ALPN-01): {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let said = natter.log.wait_for("ACME: certificate for", 1).await;
    assert!(
        said.contains(DOMAIN) && said.contains("through TLS-ALPN-01"),
        "{said}"
    );
    // Before the certificate, handshakes were refused rather than served with something untrusted.
    let mut socket = visitor_over_wss(&natter, &roots).await;
    subscribe(&mut socket).await;

    let metrics = natter.get(&roots, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metric(
            &metrics.body,
            "natter_tls_certificate_expiry_timestamp_seconds"
        ) > now
    );
    assert_eq!(metric(&metrics.body, "natter_acme_last_order_success"), 1);
    assert_eq!(
        metric(
            &metrics.body,
            "natter_acme_orders_total{result=\"success\"}"
        ),
        1
    );
    assert_eq!(mode(&data_dir.join("acme")), 0o700);
    assert_eq!(mode(&data_dir.join("acme/account.json")), 0o600);
    assert_eq!(mode(&data_dir.join("acme/certificate.json")), 0o600);

    // A crash and a restart: the stored certificate is served at once, and Pebble sees no new order.
    let orders = pebble.orders();
    assert!(orders >= 1);
    drop(socket);
    drop(natter);
    let mut natter = Natter::start(&data_dir, &pebble, tls_port, "");
    natter
        .log
        .wait_for("ACME: serving the stored certificate", 1)
        .await;
    natter.log.wait_for("ACME: renewal due from", 1).await;
    assert_eq!(natter.trusted_certificate(&roots, None).await, leaf);
    assert!(natter.running());
    assert_eq!(pebble.orders(), orders, "{}", pebble.log.text());
    assert_eq!(
        natter.log.count("ACME: ordering"),
        0,
        "{}",
        natter.log.text()
    );
}

#[tokio::test]
async fn http_01_on_the_redirect_listener_gives_a_trusted_certificate() {
    let temp = tempfile::tempdir().unwrap();
    let (tls_port, http_port) = (free_port(), free_port());
    // Pebble's TLS-ALPN-01 port leads nowhere: only HTTP-01 can succeed.
    let pebble = Pebble::start(temp.path(), free_port(), http_port, json!({}), &[]);
    pebble.ready().await;
    let natter = Natter::start(
        &temp.path().join("data"),
        &pebble,
        tls_port,
        &format!("redirect_listen = \"127.0.0.1:{http_port}\""),
    );
    let roots = pebble.root().await;
    natter.trusted_certificate(&roots, None).await;
    let said = natter.log.wait_for("ACME: certificate for", 1).await;
    assert!(said.contains("through HTTP-01"), "{said}");
    let mut socket = visitor_over_wss(&natter, &roots).await;
    subscribe(&mut socket).await;
}

#[tokio::test]
async fn renewal_swaps_the_certificate_under_an_open_socket_and_a_failed_one_keeps_it_and_backs_off(
) {
    let temp = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    // Certificates for 20 seconds: renewal is due after about 13. No authorization reuse, so that every renewal is
    // validated again (and the failing one below really fails).
    let pebble = Pebble::start(
        temp.path(),
        tls_port,
        free_port(),
        json!({"certificateValidityPeriod": 20}),
        &[("PEBBLE_AUTHZREUSE", "0")],
    );
    pebble.ready().await;
    let mut natter = Natter::start(&temp.path().join("data"), &pebble, tls_port, "");
    let roots = pebble.root().await;
    let first = natter.trusted_certificate(&roots, None).await;
    let mut socket = visitor_over_wss(&natter, &roots).await;

    let second = natter.trusted_certificate(&roots, Some(&first)).await;
    natter.log.wait_for("ACME: certificate for", 2).await;
    // The socket opened under the first certificate carries on.
    subscribe(&mut socket).await;

    // Now the name points elsewhere: the next renewal fails validation, is logged with the reason, and retried
    // after 10 seconds, then after 40; the second certificate is still served meanwhile.
    pebble.resolve_everything_to("127.0.0.2").await;
    let failure = natter
        .log
        .wait_for("ACME: the CA could not validate", 1)
        .await;
    assert!(
        failure.contains(DOMAIN) && failure.contains("next attempt in 10s"),
        "{failure}"
    );
    assert!(failure.contains("the current certificate"), "{failure}");
    let metrics = natter.get(&roots, "/metrics").await;
    assert_eq!(metric(&metrics.body, "natter_acme_last_order_success"), 0);
    assert_eq!(natter.get(&roots, "/healthz").await.leaf, second);
    let again = natter
        .log
        .wait_for("ACME: the CA could not validate", 2)
        .await;
    assert!(again.contains("next attempt in 40s"), "{again}");
    assert!(natter.running(), "natter keeps running");
}

#[tokio::test]
async fn a_ca_that_requires_an_external_account_binding_gets_it_from_the_two_keys() {
    let temp = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    // Made for this test; Pebble takes base64url without padding, as ZeroSSL hands it out.
    let hmac_key = "ZPs5qkhkjtx1btfbzNbXgJdOugT2T-Kd5o1Hv0dNEkj4Uhd7k2jw7PnShBaNjtAS";
    let pebble = Pebble::start(
        temp.path(),
        tls_port,
        free_port(),
        json!({"externalAccountBindingRequired": true, "externalAccountMACKeys": {"kid-1": hmac_key}}),
        &[],
    );
    pebble.ready().await;
    let data_dir = temp.path().join("data");
    let with_key = |key: &str| {
        Natter::start(
            &data_dir,
            &pebble,
            tls_port,
            &format!("acme_eab_kid = \"kid-1\"\nacme_eab_hmac_key = \"{key}\""),
        )
    };

    // Without the keys: one line that names them, and natter keeps running and retrying.
    let mut natter = Natter::start(&data_dir, &pebble, tls_port, "");
    let said = natter
        .log
        .wait_for("ACME: this CA requires an external account binding", 1)
        .await;
    assert!(
        said.contains("set tls.acme_eab_kid and tls.acme_eab_hmac_key")
            && said.contains("next attempt in 10s"),
        "{said}"
    );
    assert!(natter.running());
    drop(natter);

    // A key the CA does not know for kid-1 is refused, and said so.
    let wrong = "AAAAqkhkjtx1btfbzNbXgJdOugT2T-Kd5o1Hv0dNEkj4Uhd7k2jw7PnShBaNjtAS";
    let mut natter = with_key(wrong);
    let said = natter
        .log
        .wait_for("ACME: the CA refused natter's external account binding", 1)
        .await;
    assert!(said.contains("check tls.acme_eab_kid"), "{said}");
    assert!(natter.running());
    assert!(!natter.log.text().contains(wrong));
    drop(natter);

    // With them, the account is bound and the certificate served; the HMAC key appears in no log line.
    let natter = with_key(hmac_key);
    let roots = pebble.root().await;
    natter.trusted_certificate(&roots, None).await;
    let said = natter.log.wait_for("ACME: account created", 1).await;
    assert!(
        said.contains("bound to the external account \"kid-1\""),
        "{said}"
    );
    assert!(!natter.log.text().contains(hmac_key));
}

#[test]
fn init_offers_acme_for_a_public_domain_and_says_what_must_be_true_first() {
    let temp = tempfile::tempdir().unwrap();
    let password_file = temp.path().join("password");
    std::fs::write(&password_file, "a long and secret password\n").unwrap();
    let init = |name: &str, extra: &[&str]| {
        let config_path = temp.path().join(name);
        let output = Command::new(NATTER)
            .args(["--init", "--non-interactive", "--config"])
            .arg(&config_path)
            .args([
                "--public-url",
                "https://chat.example.com",
                "--admin-password-file",
            ])
            .arg(&password_file)
            .args(extra)
            .env_remove("NATTER_CONFIG")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}");
        let config =
            natter::config::Config::parse(&std::fs::read_to_string(config_path).unwrap()).unwrap();
        (config, said)
    };
    let (config, said) = init(
        "chosen.toml",
        &["--tls", "acme", "--acme-email", "owner@example.com"],
    );
    assert_eq!(config.tls.mode, natter::config::TlsMode::Acme);
    assert_eq!(config.tls.acme_email, "owner@example.com");
    assert!(
        said.contains("DNS A") && said.contains("port 443"),
        "{said}"
    );
    // Without --tls, a public domain gets ACME too.
    let (config, _) = init("default.toml", &[]);
    assert_eq!(config.tls.mode, natter::config::TlsMode::Acme);

    let version = Command::new(NATTER).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("acme certificates"));
}
