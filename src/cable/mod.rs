//! `/cable`: the upgrade checks, then one socket's life.
//!
//! Before the upgrade: the `Origin` must be allow-listed (else HTTP 403), the subprotocol must be ActionCable's, and
//! the IP must be under its connection limits (else HTTP 429). After it: a visitor token that is not a UUID, or an
//! admin socket without a live session, gets ActionCable's `unauthorized` disconnect.
//!
//! Each socket runs two tasks. Reading a frame is not cancel-safe (it may stop between a header and its payload), so
//! it never sits in a `select!` loop: the reader task reads frames (`frame_reader`, natter's own, small) and handles
//! commands, and the writer task owns the write half (`frame_writer`) and `select!`s over its outbound queue, the 3-second
//! ping, a kick from the hub, and shutdown. The two are joined by one `select!` that ends the socket when either ends;
//! dropping the reader there is fine, as the socket is being closed anyway.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::app::App;
use crate::channels::{Connection, Identity};
use crate::config::Origin;
use crate::error::ApiError;
use crate::http::Body;
use crate::hub::{Channel, Outbound, Outlet};
use crate::protocol;
use crate::store::hash_token;
use crate::throttle::{ConnectionSlot, Network};

pub mod frame_reader;
pub mod frame_writer;

use frame_reader::{Frame as ClientFrame, FrameError, FrameReader};
use frame_writer::{FrameWriter, Kind};

pub const SUBPROTOCOL: &str = "actioncable-v1-json";

/// The largest message a client may send. A `speak` of 4,000 characters is at most ~16 KB of UTF-8, and JSON
/// escaping inside the `data` string can triple that; anything larger is not a chat message.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Outbound frames queued for one socket before it counts as too slow and is kicked. A visitor sees a handful of
/// events per message; an admin sees every message of every conversation, so it gets more room for bursts.
const VISITOR_QUEUE: usize = 64;
/// An admin gets a frame per message (two for a conversation's first: its summary too), and one store commit can
/// release up to `MAX_BATCH` (1,024) messages at once: the queue holds a whole burst with room to spare.
const ADMIN_QUEUE: usize = 4096;

/// Frames written into the buffer before it is flushed, so one busy socket cannot hold its writer forever.
const MAX_FRAMES_PER_FLUSH: usize = 256;

/// The write buffer of a socket. A visitor's frames are small and few (pings, a message now and then); an admin's
/// come in bursts, which the buffer turns into few large writes.
const VISITOR_WRITE_BUFFER: usize = 1024;
const ADMIN_WRITE_BUFFER: usize = 16 * 1024;

/// ActionCable's client expects a ping every 3 seconds and reconnects after about 6 without one.
const PING_INTERVAL: Duration = Duration::from_secs(3);

/// A socket whose peer does not take a frame within this time (a dead phone, a stalled reader) is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long and how much a closing socket reads and discards, so the peer gets our close frame (see `linger`).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

type Writer = FrameWriter<BufWriter<WriteHalf<TokioIo<Upgraded>>>>;

/// Who asked for the socket, decided from the request before upgrading.
enum Caller {
    Visitor(Identity),
    Admin(Identity),
    Unauthorized,
}

