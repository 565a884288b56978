//! Web Push: tells the owner's phone and desktop about a visitor message while no dashboard is open, and a visitor
//! who opted in about the owner's reply while their chat is closed. No Firebase, no vendor relay: natter talks to
//! each browser's own push service (RFC 8030) with an encrypted payload (RFC 8291) and a VAPID signature (RFC 8292).
//!
//! The parts: `vapid` (the key, kept in the store), `subscription` (a browser's `PushSubscription`, checked at the
//! door, and which addresses may be reached), `sender` (started once the state exists: the dispatcher, the client,
//! retries); names are looked up by `crate::dns`, told to refuse any host with an address the policy forbids. This file decides when to push
//! (`message_stored`, called by the channels after the store committed a message) and answers the three routes.
//! Push is a noun below `App`: it takes the store, the hub and the session check it needs, never `App` itself.
//!
//! The message path only ever does a non-blocking `try_send` into a bounded queue: a slow or dead push service can
//! cost notifications, never a chat message or its latency.

pub mod sender;
pub mod subscription;
mod vapid;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::{Config, Origin, PushConfig, PushWhen};
use crate::dns::Resolver;
use crate::error::ApiError;
use crate::http::{admin, json_body, json_response, same_origin, Body};
use crate::hub::Hub;
use crate::store::{hash_token, Conversation, Message, Sender, Store, StoreError};

use subscription::{AddressPolicy, Audience, Subscription, SubscriptionJson};
use vapid::Vapid;

/// Pushes being sent at once. A handful of owner devices and the odd visitor need far fewer; the bound is what a
/// push service that never answers can hold.
pub const MAX_IN_FLIGHT: usize = 16;
/// A DNS lookup of an endpoint's host must finish within this.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Pushes waiting for the sender. Each job is a few hundred bytes; 256 covers a burst from many conversations at
/// once while the in-flight slots are busy. When it is full, new pushes are dropped (and counted as failed).
const QUEUE_CAPACITY: usize = 256;
/// The text of a message shown in a notification. Push payloads must stay under 4 KB after encryption, and a
/// notification shows two lines anyway.
const PREVIEW_CHARS: usize = 200;
/// The longest page address a visitor notification links back to; longer ones link to natter itself, so the
/// payload stays far below the 4 KB limit.
const MAX_URL_BYTES: usize = 1024;
/// Subscriptions the owner may have (phones, laptops, browsers).
const MAX_OWNER_SUBSCRIPTIONS: usize = 50;
/// Subscriptions one visitor's conversation may have (a phone and a laptop, and a spare).
const MAX_VISITOR_SUBSCRIPTIONS: usize = 3;
/// All subscriptions together, so visitors cannot fill the disk by opting in from many conversations.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Cool-down entries kept before the old ones are swept.
const MAX_COOLDOWNS: usize = 4096;

/// One push to send: who gets it and what it says (already JSON).
pub struct Job {
    audience: Audience,
    conversation_id: Uuid,
    /// The `Topic` header: a newer push of the same conversation replaces an undelivered older one.
    topic: String,
    payload: Vec<u8>,
    /// When the message path queued it, for the log.
    queued: Instant,
}

pub struct Push {
    vapid: Vapid,
    policy: AddressPolicy,
    /// Resolves endpoint hosts, refusing any that has an address the policy forbids; shared with the sender's client.
    resolver: Resolver,
    queue: mpsc::Sender<Job>,
    /// The queue's other end until `start` hands it to the dispatcher task.
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
    /// When each (conversation, audience) was last pushed: within `push.cooldown_seconds` a further message raises
    /// no new notification, so a burst of twenty messages is one buzz. A std mutex: a lookup and an insert, no await.
    cooldowns: Mutex<HashMap<(Uuid, Audience), Instant>>,
    /// When a push about each conversation last reached one of the owner's devices; email asks, so the owner is not
    /// told twice (`email.owner_when`). Swept like the cool-downs.
    delivered: Mutex<HashMap<Uuid, Instant>>,
    /// `[push]` of the config.
    settings: PushConfig,
    /// A reply's notification title (`widget.title`).
    title: String,
    /// natter's own origin: where a reply's notification links when the visitor's page is unknown, and the only
    /// origin the routes accept.
    public_origin: Origin,
    /// A handle on the one store, which keeps the subscriptions.
    store: Store,
    /// Pushes delivered, and pushes failed or dropped, for `/metrics`.
    pub sent: AtomicU64,
    pub failed: AtomicU64,
}

