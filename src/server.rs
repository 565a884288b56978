//! The listener and the life of the process: bind, accept, serve HTTP/1.1 (plain or over TLS) with timeouts, shut
//! down cleanly.
//!
//! `Server::build` binds first and reports the real address (tests bind port 0), then `run_until_stopped` serves
//! until the shutdown future resolves. On shutdown natter stops accepting, tells every socket `server_restart` (the
//! clients reconnect and `sync`), lets HTTP requests in flight finish, and then closes the store after its writer has
//! committed everything queued, so nothing acknowledged is lost and nothing half-written is left.
//!
//! Beside the main listener: with TLS on, an optional plain-HTTP listener (`tls.redirect_listen`) that answers every
//! request with a redirect to the HTTPS public URL (plain HTTP sent to the TLS port itself gets the same redirect),
//! but for ACME's HTTP-01 challenges in mode `acme`; and always the control socket in the data dir, through which
//! `natter backup` takes a consistent copy of the running store (see `backup`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;

use crate::acme::{Acme, Http01};
use crate::allocator::{self, Connections};
use crate::app::App;
use crate::auth::PasswordSource;
use crate::backup;
use crate::config::{Config, Origin, TlsMode};
use crate::routes;
use crate::tls::{Tls, ACME_TLS_ALPN, HANDSHAKE_TIMEOUT};

/// A client must send its request headers within this time, and an idle keep-alive connection is closed after it:
/// hyper has no timeout of its own, and without one a slow client holds a connection forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer of one HTTP connection, which bounds the size of request headers.
const MAX_HEADER_BUFFER: usize = 32 * 1024;
/// The first byte of every TLS connection: the record type of a handshake (RFC 8446, section 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long shutdown waits for sockets to say goodbye and requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    listener: TcpListener,
    /// The plain-HTTP listener that redirects to HTTPS, when `tls.redirect_listen` is set.
    redirect: Option<TcpListener>,
    /// The control socket in the data dir (`natter backup`); `None` when it could not be made, which costs the
    /// live backup but must not keep the chat down.
    control: Option<UnixListener>,
    /// `None` when `tls.mode` is `off`.
    tls: Option<Arc<Tls>>,
    /// The certificate's renewal, in mode `acme`.
    acme: Option<Acme>,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    password_source: PasswordSource,
}