/// Checks a `/cable` request and upgrades it, or answers why not.
pub fn upgrade(
    app: &Arc<App>,
    request: &mut http::Request<hyper::body::Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(request) {
        return Err(ApiError::bad_request(
            "this is a WebSocket endpoint: connect with the ActionCable client",
        ));
    }
    let headers = request.headers();
    let origin = headers
        .get(http::header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Origin::parse(value).ok())
        .ok_or_else(|| {
            ApiError::forbidden("a WebSocket needs an Origin header of an allowed site")
        })?;
    let token = request.uri().query().and_then(|query| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value)
    });
    let caller = match token {
        Some(token) => {
            if !app.is_widget_origin(&origin) {
                if let Some(refusal) = app.refused_origins.record(&origin) {
                    app.hub.to_admins(&crate::channels::event(
                        json!({ "type": "refused_origin", "refused_origin": refusal }),
                    ));
                }
                return Err(ApiError::forbidden(format!(
                    "{origin} is not in widget.allowed_origins"
                )));
            }
            match Uuid::parse_str(token) {
                Ok(uuid) => Caller::Visitor(Identity::Visitor(crate::email::visitor_identity(
                    &app.store,
                    hash_token(&uuid.hyphenated().to_string()),
                ))),
                Err(_) => Caller::Unauthorized,
            }
        }
        None => {
            if !app.is_own_origin(&origin) {
                return Err(ApiError::forbidden(format!(
                    "the admin socket is only for {}",
                    app.public_origin
                )));
            }
            let cookie = headers
                .get(http::header::COOKIE)
                .and_then(|value| value.to_str().ok());
            match app.auth.session(&app.store, cookie) {
                Some((session_hash, _)) => Caller::Admin(Identity::Admin(session_hash)),
                None => Caller::Unauthorized,
            }
        }
    };
    let offered = offered_subprotocols(headers);
    if offered
        .as_ref()
        .is_some_and(|offered| !offered.iter().any(|protocol| protocol == SUBPROTOCOL))
    {
        return Err(ApiError::bad_request(format!(
            "this socket speaks the {SUBPROTOCOL} subprotocol"
        )));
    }
    let limits = &app.config.limits;
    let open = app.hub.open_visitor_sockets.load(Ordering::Relaxed)
        + app.hub.open_admin_sockets.load(Ordering::Relaxed);
    // The owner is never locked out by visitors: admin sockets skip the total limit.
    if matches!(caller, Caller::Visitor(_)) && open >= limits.max_connections {
        app.counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            "natter holds as many connections as it is allowed; try again later",
        ));
    }
    let slot = app
        .throttles
        .connections
        .acquire(ip, limits.max_connections_per_ip)
        .ok_or_else(|| {
            app.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            ApiError::throttled("too many connections from your address")
        })?;
    if let Caller::Visitor(Identity::Visitor(token_hash)) = &caller {
        let known = app
            .store
            .conversation_of_token(token_hash)
            .ok()
            .flatten()
            .is_some();
        if !known {
            if let Err(wait) = app.throttles.unknown_tokens.take(&Network::of(ip)) {
                app.counters.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::throttled(format!(
                    "too many new visitors from your address; try again in {} seconds",
                    wait.as_secs().max(1)
                )));
            }
        }
    }
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(request)
        .map_err(|error| ApiError::bad_request(format!("bad WebSocket upgrade: {error}")))?;
    let app = app.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(socket) => serve(app, socket, caller, ip, slot).await,
            Err(error) => tracing::debug!(%error, "WebSocket upgrade did not complete"),
        }
    });
    let (mut parts, _) = response.into_parts();
    if offered.is_some() {
        parts.headers.insert(
            "sec-websocket-protocol",
            http::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(Response::from_parts(parts, Body::default()))
}

fn offered_subprotocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let values: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|protocol| protocol.trim().to_string())
        .filter(|protocol| !protocol.is_empty())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Counts a socket while it lives, for the connection limit and metrics.
struct OpenSocket<'a>(&'a AtomicUsize);

impl<'a> OpenSocket<'a> {
    fn new(counter: &'a AtomicUsize) -> OpenSocket<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenSocket(counter)
    }
}