impl Push {
    /// Loads (or makes) the VAPID key. The sender starts with `start`.
    pub async fn new(
        config: &Config,
        store: &Store,
        public_origin: &Origin,
    ) -> anyhow::Result<Push> {
        let policy = AddressPolicy {
            allow_loopback: config.push.allow_loopback,
        };
        if policy.allow_loopback {
            tracing::warn!("push.allow_loopback is on: Web Push may reach plain-http endpoints on loopback (for tests only)");
        }
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let forgotten = forget_deleted_conversations(store)
            .await
            .map_err(|error| anyhow::anyhow!("reading the push subscriptions: {error:?}"))?;
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "removed the push subscriptions of conversations deleted just before natter last stopped"
            );
        }
        Ok(Push {
            vapid: Vapid::load_or_create(store, &config.push.subject).await?,
            policy,
            // Asked as for https: plain http is only ever allowed to a loopback address written as such
            // (`endpoint_uri`), which skips DNS, and loopback passes the policy whatever the scheme.
            resolver: Resolver::new(
                "Web Push endpoints",
                DNS_TIMEOUT,
                Some(Arc::new(move |ip| policy.allows(ip, true))),
            ),
            queue,
            jobs: Mutex::new(Some(jobs)),
            cooldowns: Mutex::new(HashMap::new()),
            delivered: Mutex::new(HashMap::new()),
            settings: config.push.clone(),
            title: config.widget.title.clone(),
            public_origin: public_origin.clone(),
            store: store.clone(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The base64url public key browsers subscribe with.
    pub fn public_key(&self) -> &str {
        self.vapid.public_key()
    }

    /// A push about this conversation reached one of the owner's devices.
    fn delivered(&self, conversation_id: Uuid) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if delivered.len() >= MAX_COOLDOWNS {
            delivered.clear();
        }
        delivered.insert(conversation_id, Instant::now());
    }

    /// Whether a push about this conversation reached the owner at `since` or later.
    pub fn delivered_since(&self, conversation_id: Uuid, since: Instant) -> bool {
        self.delivered
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&conversation_id)
            .is_some_and(|at| *at >= since)
    }

    /// Whether a push for this conversation and audience may go now; if so, the cool-down starts.
    fn cooled_down(&self, conversation_id: Uuid, audience: Audience, cooldown: Duration) -> bool {
        let now = Instant::now();
        let mut cooldowns = self
            .cooldowns
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if cooldowns
            .get(&(conversation_id, audience))
            .is_some_and(|last| now.duration_since(*last) < cooldown)
        {
            return false;
        }
        if cooldowns.len() >= MAX_COOLDOWNS {
            cooldowns.retain(|_, last| now.duration_since(*last) < cooldown);
        }
        cooldowns.insert((conversation_id, audience), now);
        true
    }
}

/// Called once for every newly stored message (not for a resent duplicate), after the store committed it and the
/// hub was told. Decides whether anyone should be woken up, and queues that without waiting.
///
/// - A visitor message goes to the owner's devices: always, or while no dashboard socket is subscribed
///   (`push.when`).
/// - An owner reply goes to the visitor's devices if the visitor opted in and has no chat open right now.
/// - `push.when = "never"` turns Web Push off altogether.
pub fn message_stored(push: &Push, hub: &Hub, conversation: &Conversation, message: &Message) {
    let settings = &push.settings;
    if settings.when == PushWhen::Never {
        return;
    }
    let audience = match message.sender {
        Sender::Visitor => {
            if settings.when == PushWhen::WhenAway && hub.admin_online() {
                return;
            }
            Audience::Owner
        }
        Sender::Admin if !hub.visitor_online(&conversation.token_hash) => {
            Audience::Visitor(conversation.id)
        }
        Sender::Admin => return,
    };
    if !push.cooled_down(
        conversation.id,
        audience,
        Duration::from_secs(settings.cooldown_seconds),
    ) {
        return;
    }
    let job = Job {
        audience,
        conversation_id: conversation.id,
        topic: crate::auth::base64url(conversation.id.as_bytes()),
        payload: payload(push, conversation, message, audience)
            .to_string()
            .into_bytes(),
        queued: Instant::now(),
    };
    match push.queue.try_send(job) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            push.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the push queue is full (push services not answering?); a notification was dropped"
            );
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// What the service workers (`web/admin/sw.js`, `web/notify/sw.js`) show: `{title, body, conversation_id, tag, url}`.
fn payload(
    push: &Push,
    conversation: &Conversation,
    message: &Message,
    audience: Audience,
) -> Value {
    let body = preview(&message.content);
    match audience {
        Audience::Owner => json!({
            "title": conversation.visitor_name.as_deref().filter(|name| !name.is_empty()).unwrap_or("New visitor message"),
            "body": body,
            "conversation_id": conversation.id,
            "tag": format!("conversation-{}", conversation.id),
            "url": format!("/admin/#c={}", conversation.id),
        }),
        Audience::Visitor(_) => {
            // Back to the page the visitor chatted on, where the widget shows the whole reply.
            let url = conversation
                .page
                .as_ref()
                .map(|page| page.url.as_str())
                .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
                .filter(|url| url.len() <= MAX_URL_BYTES && !url.contains(char::is_control))
                .unwrap_or(push.public_origin.as_str());
            json!({
                "title": push.title,
                "body": body,
                "conversation_id": conversation.id,
                "tag": "natter-reply",
                "url": url,
            })
        }
    }
}

