//! Running natter for years: TLS (self-signed, PEM files reloaded from disk, TLS 1.2+, ALPN), the HTTPS redirect,
//! backup while clients write, restore into a fresh data dir, export, and what /metrics shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use natter::config::{Config, TlsMode};
use natter::server::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::helpers::*;

/// What one TLS request saw.
struct TlsAnswer {
    status: StatusCode,
    body: String,
    alpn: Option<Vec<u8>>,
    version: rustls::ProtocolVersion,
    fingerprint: String,
}

/// A rustls client (ring) that trusts exactly the certificate in `trusted_pem`.
fn client_config(
    trusted_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(trusted_pem).expect("a PEM file") {
        roots
            .add(certificate.expect("a certificate"))
            .expect("a usable trust anchor");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// One GET over a fresh TLS connection to `address`, verifying the server as `localhost`.
async fn tls_get(
    address: SocketAddr,
    config: rustls::ClientConfig,
    path: &str,
) -> Result<TlsAnswer, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(PATIENCE, connector.connect(name, stream))
        .await
        .expect("a handshake in time")
        .map_err(|error| error.to_string())?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let version = session.protocol_version().expect("a negotiated version");
    let leaf = session.peer_certificates().expect("a certificate")[0].clone();
    let fingerprint = natter::tls::fingerprint(&leaf);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP over TLS");
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(path)
        .header("host", format!("localhost:{}", address.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    Ok(TlsAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn,
        version,
        fingerprint,
    })
}

/// A server started by hand, for what `spawn_app` does not expose (the redirect listener).
struct Running {
    address: SocketAddr,
    redirect: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: Config) -> Running {
    // After a stop, the store's writer thread lets go of the file a moment after `run_until_stopped` returns (it
    // answers the close before its thread ends), so a restart may briefly find the file still open: try again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let server = loop {
        match Server::build(config.clone(), Some(PASSWORD)).await {
            Ok(server) => break server,
            Err(error)
                if error.to_string().contains("already open")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => panic!("the server starts: {error:#}"),
        }
    };
    let address = server.local_addr();
    let redirect = server.redirect_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Running {
        address,
        redirect,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn write_pair(directory: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let (cert, key) = natter::tls::generate_self_signed(&["localhost".to_string()]).unwrap();
    let cert_path = directory.join(format!("{name}.crt"));
    let key_path = directory.join(format!("{name}.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    (cert_path, key_path, natter::tls::fingerprint(&der))
}

#[tokio::test]
async fn self_signed_tls_serves_http_1_1_over_tls_1_2_and_1_3_and_keeps_its_certificate_across_restarts(
) {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path(), None);
    config.tls.mode = TlsMode::SelfSigned;
    let running = start(config.clone()).await;
    let certificate = temp.path().join("tls/self-signed.crt");
    let key = temp.path().join("tls/self-signed.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "the key is private"
        );
    }

    let answer = tls_get(
        running.address,
        client_config(&certificate, &[&rustls::version::TLS13]),
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "natter picks http/1.1 even when h2 is offered first"
    );
    assert_eq!(answer.version, rustls::ProtocolVersion::TLSv1_3);
    let tls12 = tls_get(
        running.address,
        client_config(&certificate, &[&rustls::version::TLS12]),
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(tls12.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(tls12.status, StatusCode::OK);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(running.address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut buffer))
        .await
        .expect("the server closes");
    assert!(
        !buffer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP must not be served on the TLS port"
    );

    running.stop().await;
    let restarted = start(config).await;
    let again = tls_get(
        restarted.address,
        client_config(&certificate, &[&rustls::version::TLS13]),
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(
        again.fingerprint, answer.fingerprint,
        "the certificate survives a restart"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_presented_by_the_next_handshake_without_a_restart() {
    let pem = tempfile::tempdir().unwrap();
    let (cert_path, key_path, first) = write_pair(pem.path(), "first");
    let live_cert = pem.path().join("fullchain.pem");
    let live_key = pem.path().join("privkey.pem");
    std::fs::copy(&cert_path, &live_cert).unwrap();
    std::fs::copy(&key_path, &live_key).unwrap();
    let app = spawn_app_with(|config| {
        config.tls.mode = TlsMode::Files;
        config.tls.cert = live_cert.clone();
        config.tls.key = live_key.clone();
    })
    .await;
    let answer = tls_get(
        app.address,
        client_config(&cert_path, &[&rustls::version::TLS13]),
        "/healthz",
    )
    .await
    .unwrap();
    assert_eq!(answer.fingerprint, first);

    // A renewal as certbot does it: new files in place. Key first, so for a moment the pair does not match; natter
    // must keep serving the old certificate then, and take the new one once both are there.
    let (new_cert, new_key, second) = write_pair(pem.path(), "second");
    std::fs::copy(&new_key, &live_key).unwrap();
    let during = tls_get(
        app.address,
        client_config(&cert_path, &[&rustls::version::TLS13]),
        "/healthz",
    )
    .await;
    assert!(
        during.is_ok(),
        "a half-done renewal must not break TLS: {:?}",
        during.err()
    );
    std::fs::copy(&new_cert, &live_cert).unwrap();

    let trust_both = pem.path().join("both.pem");
    std::fs::write(
        &trust_both,
        [
            std::fs::read(&cert_path).unwrap(),
            std::fs::read(&new_cert).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = tls_get(
            app.address,
            client_config(&trust_both, &[&rustls::version::TLS13]),
            "/healthz",
        )
        .await
        .unwrap();
        if answer.fingerprint == second {
            break;
        }
        assert_eq!(
            answer.fingerprint, first,
            "only the old or the new certificate is ever presented"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never presented"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A client that trusts only the old certificate is now refused: the old one is really gone.
    assert!(tls_get(
        app.address,
        client_config(&cert_path, &[&rustls::version::TLS13]),
        "/healthz"
    )
    .await
    .is_err());
}

#[tokio::test]
async fn the_plain_http_listener_redirects_to_the_https_public_url_and_serves_nothing_else() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path(), None);
    config.tls.mode = TlsMode::SelfSigned;
    config.server.public_url = "https://chat.example.com".into();
    config.tls.redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    let running = start(config).await;
    let redirect = running.redirect.expect("a redirect listener");
    let response = http(
        redirect,
        "POST",
        "/auth/login?next=/admin/",
        &[("host", "evil.example")],
        None,
    )
    .await;
    assert_eq!(response.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.header("location").as_deref(),
        Some("https://chat.example.com/auth/login?next=/admin/"),
        "the location is the public URL, never the Host header"
    );
    running.stop().await;
}

/// Issue 16: plain HTTP sent to the TLS port got a dropped connection, which a browser shows as a blank error page.
/// It now gets the redirect to the HTTPS public URL, and TLS on the same port still works.
#[tokio::test]
async fn plain_http_sent_to_the_tls_port_is_redirected_to_https() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = test_config(temp.path(), None);
    config.tls.mode = TlsMode::SelfSigned;
    config.server.public_url = "https://localhost:8443".into();
    let running = start(config).await;
    let response = http(running.address, "GET", "/admin/", &[], None).await;
    assert_eq!(response.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.header("location").as_deref(),
        Some("https://localhost:8443/admin/")
    );
    let answer = tls_get(
        running.address,
        client_config(
            &temp.path().join("tls/self-signed.crt"),
            &[&rustls::version::TLS13],
        ),
        "/healthz",
    )
    .await
    .expect("TLS is served on the same port");
    assert_eq!(answer.status, StatusCode::OK);
    running.stop().await;
}

#[test]
fn a_redirect_listener_without_tls_is_refused_at_start() {
    let mut config = Config::default();
    config.tls.redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("redirect_listen"), "{error}");
}

/// Runs the real `natter` binary with `arguments`; answers (success, stdout, stderr).
async fn natter(arguments: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(arguments)
        .env_remove("NATTER_CONFIG")
        .output()
        .await
        .expect("the natter binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The ids of one conversation's messages as the admin API lists them.
async fn stored_ids(app: &TestApp, cookie: &str, conversation_id: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .http(
                "GET",
                &format!("/conversations/{conversation_id}/messages?after={after}&limit=200"),
                &[("cookie", cookie)],
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        let messages = page["messages"].as_array().unwrap();
        ids.extend(
            messages
                .iter()
                .map(|message| message["id"].as_u64().unwrap()),
        );
        if page["more"] != true || messages.is_empty() {
            return ids;
        }
        after = *ids.last().unwrap();
    }
}

#[tokio::test]
async fn a_backup_taken_while_a_visitor_writes_restores_every_acknowledged_message_and_nothing_torn(
) {
    let app = spawn_app().await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    // The writer speaks one message at a time and records each acknowledgement, until told to stop.
    let (stop_writing, mut stopped) = oneshot::channel::<()>();
    let (acknowledged, acknowledged_before) = tokio::sync::watch::channel(Vec::<u64>::new());
    let writer = tokio::spawn({
        async move {
            let mut conversation_id = String::new();
            let mut count = 0u64;
            loop {
                if stopped.try_recv().is_ok() {
                    return (conversation_id, count);
                }
                visitor.speak(format!("message {count}"), uuid()).await;
                let echoed = visitor.event("message").await;
                conversation_id = echoed["message"]["conversation_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let id = echoed["message"]["id"].as_u64().unwrap();
                acknowledged.send_modify(|ids| ids.push(id));
                count += 1;
            }
        }
    });
    // Let some messages land first, so the backup has something to carry.
    let mut watcher = acknowledged_before.clone();
    watcher.wait_for(|ids| ids.len() >= 20).await.unwrap();

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("natter-backup.redb");
    let before_backup: Vec<u64> = acknowledged_before.borrow().clone();
    let data_dir = app.data_dir.display().to_string();
    let (ok, _, stderr) =
        natter(&["backup", file.to_str().unwrap(), "--data-dir", &data_dir]).await;
    assert!(ok, "backup failed: {stderr}");
    assert!(stderr.contains("from the running server"), "{stderr}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "a backup holds every conversation: only its owner may read it"
    );
    let after_backup: Vec<u64> = acknowledged_before.borrow().clone();
    assert!(
        after_backup.len() > before_backup.len(),
        "the visitor kept writing during the backup"
    );
    let _ = stop_writing.send(());
    let (conversation_id, written) = writer.await.unwrap();
    let all_acknowledged: Vec<u64> = acknowledged_before.borrow().clone();
    assert_eq!(all_acknowledged.len() as u64, written);

    // Restore, as docs/ops.md says: the backup becomes natter.redb in a fresh data dir.
    let restored_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored_dir.path().join("natter.redb")).unwrap();
    let restored =
        spawn_app_with(|config| config.server.data_dir = restored_dir.path().to_path_buf()).await;
    let cookie = restored.login().await;
    let ids = stored_ids(&restored, &cookie, &conversation_id).await;
    for id in &before_backup {
        assert!(
            ids.contains(id),
            "message {id}, acknowledged before the backup began, is missing from it"
        );
    }
    // One snapshot: exactly the first N acknowledged messages, no gap, nothing that was never acknowledged.
    assert_eq!(
        ids,
        all_acknowledged[..ids.len()],
        "the backup is a prefix of what was acknowledged"
    );

    // The visitor comes back after the restore: the token still finds the conversation.
    let mut visitor = subscribed_visitor(&restored, &token).await;
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    let history = visitor.event("history").await;
    assert_eq!(history["conversation"]["id"], conversation_id.as_str());
}

#[tokio::test]
async fn export_lists_every_message_as_json_and_csv_and_backup_works_with_the_server_stopped() {
    let mut app = spawn_app().await;
    let mut expected = Vec::new();
    for visitor_number in 0..3 {
        let mut visitor = subscribed_visitor(&app, &uuid()).await;
        for message_number in 0..4 {
            let content =
                format!("visitor {visitor_number}, \"message\" {message_number}, with a comma");
            visitor.speak(&content, uuid()).await;
            let echoed = visitor.event("message").await;
            expected.push((echoed["message"]["id"].as_u64().unwrap(), content));
        }
    }
    let data_dir = app.data_dir.display().to_string();

    let (ok, stdout, stderr) =
        natter(&["export", "--format", "json", "--data-dir", &data_dir]).await;
    assert!(ok, "{stderr}");
    let export: Value = serde_json::from_str(&stdout).expect("the export is JSON");
    let conversations = export["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 3);
    let mut exported: Vec<(u64, String)> = conversations
        .iter()
        .flat_map(|conversation| conversation["messages"].as_array().unwrap().iter())
        .map(|message| {
            (
                message["id"].as_u64().unwrap(),
                message["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    exported.sort();
    assert_eq!(exported, expected);

    let (ok, stdout, stderr) =
        natter(&["export", "--format", "csv", "--data-dir", &data_dir]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with(
        "conversation_id,visitor_name,email,message_id,sender,created_at,content,client_id\n"
    ));
    for (id, content) in &expected {
        let quoted = format!("\"{}\"", content.replace('"', "\"\""));
        assert!(
            stdout
                .lines()
                .any(|line| line.contains(&format!(",{id},visitor,")) && line.contains(&quoted)),
            "message {id} is in the CSV"
        );
    }
    assert_eq!(stdout.lines().count(), expected.len() + 1);

    // With the server stopped, backup opens the store itself.
    app.stop().await;
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("offline.redb");
    let (ok, _, stderr) =
        natter(&["backup", file.to_str().unwrap(), "--data-dir", &data_dir]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("no server was running") && stderr.contains("12 messages"),
        "{stderr}"
    );
    let (ok, _, stderr) = natter(&[
        "backup",
        backups.path().join("x.redb").to_str().unwrap(),
        "--data-dir",
        "/nonexistent/natter",
    ])
    .await;
    assert!(!ok && stderr.contains("no store at"), "{stderr}");
}

/// Issue 16: `natter backup ./natter-data/natter.redb` while natter ran replaced the store under the running server,
/// which went on writing to the deleted file; after a restart the acknowledged messages were gone. A target that is
/// the store, its log, or anything inside the data dir is refused (by device and inode, so another spelling of the
/// path is refused too), and the store still holds every message afterwards.
#[tokio::test]
async fn a_backup_or_export_aimed_at_the_live_store_is_refused_and_the_store_keeps_every_message() {
    let mut app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    let mut acknowledged = Vec::new();
    for count in 0..5 {
        visitor.speak(format!("message {count}"), uuid()).await;
        acknowledged.push(visitor.event("message").await["message"].clone());
    }
    let conversation_id = acknowledged[0]["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let data_dir = app.data_dir.clone();
    // Another spelling of the data dir: a symbolic link to it, and a path through `..`.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("link-to-data");
    std::os::unix::fs::symlink(&data_dir, &link).unwrap();
    let roundabout = data_dir.join("..").join(data_dir.file_name().unwrap());
    let targets = [
        data_dir.join("natter.redb"),
        data_dir.join("natter.wal"),
        data_dir.join("backup.redb"),
        link.join("natter.redb"),
        roundabout.join("natter.redb"),
    ];
    let data_dir_text = data_dir.display().to_string();
    for target in &targets {
        let target = target.to_str().unwrap();
        for command in [&["backup", target][..], &["export", "--output", target][..]] {
            let mut arguments = command.to_vec();
            arguments.extend(["--data-dir", &data_dir_text]);
            let (ok, _, stderr) = natter(&arguments).await;
            assert!(!ok, "{command:?} wrote onto the store: {stderr}");
            assert!(
                stderr.contains("inside the data dir") && stderr.contains("elsewhere"),
                "{stderr}"
            );
        }
    }
    assert!(!data_dir.join("backup.redb").exists());
    // Written elsewhere, the backup is taken, and says "1 conversation", not "1 conversations".
    let backup = elsewhere.path().join("natter-backup.redb");
    let (ok, _, stderr) = natter(&[
        "backup",
        backup.to_str().unwrap(),
        "--data-dir",
        &data_dir_text,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("1 conversation, 5 messages"), "{stderr}");

    // The running server still writes to the store it opened, and a restart finds every message.
    visitor.speak("after the refused backups", uuid()).await;
    acknowledged.push(visitor.event("message").await["message"].clone());
    app.restart().await;
    let cookie = app.login().await;
    let ids = stored_ids(&app, &cookie, &conversation_id).await;
    let expected: Vec<u64> = acknowledged
        .iter()
        .map(|message| message["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn metrics_cover_connections_messages_pushes_store_and_uptime_from_loopback_only() {
    let app = spawn_app_with(|config| {
        config.metrics.token = "s3cret-metrics".into();
        // The test client plays a proxy on this host, so X-Forwarded-For can make a request come from afar.
        config.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor.speak("hi", uuid()).await;
    visitor.event("message").await;
    let metrics = app.http("GET", "/metrics", &[], None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    for sample in [
        "natter_connections{kind=\"visitor\"} 1",
        "natter_connections{kind=\"admin\"} 0",
        "natter_messages_total{sender=\"visitor\"} 1",
        "natter_messages_stored 1",
        "natter_pushes_total{result=\"sent\"}",
        "natter_store_bytes ",
        "natter_uptime_seconds ",
    ] {
        assert!(text.contains(sample), "/metrics lacks {sample}:\n{text}");
    }

    let from_afar = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(
        app.http("GET", "/metrics", &from_afar, None).await.status,
        StatusCode::FORBIDDEN
    );
    let with_token = [
        ("x-forwarded-for", "203.0.113.9"),
        ("authorization", "Bearer s3cret-metrics"),
    ];
    assert_eq!(
        app.http("GET", "/metrics", &with_token, None).await.status,
        StatusCode::OK
    );
    let wrong_token = [
        ("x-forwarded-for", "203.0.113.9"),
        ("authorization", "Bearer guess"),
    ];
    assert_eq!(
        app.http("GET", "/metrics", &wrong_token, None).await.status,
        StatusCode::FORBIDDEN
    );
}

/// Regression (issue 15, item 11): the control socket was bound in the data dir and chmod-ed afterwards, so for a
/// moment its mode came from the umask and anyone on the host could connect and download every conversation.
#[tokio::test]
async fn the_control_socket_is_bound_inside_a_directory_only_natter_may_enter() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_app_with(|config| config.server.data_dir = data_dir.clone()).await;
    let socket = natter::backup::control_socket_path(&app.data_dir);
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    let directory = socket.parent().unwrap();
    assert_ne!(directory, app.data_dir.as_path());
    let mode = std::fs::metadata(directory).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", directory.display());
}
