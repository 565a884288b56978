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
    let refused = http(
        app.address,
        "POST",
        "/email/continue",
        &[("origin", BLOG), ("content-type", "text/plain")],
        Some(format!("{code}x").into_bytes()),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let traded = http(
        app.address,
        "POST",
        "/email/continue",
        &[("origin", BLOG), ("content-type", "text/plain")],
        Some(code.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(traded.status, 200, "{}", traded.text());
    assert_eq!(
        traded.header("access-control-allow-origin").as_deref(),
        Some(BLOG),
        "the widget on the blog reads the answer"
    );
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

/// The real binary with the relay's settings in a config file, its log lines collected.
struct Natter {
    child: Child,
    address: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Natter {
    async fn start(relay: &Relay, data_dir: &Path) -> Natter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--config")
            .arg(relay.config_file(data_dir))
            .env("NATTER_LISTEN", "127.0.0.1:0")
            .env("NATTER_DATA_DIR", data_dir.join("data"))
            .env("NATTER_ADMIN_PASSWORD", PASSWORD)
            .env("NATTER_ALLOWED_ORIGINS", BLOG)
            .env("NATTER_SMTP_PASSWORD", SMTP_PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the natter binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                eprintln!("natter: {line}");
                collected.lock().unwrap().push(line);
            }
        });
        let address = listening_address(&mut child).await;
        Natter {
            child,
            address,
            log,
        }
    }

    /// A TestApp-like view for the helpers that take one.
    async fn admin(&self) -> Client {
        let login = http(
            self.address,
            "POST",
            "/auth/login",
            &[
                ("origin", &format!("http://{}", self.address)),
                ("content-type", "application/json"),
            ],
            Some(
                json!({"username": "admin", "password": PASSWORD})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
        let cookie = login.header("set-cookie").unwrap();
        let cookie = cookie.split(';').next().unwrap();
        let mut admin = Client::connect(
            self.address,
            "/cable",
            &format!("http://{}", self.address),
            Some(cookie),
        )
        .await
        .unwrap()
        .welcomed()
        .await;
        admin.subscribe(ADMIN_CHANNEL).await;
        admin
    }

    /// A visitor who leaves an address, says something and closes the chat; answers the conversation id.
    async fn visitor_leaves(&self, address: &str) -> String {
        let mut visitor = Client::connect(
            self.address,
            &format!("/cable?token={}", uuid()),
            BLOG,
            None,
        )
        .await
        .unwrap()
        .welcomed()
        .await;
        visitor.subscribe(VISITOR_CHANNEL).await;
        visitor.speak("Anyone there?", uuid()).await;
        visitor.answer().await;
        visitor
            .perform(
                VISITOR_CHANNEL,
                json!({"action": "identify", "name": "Ann", "email": address}),
            )
            .await;
        visitor.event("identified").await["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }
}

#[tokio::test]
async fn with_the_relay_down_a_reply_waits_and_arrives_once_when_it_is_up() {
    let mut relay = Relay::down();
    let dir = tempfile::tempdir().unwrap();
    let natter = Natter::start(&relay, dir.path()).await;
    let mut admin = natter.admin().await;
    let conversation = natter.visitor_leaves("ann@visitor.test").await;
    reply(&mut admin, &conversation, "Sorry for the wait").await;
    // The relay is down: the attempt fails for now, and the email stays queued.
    metric_reaches(natter.address, "natter_emails_total{result=\"failed\"}", 1).await;
    assert_eq!(metric(natter.address, "natter_emails_queued").await, 1);
    relay.up().await;
    let emails = relay.wait_for("mail", 1).await;
    outbox_empty(natter.address).await;
    assert_eq!(relay.emails("mail").len(), 1, "sent once");
    assert!(emails[0]["text"]
        .as_str()
        .unwrap()
        .contains("Sorry for the wait"));
}

#[tokio::test]
async fn killed_with_an_email_queued_natter_sends_it_after_the_restart_with_the_same_message_id() {
    let relay = Relay::start().await;
    relay.answer("451");
    let dir = tempfile::tempdir().unwrap();
    let mut natter = Natter::start(&relay, dir.path()).await;
    let mut admin = natter.admin().await;
    let conversation = natter.visitor_leaves("ann@visitor.test").await;
    reply(&mut admin, &conversation, "Here is your answer").await;
    let refused = relay.wait_for("refused", 1).await;
    let message_id = header(&refused[0], "message-id").to_string();
    natter.child.kill().await.unwrap();
    relay.answer("250");
    let natter = Natter::start(&relay, dir.path()).await;
    let emails = relay.wait_for("mail", 1).await;
    assert_eq!(header(&emails[0], "message-id"), message_id);
    outbox_empty(natter.address).await;
    assert_eq!(relay.emails("mail").len(), 1);
}

#[tokio::test]
async fn a_550_drops_the_email_with_a_log_line() {
    let relay = Relay::start().await;
    relay.answer("550");
    let dir = tempfile::tempdir().unwrap();
    let natter = Natter::start(&relay, dir.path()).await;
    let mut admin = natter.admin().await;
    let conversation = natter.visitor_leaves("nobody@visitor.test").await;
    reply(&mut admin, &conversation, "Hello?").await;
    relay.wait_for("refused", 1).await;
    metric_reaches(natter.address, "natter_emails_total{result=\"dropped\"}", 1).await;
    outbox_empty(natter.address).await;
    assert_eq!(relay.emails("refused").len(), 1, "not tried again");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !natter.logged("email refused for good; dropped") {
        assert!(tokio::time::Instant::now() < deadline, "the drop is logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_limits_hold_per_address_per_day_and_per_hour_in_total() {
    let relay = Relay::start().await;
    let app = spawn_app_with(|config| {
        relay.configure(config);
        config.email.per_address_per_day = 1;
        config.email.per_hour = 2;
    })
    .await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let (visitor, ann) = visitor_says(&app, &uuid(), &["One"], Some("ann@visitor.test")).await;
    drop(visitor);
    reply(&mut admin, &ann, "First").await;
    relay.wait_for("mail", 1).await;
    // The second email to the same address today is dropped.
    reply(&mut admin, &ann, "Second").await;
    metric_reaches(app.address, "natter_emails_total{result=\"throttled\"}", 1).await;
    outbox_empty(app.address).await;
    assert_eq!(relay.emails("mail").len(), 1);
    // Another address: the second email of the hour goes out, the third waits for the hour's allowance.
    let (visitor, bob) = visitor_says(&app, &uuid(), &["Two"], Some("bob@visitor.test")).await;
    drop(visitor);
    reply(&mut admin, &bob, "For Bob").await;
    relay.wait_for("mail", 2).await;
    let (visitor, cat) = visitor_says(&app, &uuid(), &["Three"], Some("cat@visitor.test")).await;
    drop(visitor);
    reply(&mut admin, &cat, "For Cat").await;
    metric_reaches(app.address, "natter_emails_total{result=\"throttled\"}", 2).await;
    assert_eq!(
        metric(app.address, "natter_emails_queued").await,
        1,
        "held, not dropped"
    );
    assert_eq!(relay.emails("mail").len(), 2);
}

#[tokio::test]
async fn the_owner_hears_of_a_new_conversation_when_no_dashboard_is_open() {
    let relay = Relay::start().await;
    let app = spawn_app_with(|config| relay.configure(config)).await;
    let (visitor, conversation) =
        visitor_says(&app, &uuid(), &["Is anyone reading this?"], None).await;
    drop(visitor);
    let emails = relay.wait_for("mail", 1).await;
    let email = &emails[0];
    assert_eq!(email["rcpt_tos"], json!([OWNER]));
    assert!(
        header(email, "subject").starts_with("New conversation"),
        "{email}"
    );
    assert_eq!(header(email, "auto-submitted"), "auto-generated");
    let text = email["text"].as_str().unwrap();
    assert!(text.contains("Is anyone reading this?"), "{text}");
    assert!(
        text.contains(&format!("{}/admin/#c={conversation}", app.url())),
        "{text}"
    );
}

#[tokio::test]
async fn email_test_sends_through_the_relay_or_says_what_failed() {
    let relay = Relay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = relay.config_file(dir.path());
    let run = |password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("--config")
            .arg(&config)
            .args(["email-test", "me@visitor.test"])
            .env("NATTER_DATA_DIR", dir.path())
            .env("NATTER_SMTP_PASSWORD", password)
            .output()
            .unwrap()
    };
    let sent = run(SMTP_PASSWORD);
    let said = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(said.contains("250"), "{said}");
    assert_eq!(
        relay.wait_for("mail", 1).await[0]["rcpt_tos"],
        json!(["me@visitor.test"])
    );
    let refused = run("wrong");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("authentication"), "{said}");
}
