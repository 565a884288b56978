//! Web Push against a fake push service on loopback that records every request. What natter sends is opened by
//! implementations that are not natter's: Python's `http_ece` decrypts the payload with the subscription's private key
//! and auth secret, and `cryptography` verifies the VAPID JWT (`tests/api/push_check.py`; needs
//! `pip install http_ece cryptography`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natter::server::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::helpers::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/push_check.py");

// ---- the fake push service ----

/// What the fake service answers a request with.
#[derive(Clone, Debug)]
enum Reply {
    Status(u16, Option<&'static str>),
    /// Read the request and never answer (the connection stays open until the client gives up).
    Hang,
}

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

#[derive(Default)]
struct FakeState {
    /// Replies queued per path; when a path has none left, `default` answers.
    scripted: Mutex<HashMap<String, VecDeque<Reply>>>,
    default: Mutex<Option<Reply>>,
    recorded: Mutex<Vec<Recorded>>,
    arrived: Notify,
    /// Connections open now, and the most ever open at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
}

struct FakePushService {
    address: SocketAddr,
    state: Arc<FakeState>,
}

impl FakePushService {
    async fn start(default: Reply) -> FakePushService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        *state.default.lock().unwrap() = Some(default);
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let now_open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
                state.max_open.fetch_max(now_open, Ordering::SeqCst);
                tokio::spawn(async move {
                    serve(stream, &state).await;
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakePushService { address, state }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn script(&self, path: &str, replies: &[Reply]) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies.iter().cloned());
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests have arrived; answers them all.
    async fn wait_for(&self, count: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.state.arrived.notified();
            let recorded = self.recorded();
            if recorded.len() >= count {
                return recorded;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the fake push service got {} requests, expected {count}",
                recorded.len()
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// One HTTP/1.1 connection: requests one after another (keep-alive), each recorded and answered as scripted.
async fn serve(stream: TcpStream, state: &FakeState) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let reply = {
            let mut scripted = state.scripted.lock().unwrap();
            scripted
                .get_mut(&path)
                .and_then(VecDeque::pop_front)
                .or_else(|| state.default.lock().unwrap().clone())
        };
        state.recorded.lock().unwrap().push(Recorded {
            path,
            headers,
            body,
            at: Instant::now(),
        });
        state.arrived.notify_waiters();
        match reply {
            Some(Reply::Status(code, retry_after)) => {
                let extra = retry_after
                    .map(|seconds| format!("retry-after: {seconds}\r\n"))
                    .unwrap_or_default();
                let response =
                    format!("HTTP/1.1 {code} Scripted\r\ncontent-length: 0\r\n{extra}\r\n");
                if reader
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Reply::Hang) | None => {
                // Hold the connection without answering until the client closes it.
                let mut sink = [0u8; 256];
                while reader.read(&mut sink).await.unwrap_or(0) > 0 {}
                return;
            }
        }
    }
}

// ---- the browser's side, done by Python ----

struct BrowserKeys {
    private: String,
    p256dh: String,
    auth: String,
}

fn python(arguments: &[&str], input: Option<&Value>) -> Value {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    if let Some(input) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the push tests need Python's http_ece and cryptography: pip install http_ece cryptography\n{stderr}"
    );
    assert!(
        output.status.success(),
        "push_check.py {arguments:?} failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn browser_keys() -> BrowserKeys {
    let keys = python(&["keygen"], None);
    BrowserKeys {
        private: keys["private"].as_str().unwrap().into(),
        p256dh: keys["p256dh"].as_str().unwrap().into(),
        auth: keys["auth"].as_str().unwrap().into(),
    }
}

/// Decrypts a recorded push and verifies its VAPID token, as the browser and the push service would.
fn open_push(keys: &BrowserKeys, recorded: &Recorded) -> (Value, Value, String) {
    use base64ct::{Base64, Encoding as _};
    let opened = python(
        &["open"],
        Some(&json!({
            "private": keys.private,
            "auth": keys.auth,
            "body": Base64::encode_string(&recorded.body),
            "authorization": recorded.headers["authorization"],
        })),
    );
    let payload: Value =
        serde_json::from_str(opened["plaintext"].as_str().unwrap()).expect("the payload is JSON");
    (
        payload,
        opened["claims"].clone(),
        opened["k"].as_str().unwrap().to_string(),
    )
}

// ---- helpers ----

fn subscription_json(endpoint: &str, keys: &BrowserKeys) -> Value {
    json!({ "endpoint": endpoint, "expirationTime": null, "keys": { "p256dh": keys.p256dh, "auth": keys.auth } })
}

async fn push_app() -> TestApp {
    spawn_app_with(|config| config.push.allow_loopback = true).await
}

/// Subscribes the owner's "browser" at `path` of the fake service.
async fn subscribe_owner(
    app: &TestApp,
    cookie: &str,
    fake: &FakePushService,
    path: &str,
) -> BrowserKeys {
    let keys = browser_keys();
    let origin = app.origin();
    let response = app
        .http(
            "POST",
            "/push_subscriptions",
            &owner_headers(&origin, cookie),
            Some(subscription_json(&fake.endpoint(path), &keys)),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    keys
}

/// A write with no session: from `origin`, JSON (a visitor's from natter's own origin, as the notify page sends it).
fn json_headers(origin: &str) -> [(&str, &str); 2] {
    [("origin", origin), ("content-type", "application/json")]
}

/// An admin write: natter's own origin, JSON, the session cookie.
fn owner_headers<'a>(origin: &'a str, cookie: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("origin", origin),
        ("content-type", "application/json"),
        ("cookie", cookie),
    ]
}

async fn speak(visitor: &mut Client, content: &str) -> Value {
    visitor.speak(content, uuid()).await;
    visitor
        .next_where(|frame| {
            frame["message"]["type"] == "message"
                && frame["message"]["message"]["content"] == content
        })
        .await["message"]["message"]
        .clone()
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.http("GET", "/metrics", &[], None).await.text();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

const SENT: &str = "natter_pushes_total{result=\"sent\"}";
const FAILED: &str = "natter_pushes_total{result=\"failed\"}";

/// Polls until `check` holds; a wait, not a timed assertion (the limit only stops a broken build from hanging).
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- the story ----

#[tokio::test]
async fn the_owner_gets_a_push_that_an_independent_implementation_decrypts_and_whose_vapid_token_verifies(
) {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    let mut app = push_app().await;
    let key = app.http("GET", "/push/key", &[], None).await.json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        key.len(),
        87,
        "base64url of a 65-byte uncompressed point: {key}"
    );
    let cookie = app.login().await;
    let keys = subscribe_owner(&app, &cookie, &fake, "/push/owner-phone").await;

    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor
        .perform(
            VISITOR_CHANNEL,
            json!({"action": "identify", "name": "Ada"}),
        )
        .await;
    visitor.event("identified").await;
    let message = speak(&mut visitor, "Hello, is anyone there? Ünïcödé ✓").await;

    let request = fake.wait_for(1).await.remove(0);
    assert_eq!(request.path, "/push/owner-phone");
    assert_eq!(request.headers["content-encoding"], "aes128gcm");
    assert_eq!(request.headers["urgency"], "high");
    let ttl: u64 = request.headers["ttl"].parse().unwrap();
    assert!(ttl > 0 && ttl <= 28 * 24 * 3600, "TTL {ttl}");
    let topic = &request.headers["topic"];
    assert!(
        topic.len() <= 32
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "Topic {topic}"
    );
    assert!(request.body.len() < 4096);

    let (payload, claims, k) = open_push(&keys, &request);
    let conversation_id = message["conversation_id"].as_str().unwrap();
    assert_eq!(payload["title"], "Ada");
    assert_eq!(payload["body"], "Hello, is anyone there? Ünïcödé ✓");
    assert_eq!(payload["conversation_id"], conversation_id);
    assert_eq!(payload["tag"], format!("conversation-{conversation_id}"));
    assert_eq!(payload["url"], format!("/admin/#c={conversation_id}"));

    assert_eq!(
        k, key,
        "the token is signed by the key browsers subscribed with"
    );
    assert_eq!(
        claims["aud"],
        fake.origin(),
        "aud is the push service's origin, port included"
    );
    assert_eq!(claims["sub"], "mailto:admin@localhost");
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp > now_seconds() && exp <= now_seconds() + 24 * 3600,
        "exp {exp} must be within 24 h"
    );

