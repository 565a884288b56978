//! The state every request and socket shares: configuration, store, hub, authentication, throttles, counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::assets::Assets;
use crate::auth::{Auth, PasswordSource};
use crate::config::{Config, Origin};
use crate::hub::Hub;
use crate::push::Push;
use crate::store::{Store, TokenHash};
use crate::throttle::{ConnectionCounter, RateLimiter};

pub struct App {
    pub config: Config,
    /// The origin natter itself is served from; the only origin the admin socket and admin writes accept.
    pub public_origin: Origin,
    pub store: Store,
    pub hub: Hub,
    pub auth: Auth,
    pub assets: Assets,
    pub throttles: Throttles,
    pub counters: Counters,
    /// Web Push: the VAPID key, the send queue, the per-conversation cool-downs. Shared with its sender task,
    /// which holds it weakly.
    pub push: Arc<Push>,
    /// Flips to `true` once on SIGTERM: sockets say `server_restart` and close.
    pub shutdown: watch::Receiver<bool>,
    pub started: Instant,
}

pub struct Throttles {
    /// Messages per visitor token.
    pub messages: RateLimiter<TokenHash>,
    /// New conversations per IP address.
    pub conversations: RateLimiter<IpAddr>,
    /// Socket connects with a token the store does not know, per IP: a bot making up tokens.
    pub unknown_tokens: RateLimiter<IpAddr>,
    /// Open sockets per IP address.
    pub connections: Arc<ConnectionCounter>,
}

/// Monotonic counters for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub messages_visitor: AtomicU64,
    pub messages_admin: AtomicU64,
    pub refused_connections: AtomicU64,
    pub throttled: AtomicU64,
}

impl App {
    /// Opens the store and settles the admin password. `bound` is the address the listener really got (port 0 in
    /// tests), from which the public origin is made when the config names none.
    pub async fn build(
        config: Config,
        bound: SocketAddr,
        environment_password: Option<&str>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<(Arc<App>, PasswordSource)> {
        let store = Store::open(&config.server.data_dir)?;
        let (auth, source) = Auth::new(
            &config.admin,
            environment_password,
            config.limits.login_failures,
            &store,
        )
        .await?;
        let limits = &config.limits;
        let throttles = Throttles {
            messages: RateLimiter::new(limits.messages_per_minute, Duration::from_secs(60)),
            conversations: RateLimiter::new(
                limits.conversations_per_hour,
                Duration::from_secs(3600),
            ),
            unknown_tokens: RateLimiter::new(
                limits.conversations_per_hour.saturating_mul(3).max(10),
                Duration::from_secs(3600),
            ),
            connections: Arc::new(ConnectionCounter::default()),
        };
        let public_origin = config.public_origin(bound);
        let push = Arc::new(Push::new(&config, &store, &public_origin).await?);
        let app = App {
            assets: Assets::new(&config, public_origin.as_str()),
            public_origin,
            config,
            store,
            hub: Hub::new(),
            auth,
            throttles,
            counters: Counters::default(),
            push,
            shutdown,
            started: Instant::now(),
        };
        let app = Arc::new(app);
        crate::push::start(&app.push);
        Ok((app, source))
    }

    /// Whether a request from `origin` may act as the admin: natter's own origin only.
    pub fn is_own_origin(&self, origin: &Origin) -> bool {
        *origin == self.public_origin
    }

    pub fn is_widget_origin(&self, origin: &Origin) -> bool {
        self.config.widget.allowed_origins.contains(origin) || self.is_own_origin(origin)
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