impl Drop for OpenSocket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    app: Arc<App>,
    socket: fastwebsockets::WebSocket<TokioIo<Upgraded>>,
    caller: Caller,
    ip: IpAddr,
    _slot: ConnectionSlot,
) {
    // Both halves are natter's own: `FrameReader` reads and `FrameWriter` writes.
    let (mut read_stream, write_stream) = tokio::io::split(socket.into_inner());
    let buffer = if matches!(caller, Caller::Admin(_)) {
        ADMIN_WRITE_BUFFER
    } else {
        VISITOR_WRITE_BUFFER
    };
    let writer = FrameWriter::new(BufWriter::with_capacity(buffer, write_stream));
    let (identity, capacity, counter) = match caller {
        Caller::Visitor(identity) => (identity, VISITOR_QUEUE, &app.hub.open_visitor_sockets),
        Caller::Admin(identity) => (identity, ADMIN_QUEUE, &app.hub.open_admin_sockets),
        Caller::Unauthorized => {
            let (queue, outbox) = mpsc::channel(1);
            let _ = queue.try_send(Outbound::Close {
                code: 1008,
                reason: "unauthorized",
                reconnect: false,
            });
            write_loop(
                writer,
                outbox,
                Arc::new(Notify::new()),
                app.shutdown.clone(),
            )
            .await;
            return;
        }
    };
    let _open = OpenSocket::new(counter);
    let (queue, outbox) = mpsc::channel(capacity);
    let kick = Arc::new(Notify::new());
    let outlet = Outlet {
        id: app.hub.next_connection_id(),
        queue: queue.clone(),
        kick: kick.clone(),
    };
    let _ = queue.try_send(Outbound::Frame(protocol::welcome()));
    let mut writer = tokio::spawn(write_loop(
        writer,
        outbox,
        kick.clone(),
        app.shutdown.clone(),
    ));
    let mut connection = Connection::new(app.clone(), identity, outlet, Network::of(ip));
    // A frame, once begun, must be whole within the time a socket has to subscribe.
    let frame_deadline = Duration::from_secs(app.config.limits.idle_socket_seconds);
    let mut reader = FrameReader::new(MAX_MESSAGE_BYTES, frame_deadline);
    let ended_by_reader = tokio::select! {
        end = read_loop(&mut reader, &mut read_stream, &mut connection, &queue) => Some(end),
        _ = &mut writer => None,
    };
    drop(reader);
    connection.leave();
    if let Some(end) = ended_by_reader {
        if let Some((code, reason)) = end {
            if queue
                .try_send(Outbound::Close {
                    code,
                    reason,
                    reconnect: code != 1008,
                })
                .is_err()
            {
                kick.notify_one();
            }
        }
        drop(queue);
        drop(connection);
        // The writer sends what is queued and the close frame; a peer that takes nothing is cut off by its timeout.
        let closing = async {
            if tokio::time::timeout(WRITE_TIMEOUT * 2, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        };
        tokio::join!(closing, linger(&mut read_stream));
    }
}

/// After closing on bad input (an oversized frame, say), the peer's unread bytes are still in our receive buffer; if
/// the socket closed now, the kernel would answer with a reset, and the peer would lose our close frame and its code.
/// So read and discard for a moment (bounded in time and bytes), as HTTP servers do with a lingering close.
async fn linger(read_stream: &mut ReadHalf<TokioIo<Upgraded>>) {
    use tokio::io::AsyncReadExt;
    // On the heap, and only now: as an array it would sit inside every socket's task for its whole life.
    let mut buffer = vec![0u8; 8192];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match read_stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    })
    .await;
}