/// Connections the kernel queues before natter accepts them. tokio's default (1,024) drops connection attempts
/// when thousands of visitors reconnect at once after a restart; they retry after a second, which slows the storm.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted natter must get its port back while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Binds `server.listen` (and `tls.redirect_listen`), opens the store, settles the admin password, prepares TLS.
    pub async fn build(
        config: Config,
        environment_password: Option<&str>,
    ) -> anyhow::Result<Server> {
        let listen = config.server.listen;
        let listener = bind(listen).map_err(|error| {
            anyhow::anyhow!("cannot listen on {listen}: {error}; choose another address with --listen or server.listen")
        })?;
        let redirect = match config.tls.redirect_listen {
            Some(address) => Some(TcpListener::bind(address).await.map_err(|error| {
                anyhow::anyhow!("cannot listen on {address} for the HTTPS redirect: {error}; change tls.redirect_listen")
            })?),
            None => None,
        };
        let bound = listener.local_addr()?;
        let (shutdown, watcher) = watch::channel(false);
        let (app, password_source) =
            App::build(config, bound, environment_password, watcher).await?;
        let tls = Tls::from_config(&app.config, &app.public_origin, bound)?.map(Arc::new);
        let acme = match &tls {
            Some(tls) if tls.mode() == TlsMode::Acme => Some(Acme::new(
                &app.config,
                &app.public_origin,
                app.acme.clone(),
                tls.clone(),
                redirect
                    .as_ref()
                    .and_then(|listener| listener.local_addr().ok()),
            )?),
            _ => None,
        };
        // After the store is open: holding it proves no other natter uses this data dir, so a stale socket may go.
        let control = match backup::bind_control(&app.config.server.data_dir) {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!("no control socket, so `natter backup` works only while natter is stopped: {error:#}");
                None
            }
        };
        Ok(Server {
            listener,
            redirect,
            control,
            tls,
            acme,
            app,
            shutdown,
            password_source,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the HTTP→HTTPS redirect listener, when there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    pub fn password_source(&self) -> &PasswordSource {
        &self.password_source
    }

    /// Serves until `signal` resolves, then shuts down as described above.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            listener,
            redirect,
            control,
            tls,
            acme,
            app,
            shutdown,
            ..
        } = self;
        let connections = Arc::new(Connections::default());
        tokio::spawn(allocator::trim_after_bursts(
            connections.clone(),
            app.shutdown.clone(),
        ));
        if let Some(tls) = &tls {
            tls.spawn_reloader(app.shutdown.clone());
        }
        let http01 = acme.as_ref().map(Acme::http01);
        if let Some(acme) = acme {
            acme.spawn(app.shutdown.clone());
        }
        if let Some(redirect) = redirect {
            tokio::spawn(serve_redirects(
                redirect,
                app.public_origin.clone(),
                http01,
                app.shutdown.clone(),
            ));
        }
        let control_task = control.map(|control| {
            tokio::spawn(backup::serve_control(
                app.clone(),
                control,
                app.shutdown.clone(),
            ))
        });
        tokio::pin!(signal);
        let store_failed = app.store.failed();
        tokio::pin!(store_failed);
        let mut failure = None;
        loop {
            tokio::select! {
                () = &mut signal => break,
                // A sync of the store failed: no write can be acknowledged any more, so natter stops (with an error,
                // so systemd starts it again) instead of serving on without a store.
                () = &mut store_failed => {
                    failure = Some(anyhow::anyhow!("a sync of the store failed; natter stopped (see the log above)"));
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => accept_connection(&app, tls.as_ref(), &connections, stream, peer),
                    // Out of file descriptors, or a connection reset before accept: wait a moment and go on, instead of
                    // spinning on the error.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!("shutting down: closing sockets and draining the store");
        let _ = shutdown.send(true);
        if let Some(control_task) = control_task {
            let _ = control_task.await;
        }
        let sockets_closed = async {
            while app.hub.open_visitor_sockets.load(Ordering::Relaxed)
                + app.hub.open_admin_sockets.load(Ordering::Relaxed)
                > 0
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, sockets_closed).await;
        let connections_closed = async {
            while connections.open() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections_closed).await;
        app.store.close().await;
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Takes one accepted TCP connection: over TLS, the handshake runs in the connection's own task (with a timeout,
/// so the accept loop never waits on a slow client), then the same HTTP serving as plain TCP.
fn accept_connection(
    app: &Arc<App>,
    tls: Option<&Arc<Tls>>,
    connections: &Arc<Connections>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let app = app.clone();
    let connections = connections.clone();
    connections.opened();
    let Some(tls) = tls else {
        tokio::spawn(async move {
            serve_http(app, TokioIo::new(stream), peer).await;
            connections.closed();
        });
        return;
    };
    let acceptor = tls.acceptor().clone();
    tokio::spawn(async move {
        // A browser pointed at http:// on the TLS port sends a plain request, which the handshake would drop without
        // a word: every TLS connection begins with a handshake record (byte 0x16), so anything else gets the redirect
        // to the HTTPS public URL that `tls.redirect_listen` gives.
        let mut first = [0_u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            if first[0] != TLS_HANDSHAKE_RECORD {
                serve_redirect(stream, Arc::new(app.public_origin.clone()), None).await;
                connections.closed();
                return;
            }
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            // A TLS-ALPN-01 validation: the handshake was the answer, and the CA closes the connection.
            Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {}
            Ok(Ok(stream)) => serve_http(app, TokioIo::new(stream), peer).await,
            Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
        connections.closed();
    });
}

/// Serves HTTP/1.1 on one connection until it ends; on shutdown the connection finishes the request in flight and
/// closes (an upgraded socket is closed by its own writer).
async fn serve_http<I>(app: Arc<App>, io: I, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut shutdown = app.shutdown.clone();
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(app, request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER)
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "HTTP connection ended with an error");
    }
}

/// The plain-HTTP listener of `tls.redirect_listen`: every request gets a permanent redirect to the same path on the
/// HTTPS public URL. Nothing else is served in the clear, so a cookie never travels without TLS; the one exception
/// is the answer to an ACME HTTP-01 challenge of a running order (`http01`, mode `acme`).
async fn serve_redirects(
    listener: TcpListener,
    public_origin: Origin,
    http01: Option<Arc<Http01>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let public_origin = Arc::new(public_origin);
    loop {
        let (stream, _) = tokio::select! {
            () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_redirect(
            stream,
            public_origin.clone(),
            http01.clone(),
        ));
    }
}

/// Answers one plain-HTTP connection's request with the redirect to HTTPS (or the key authorization of a token in
/// `http01`), then closes it.
async fn serve_redirect(
    stream: TcpStream,
    public_origin: Arc<Origin>,
    http01: Option<Arc<Http01>>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let public_origin = public_origin.clone();
        let answer = http01
            .as_ref()
            .and_then(|http01| http01.answer(request.uri().path()));
        let response = match answer {
            Some(key_authorization) => Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(Bytes::from(key_authorization)))
                .expect("valid response"),
            None => redirect_response(&public_origin, &request),
        };
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "plain HTTP connection ended with an error");
    }
}

/// 308 keeps the method and body; the location is the public origin (never the request's `Host`, which the client
/// chooses) plus the request's path and query.
fn redirect_response(public_origin: &Origin, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let path = if path.starts_with('/') { path } else { "/" };
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::LOCATION, format!("{public_origin}{path}"))
        .header(header::CONTENT_LENGTH, 0)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// The warning mode `self-signed` prints at start: browsers will not trust the certificate.
pub fn self_signed_warning(tls: &Tls) -> Option<String> {
    (tls.mode() == TlsMode::SelfSigned).then(|| {
        format!(
            "TLS: self-signed certificate {} (SHA-256 {}).\n  Browsers will warn until it is accepted by hand; for visitors use tls.mode = \"files\" with a real certificate.",
            tls.cert_path().display(),
            tls.fingerprint()
        )
    })
}