fn preview(content: &str) -> String {
    let mut characters = content.chars();
    let mut text: String = characters.by_ref().take(PREVIEW_CHARS).collect();
    if characters.next().is_some() {
        text.push('…');
    }
    text
}

// ---- the routes ----

/// `GET /push/key`: `{"key": "<base64url uncompressed P-256 point>"}`; 404 when push is off, which the dashboard
/// reads as "no push on this server".
pub fn key(push: &Push) -> Result<Response<Body>, ApiError> {
    if push.settings.when == PushWhen::Never {
        return Err(ApiError::not_found(
            "Web Push is turned off on this server (push.when = \"never\")",
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "key": push.public_key() }),
    ))
}

/// `POST /push_subscriptions`. The owner (session cookie, same origin) sends `PushSubscription.toJSON()`; a visitor
/// (from natter's own `/notify/` page, so also same origin) sends `{"subscription": {...}, "visitor_token": "<uuid>"}`
/// and is subscribed to replies in their own conversation.
pub async fn subscribe(
    push: &Push,
    auth: &Auth,
    request: &mut Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    same_origin(&push.public_origin, request.headers())?;
    if push.settings.when == PushWhen::Never {
        return Err(ApiError::not_found(
            "Web Push is turned off on this server (push.when = \"never\")",
        ));
    }
    let headers = request.headers().clone();
    let body: Value = json_body(request).await?;
    let (json, audience) = match body.get("visitor_token") {
        Some(token) => {
            let conversation = visitor_conversation(&push.store, token)?;
            let json = body
                .get("subscription")
                .cloned()
                .ok_or_else(|| ApiError::invalid("subscription is missing"))?;
            (json, Audience::Visitor(conversation.id))
        }
        None => {
            admin(auth, &push.store, &headers)?;
            (body, Audience::Owner)
        }
    };
    let json: SubscriptionJson = serde_json::from_value(json).map_err(|error| {
        ApiError::invalid(format!(
            "not a PushSubscription ({{endpoint, keys: {{p256dh, auth}}}}): {error}"
        ))
    })?;
    let subscription = Subscription::parse(json, audience, push.policy)?;
    let uri = subscription::endpoint_uri(&subscription.endpoint, push.policy)?;
    let host = uri.host().unwrap_or_default();
    push.resolver
        .addresses(host)
        .await
        .map_err(|reason| {
            // The reason (how the name resolves, which address was refused) is for the operator: told to a visitor
            // it would map the owner's network.
            tracing::info!(%reason, "a push subscription was refused");
            ApiError::invalid("natter will not send to this endpoint: a push endpoint must be an https URL of a public push service")
        })?;

    let stored = stored_subscriptions(&push.store)?;
    let existing = stored
        .iter()
        .find(|other| other.endpoint == subscription.endpoint);
    if let (Some(existing), Audience::Visitor(_)) = (existing, audience) {
        // A visitor may refresh their own subscription, never take over someone else's (the owner's above all).
        if existing.audience != audience {
            return Err(ApiError::forbidden("this endpoint is subscribed already"));
        }
    }
    if existing.is_none() {
        let same_audience = stored
            .iter()
            .filter(|other| other.audience == audience)
            .count();
        let limit = if audience == Audience::Owner {
            MAX_OWNER_SUBSCRIPTIONS
        } else {
            MAX_VISITOR_SUBSCRIPTIONS
        };
        if same_audience >= limit || stored.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::throttled(
                "too many push subscriptions; remove an old one first",
            ));
        }
    }
    let record = serde_json::to_vec(&subscription).expect("a subscription serializes");
    push.store
        .put_push_subscription(&subscription.endpoint, record)
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({ "ok": true })))
}

#[derive(Deserialize)]
struct Unsubscribe {
    endpoint: String,
    visitor_token: Option<Value>,
}

/// `DELETE /push_subscriptions` with `{"endpoint": ...}` (the owner), or `{"endpoint", "visitor_token"}` (a visitor,
/// for their own subscription only). Deleting what is not there is not an error.
pub async fn unsubscribe(
    push: &Push,
    auth: &Auth,
    request: &mut Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    same_origin(&push.public_origin, request.headers())?;
    let headers = request.headers().clone();
    let body: Unsubscribe = json_body(request).await?;
    let stored = stored_subscriptions(&push.store)?
        .into_iter()
        .find(|stored| stored.endpoint == body.endpoint);
    let allowed = match &body.visitor_token {
        Some(token) => {
            let conversation = visitor_conversation(&push.store, token)?;
            stored
                .as_ref()
                .is_none_or(|stored| stored.audience == Audience::Visitor(conversation.id))
        }
        None => admin(auth, &push.store, &headers).is_ok(),
    };
    if !allowed {
        return Err(if body.visitor_token.is_some() {
            ApiError::forbidden("not your subscription")
        } else {
            ApiError::unauthorized()
        });
    }
    if stored.is_some() {
        push.store.delete_push_subscription(&body.endpoint).await?;
    }
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::new(Bytes::new()))
        .expect("valid response"))
}