/// Reads frames until the client leaves or breaks the protocol; answers the close code to send, if any.
async fn read_loop(
    reader: &mut FrameReader,
    read_stream: &mut ReadHalf<TokioIo<Upgraded>>,
    connection: &mut Connection,
    queue: &mpsc::Sender<Outbound>,
) -> Option<(u16, &'static str)> {
    // Frames of a fragmented message, joined here up to the same limit as a single frame.
    let mut fragments: Vec<u8> = Vec::new();
    let mut fragmented = false;
    // A socket must subscribe by this deadline (counted from the upgrade, not reset by other frames), or it is only
    // holding a slot.
    let subscribe_by = tokio::time::Instant::now()
        + Duration::from_secs(connection.app().config.limits.idle_socket_seconds);
    loop {
        let read = if connection.is_subscribed() {
            reader.next(read_stream).await
        } else {
            // Dropping an unfinished `next` is fine here: on timeout the socket is closed.
            match tokio::time::timeout_at(subscribe_by, reader.next(read_stream)).await {
                Ok(read) => read,
                Err(_) => return Some((1008, "subscribe_timeout")),
            }
        };
        let frame = match read {
            Ok(frame) => frame,
            Err(FrameError::TooLarge) => return Some((1009, "message_too_big")),
            Err(FrameError::Protocol(_)) => return Some((1002, "protocol_error")),
            Err(FrameError::TooSlow) => return Some((1008, "frame_timeout")),
            Err(FrameError::Closed) => return None,
        };
        match frame {
            ClientFrame::Text { fin: true, payload } if !fragmented => {
                let Ok(text) = std::str::from_utf8(payload) else {
                    return Some((1007, "invalid_utf8"));
                };
                // Boxed: the handler's state is large, and inline it would sit in every idle socket's task.
                Box::pin(connection.handle(text)).await;
            }
            ClientFrame::Text {
                fin: false,
                payload,
            } if !fragmented => {
                fragmented = true;
                fragments.clear();
                fragments.extend_from_slice(payload);
            }
            ClientFrame::Continuation { fin, payload } if fragmented => {
                if fragments.len() + payload.len() > MAX_MESSAGE_BYTES {
                    return Some((1009, "message_too_big"));
                }
                fragments.extend_from_slice(payload);
                if fin {
                    fragmented = false;
                    let Ok(text) = std::str::from_utf8(&fragments) else {
                        return Some((1007, "invalid_utf8"));
                    };
                    // Boxed: the handler's state is large, and inline it would sit in every idle socket's task.
                    Box::pin(connection.handle(text)).await;
                    fragments = Vec::new();
                }
            }
            ClientFrame::Binary => return Some((1003, "binary_not_supported")),
            ClientFrame::Ping(payload) => {
                let pong = Outbound::Pong(payload.to_vec());
                if queue.send(pong).await.is_err() {
                    return None;
                }
            }
            ClientFrame::Pong => {}
            ClientFrame::Close(payload) => return close_reply(payload, queue).await,
            ClientFrame::Text { .. } | ClientFrame::Continuation { .. } => {
                return Some((1002, "bad_fragment"))
            }
        }
    }
}

/// Answers a client's close frame (RFC 6455, 5.5.1): with its status code when that is a valid one, with 1002 when
/// it is not, and with 1007 when its reason is not UTF-8. The socket ends after that.
async fn close_reply(
    payload: &[u8],
    queue: &mpsc::Sender<Outbound>,
) -> Option<(u16, &'static str)> {
    let reply = match payload {
        [] => Vec::new(),
        [_] => return Some((1002, "protocol_error")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                return Some((1002, "protocol_error"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Some((1007, "invalid_utf8"));
            }
            code.to_be_bytes().to_vec()
        }
    };
    let _ = queue.send(Outbound::CloseEcho(reply)).await;
    None
}

/// Owns the write half: sends queued frames, events (wrapped with this socket's identifiers), and pings, until told
/// to close, kicked, shut down, or the peer stops taking frames. Whatever is queued when it wakes is written into
/// the buffer together and flushed once, so a burst of events costs one system call, not one per frame.
async fn write_loop(
    writer: Writer,
    mut outbox: mpsc::Receiver<Outbound>,
    kick: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut sink = Sink {
        writer,
        visitor_prefix: None,
        admin_prefix: None,
    };
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = *shutdown.borrow();
    loop {
        let outbound = if shutting_down {
            Outbound::Close {
                code: 1012,
                reason: "server_restart",
                reconnect: true,
            }
        } else {
            tokio::select! {
                biased;
                _ = kick.notified() => Outbound::Close { code: 1008, reason: "remote", reconnect: true },
                changed = shutdown.changed() => {
                    shutting_down = changed.is_err() || *shutdown.borrow();
                    continue;
                }
                outbound = outbox.recv() => match outbound {
                    Some(outbound) => outbound,
                    None => return,
                },
                _ = ping.tick() => Outbound::Frame(protocol::ping(crate::timestamp::now_millis().unsigned_abs() / 1000)),
            }
        };
        let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
            let mut open = sink.put(outbound).await?;
            let mut drained = 0;
            let mut yielded = false;
            loop {
                while open && drained < MAX_FRAMES_PER_FLUSH {
                    let Ok(next) = outbox.try_recv() else { break };
                    open = sink.put(next).await?;
                    drained += 1;
                }
                // An admin socket gathers the events of every conversation. Before writing, it lets the tasks
                // already running on this thread deliver theirs (once), so a busy moment costs the owner one write
                // for many events instead of a write each; when nothing else runs, that costs no time.
                if yielded
                    || !open
                    || drained >= MAX_FRAMES_PER_FLUSH
                    || sink.admin_prefix.is_none()
                {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
            }
            sink.writer.flush().await?;
            Ok::<bool, std::io::Error>(open)
        })
        .await;
        if !matches!(sent, Ok(Ok(true))) {
            return;
        }
    }
}

