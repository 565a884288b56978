//! The listener and the life of the process: bind, accept, serve HTTP/1.1 with timeouts, shut down cleanly.
//!
//! `Server::build` binds first and reports the real address (tests bind port 0), then `run_until_stopped` serves
//! until the shutdown future resolves. On shutdown natter stops accepting, tells every socket `server_restart` (the
//! clients reconnect and `sync`), lets HTTP requests in flight finish, and then closes the store after its writer has
//! committed everything queued, so nothing acknowledged is lost and nothing half-written is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::App;
use crate::auth::PasswordSource;
use crate::config::Config;
use crate::routes;

/// A client must send its request headers within this time, and an idle keep-alive connection is closed after it:
/// hyper has no timeout of its own, and without one a slow client holds a connection forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer of one HTTP connection, which bounds the size of request headers.
const MAX_HEADER_BUFFER: usize = 32 * 1024;
/// How long shutdown waits for sockets to say goodbye and requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    password_source: PasswordSource,
}

impl Server {
    /// Binds `server.listen`, opens the store and settles the admin password.
    pub async fn build(config: Config, environment_password: Option<&str>) -> anyhow::Result<Server> {
        let listen = config.server.listen;
        let listener = TcpListener::bind(listen).await.map_err(|error| {
            anyhow::anyhow!("cannot listen on {listen}: {error}; choose another address with --listen or server.listen")
        })?;
        let bound = listener.local_addr()?;
        let (shutdown, watcher) = watch::channel(false);
        let (app, password_source) = App::build(config, bound, environment_password, watcher).await?;
        Ok(Server { listener, app, shutdown, password_source })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    pub fn password_source(&self) -> &PasswordSource {
        &self.password_source
    }

    /// Serves until `signal` resolves, then shuts down as described above.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server { listener, app, shutdown, .. } = self;
        let requests = Arc::new(AtomicUsize::new(0));
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => serve_connection(&app, &requests, stream, peer),
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
        let sockets_closed = async {
            while app.hub.open_visitor_sockets.load(Ordering::Relaxed) + app.hub.open_admin_sockets.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, sockets_closed).await;
        let connections_closed = async {
            while requests.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections_closed).await;
        app.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves one TCP connection. `open` counts the HTTP connections alive, so shutdown can wait for them; on shutdown a
/// connection finishes the request in flight and closes (an upgraded socket is closed by its own writer).
fn serve_connection(app: &Arc<App>, open: &Arc<AtomicUsize>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = app.shutdown.clone();
    let app = app.clone();
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(app, request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let open = open.clone();
    open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        open.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = result {
            tracing::debug!(%error, %peer, "HTTP connection ended with an error");
        }
    });
}
