//! The `natter` command as an operator meets it: `--init` on a terminal (a real pseudo-terminal) and from flags, the
//! config it writes starting a server that answers over TLS, the refusals, and `--version`.
//!
//! These tests run the real binary. The pseudo-terminal comes from Python's `pty` module (CPython is on every
//! machine natter is built on), driven by a short script that waits for each prompt before it types the answer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use argon2::PasswordVerifier;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use natter::config::{Config, TlsMode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const NATTER: &str = env!("CARGO_BIN_EXE_natter");
const PASSWORD: &str = "a long and secret password";
/// How long a step may take on a loaded machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(30);

fn natter() -> Command {
    let mut command = Command::new(NATTER);
    command
        .env_remove("NATTER_CONFIG")
        .env_remove("NATTER_ADMIN_PASSWORD")
        .env_remove("RUST_LOG");
    command
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn verifies(hash: &str, password: &str) -> bool {
    let parsed = argon2::PasswordHash::new(hash).expect("a PHC string");
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A natter server process, killed when dropped.
struct Running {
    child: Child,
    address: SocketAddr,
}

impl Running {
    /// Starts `natter --config PATH` and waits for the line that says where it listens.
    fn start(config: &Path) -> Running {
        let mut child = natter()
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("natter starts");
        let stdout = child.stdout.take().unwrap();
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("natter listening on ") {
                    let _ = found.send(address.to_string());
                }
            }
        });
        let address = address
            .recv_timeout(PATIENCE)
            .expect("natter says where it listens");
        let address = address.split_once("://").unwrap().1.parse().unwrap();
        Running { child, address }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTPS request to `address` as `localhost`, trusting exactly the certificate in `trusted_pem`.
async fn https(
    address: SocketAddr,
    trusted_pem: &Path,
    request: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(trusted_pem).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("a TLS handshake with the certificate natter made");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn init_from_flags_writes_a_private_config_that_starts_a_server_answering_over_tls() {
    let temp = tempfile::tempdir().unwrap();
    let config_path = temp.path().join("natter.toml");
    let password_file = temp.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let data_dir = temp.path().join("data");
    let init = |extra: &[&str]| {
        natter()
            .args([
                "--init",
                "--non-interactive",
                "--config",
                config_path.to_str().unwrap(),
            ])
            .args([
                "--public-url",
                "https://localhost",
                "--listen",
                "127.0.0.1:0",
                "--tls",
                "self-signed",
            ])
            .args([
                "--admin-user",
                "owner",
                "--admin-password-file",
                password_file.to_str().unwrap(),
            ])
            .args([
                "--allowed-origin",
                "https://blog.example.com",
                "--allowed-origin",
                "https://www.example.com",
            ])
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = init(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(r#"<script src="https://localhost/widget.js" defer></script>"#),
        "{said}"
    );
    assert!(said.contains("systemctl enable --now natter"), "{said}");
    assert_eq!(
        mode(&config_path),
        0o600,
        "the config holds the password hash"
    );
    let config = Config::parse(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config.tls.mode, TlsMode::SelfSigned);
    assert_eq!(config.admin.username, "owner");
    assert_eq!(config.widget.allowed_origins.len(), 2);
    assert!(
        verifies(&config.admin.password_hash, PASSWORD),
        "the hash is of the password in the file, newline trimmed"
    );
    assert!(!std::fs::read_to_string(&config_path)
        .unwrap()
        .contains(PASSWORD));

    // Never over an existing config without --force.
    let again = init(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = init(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(mode(&config_path), 0o600);

    let server = Running::start(&config_path);
    let certificate = data_dir.join("tls/self-signed.crt");
    let health = Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    let (status, _, body) = https(server.address, &certificate, health).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login = Request::post("/auth/login")
        .header("host", "localhost")
        .header("origin", "https://localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::json!({"username": "owner", "password": PASSWORD}).to_string(),
        )))
        .unwrap();
    let (status, headers, body) = https(server.address, &certificate, login).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("Secure"),
        "a session cookie over https is Secure: {cookie}"
    );
}

#[test]
fn init_refuses_without_a_terminal_and_says_what_to_do() {
    let temp = tempfile::tempdir().unwrap();
    let config_path = temp.path().join("natter.toml");
    let output = natter()
        .args(["--init", "--config", config_path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(" --init on a terminal"), "{said}");
    assert!(
        said.contains("--non-interactive") && said.contains("--public-url"),
        "{said}"
    );
    assert!(!config_path.exists(), "nothing is written");

    let output = natter()
        .args([
            "--init",
            "--non-interactive",
            "--config",
            config_path.to_str().unwrap(),
            "--public-url",
            "https://chat.example.com",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--admin-password-file"));
    assert!(!config_path.exists());
}

/// Drives `natter --init` on a pseudo-terminal: waits for each prompt, types the answer; answers the transcript.
fn wizard_on_a_terminal(config_path: &Path, steps: &[(&str, &str)]) -> (bool, String) {
    let driver = r#"
import json, os, pty, select, sys, time
steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen = b""
position = 0
def read(deadline):
    global seen
    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
    if not ready:
        return False
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    if not chunk:
        return False
    seen += chunk
    return True
for prompt, answer in steps:
    deadline = time.time() + 60
    while prompt.encode() not in seen[position:]:
        if time.time() > deadline or not read(deadline):
            sys.stdout.write(seen.decode(errors="replace"))
            sys.stdout.write("\n[driver] never saw the prompt: " + prompt + "\n")
            sys.exit(90)
    position = seen.index(prompt.encode(), position) + len(prompt)
    # A person reads the prompt before typing; the pause also keeps the answer from arriving before the program
    # has switched the terminal to no-echo for a password.
    time.sleep(0.2)
    os.write(fd, answer.encode() + b"\n")
deadline = time.time() + 60
while read(deadline):
    pass
# Silent for a minute and still running: it waits for an answer no step gives (a new question), so end it rather
# than hang the test run.
done, status = os.waitpid(pid, os.WNOHANG)
if done == 0:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    sys.stdout.write(seen.decode(errors="replace"))
    sys.stdout.write("\n[driver] the wizard still waits for input after the last step\n")
    sys.exit(91)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let steps = serde_json::to_string(steps).unwrap();
    let output = Command::new("python3")
        .args([
            "-c",
            driver,
            &steps,
            NATTER,
            "--init",
            "--config",
            config_path.to_str().unwrap(),
        ])
        .env_remove("NATTER_CONFIG")
        .output()
        .expect("python3 runs (it provides the pseudo-terminal)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn the_wizard_on_a_terminal_shows_defaults_hides_the_password_and_asks_again_when_they_differ() {
    let temp = tempfile::tempdir().unwrap();
    let config_path = temp.path().join("natter.toml");
    let data_dir = temp.path().join("data");
    let steps = [
        ("Public URL of natter (what browsers will open, e.g. https://chat.example.com) [http://127.0.0.1:3100]: ", "https://chat.example.com"),
        ("Address to listen on [0.0.0.0:443]: ", ""),
        // A public domain is offered ACME first; this run takes self-signed.
        ("[acme]: ", "self-signed"),
        ("Plain-HTTP address that redirects to HTTPS (\"none\" for no redirect) [0.0.0.0:80]: ", ""),
        ("Admin user name [admin]: ", "owner"),
        ("Admin password (not shown): ", "short"),
        ("Admin password (not shown): ", PASSWORD),
        ("The same password again: ", "a different password"),
        ("Admin password (not shown): ", PASSWORD),
        ("The same password again: ", PASSWORD),
        ("comma-separated, or none) [https://example.com]: ", "https://example.com, https://www.example.com"),
        ("Data directory (the store and the keys) [", data_dir.to_str().unwrap()),
        // No relay: email stays off (the relay's own questions are the wizard's unit test).
        ("e.g. smtp.example.com, or none [none]: ", ""),
    ];
    let (ok, transcript) = wizard_on_a_terminal(&config_path, &steps);
    assert!(ok, "the wizard failed:\n{transcript}");
    assert!(
        !transcript.contains(PASSWORD),
        "the password is never echoed:\n{transcript}"
    );
    assert!(
        transcript.contains("at least 10 characters"),
        "a short password is refused:\n{transcript}"
    );
    assert!(
        transcript.contains("The two passwords differ"),
        "{transcript}"
    );
    assert!(
        transcript.contains(r#"<script src="https://chat.example.com/widget.js" defer></script>"#),
        "{transcript}"
    );
    assert!(
        transcript.contains("self-signed certificate"),
        "{transcript}"
    );

    assert_eq!(mode(&config_path), 0o600);
    let config = Config::parse(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config.server.public_url, "https://chat.example.com");
    assert_eq!(config.server.listen, "0.0.0.0:443".parse().unwrap());
    assert_eq!(config.tls.mode, TlsMode::SelfSigned);
    assert_eq!(
        config.tls.redirect_listen,
        Some("0.0.0.0:80".parse().unwrap())
    );
    assert_eq!(config.admin.username, "owner");
    assert!(verifies(&config.admin.password_hash, PASSWORD));
    let origins: Vec<&str> = config
        .widget
        .allowed_origins
        .iter()
        .map(|origin| origin.as_str())
        .collect();
    assert_eq!(origins, ["https://example.com", "https://www.example.com"]);
    assert_eq!(config.server.data_dir, data_dir);
    assert!(config.email.smtp_host.is_empty());
}

#[test]
fn version_names_the_build_date_the_linkage_and_the_features() {
    let output = natter().arg("--version").output().unwrap();
    assert!(output.status.success());
    let said = String::from_utf8_lossy(&output.stdout);
    let mut lines = said.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("natter ", env!("CARGO_PKG_VERSION")))
    );
    let built = lines.next().unwrap();
    let date = built
        .strip_prefix("built ")
        .expect("a build line")
        .get(..10)
        .unwrap();
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{built}"
    );
    assert!(
        built.contains("static") || built.contains("dynamic"),
        "{built}"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("features: tls (rustls, ring"),
        "{said}"
    );
}

/// Issue 16: `--help` listed none of the `NATTER_*` variables. It lists every one natter reads: the list in
/// `config::ENVIRONMENT`, which must name each variable the config code looks up.
#[test]
fn help_lists_every_environment_variable_natter_reads() {
    let output = natter().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (name, _) in natter::config::ENVIRONMENT {
        assert!(
            help.contains(name),
            "--help does not mention {name}:\n{help}"
        );
    }
    let source = concat!(
        include_str!("../src/config.rs"),
        include_str!("../src/main.rs")
    );
    for read in source
        .split("get(\"")
        .skip(1)
        .chain(source.split("env = \"").skip(1))
    {
        let name = read.split('"').next().unwrap();
        if name.starts_with("NATTER_") {
            assert!(
                natter::config::ENVIRONMENT
                    .iter()
                    .any(|(listed, _)| *listed == name),
                "{name} is read but not in config::ENVIRONMENT"
            );
        }
    }
}

/// Issue 16: `--listen localhost:3100` answered "invalid socket address syntax".
#[test]
fn a_listen_address_that_is_a_host_name_says_what_to_write() {
    let output = natter()
        .args(["--listen", "chat.example.com:3100"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("127.0.0.1:3100") && said.contains("0.0.0.0:3100"),
        "{said}"
    );
}

/// The first line of `text` after `marker`'s line that is not blank, trimmed.
fn line_after<'a>(text: &'a str, marker: &str) -> &'a str {
    text.lines()
        .skip_while(|line| !line.contains(marker))
        .skip(1)
        .find(|line| !line.trim().is_empty())
        .unwrap_or_else(|| panic!("no line after {marker:?} in:\n{text}"))
        .trim()
}

/// Issue 16: after `cargo run` there is no `natter` on the PATH, yet the wizard said `natter --config ...` and
/// `install ... natter`. Every command it prints now works from the folder it ran in: here a fresh folder with a
/// PATH that has no natter, and the source tree, where it names `target/.../natter` and `systemd/natter.service`.
#[test]
fn the_wizard_prints_commands_that_work_from_where_the_user_is() {
    let temp = tempfile::tempdir().unwrap();
    let password_file = temp.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (folder, name) in [(temp.path(), "elsewhere.toml"), (source_tree, "tree.toml")] {
        let config_path = temp.path().join(name);
        let output = natter()
            .current_dir(folder)
            .env("PATH", "/usr/bin:/bin")
            .args([
                "--init",
                "--non-interactive",
                "--config",
                config_path.to_str().unwrap(),
                "--public-url",
                "http://127.0.0.1:3100",
                "--admin-password-file",
                password_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let try_it = line_after(&said, "Try it now:");
        let program = try_it.split_whitespace().next().unwrap();
        assert!(
            try_it.ends_with(&format!("--config {}", config_path.display())),
            "{try_it}"
        );
        let runs = Command::new(program)
            .current_dir(folder)
            .env("PATH", "/usr/bin:/bin")
            .arg("--version")
            .output();
        assert!(
            runs.is_ok_and(|output| output.status.success()),
            "{program:?}, as the wizard prints it, does not run from {}",
            folder.display()
        );
        let install = line_after(&said, "Run it as a service");
        let binary = install.split_whitespace().nth(4).unwrap();
        assert!(folder.join(binary).is_file(), "{install}");
        let unit = said
            .lines()
            .find(|line| line.contains("/etc/systemd/system/natter.service"))
            .unwrap()
            .split_whitespace()
            .nth(4)
            .unwrap();
        if folder == source_tree {
            assert!(program.starts_with("target/"), "{try_it}");
            assert!(folder.join(unit).is_file(), "{unit}");
        }
    }
}

/// Issue 16: a page on an origin that is not allowed failed silently, and the first start did not say which origins
/// were allowed. The banner names them (or says there are none), and each refused origin is logged once (per few
/// minutes) with the exact fix.
#[test]
fn the_banner_names_the_allowed_origins_and_a_refused_origin_is_logged_with_its_fix() {
    use std::io::{Read, Write};
    let temp = tempfile::tempdir().unwrap();
    let mut child = natter()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data"))
        .env("NATTER_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let mut address = None;
    while !banner.contains("widget: ") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{banner}");
        if let Some(bound) = line.trim().strip_prefix("natter listening on http://") {
            address = Some(bound.parse::<SocketAddr>().unwrap());
        }
        banner.push_str(&line);
    }
    assert!(banner.contains("allowed origins: none"), "{banner}");
    let address = address.unwrap();
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /cable?token=6a0f7d3e-4b1c-4e8a-9f2d-1c3b5a7e9d0f HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: actioncable-v1-json\r\nOrigin: http://localhost:8088\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    let _ = child.kill();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = child.wait();
    let told: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("http://localhost:8088"))
        .collect();
    assert_eq!(told.len(), 1, "{log}");
    assert!(
        told[0].contains("widget.allowed_origins")
            && told[0].contains("NATTER_ALLOWED_ORIGINS=http://localhost:8088"),
        "{log}"
    );
}

/// Issue 16: "Permission denied" on the store did not say which user natter runs as, nor that the data dir must
/// belong to it. Here a data dir made by root is opened by natter running as `nobody` (or, when the tests do not run
/// as root, a data dir natter may not write).
#[test]
fn a_data_dir_natter_may_not_write_names_the_user_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let as_root = std::fs::metadata("/proc/self")
        .map(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata) == 0)
        .unwrap();
    let mut command = if as_root {
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", NATTER]);
        command
    } else {
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        natter()
    };
    let output = command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .env_remove("NATTER_CONFIG")
        .env("NATTER_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("natter runs as user")
            && said.contains(&data_dir.display().to_string())
            && said.contains("must belong to")
            && said.contains("chown"),
        "{said}"
    );
    if as_root {
        assert!(
            said.contains("nobody (uid 65534)") && said.contains("root (uid 0)"),
            "{said}"
        );
    }
}

/// Issue 16: the README sent readers to a `DESIGN.md` that is not in the repository, and told them to run `natter`,
/// which is not on the PATH after `cargo run`. Every file the README and docs/ name must exist, and every command the
/// README gives must run from a fresh clone (`target/release/natter` or `cargo run --release -- ...`).
#[test]
fn the_readme_and_docs_name_only_files_that_exist_and_commands_a_fresh_clone_can_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            pages.push(path);
        }
    }
    let mut missing = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let folder = page.parent().unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            if !folder.join(file).exists() {
                missing.push(format!("{}: link to {target}", page.display()));
            }
        }
        // Paths in code spans: a file at the top of the tree or under one of its folders.
        for (index, span) in text.split('`').enumerate() {
            let looks_like_path = !span.contains([' ', '<', '>', '*', '$', '{', '|'])
                && ([
                    "docs/", "systemd/", "scripts/", "tests/", "web/", "src/", "benches/", "fuzz/",
                ]
                .iter()
                .any(|folder| span.starts_with(folder))
                    || (span.ends_with(".md") && !span.contains('/')));
            if index % 2 == 1 && looks_like_path && !root.join(span).exists() {
                missing.push(format!("{}: `{span}`", page.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not in the tree:\n{}",
        missing.join("\n")
    );

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .chain(readme.lines())
        .map(str::trim)
        .filter(|command| command.starts_with("natter ") || command.starts_with("sudo natter "))
        .collect();
    assert!(
        commands.is_empty(),
        "after `cargo run` there is no natter on the PATH, yet the README says: {commands:?}"
    );
}

/// Regression (issue 15, item 11): the unit had no ceiling on memory or threads, which would have contained a login
/// burst's 1.2 GB to natter.
#[test]
fn the_systemd_unit_caps_memory_and_tasks() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/natter.service"
    ))
    .unwrap();
    let setting = |name: &str| {
        unit.lines()
            .filter_map(|line| line.trim().strip_prefix(name)?.strip_prefix('='))
            .next_back()
            .map(str::to_string)
    };
    let memory = setting("MemoryMax").expect("MemoryMax= is set");
    let megabytes: u64 = memory
        .strip_suffix('M')
        .and_then(|number| number.parse().ok())
        .expect("MemoryMax in megabytes");
    assert!((128..=1024).contains(&megabytes), "MemoryMax={memory}");
    let tasks: u64 = setting("TasksMax")
        .expect("TasksMax= is set")
        .parse()
        .expect("TasksMax is a number");
    assert!((16..=512).contains(&tasks), "TasksMax={tasks}");
}
