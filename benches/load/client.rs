//! The HTTP and WebSocket clients: dialing natter or the echo server as a visitor, the owner or a bare socket,
//! and the frames a visitor sends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::PATIENCE;

const VISITOR_CHANNEL: &str = r#"{"channel":"VisitorChannel"}"#;
const ADMIN_CHANNEL: &str = r#"{"channel":"AdminChannel"}"#;

/// Message text after the sequence number: with it a stored message is about 250 bytes of JSON, like a short chat
/// line with its id, conversation id, client id and timestamp.
const PADDING: &str = "hello, is anyone there? I have a question about the post on static sites";

/// How many 127.0.0.x source addresses the client spreads its sockets over: one address has ~28,000 ephemeral ports,
/// and the benchmark may hold more sockets than that across scenarios (TIME_WAIT included).
const SOURCE_ADDRESSES: usize = 16;

/// Handshakes in flight at once while a fleet connects: below the listener's backlog (1,024), so the figures measure
/// natter and not SYN retransmits. The reconnect storm deliberately has no such limit.
pub const DIAL_CONCURRENCY: usize = 256;

pub type Socket = WebSocket<TokioIo<Upgraded>>;

pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<HttpAnswer> {
    http_from(None, address, method, path, headers, body).await
}

/// One HTTP/1.1 request on a fresh connection from `source` (a loopback address, say), or from any address.
pub async fn http_from(
    source: Option<IpAddr>,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<HttpAnswer> {
    let exchange = async {
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(address).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", address.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(HttpAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer in time"))?
}

/// natter's Prometheus counters, by metric name (labels included).
pub async fn metrics(address: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let answer = http(address, "GET", "/metrics", &[], None).await?;
    if answer.status != 200 {
        bail!("/metrics answered {}", answer.status);
    }
    Ok(String::from_utf8_lossy(&answer.body)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect())
}

pub async fn login(endpoint: &Endpoint, password: &str) -> anyhow::Result<String> {
    let answer = login_attempt(endpoint, None, password).await?;
    if answer.status != 200 {
        bail!(
            "admin login answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let cookie = answer
        .headers
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| anyhow!("login set no cookie"))?;
    Ok(cookie.split(';').next().unwrap_or_default().to_string())
}

/// `POST /auth/login` as the dashboard sends it, from `source` when given.
pub async fn login_attempt(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    password: &str,
) -> anyhow::Result<HttpAnswer> {
    let body = json!({ "username": "admin", "password": password })
        .to_string()
        .into_bytes();
    let headers = [
        ("origin", endpoint.public_origin.as_str()),
        ("content-type", "application/json"),
    ];
    http_from(
        source,
        endpoint.address,
        "POST",
        "/auth/login",
        &headers,
        Some(body),
    )
    .await
}

/// Where sockets go, and with which origins.
#[derive(Clone)]
pub struct Endpoint {
    pub address: SocketAddr,
    visitor_origin: String,
    public_origin: String,
    /// Bind each client socket to one of several 127.0.0.x addresses (only when the server is on loopback).
    spread: bool,
}

impl Endpoint {
    pub fn new(address: SocketAddr, visitor_origin: &str, public_origin: &str) -> Endpoint {
        let spread = matches!(address.ip(), IpAddr::V4(ip) if ip.is_loopback());
        Endpoint {
            address,
            visitor_origin: visitor_origin.into(),
            public_origin: public_origin.into(),
            spread,
        }
    }
}

/// Who a socket is.
#[derive(Clone)]
pub enum Peer {
    /// A visitor with this token: connects, is welcomed and subscribes to VisitorChannel.
    Visitor(String),
    /// The owner with this session cookie: subscribes to AdminChannel.
    Admin(String),
    /// A plain WebSocket to the echo server.
    Echo,
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

async fn connect_from(endpoint: &Endpoint, index: usize) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if endpoint.spread {
        let last = 2 + (index % SOURCE_ADDRESSES) as u8;
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))?;
    }
    let stream = socket.connect(endpoint.address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a socket; for natter, also waits for `welcome` and subscribes.
pub async fn dial(endpoint: &Endpoint, index: usize, peer: &Peer) -> anyhow::Result<Socket> {
    let stream = connect_from(endpoint, index).await?;
    let path = match peer {
        Peer::Visitor(token) => format!("/cable?token={token}"),
        Peer::Admin(_) | Peer::Echo => "/cable".to_string(),
    };
    let mut request = http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", endpoint.address.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13");
    match peer {
        Peer::Visitor(_) => {
            request = request
                .header("sec-websocket-protocol", "actioncable-v1-json")
                .header("origin", &endpoint.visitor_origin);
        }
        Peer::Admin(cookie) => {
            request = request
                .header("sec-websocket-protocol", "actioncable-v1-json")
                .header("origin", &endpoint.public_origin)
                .header("cookie", cookie);
        }
        Peer::Echo => {}
    }
    let (mut socket, _) = fastwebsockets::handshake::client(
        &SpawnExecutor,
        request.body(Empty::<Bytes>::new())?,
        stream,
    )
    .await?;
    socket.set_max_message_size(16 << 20);
    let identifier = match peer {
        Peer::Visitor(_) => VISITOR_CHANNEL,
        Peer::Admin(_) => ADMIN_CHANNEL,
        Peer::Echo => return Ok(socket),
    };
    let welcome = next_text(&mut socket).await?;
    if !contains(&welcome, br#""type":"welcome""#) {
        bail!(
            "expected welcome, got {}",
            String::from_utf8_lossy(&welcome)
        );
    }
    send(
        &mut socket,
        json!({ "command": "subscribe", "identifier": identifier }).to_string(),
    )
    .await?;
    let answer = next_text(&mut socket).await?;
    if !contains(&answer, b"confirm_subscription") {
        bail!(
            "expected confirm_subscription, got {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(socket)
}

pub async fn send(socket: &mut Socket, text: String) -> anyhow::Result<()> {
    socket
        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
        .await?;
    Ok(())
}

/// The next text frame that is not an ActionCable ping.
pub async fn next_text(socket: &mut Socket) -> anyhow::Result<Vec<u8>> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, socket.read_frame())
            .await
            .map_err(|_| anyhow!("no frame within {PATIENCE:?}"))??;
        match frame.opcode {
            OpCode::Text | OpCode::Binary if !is_ping(&frame.payload) => {
                return Ok(frame.payload.to_vec())
            }
            OpCode::Close => bail!("the server closed the socket"),
            _ => {}
        }
    }
}