/// The buffered write half, with the start of this socket's channel messages (`{"identifier":...,"message":`).
struct Sink {
    writer: Writer,
    visitor_prefix: Option<Box<str>>,
    admin_prefix: Option<Box<str>>,
}

impl Sink {
    /// Writes one outbound item into the buffer; answers whether the socket stays open (a close ends it).
    async fn put(&mut self, outbound: Outbound) -> std::io::Result<bool> {
        match outbound {
            Outbound::Frame(text) => self.writer.frame(Kind::Text, &[text.as_bytes()]).await?,
            Outbound::Event(channel, event) => {
                let prefix = match channel {
                    Channel::Visitor => &self.visitor_prefix,
                    Channel::Admin => &self.admin_prefix,
                };
                if let Some(prefix) = prefix {
                    // The shared event goes into the buffer between this socket's prefix and a brace: no copy of
                    // the whole frame per socket.
                    self.writer
                        .frame(Kind::Text, &[prefix.as_bytes(), event.as_bytes(), b"}"])
                        .await?;
                }
            }
            Outbound::Subscribed(channel, identifier) => {
                let prefix = Some(protocol::channel_message_prefix(&identifier).into_boxed_str());
                match channel {
                    Channel::Visitor => self.visitor_prefix = prefix,
                    Channel::Admin => self.admin_prefix = prefix,
                }
            }
            Outbound::Unsubscribed(channel) => match channel {
                Channel::Visitor => self.visitor_prefix = None,
                Channel::Admin => self.admin_prefix = None,
            },
            Outbound::Pong(payload) => self.writer.frame(Kind::Pong, &[&payload]).await?,
            Outbound::CloseEcho(payload) => {
                self.writer.frame(Kind::Close, &[&payload]).await?;
                return Ok(false);
            }
            Outbound::Close {
                code,
                reason,
                reconnect,
            } => {
                let goodbye = protocol::disconnect(reason, reconnect);
                self.writer.frame(Kind::Text, &[goodbye.as_bytes()]).await?;
                self.writer.close(code, reason).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_offers_are_split_and_trimmed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-protocol",
            "actioncable-v1-json, actioncable-unsupported"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            offered_subprotocols(&headers).unwrap(),
            vec!["actioncable-v1-json", "actioncable-unsupported"]
        );
        assert!(offered_subprotocols(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_close_frame_is_answered_with_its_code_or_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (queue, mut outbox) = mpsc::channel(4);
            let normal = [&1000u16.to_be_bytes()[..], b"bye"].concat();
            assert_eq!(close_reply(&normal, &queue).await, None);
            assert!(matches!(
                outbox.try_recv(),
                Ok(Outbound::CloseEcho(reply)) if reply == 1000u16.to_be_bytes()
            ));
            assert_eq!(close_reply(b"", &queue).await, None);
            assert!(matches!(
                outbox.try_recv(),
                Ok(Outbound::CloseEcho(reply)) if reply.is_empty()
            ));
            let refused: [(&[u8], u16); 4] = [
                (b"\x03", 1002),
                (&1005u16.to_be_bytes(), 1002),
                (&999u16.to_be_bytes(), 1002),
                (b"\x03\xe8\xff", 1007),
            ];
            for (payload, code) in refused {
                assert_eq!(
                    close_reply(payload, &queue).await.map(|(code, _)| code),
                    Some(code)
                );
            }
            assert!(
                outbox.try_recv().is_err(),
                "a refused close is answered by the caller"
            );
        });
    }
}