    eventually("the push is counted", PATIENCE, || async {
        metric(&app, SENT).await == 1
    })
    .await;

    // The same key after a restart, or every browser's subscription would silently stop working.
    app.stop().await;
    let server = loop {
        match Server::build(test_config(&app.data_dir, None), Some(PASSWORD)).await {
            Ok(server) => break server,
            // The store's writer thread lets go of the file just after `stop` returns.
            Err(error) if error.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(
        server.app().push.public_key(),
        key,
        "the VAPID key survives a restart"
    );
}

#[tokio::test]
async fn no_push_while_the_dashboard_is_open_and_a_burst_is_one_notification() {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    let app = push_app().await;
    let cookie = app.login().await;
    let keys = subscribe_owner(&app, &cookie, &fake, "/push/owner").await;

    let admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    speak(&mut visitor, "while you watch").await;
    drop(admin);
    // The hub has let go of the admin socket once visitors are told the admin went away.
    visitor
        .next_where(|frame| {
            frame["message"]["type"] == "status" && frame["message"]["admin_online"] == false
        })
        .await;

    speak(&mut visitor, "first of a burst").await;
    speak(&mut visitor, "second of a burst").await;
    speak(&mut visitor, "third of a burst").await;
    let mut other = subscribed_visitor(&app, &uuid()).await;
    speak(&mut other, "another conversation").await;

    // Pushes leave in the order they were queued: had the first message (dashboard open) or the rest of the burst
    // (cool-down) been pushed, they would come before the other conversation's.
    let recorded = fake.wait_for(2).await;
    let bodies: Vec<String> = recorded
        .iter()
        .map(|request| {
            open_push(&keys, request).0["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(bodies, ["first of a burst", "another conversation"]);
    let mut third = subscribed_visitor(&app, &uuid()).await;
    speak(&mut third, "a sentinel").await;
    let recorded = fake.wait_for(3).await;
    assert_eq!(recorded.len(), 3, "nothing else was pushed");
    assert_eq!(open_push(&keys, &recorded[2]).0["body"], "a sentinel");
}

#[tokio::test]
async fn a_visitor_who_opted_in_gets_the_reply_only_while_their_chat_is_closed() {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    let app = push_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    let origin = app.origin();
    let visitor_headers = json_headers(&origin);

    let keys = browser_keys();
    let subscription = subscription_json(&fake.endpoint("/push/visitor"), &keys);
    let early = app
        .http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(json!({"subscription": subscription, "visitor_token": token})),
        )
        .await;
    assert_eq!(early.status, 404, "no conversation yet: {}", early.text());

    let message = speak(&mut visitor, "Do you ship to Norway?").await;
    let conversation_id = message["conversation_id"].as_str().unwrap().to_string();
    let reply = |content: &str| json!({"action": "reply", "conversation_id": conversation_id, "content": content, "client_id": uuid()});
    admin.perform(ADMIN_CHANNEL, reply("Let me check")).await;
    visitor.event("message").await;

    // The opt-in, as the widget's notify page does it: same origin, the visitor's token, the subscription.
    let stranger = app
        .http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(json!({"subscription": subscription, "visitor_token": uuid()})),
        )
        .await;
    assert_eq!(stranger.status, 404, "{}", stranger.text());
    let cross_site = app
        .http(
            "POST",
            "/push_subscriptions",
            &json_headers(BLOG),
            Some(json!({"subscription": subscription, "visitor_token": token})),
        )
        .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text());
    let opted_in = app
        .http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(json!({"subscription": subscription, "visitor_token": token})),
        )
        .await;
    assert_eq!(opted_in.status, 201, "{}", opted_in.text());

    // The chat is open: the reply arrives on the socket, and no push goes out for it.
    admin.perform(ADMIN_CHANNEL, reply("Still checking")).await;
    visitor.event("message").await;

    drop(visitor);
    admin
        .next_where(|frame| {
            frame["message"]["type"] == "presence" && frame["message"]["online"] == false
        })
        .await;
    admin
        .perform(ADMIN_CHANNEL, reply("Yes, we ship to Norway!"))
        .await;

    let recorded = fake.wait_for(1).await;
    assert_eq!(recorded[0].path, "/push/visitor");
    let (payload, claims, _) = open_push(&keys, &recorded[0]);
    assert_eq!(
        payload["body"], "Yes, we ship to Norway!",
        "the reply made while the chat was open was not pushed"
    );
    assert_eq!(payload["title"], "Chat with us");
    assert_eq!(payload["conversation_id"], conversation_id.as_str());
    assert_eq!(claims["aud"], fake.origin());

    // A visitor cannot take over the owner's subscription, nor remove it.
    let owner_keys = subscribe_owner(&app, &cookie, &fake, "/push/owner").await;
    let hijack = json!({"subscription": subscription_json(&fake.endpoint("/push/owner"), &owner_keys), "visitor_token": token});
    assert_eq!(
        app.http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(hijack)
        )
        .await
        .status,
        403
    );
    let remove = json!({"endpoint": fake.endpoint("/push/owner"), "visitor_token": token});
    assert_eq!(
        app.http(
            "DELETE",
            "/push_subscriptions",
            &visitor_headers,
            Some(remove)
        )
        .await
        .status,
        403
    );
    let own = json!({"endpoint": fake.endpoint("/push/visitor"), "visitor_token": token});
    assert_eq!(
        app.http("DELETE", "/push_subscriptions", &visitor_headers, Some(own))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn deleting_a_conversation_forgets_its_visitors_subscription_so_the_same_browser_can_opt_in_again(
) {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    let app = push_app().await;
    let cookie = app.login().await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    let origin = app.origin();
    let visitor_headers = json_headers(&origin);
    let opt_in = json!({
        "subscription": subscription_json(&fake.endpoint("/push/visitor"), &browser_keys()),
        "visitor_token": token,
    });

    let first = speak(&mut visitor, "Hello?").await;
    let subscribed = app
        .http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(opt_in.clone()),
        )
        .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.text());
    let conversation_id = first["conversation_id"].as_str().unwrap();
    let deleted = app
        .http(
            "DELETE",
            &format!("/conversations/{conversation_id}"),
            &owner_headers(&origin, &cookie),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());

