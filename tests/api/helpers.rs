//! The test harness: `spawn_app` starts the real server on port 0 with a temp data dir; `Client` is a real
//! WebSocket client speaking the ActionCable protocol; `http` sends real HTTP requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use natter::config::{Config, Origin};
use natter::server::Server;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "correct horse battery staple";
pub const BLOG: &str = "http://blog.test:8080";
/// How long a test waits for something that should happen at once; generous, so a loaded CI machine does not flake.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub const VISITOR_CHANNEL: &str = r#"{"channel":"VisitorChannel"}"#;
pub const ADMIN_CHANNEL: &str = r#"{"channel":"AdminChannel"}"#;

pub struct TestApp {
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    /// Owns the temp dir when the app made it.
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn origin(&self) -> String {
        self.url()
    }

    /// Stops the server the way SIGTERM does and waits until the store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// Stops, then starts again on the same address and data dir.
    pub async fn restart(&mut self) {
        self.restart_with_password(PASSWORD).await;
    }

    /// Stops, then starts again with `NATTER_ADMIN_PASSWORD` set to `password`.
    pub async fn restart_with_password(&mut self, password: &str) {
        self.stop().await;
        let config = test_config(&self.data_dir, Some(self.address));
        let (stop, task, address) = start(config, password).await;
        self.stop = Some(stop);
        self.task = Some(task);
        self.address = address;
    }

    /// Logs in as the admin and answers the session cookie (`natter_session=...`).
    pub async fn login(&self) -> String {
        self.login_with(PASSWORD).await
    }

    pub async fn login_with(&self, password: &str) -> String {
        let response = login_attempt(self.address, password).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        let cookie = response.header("set-cookie").expect("login sets a cookie");
        cookie.split(';').next().unwrap().to_string()
    }

