//! Email, against a real SMTP server: Python's aiosmtpd on loopback with STARTTLS on a test certificate and AUTH
//! (`tests/api/smtp_server.py`, which parses what arrives with Python's `email` package). The visitor's reply email,
//! its link and one-click unsubscribe, the owner's email, the durable queue (relay down, SIGKILL, 550) and the limits.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use natter::config::{Config, Secret, SmtpSecurity};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/smtp_server.py");
const SMTP_USER: &str = "natter";
const SMTP_PASSWORD: &str = "relay secret";
const OWNER: &str = "owner@blog.test";

/// A test CA and a certificate for `localhost` it signed, as PEM files in `dir`: (CA, certificate, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, certificate.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The SMTP server; it stops when dropped (its standard input closes, or it is killed).
struct Relay {
    dir: PathBuf,
    port: u16,
    _temp: tempfile::TempDir,
    child: Option<Child>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Relay {
    /// Prepares a relay on a free port without starting it (as if it were down).
    fn down() -> Relay {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("mail");
        std::fs::create_dir(&dir).unwrap();
        let (ca, cert, key) = certificates(temp.path());
        Relay {
            dir,
            port: free_port(),
            _temp: temp,
            child: None,
            ca,
            cert,
            key,
        }
    }

    async fn start() -> Relay {
        let mut relay = Relay::down();
        relay.up().await;
        relay
    }

    async fn up(&mut self) {
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(&self.cert)
            .arg(&self.key)
            .arg(SMTP_USER)
            .arg(SMTP_PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (tests/run installs aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the SMTP server starts in time")
            .unwrap()
            .expect("the SMTP server starts (is aiosmtpd installed?)");
        assert!(line.starts_with("listening"), "{line}");
        self.child = Some(child);
    }

    /// What the server answers DATA with from now on: "250", or a code like "451" or "550".
    fn answer(&self, code: &str) {
        std::fs::write(self.dir.join("mode"), code).unwrap();
    }

    /// The emails received (`mail`) or refused (`refused`), in order of arrival.
    fn emails(&self, kind: &str) -> Vec<Value> {
        let mut found: Vec<(u64, Value)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                let number = name
                    .strip_prefix(&format!("{kind}-"))?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                let text = std::fs::read_to_string(self.dir.join(&name)).ok()?;
                Some((number, serde_json::from_str(&text).unwrap()))
            })
            .collect();
        found.sort_by_key(|(number, _)| *number);
        found.into_iter().map(|(_, email)| email).collect()
    }

    /// Waits until at least `count` emails of `kind` are there.
    async fn wait_for(&self, kind: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let emails = self.emails(kind);
            if emails.len() >= count {
                return emails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} {kind} emails expected, {} arrived",
                emails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn configure(&self, config: &mut Config) {
        let email = &mut config.email;
        email.smtp_host = "localhost".into();
        email.smtp_port = self.port;
        email.smtp_security = SmtpSecurity::Starttls;
        email.smtp_username = SMTP_USER.into();
        email.smtp_password = Secret(SMTP_PASSWORD.into());
        email.smtp_ca_root = self.ca.clone();
        email.from = "Blog chat <chat@blog.test>".into();
        email.owner_address = OWNER.into();
        email.reply_delay_seconds = 0;
        email.unread_delay_seconds = 0;
        email.retry_seconds = 1;
    }

    /// The same settings as a config file for the binary.
    fn config_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("natter.toml");
        let text = format!(
            "[email]\nsmtp_host = \"localhost\"\nsmtp_port = {}\nsmtp_username = \"{SMTP_USER}\"\n\
             smtp_ca_root = \"{}\"\nfrom = \"Blog chat <chat@blog.test>\"\nowner_address = \"{OWNER}\"\n\
             reply_delay_seconds = 0\nunread_delay_seconds = 0\nretry_seconds = 1\n",
            self.port,
            self.ca.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A number on `/metrics` (the first line that starts with `name`).
async fn metric(address: SocketAddr, name: &str) -> u64 {
    let text = http(address, "GET", "/metrics", &[], None).await.text();
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{text}"))
}

/// Waits until a metric reaches `at_least`.
async fn metric_reaches(address: SocketAddr, name: &str, at_least: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = metric(address, name).await;
        if value >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {value}, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the outbox is empty: every email recorded has been sent or given up on.
async fn outbox_empty(address: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(address, "natter_emails_queued").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox stays full"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A visitor on the blog's post who says `lines` and, when given, leaves `address`; answers the open chat (drop it
/// to close) and the conversation id.
async fn visitor_says(
    app: &TestApp,
    token: &str,
    lines: &[&str],
    address: Option<&str>,
) -> (Client, String) {
    let mut visitor = subscribed_visitor(app, token).await;
    visitor
        .perform(
            VISITOR_CHANNEL,
            json!({"action": "visit", "url": format!("{BLOG}/posts/hello#comments"), "title": "Hello", "referrer": ""}),
        )
        .await;
    let mut conversation = String::new();
    for line in lines {
        visitor.speak(line, uuid()).await;
        conversation = visitor.answer().await["message"]["message"]["conversation_id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    if let Some(address) = address {
        visitor
            .perform(
                VISITOR_CHANNEL,
                json!({"action": "identify", "name": "Ann", "email": address}),
            )
            .await;
        let identified = visitor.event("identified").await;
        conversation = identified["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    (visitor, conversation)
}

async fn reply(admin: &mut Client, conversation: &str, content: &str) -> u64 {
    admin
        .perform(
            ADMIN_CHANNEL,
            json!({"action": "reply", "conversation_id": conversation, "content": content, "client_id": uuid()}),
        )
        .await;
    let answer = admin.answer().await;
    answer["message"]["message"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("the reply is stored: {answer}"))
}

fn header<'a>(email: &'a Value, name: &str) -> &'a str {
    email["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} header in {email}"))
}

/// The value of `name=` in an email's text (up to the next whitespace).
fn find_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {text}"))
        + marker.len();
    text[start..].split_whitespace().next().unwrap()
}

#[tokio::test]
async fn a_reply_reaches_a_visitor_who_left_as_one_threaded_email_whose_link_continues_the_chat() {
    let relay = Relay::start().await;
    let app = spawn_app_with(|config| relay.configure(config)).await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let hostile = "<script>alert('x')</script> & <img src=https://evil.test/p.png>";
    let token = uuid();
    let (visitor, conversation) = visitor_says(&app, &token, &["Hello there", hostile], None).await;
    drop(visitor);
    // Two replies while the visitor is away and has left no address yet: nothing to send.
    let first = reply(&mut admin, &conversation, "First answer").await;
    reply(&mut admin, &conversation, "Second answer\non two lines").await;
    // The visitor comes back, leaves an address and closes the chat: both replies go out, in one email.
    let (visitor, _) = visitor_says(&app, &token, &[], Some("ann@visitor.test")).await;
    drop(visitor);
    let emails = relay.wait_for("mail", 1).await;
    let email = &emails[0];
    assert_eq!(email["tls"], true, "STARTTLS before anything else");
    assert_eq!(
        email["authenticated"], true,
        "AUTH with the configured user"
    );
    assert_eq!(email["rcpt_tos"], json!(["ann@visitor.test"]));
    assert_eq!(header(email, "to"), "ann@visitor.test");
    assert_eq!(header(email, "from"), "Blog chat <chat@blog.test>");
    assert_eq!(header(email, "reply-to"), OWNER);
    assert_eq!(header(email, "auto-submitted"), "auto-generated");
    assert_eq!(
        header(email, "list-unsubscribe-post"),
        "List-Unsubscribe=One-Click"
    );
    let message_id = header(email, "message-id");
    assert!(
        message_id.starts_with("<natter.") && message_id.ends_with("@127.0.0.1>"),
        "{message_id}"
    );
    let root = header(email, "in-reply-to");
    assert!(
        header(email, "references").contains(root),
        "the thread's root"
    );
    assert_ne!(message_id, root);
    let text = email["text"].as_str().unwrap();
    let html = email["html"].as_str().unwrap();
    for line in [
        "Hello there",
        hostile,
        "First answer",
        "Second answer",
        "on two lines",
    ] {
        assert!(text.contains(line), "the text has {line:?}: {text}");
    }
    assert!(
        !html.contains("<script>") && !html.contains("<img"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;img"),
        "{html}"
    );
    assert_eq!(email["images"], json!([]));

    // The link opens the conversation in another browser: the widget trades the code for a token of its own.
    let link = find_after(text, "Continue the conversation: ");
    assert!(
        link.starts_with(&format!("{BLOG}/posts/hello#natter-continue=")),
        "{link}"
    );
    let code = link.split("#natter-continue=").nth(1).unwrap();
    let refused = app
        .http(
            "POST",
            "/email/continue",
            &[("origin", BLOG), ("content-type", "application/json")],
            Some(json!({"code": format!("{code}x")})),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let traded = app
        .http(
            "POST",
            "/email/continue",
            &[("origin", BLOG), ("content-type", "application/json")],
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(traded.status, 200, "{}", traded.text());
    let second_token = traded.json()["token"].as_str().unwrap().to_string();
    assert_ne!(second_token, token);
    let mut elsewhere = subscribed_visitor(&app, &second_token).await;
    elsewhere
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    let history = elsewhere.event("history").await;
    assert_eq!(history["conversation"]["id"], conversation.as_str());
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert!(contents.contains(&"First answer"), "{contents:?}");
    elsewhere.speak("Answering from my phone", uuid()).await;
    elsewhere.answer().await;
    let seen = admin
        .next_where(|frame| frame["message"]["message"]["content"] == "Answering from my phone")
        .await;
    assert_eq!(seen["message"]["conversation_id"], conversation.as_str());
    drop(elsewhere);

    // One-click unsubscribe (RFC 8058): a POST to the List-Unsubscribe URL stops email about this conversation.
    let unsubscribe = header(email, "list-unsubscribe")
        .trim_matches(['<', '>'])
        .to_string();
    let path = &unsubscribe[unsubscribe.find("/email/").unwrap()..];
    let page = app.http("GET", path, &[], None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("<form method=\"post\">"),
        "GET only asks"
    );
    let done = http(
        app.address,
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"List-Unsubscribe=One-Click".to_vec()),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    reply(&mut admin, &conversation, "Third answer, not emailed").await;
    // Another visitor's reply goes out after it; once the outbox is empty, the third answer was never sent.
    let (other, other_conversation) =
        visitor_says(&app, &uuid(), &["Me too"], Some("bob@visitor.test")).await;
    drop(other);
    reply(&mut admin, &other_conversation, "Hi Bob").await;
    let emails = relay.wait_for("mail", 2).await;
    outbox_empty(app.address).await;
    let emails_now = relay.emails("mail");
    assert_eq!(emails_now.len(), 2, "{emails_now:?}");
    assert_eq!(emails[1]["rcpt_tos"], json!(["bob@visitor.test"]));
    assert!(first > 0);
}