/// After the owner deleted a conversation: its visitor's devices were subscribed for a conversation that is gone.
/// Their subscriptions go too, as the rest of the visitor's data did; kept, they would hold the endpoint, so the same
/// browser could not opt in to the visitor's next conversation, and count against the limits for good. The start does
/// the same (`Push::new`), for a stop between the conversation's delete and this one.
pub async fn conversation_deleted(push: &Push) -> Result<(), StoreError> {
    forget_deleted_conversations(&push.store).await.map(drop)
}

/// Removes the subscriptions of visitors whose conversation no longer exists; answers how many went.
async fn forget_deleted_conversations(store: &Store) -> Result<usize, StoreError> {
    let mut forgotten = 0;
    for stored in stored_subscriptions(store)? {
        if let Audience::Visitor(conversation_id) = stored.audience {
            if store.conversation(conversation_id)?.is_none() {
                store.delete_push_subscription(&stored.endpoint).await?;
                forgotten += 1;
            }
        }
    }
    Ok(forgotten)
}

/// Every subscription the store holds that reads back (the sender removes one that does not, when it next pushes).
fn stored_subscriptions(store: &Store) -> Result<Vec<Subscription>, StoreError> {
    Ok(store
        .push_subscriptions()?
        .into_iter()
        .filter_map(|(_, json)| serde_json::from_slice(&json).ok())
        .collect())
}

/// The conversation of a visitor token sent over HTTP (the token is the visitor's secret, as on the socket).
fn visitor_conversation(store: &Store, token: &Value) -> Result<Conversation, ApiError> {
    let token = token
        .as_str()
        .and_then(|token| Uuid::parse_str(token).ok())
        .ok_or_else(|| ApiError::invalid("visitor_token must be the visitor's UUID"))?;
    store
        .conversation_of_token(&hash_token(&token.hyphenated().to_string()))?
        .ok_or_else(|| ApiError::not_found("no conversation yet: say something first"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner's delete removes the conversation, then its visitors' subscriptions: a stop between the two leaves
    /// them behind, and the next start removes them.
    #[tokio::test]
    async fn a_start_forgets_the_subscriptions_of_a_conversation_deleted_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spoken = store
            .speak(hash_token("visitor"), "hi".into(), Uuid::now_v7())
            .await
            .unwrap();
        let conversation_id = spoken.message.conversation_id;
        for (endpoint, audience) in [
            (
                "https://push.example/visitor",
                Audience::Visitor(conversation_id),
            ),
            ("https://push.example/owner", Audience::Owner),
        ] {
            let subscription = Subscription {
                endpoint: endpoint.into(),
                p256dh: "key".into(),
                auth: "secret".into(),
                audience,
            };
            store
                .put_push_subscription(endpoint, serde_json::to_vec(&subscription).unwrap())
                .await
                .unwrap();
        }
        store.delete_conversation(conversation_id).await.unwrap();
        assert_eq!(store.push_subscriptions().unwrap().len(), 2);

        let origin = Origin::parse("https://chat.example").unwrap();
        Push::new(&Config::default(), &store, &origin)
            .await
            .unwrap();
        let left: Vec<String> = store
            .push_subscriptions()
            .unwrap()
            .into_iter()
            .map(|(endpoint, _)| endpoint)
            .collect();
        assert_eq!(left, ["https://push.example/owner"]);
        store.close().await;
    }

    #[test]
    fn previews_are_short_and_cut_on_characters() {
        assert_eq!(preview("hello"), "hello");
        let long = "é".repeat(PREVIEW_CHARS + 10);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn the_largest_payload_fits_a_push_message() {
        // 4096 bytes per push message, less the aes128gcm header (86 with a 65-byte key id), the padding delimiter
        // and the 16-byte tag: 3993 bytes of JSON at most.
        let worst = json!({
            "title": "W".repeat(80),
            "body": preview(&"\u{1F600}".repeat(4000)),
            "conversation_id": Uuid::new_v4(),
            "tag": format!("conversation-{}", Uuid::new_v4()),
            "url": "\"".repeat(MAX_URL_BYTES),
        });
        assert!(
            worst.to_string().len() < 3993,
            "{}",
            worst.to_string().len()
        );
    }
}