    // The visitor comes back on the same browser: a new conversation, which that browser may opt in to. Before,
    // the deleted conversation's subscription kept the endpoint ("subscribed already") for good.
    let second = speak(&mut visitor, "Hello again").await;
    assert_ne!(second["conversation_id"], first["conversation_id"]);
    let again = app
        .http(
            "POST",
            "/push_subscriptions",
            &visitor_headers,
            Some(opt_in),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text());
}

#[tokio::test]
async fn gone_and_not_found_delete_the_subscription() {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    fake.script("/push/a-gone", &[Reply::Status(410, None)]);
    fake.script("/push/b-missing", &[Reply::Status(404, None)]);
    let app = push_app().await;
    let cookie = app.login().await;
    subscribe_owner(&app, &cookie, &fake, "/push/a-gone").await;
    subscribe_owner(&app, &cookie, &fake, "/push/b-missing").await;
    subscribe_owner(&app, &cookie, &fake, "/push/c-fine").await;

    let mut first = subscribed_visitor(&app, &uuid()).await;
    speak(&mut first, "one").await;
    fake.wait_for(3).await;
    // A gone subscription is deleted before its failure is counted.
    eventually("two failed pushes", PATIENCE, || async {
        metric(&app, FAILED).await == 2
    })
    .await;

    for (round, content) in ["two", "three"].into_iter().enumerate() {
        let mut visitor = subscribed_visitor(&app, &uuid()).await;
        speak(&mut visitor, content).await;
        eventually("the fine subscription got its push", PATIENCE, || async {
            metric(&app, SENT).await == round as u64 + 2
        })
        .await;
    }
    let paths: Vec<String> = fake
        .recorded()
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(
        paths.iter().filter(|path| *path == "/push/a-gone").count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths
            .iter()
            .filter(|path| *path == "/push/b-missing")
            .count(),
        1,
        "{paths:?}"
    );
    assert_eq!(metric(&app, FAILED).await, 2);
}

#[tokio::test]
async fn a_429_waits_for_retry_after_and_a_5xx_is_retried() {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    fake.script("/push/busy", &[Reply::Status(429, Some("1"))]);
    fake.script("/push/flaky", &[Reply::Status(503, None)]);
    let app = push_app().await;
    let cookie = app.login().await;
    let keys = subscribe_owner(&app, &cookie, &fake, "/push/busy").await;
    let flaky_keys = subscribe_owner(&app, &cookie, &fake, "/push/flaky").await;

    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    speak(&mut visitor, "are you busy?").await;
    eventually(
        "both pushes delivered after their retries",
        Duration::from_secs(30),
        || async { metric(&app, SENT).await == 2 },
    )
    .await;

    let recorded = fake.recorded();
    let busy: Vec<&Recorded> = recorded
        .iter()
        .filter(|request| request.path == "/push/busy")
        .collect();
    assert_eq!(busy.len(), 2, "one 429, then the retry");
    // A lower bound, not a timing measurement: the retry cannot come before the service said it may.
    assert!(
        busy[1].at.duration_since(busy[0].at) >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(open_push(&keys, busy[1]).0["body"], "are you busy?");
    let flaky: Vec<&Recorded> = recorded
        .iter()
        .filter(|request| request.path == "/push/flaky")
        .collect();
    assert_eq!(flaky.len(), 2, "one 503, then the retry");
    assert_eq!(open_push(&flaky_keys, flaky[1]).0["body"], "are you busy?");
    assert_eq!(metric(&app, FAILED).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_that_never_answers_blocks_no_message_and_holds_at_most_the_in_flight_bound()
{
    let fake = FakePushService::start(Reply::Hang).await;
    let app = push_app().await;
    let cookie = app.login().await;
    subscribe_owner(&app, &cookie, &fake, "/push/black-hole").await;

    // More conversations (so the cool-down does not merge them) than pushes may be in flight.
    let conversations = natter::push::MAX_IN_FLIGHT + 4;
    let mut visitors = Vec::new();
    for index in 0..conversations {
        let mut visitor = subscribed_visitor(&app, &uuid()).await;
        // Every message is stored and echoed while the push service swallows the pushes.
        speak(&mut visitor, &format!("message {index}")).await;
        visitors.push(visitor);
    }
    // The first pushes take every slot and hang; the others wait in natter's queue.
    fake.wait_for(natter::push::MAX_IN_FLIGHT).await;
    // Still chatting while every slot hangs.
    let mut late = subscribed_visitor(&app, &uuid()).await;
    speak(&mut late, "still here").await;
    // Read in this order, the check is exact without timing: a slot is freed only after its push is counted as
    // failed, so if nothing has failed yet, nothing beyond the bound can have been started when we counted.
    let started = fake.recorded().len();
    if metric(&app, FAILED).await == 0 {
        assert_eq!(
            started,
            natter::push::MAX_IN_FLIGHT,
            "no more pushes in flight than the bound"
        );
    }

    // Each hung push times out, frees its slot and its socket; the rest then get their turn and time out too.
    eventually("every push given up", Duration::from_secs(120), || async {
        metric(&app, FAILED).await == conversations as u64 + 1
    })
    .await;
    eventually(
        "natter closed every connection it opened",
        PATIENCE,
        || async { fake.state.open.load(Ordering::SeqCst) == 0 },
    )
    .await;
    println!(
        "never-answering push service: {} pushes, at most {} connections seen open at once by the service (bound {})",
        conversations + 1,
        fake.state.max_open.load(Ordering::SeqCst),
        natter::push::MAX_IN_FLIGHT
    );
    assert_eq!(
        fake.recorded().len(),
        conversations + 1,
        "a timed-out push is not retried into a black hole"
    );
}

#[tokio::test]
async fn subscriptions_are_checked_at_the_door() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let keys = browser_keys();
    let origin = app.origin();
    let headers = owner_headers(&origin, &cookie);
    let post = |body: Value| app.http("POST", "/push_subscriptions", &headers, Some(body));

    for endpoint in [
        "http://127.0.0.1:9/push", // plain http, and loopback, without the test switch
        "https://127.0.0.1/push",  // loopback
        "https://10.0.0.7/push",   // private
        "https://169.254.169.254/latest", // link-local (cloud metadata)
        "https://[::1]/push",      // IPv6 loopback
        "https://[fd00::1]/push",  // unique local
        "https://[::ffff:192.168.1.1]/x", // IPv4-mapped private
        "https://224.0.0.1/push",  // multicast
        "https://user@push.example/x", // user info
        "ftp://push.example/x",
    ] {
        let response = post(subscription_json(endpoint, &keys)).await;
        assert_eq!(
            response.status,
            422,
            "{endpoint} must be refused: {}",
            response.text()
        );
    }
    let bad_key =
        json!({"endpoint": "https://8.8.8.8/push", "keys": {"p256dh": "BAAA", "auth": keys.auth}});
    assert_eq!(post(bad_key).await.status, 422);
    let bad_auth = json!({"endpoint": "https://8.8.8.8/push", "keys": {"p256dh": keys.p256dh, "auth": "c2hvcnQ"}});
    assert_eq!(post(bad_auth).await.status, 422);
    let huge = subscription_json(&format!("https://8.8.8.8/{}", "a".repeat(3000)), &keys);
    assert_eq!(post(huge).await.status, 413);

    let public = subscription_json("https://8.8.8.8/push/ok", &keys);
    let no_cookie = app
        .http(
            "POST",
            "/push_subscriptions",
            &json_headers(&origin),
            Some(public.clone()),
        )
        .await;
    assert_eq!(no_cookie.status, 401);
    let cross_site = app
        .http(
            "POST",
            "/push_subscriptions",
            &[
                ("origin", BLOG),
                ("content-type", "application/json"),
                ("cookie", &cookie),
            ],
            Some(public.clone()),
        )
        .await;
    assert_eq!(cross_site.status, 403);
    assert_eq!(
        post(public).await.status,
        201,
        "a public https endpoint is accepted"
    );
    let delete = app
        .http(
            "DELETE",
            "/push_subscriptions",
            &headers,
            Some(json!({"endpoint": "https://8.8.8.8/push/ok"})),
        )
        .await;
    assert_eq!(delete.status, 204);
}

/// Regression (issue 15, item 8): a refused endpoint's error told a visitor how natter's resolver answered for the
/// name (internal names mapped through natter), and NAT64 local-use, Teredo and discard addresses were accepted.
#[tokio::test]
async fn refused_endpoints_get_one_answer_that_says_nothing_of_the_network() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let keys = browser_keys();
    let origin = app.origin();
    let headers = owner_headers(&origin, &cookie);
    let mut messages = Vec::new();
    for endpoint in [
        "https://[64:ff9b:1::a00:1]/push", // local-use NAT64 to 10.0.0.1
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/push", // Teredo
        "https://[100::1]/push",           // discard-only
        "https://10.1.2.3/push",
        "https://localhost/push", // a name, resolved by natter
    ] {
        let response = app
            .http(
                "POST",
                "/push_subscriptions",
                &headers,
                Some(subscription_json(endpoint, &keys)),
            )
            .await;
        assert_eq!(response.status, 422, "{endpoint}: {}", response.text());
        messages.push(response.json()["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages.iter().all(|message| *message == messages[0]),
        "{messages:#?}"
    );
    assert!(
        !["localhost", "127.", "10.", "::"]
            .iter()
            .any(|leak| messages[0].contains(leak)),
        "{}",
        messages[0]
    );
}

/// Not an assertion: the figure for the note. `cargo test --test api push_latency -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_latency_from_a_visitor_message_to_the_request_leaving_natter() {
    let fake = FakePushService::start(Reply::Status(201, None)).await;
    let app = spawn_app_with(|config| {
        config.push.allow_loopback = true;
        config.push.cooldown_seconds = 0;
    })
    .await;
    let cookie = app.login().await;
    subscribe_owner(&app, &cookie, &fake, "/push/owner").await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    speak(&mut visitor, "warm-up").await;
    fake.wait_for(1).await;

    let rounds = 200;
    let mut to_push = Vec::with_capacity(rounds);
    let mut to_echo = Vec::with_capacity(rounds);
    for index in 0..rounds {
        let sent = Instant::now();
        visitor.speak(format!("m{index}"), uuid()).await;
        visitor.event("message").await;
        to_echo.push(sent.elapsed());
        let recorded = fake.wait_for(index + 2).await;
        to_push.push(recorded[index + 1].at.duration_since(sent));
    }
    let quantiles = |mut samples: Vec<Duration>| {
        samples.sort();
        let at = |quantile: f64| {
            samples[((samples.len() as f64 * quantile) as usize).min(samples.len() - 1)]
        };
        format!(
            "p50 {:?}, p99 {:?}, max {:?}",
            at(0.50),
            at(0.99),
            samples[samples.len() - 1]
        )
    };
    println!("{rounds} visitor messages, each stored (fsync) before anyone hears of it:");
    println!(
        "  speak sent -> echo back on the visitor's socket:           {}",
        quantiles(to_echo)
    );
    println!(
        "  speak sent -> push request at a loopback push service:     {}",
        quantiles(to_push)
    );
}
