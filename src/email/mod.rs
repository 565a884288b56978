//! Email: the owner's reply reaches a visitor who left (and left an address), and the owner hears of new conversations
//! when no dashboard is open and no push reached them.
//!
//! The parts: `smtp` (the relay client and `natter email-test`), `compose` (what an email says), `link` (the signed
//! codes in its links), `queue` (the background task that decides what is owed, records it and sends it), `web` (the
//! routes the links lead to). What is owed is derived from the store (`store::email`), so nothing is lost in a crash.
//!
//! Email is a noun below `App`: it takes the store, the hub and push (to ask whether a push reached the owner), never
//! `App` itself.
//!
//! The message path only marks a conversation to be looked at later (`message_stored`), under a std mutex, and wakes
//! the task: it never waits for the store's email records, and never for SMTP.

mod compose;
mod link;
mod queue;
pub mod smtp;
pub mod web;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::{Config, EmailConfig, Origin, PushWhen};
use crate::hub::Hub;
use crate::push::Push;
use crate::store::{
    Conversation, EmailState, Message, Recipient, Sender, Store, StoreError, TokenHash,
};
use crate::throttle::RateLimiter;

pub use link::{Purpose, Signer};

/// The key that signs the links in emails (`link`), kept in the store so links survive a restart.
const KEY_META: &str = "email/key";
/// Conversations waiting to be looked at. Each entry is a few dozen bytes; past this many, new ones wait for the
/// restart scan or the conversation's next message (a flood of conversations cannot grow memory).
const MAX_SCHEDULED: usize = 100_000;
/// Link exchanges one address may make per hour (a bot guessing codes gets nowhere anyway: they are signed).
const CONTINUES_PER_HOUR: u32 = 30;

/// When to look at one side of a conversation again.
#[derive(Debug, Clone, Copy)]
struct Planned {
    at: Instant,
    /// When the oldest message this look is about arrived: a push delivered after it told the owner already.
    since: Instant,
}

#[derive(Default)]
struct Schedule {
    plan: HashMap<(Uuid, Recipient), Planned>,
    /// Conversations whose outbox should be tried at that time.
    send: HashMap<Uuid, Instant>,
}

pub struct Email {
    /// `[email]` of the config.
    settings: EmailConfig,
    /// The chat's name (`widget.title`), which visitors' emails are from.
    title: String,
    /// natter's own origin: the host of the `Message-ID`s, the unsubscribe and dashboard links.
    public_origin: Origin,
    store: Store,
    /// Who is online when the task decides (an open chat, an open dashboard).
    hub: Arc<Hub>,
    /// Whether a push reached the owner already.
    push: Arc<Push>,
    /// `None` while email is off (no `email.smtp_host`).
    relay: Option<smtp::Relay>,
    from: Option<Mailbox>,
    owner: Option<Mailbox>,
    /// `None` while email is off and was never on (the links of earlier emails keep working once it was).
    signer: Option<Signer>,
    /// Messages with ids below this are never emailed: they came before email was turned on.
    since: u64,
    schedule: Mutex<Schedule>,
    /// Wakes the queue task when the schedule changed.
    wake: Arc<Notify>,
    /// Serializes the read-modify-write of email records (the queue task, unsubscribe, link exchange).
    records: tokio::sync::Mutex<()>,
    /// Emails one address may get per day; over it an email is dropped with a log line.
    per_address: RateLimiter<String>,
    /// Emails natter sends per hour in all; over it they wait in the outbox.
    per_hour: RateLimiter<()>,
    continues: RateLimiter<IpAddr>,
    /// Emails in the outbox, for `/metrics`.
    pub queued: AtomicUsize,
    /// Emails the relay accepted; attempts that failed for now (retried); emails given up on (5xx, or failing too
    /// long); emails held or dropped by the limits. For `/metrics`.
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub throttled: AtomicU64,
}

