//! The state every request and socket shares: configuration, store, hub, authentication, throttles, counters.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::assets::Assets;
use crate::auth::{Auth, PasswordSource};
use crate::config::{Config, Origin};
use crate::email::Email;
use crate::hub::Hub;
use crate::push::Push;
use crate::refused_origins::RefusedOrigins;
use crate::store::{Store, TokenHash};
use crate::throttle::{ConnectionCounter, Network, RateLimiter};

/// A visitor's actions other than `speak` (`sync`, `typing`, `identify`, `read`, `visit`, subscribing) allowed per
/// message they may send: a message comes with a few of them (typing on and off, a read, a page), and a page load or a
/// reconnect with a couple more.
const ACTIONS_PER_MESSAGE: u32 = 4;
/// The fewest such actions a visitor gets per minute, however low `messages_per_minute` is set.
const MIN_ACTIONS_PER_MINUTE: u32 = 60;
/// One network (an office behind one address, a household) holds many visitors: it gets this many visitors' worth.
const VISITORS_PER_NETWORK: u32 = 10;

pub struct App {
    pub config: Config,
    /// The origin natter itself is served from; the only origin the admin socket and admin writes accept.
    pub public_origin: Origin,
    pub store: Store,
    /// Shared with the email task, which asks who is online when it decides.
    pub hub: Arc<Hub>,
    pub auth: Auth,
    pub assets: Assets,
    pub throttles: Throttles,
    pub counters: Counters,
    /// Web Push: the VAPID key, the send queue, the per-conversation cool-downs. Shared with its sender task,
    /// which holds it weakly.
    pub push: Arc<Push>,
    /// Email: the relay, the schedule of what to look at, the limits. Shared with its task, which holds it weakly.
    pub email: Arc<Email>,
    /// Origins whose pages tried to open the chat and were refused, for the log and the dashboard.
    pub refused_origins: RefusedOrigins,
    /// What `/metrics` shows of ACME certificates (mode `acme`; stays at zero otherwise), shared with the renewal
    /// task.
    pub acme: Arc<crate::acme::Status>,
    /// Flips to `true` once on SIGTERM: sockets say `server_restart` and close.
    pub shutdown: watch::Receiver<bool>,
    pub started: Instant,
}

pub struct Throttles {
    /// Messages per visitor token.
    pub messages: RateLimiter<TokenHash>,
    /// A visitor's other actions per token (see `ACTIONS_PER_MESSAGE`).
    pub actions: RateLimiter<TokenHash>,
    /// Every visitor action (messages too) per network: many tokens from one place.
    pub network_actions: RateLimiter<Network>,
    /// New conversations per network, whether opened by `speak` or `identify`.
    pub conversations: RateLimiter<Network>,
    /// Socket connects with a token the store does not know, per network: a bot making up tokens.
    pub unknown_tokens: RateLimiter<Network>,
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
        let store = Store::open(&config.server.data_dir)
            .map_err(|error| explain_denied(error, &config.server.data_dir))?;
        let public_origin = config.public_origin(bound);
        let (auth, source) = Auth::new(
            &config.admin,
            environment_password,
            config.limits.login_failures,
            public_origin.is_https(),
            &store,
        )
        .await?;
        let limits = &config.limits;
        let actions_per_minute = limits
            .messages_per_minute
            .saturating_mul(ACTIONS_PER_MESSAGE)
            .max(MIN_ACTIONS_PER_MINUTE);
        let throttles = Throttles {
            messages: RateLimiter::new(limits.messages_per_minute, Duration::from_secs(60)),
            actions: RateLimiter::new(actions_per_minute, Duration::from_secs(60)),
            network_actions: RateLimiter::new(
                actions_per_minute.saturating_mul(VISITORS_PER_NETWORK),
                Duration::from_secs(60),
            ),
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
        let push = Arc::new(Push::new(&config, &store, &public_origin).await?);
        let hub = Arc::new(Hub::new());
        let email = Arc::new(Email::new(&config, &store, &hub, &push, &public_origin).await?);
        let app = App {
            assets: Assets::new(&config, public_origin.as_str()),
            public_origin,
            config,
            store,
            hub,
            auth,
            throttles,
            counters: Counters::default(),
            push,
            email,
            refused_origins: RefusedOrigins::default(),
            acme: Default::default(),
            shutdown,
            started: Instant::now(),
        };
        let app = Arc::new(app);
        crate::push::sender::start(&app.push);
        crate::email::start(&app.email);
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

/// A store that cannot be opened for lack of permission is nearly always a data dir made by another user (natter
/// run once with sudo, or a unit's DynamicUser): the error then says which user natter runs as, who owns the data
/// dir, and the command that fixes it.
fn explain_denied(error: anyhow::Error, data_dir: &Path) -> anyhow::Error {
    let denied = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    }) || error.to_string().contains("(os error 13)");
    if !denied {
        return error;
    }
    // The nearest part of the path that exists is the one whose owner matters.
    let mut owned = data_dir.to_path_buf();
    while std::fs::metadata(&owned).is_err() && owned.pop() {}
    let owner = std::fs::metadata(&owned)
        .ok()
        .map(|metadata| metadata.uid());
    let me = current_uid();
    let user = |uid: Option<u32>| match uid {
        Some(uid) => match user_name(uid) {
            Some(name) => format!("{name} (uid {uid})"),
            None => format!("uid {uid}"),
        },
        None => "an unknown user".to_string(),
    };
    let me_name = me
        .and_then(user_name)
        .unwrap_or_else(|| "$USER".to_string());
    error.context(format!(
        "natter runs as user {}, and {} belongs to {}: the data dir and every file in it must belong to (and be \
         writable by) the user natter runs as. Fix it with `sudo chown -R {me_name} {}`, or run natter as that user, or choose another \
         --data-dir",
        user(me),
        owned.display(),
        user(owner),
        data_dir.display()
    ))
}

/// The user this process runs as: the owner of its own /proc entry (std has no getuid, and one call does not earn
/// the libc crate).
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self")
        .ok()
        .map(|metadata| metadata.uid())
}

/// A user's name from /etc/passwd (read directly: the static binary has no NSS).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}