    /// `POST /auth/logout` from natter's own origin.
    pub async fn logout(&self, cookie: &str) -> HttpResponse {
        let origin = self.origin();
        self.http(
            "POST",
            "/auth/logout",
            &[("cookie", cookie), ("origin", &origin)],
            None,
        )
        .await
    }

    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> HttpResponse {
        http(
            self.address,
            method,
            path,
            headers,
            body.map(|body| body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn visitor(&self, token: &str) -> Client {
        Client::connect(self.address, &format!("/cable?token={token}"), BLOG, None)
            .await
            .expect("visitor connects")
    }

    pub async fn admin(&self, cookie: &str) -> Client {
        Client::connect(self.address, "/cable", &self.origin(), Some(cookie))
            .await
            .expect("admin connects")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_config(data_dir: &Path, listen: Option<SocketAddr>) -> Config {
    let mut config = Config::default();
    config.server.listen = listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    config.server.data_dir = data_dir.to_path_buf();
    config.server.log = "warn".into();
    config.widget.allowed_origins = vec![Origin::parse(BLOG).unwrap()];
    // Tests send far more than a visitor would; the throttle tests set their own limits.
    config.limits.messages_per_minute = 10_000;
    config.limits.conversations_per_hour = 10_000;
    config
}

async fn start(
    config: Config,
    password: &str,
) -> (
    oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
    SocketAddr,
) {
    let server = Server::build(config, Some(password))
        .await
        .expect("the server starts");
    let address = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (stop, task, address)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server with a config changed by `change`.
pub async fn spawn_app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    let temp = tempfile::tempdir().expect("a temp dir");
    let mut config = test_config(temp.path(), None);
    change(&mut config);
    let data_dir = config.server.data_dir.clone();
    let (stop, task, address) = start(config, PASSWORD).await;
    TestApp {
        address,
        data_dir,
        _temp: Some(temp),
        stop: Some(stop),
        task: Some(task),
    }
}

pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    }
}

/// `POST /auth/login` as the dashboard sends it (from natter's own origin), with `password` for `admin`.
pub async fn login_attempt(address: SocketAddr, password: &str) -> HttpResponse {
    let origin = format!("http://{address}");
    let headers = [
        ("origin", origin.as_str()),
        ("content-type", "application/json"),
    ];
    let body = json!({"username": "admin", "password": password}).to_string();
    http(
        address,
        "POST",
        "/auth/login",
        &headers,
        Some(body.into_bytes()),
    )
    .await
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> HttpResponse {
    let stream = TcpStream::connect(address).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    HttpResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

struct SpawnExecutor;

impl<F: std::future::Future + Send + 'static> hyper::rt::Executor<F> for SpawnExecutor
where
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// A WebSocket client that speaks ActionCable, as the widget and the dashboard do.
pub struct Client {
    pub socket: WebSocket<TokioIo<Upgraded>>,
}

/// Why a connection attempt did not give a socket.
#[derive(Debug)]
pub struct Refused {
    pub status: Option<StatusCode>,
}

impl Client {
    pub async fn connect(
        address: SocketAddr,
        path: &str,
        origin: &str,
        cookie: Option<&str>,
    ) -> Result<Client, Refused> {
        let stream = TcpStream::connect(address).await.expect("connect");
        let mut request = Request::builder()
            .method("GET")
            .uri(path)
            .header("host", address.to_string())
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header(
                "sec-websocket-key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-protocol",
                "actioncable-v1-json, actioncable-unsupported",
            )
            .header("origin", origin);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let request = request.body(http_body_util::Empty::<Bytes>::new()).unwrap();
        match fastwebsockets::handshake::client(&SpawnExecutor, request, stream).await {
            Ok((mut socket, response)) => {
                assert_eq!(
                    response.headers().get("sec-websocket-protocol").unwrap(),
                    "actioncable-v1-json"
                );
                socket.set_auto_pong(true);
                Ok(Client { socket })
            }
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(status)) => Err(Refused {
                status: StatusCode::from_u16(status).ok(),
            }),
            Err(error) => panic!("handshake failed: {error}"),
        }
    }

    /// Connects and waits for `welcome`.
    pub async fn welcomed(mut self) -> Client {
        let welcome = self.next().await.expect("a welcome frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        self
    }

    /// Sends a frame; `false` when the socket is gone (the crash tests expect that).
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.socket
            .write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
            .await
            .is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
            .await
            .expect("send");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn subscribe(&mut self, identifier: &str) -> Value {
        self.send(json!({"command": "subscribe", "identifier": identifier}))
            .await;
        self.next_where(|frame| frame["identifier"] == identifier && frame.get("type").is_some())
            .await
    }

    pub async fn perform(&mut self, identifier: &str, data: Value) {
        self.send(
            json!({"command": "message", "identifier": identifier, "data": data.to_string()}),
        )
        .await;
    }

    /// Sends a visitor `speak`, as the widget does.
    pub async fn speak(
        &mut self,
        content: impl std::fmt::Display,
        client_id: impl std::fmt::Display,
    ) {
        let data = json!({"action": "speak", "content": content.to_string(), "client_id": client_id.to_string()});
        self.perform(VISITOR_CHANNEL, data).await;
    }

    /// The answer to a `speak` or `reply`: the next `message` or `error` event.
    pub async fn answer(&mut self) -> Value {
        self.next_where(|frame| {
            matches!(frame["message"]["type"].as_str(), Some("message" | "error"))
        })
        .await
    }

    /// The next frame that is not a ping; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.read_frame())
                .await
                .expect("a frame in time")
                .ok()?;
            match frame.opcode {
                OpCode::Text => {
                    let value: Value =
                        serde_json::from_slice(&frame.payload).expect("server frames are JSON");
                    if value["type"] != "ping" {
                        return Some(value);
                    }
                }
                OpCode::Close => return None,
                _ => {}
            }
        }
    }

    /// Skips frames until one matches.
    pub async fn next_where(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.next().await.expect("the socket stays open");
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// The next channel event of `kind` (`message.type`).
    pub async fn event(&mut self, kind: &str) -> Value {
        self.next_where(|frame| frame["message"]["type"] == kind)
            .await["message"]
            .clone()
    }

    /// Reads until the server closes the socket; answers the close code and every frame seen before it.
    pub async fn closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let frame = match tokio::time::timeout(PATIENCE, self.socket.read_frame())
                .await
                .expect("a frame in time")
            {
                Ok(frame) => frame,
                Err(_) => return (None, seen),
            };
            match frame.opcode {
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    return (code, seen);
                }
                OpCode::Text => {
                    seen.push(serde_json::from_slice(&frame.payload).unwrap_or(Value::Null))
                }
                _ => {}
            }
        }
    }
}

/// A visitor connected, welcomed and subscribed.
pub async fn subscribed_visitor(app: &TestApp, token: &str) -> Client {
    let mut client = app.visitor(token).await.welcomed().await;
    let answer = client.subscribe(VISITOR_CHANNEL).await;
    assert_eq!(answer["type"], "confirm_subscription", "{answer}");
    client
}

/// An admin connected, welcomed and subscribed.
pub async fn subscribed_admin(app: &TestApp, cookie: &str) -> Client {
    let mut client = app.admin(cookie).await.welcomed().await;
    let answer = client.subscribe(ADMIN_CHANNEL).await;
    assert_eq!(answer["type"], "confirm_subscription", "{answer}");
    client
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The address a started natter binary says it listens on (its stdout's "listening on http://..." line). Reads its
/// stdout from then on, so the child never blocks on a full pipe.
pub async fn listening_address(child: &mut tokio::process::Child) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("natter's stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let address = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("listening on http://").nth(1) {
                return url.trim().parse::<SocketAddr>().unwrap();
            }
        }
        panic!("natter exited before listening");
    })
    .await
    .expect("natter listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    address
}