impl Email {
    pub async fn new(
        config: &Config,
        store: &Store,
        hub: &Arc<Hub>,
        push: &Arc<Push>,
        public_origin: &Origin,
    ) -> anyhow::Result<Email> {
        let public_host = public_origin.host().trim_matches(['[', ']']);
        let settings = &config.email;
        let enabled = settings.enabled();
        let stored = store
            .meta(KEY_META)
            .map_err(|error| anyhow::anyhow!("cannot read the email link key: {error:?}"))?;
        let key = match stored {
            Some(key) => Some(key),
            None if enabled => {
                let mut key = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
                store
                    .put_meta(KEY_META, key.clone())
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("cannot store the email link key: {error:?}")
                    })?;
                Some(key)
            }
            None => None,
        };
        let since = if enabled {
            store
                .email_since()
                .await
                .map_err(|error| anyhow::anyhow!("cannot read the email records: {error:?}"))?
        } else {
            u64::MAX
        };
        Ok(Email {
            settings: settings.clone(),
            title: config.widget.title.clone(),
            public_origin: public_origin.clone(),
            store: store.clone(),
            hub: hub.clone(),
            push: push.clone(),
            relay: if enabled {
                Some(smtp::Relay::new(settings, public_host)?)
            } else {
                None
            },
            from: settings.from.parse().ok(),
            owner: settings.owner_address.parse().ok(),
            signer: key.map(|key| Signer::new(&key)),
            since,
            schedule: Mutex::new(Schedule::default()),
            wake: Arc::new(Notify::new()),
            records: tokio::sync::Mutex::new(()),
            per_address: RateLimiter::new(
                settings.per_address_per_day,
                Duration::from_secs(24 * 3600),
            ),
            per_hour: RateLimiter::new(settings.per_hour, Duration::from_secs(3600)),
            continues: RateLimiter::new(CONTINUES_PER_HOUR, Duration::from_secs(3600)),
            queued: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.relay.is_some()
    }

    /// A conversation's email record, or a fresh one that owes nothing from before email was turned on.
    fn record(&self, store: &Store, conversation_id: Uuid) -> Result<EmailState, StoreError> {
        Ok(store
            .email_state(conversation_id)?
            .unwrap_or_else(|| EmailState {
                visitor_up_to: self.since.saturating_sub(1),
                owner_up_to: self.since.saturating_sub(1),
                ..EmailState::default()
            }))
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Look at one side of a conversation at `at`. `later` replaces an earlier time (a burst of replies goes out
    /// together, after the last); otherwise the earlier time stays.
    fn plan(&self, conversation_id: Uuid, recipient: Recipient, at: Instant, later: bool) {
        let mut schedule = self.schedule();
        if schedule.plan.len() >= MAX_SCHEDULED {
            return;
        }
        let now = Instant::now();
        schedule
            .plan
            .entry((conversation_id, recipient))
            .and_modify(|planned| {
                if later || at < planned.at {
                    planned.at = at;
                }
            })
            .or_insert(Planned { at, since: now });
        drop(schedule);
        self.wake.notify_one();
    }

    fn send_at(&self, conversation_id: Uuid, at: Instant) {
        let mut schedule = self.schedule();
        let entry = schedule.send.entry(conversation_id).or_insert(at);
        *entry = (*entry).min(at);
        drop(schedule);
        self.wake.notify_one();
    }
}

/// Starts the queue task (when email is on). It holds `Email` weakly, so it ends with the server's state.
pub fn start(email: &Arc<Email>) {
    if email.enabled() {
        tokio::spawn(queue::run(Arc::downgrade(email), email.wake.clone()));
    }
}

/// Called once for every newly stored message, after the commit. Only marks the conversation to be looked at.
pub fn message_stored(email: &Email, conversation: &Conversation, message: &Message) {
    if !email.enabled() {
        return;
    }
    let settings = &email.settings;
    let now = Instant::now();
    match message.sender {
        Sender::Admin if conversation.email.is_some() => {
            let delay = if email.hub.visitor_online(&conversation.token_hash) {
                settings.unread_delay_seconds
            } else {
                settings.reply_delay_seconds
            };
            email.plan(
                conversation.id,
                Recipient::Visitor,
                now + Duration::from_secs(delay),
                true,
            );
        }
        Sender::Visitor if email.owner.is_some() && settings.owner_when != PushWhen::Never => {
            email.plan(
                conversation.id,
                Recipient::Owner,
                now + Duration::from_secs(settings.reply_delay_seconds),
                false,
            );
        }
        _ => {}
    }
}

/// The visitor left (or changed) their address: replies they have not read may be owed to it.
pub fn address_left(email: &Email, conversation: &Conversation) {
    if email.enabled() && conversation.email.is_some() {
        let delay = Duration::from_secs(email.settings.reply_delay_seconds);
        email.plan(
            conversation.id,
            Recipient::Visitor,
            Instant::now() + delay,
            true,
        );
    }
}

/// After the owner deleted a conversation: its email record, queued emails and link tokens go with it.
pub async fn conversation_deleted(email: &Email, conversation_id: Uuid) -> Result<(), StoreError> {
    let _records = email.records.lock().await;
    if let Some(state) = email.store.email_state(conversation_id)? {
        email
            .queued
            .fetch_sub(state.outbox.len(), Ordering::Relaxed);
    }
    email.store.delete_email_state(conversation_id).await
}

/// The identity a visitor socket acts as: a token an email link handed out acts as the conversation's own token, so
/// the hub, the channels and the store see one visitor, whichever browser it is.
pub fn visitor_identity(store: &Store, token_hash: TokenHash) -> TokenHash {
    if matches!(store.conversation_of_token(&token_hash), Ok(Some(_))) {
        return token_hash;
    }
    match store.alias_conversation(&token_hash) {
        Ok(Some(conversation_id)) => match store.conversation(conversation_id) {
            Ok(Some(conversation)) => conversation.token_hash,
            _ => token_hash,
        },
        _ => token_hash,
    }
}