pub fn is_ping(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"type":"ping""#)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A `speak` command, as the widget sends it.
pub fn speak(content: &str) -> String {
    // A time-ordered client id, as the widget makes them.
    let data = json!({ "action": "speak", "content": content, "client_id": uuid::Uuid::now_v7() })
        .to_string();
    json!({ "command": "message", "identifier": VISITOR_CHANNEL, "data": data }).to_string()
}

pub fn sync_command() -> String {
    json!({ "command": "message", "identifier": VISITOR_CHANNEL, "data": json!({ "action": "sync" }).to_string() }).to_string()
}

const MARKER: &[u8] = b"bench ";

pub fn numbered(sequence: usize) -> String {
    format!("bench {sequence:010} {PADDING}")
}

/// The sequence number of a `numbered` message inside a frame.
pub fn sequence_in(payload: &[u8]) -> Option<usize> {
    let at = payload
        .windows(MARKER.len())
        .position(|window| window == MARKER)?
        + MARKER.len();
    std::str::from_utf8(payload.get(at..at + 10)?)
        .ok()?
        .parse()
        .ok()
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Dials every peer, `DIAL_CONCURRENCY` at a time; fails if any socket does not open.
pub async fn dial_all(endpoint: &Endpoint, peers: &[Peer]) -> anyhow::Result<Vec<Socket>> {
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut dials = JoinSet::new();
    for (index, peer) in peers.iter().enumerate() {
        let (endpoint, peer, permits) = (endpoint.clone(), peer.clone(), permits.clone());
        dials.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let socket = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer))
                .await
                .map_err(|_| anyhow!("handshake timed out"))?;
            Ok::<_, anyhow::Error>((index, socket?))
        });
    }
    let mut sockets: Vec<Option<Socket>> = (0..peers.len()).map(|_| None).collect();
    while let Some(joined) = dials.join_next().await {
        let (index, socket) = joined?.context("opening a socket")?;
        sockets[index] = Some(socket);
    }
    Ok(sockets
        .into_iter()
        .map(|socket| socket.expect("every dial answered"))
        .collect())
}

pub fn visitors(count: usize) -> Vec<Peer> {
    (0..count)
        .map(|_| Peer::Visitor(uuid::Uuid::new_v4().to_string()))
        .collect()
}

pub async fn wait_for_no_sockets(endpoint: &Endpoint) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match metrics(endpoint.address).await {
            Ok(figures)
                if figures
                    .get("natter_connections{kind=\"visitor\"}")
                    .copied()
                    .unwrap_or(0.0)
                    == 0.0 =>
            {
                return
            }
            Err(_) => return,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
