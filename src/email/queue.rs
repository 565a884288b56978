//! The background task: decides what is owed to whom (from the store), records each email in the store before it is
//! tried, sends it, retries temporary failures with backoff and drops permanent ones with a log line.
//!
//! One task, one email at a time: a relay is slow next to a chat, but an owner's reply rate is not, and a single
//! sender keeps the order of a conversation's emails and the limits simple. The chat never waits for it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use super::compose::{self, Parts};
use super::link::Purpose;
use super::smtp::Failure;
use super::{Email, Planned};
use crate::config::PushWhen;
use crate::store::{Conversation, Queued, Recipient, Sender, StoreError};
use crate::timestamp;

/// The longest wait between two attempts (the first is `email.retry_seconds`, each further one twice as long).
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Temporary failures after which an email is dropped: with the default backoff, about two days of trying.
const MAX_ATTEMPTS: u32 = 60;
/// The earlier lines of the conversation an email shows for context.
const CONTEXT_LINES: usize = 10;
/// New messages one email carries at most; more go in the next one.
const MAX_NEW: usize = 50;
/// How long the task sleeps when nothing is scheduled (it is woken for anything new).
const IDLE: Duration = Duration::from_secs(3600);

pub async fn run(email: Weak<Email>, wake: Arc<Notify>) {
    if let Some(email) = email.upgrade() {
        if let Err(error) = resume(&email) {
            tracing::error!(
                ?error,
                "email: cannot read the outbox; queued emails wait for the next restart"
            );
        }
    }
    loop {
        let next = {
            let Some(email) = email.upgrade() else { return };
            tick(&email).await
        };
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = wake.notified() => {}
        }
    }
}

/// After a start: send what the outbox holds, and look again at every conversation that may be owed an email
/// (its reply or message may have been committed just before a crash).
fn resume(email: &Email) -> Result<(), StoreError> {
    let now = Instant::now();
    let mut queued = 0;
    for (conversation_id, state) in email.store.email_states()? {
        if !state.outbox.is_empty() {
            queued += state.outbox.len();
            email.send_at(conversation_id, now);
        }
    }
    email.queued.store(queued, Ordering::Relaxed);
    for conversation in email.store.conversations()? {
        if conversation.last_message_id.unwrap_or(0) >= email.since {
            email.plan(conversation.id, Recipient::Visitor, now, false);
            email.plan(conversation.id, Recipient::Owner, now, false);
        }
    }
    Ok(())
}

/// Does what is due; answers when to look again.
async fn tick(email: &Email) -> Instant {
    let now = Instant::now();
    let (plans, sends) = {
        let mut schedule = email.schedule();
        let plans: Vec<((Uuid, Recipient), Planned)> = schedule
            .plan
            .iter()
            .filter(|(_, planned)| planned.at <= now)
            .map(|(key, planned)| (*key, *planned))
            .collect();
        for (key, _) in &plans {
            schedule.plan.remove(key);
        }
        let sends: Vec<Uuid> = schedule
            .send
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &sends {
            schedule.send.remove(id);
        }
        (plans, sends)
    };
    for ((conversation_id, recipient), planned) in plans {
        match decide(email, conversation_id, recipient, planned).await {
            Ok(Some(at)) => {
                let mut schedule = email.schedule();
                schedule
                    .plan
                    .entry((conversation_id, recipient))
                    .or_insert(Planned { at, ..planned });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(?error, %conversation_id, "email: cannot read or record what is owed; trying again in a minute");
                email.plan(
                    conversation_id,
                    recipient,
                    Instant::now() + Duration::from_secs(60),
                    false,
                );
            }
        }
    }
    for conversation_id in sends {
        if let Err(error) = send_outbox(email, conversation_id).await {
            tracing::warn!(?error, %conversation_id, "email: cannot update the outbox; trying again in a minute");
            email.send_at(conversation_id, Instant::now() + Duration::from_secs(60));
        }
    }
    let schedule = email.schedule();
    schedule
        .plan
        .values()
        .map(|planned| planned.at)
        .chain(schedule.send.values().copied())
        .min()
        .unwrap_or_else(|| Instant::now() + IDLE)
}

/// Looks at what one side of a conversation is owed; records an email when one is due. Answers a time to look again
/// when something is owed but not yet due.
async fn decide(
    email: &Email,
    conversation_id: Uuid,
    recipient: Recipient,
    planned: Planned,
) -> Result<Option<Instant>, StoreError> {
    let Some(conversation) = email.store.conversation(conversation_id)? else {
        return Ok(None);
    };
    let settings = &email.settings;
    let _records = email.records.lock().await;
    let mut state = email.record(&email.store, conversation_id)?;
    let (to, after, side) = match recipient {
        Recipient::Visitor => {
            let Some(to) = conversation.email.clone().filter(|_| !state.unsubscribed) else {
                return Ok(None);
            };
            (
                to,
                state.visitor_up_to.max(conversation.visitor_read_up_to),
                Sender::Admin,
            )
        }
        Recipient::Owner => {
            let Some(owner) = &email.owner else {
                return Ok(None);
            };
            if settings.owner_when == PushWhen::Never {
                return Ok(None);
            }
            (
                owner.email.to_string(),
                state.owner_up_to.max(conversation.admin_read_up_to),
                Sender::Visitor,
            )
        }
    };
    let page =
        email
            .store
            .conversation_messages(conversation_id, Some(after), None, MAX_NEW * 2)?;
    let new: Vec<u64> = page
        .messages
        .iter()
        .filter(|message| message.sender == side)
        .map(|message| message.id)
        .take(MAX_NEW)
        .collect();
    let (Some(&first), Some(&last)) = (new.first(), new.last()) else {
        return Ok(None);
    };
    let now = Instant::now();
    match recipient {
        Recipient::Visitor => {
            // The visitor has the chat open but has not read the reply yet: give them the unread delay first.
            let unread = planned.since + Duration::from_secs(settings.unread_delay_seconds);
            if email.hub.visitor_online(&conversation.token_hash) && now < unread {
                return Ok(Some(unread));
            }
        }
        Recipient::Owner => {
            let told = settings.owner_when == PushWhen::WhenAway
                && (email.hub.admin_online()
                    || email.push.delivered_since(conversation_id, planned.since));
            if told {
                state.owner_up_to = last;
                email.store.put_email_state(conversation_id, &state).await?;
                return Ok(None);
            }
            let cooldown = settings.owner_cooldown_seconds.saturating_mul(1000) as i64;
            let wait = state.owner_emailed_at.saturating_add(cooldown) - timestamp::now_millis();
            if wait > 0 {
                return Ok(Some(now + Duration::from_millis(wait as u64)));
            }
        }
    }
    let host = email
        .public_origin
        .host()
        .trim_matches(['[', ']'])
        .to_string();
    let (thread, side_name) = match recipient {
        Recipient::Visitor => (&mut state.visitor_thread, "visitor"),
        Recipient::Owner => (&mut state.owner_thread, "owner"),
    };
    let message_id = format!(
        "natter.{}.{side_name}.{last}@{host}",
        conversation_id.simple()
    );
    let in_reply_to = thread
        .replace(message_id.clone())
        .unwrap_or_else(|| thread_root(conversation_id, recipient, &host));
    state.outbox.push(Queued {
        message_id,
        in_reply_to,
        recipient,
        to,
        first,
        last,
        attempts: 0,
    });
    match recipient {
        Recipient::Visitor => state.visitor_up_to = last,
        Recipient::Owner => {
            state.owner_up_to = last;
            state.owner_emailed_at = timestamp::now_millis();
        }
    }
    // The email and the mark that it is owed no more, in one write: it is sent once, or after a crash again with the
    // same Message-ID.
    email.store.put_email_state(conversation_id, &state).await?;
    email.queued.fetch_add(1, Ordering::Relaxed);
    email.send_at(conversation_id, now);
    // More than one email's worth: the rest right after.
    Ok((page.more || new.len() == MAX_NEW).then_some(now))
}

/// The id every email of a conversation to one side refers to, so a mail client shows them as one thread.
fn thread_root(conversation_id: Uuid, recipient: Recipient, host: &str) -> String {
    let side = match recipient {
        Recipient::Visitor => "visitor",
        Recipient::Owner => "owner",
    };
    format!("natter.{}.{side}@{host}", conversation_id.simple())
}

/// Tries each email of a conversation's outbox once.
async fn send_outbox(email: &Email, conversation_id: Uuid) -> Result<(), StoreError> {
    let outbox = match email.store.email_state(conversation_id)? {
        Some(state) => state.outbox,
        None => return Ok(()),
    };
    for queued in outbox {
        let outcome = send_one(email, conversation_id, &queued).await?;
        let _records = email.records.lock().await;
        let Some(mut state) = email.store.email_state(conversation_id)? else {
            return Ok(());
        };
        let Some(position) = state
            .outbox
            .iter()
            .position(|entry| entry.message_id == queued.message_id)
        else {
            continue;
        };
        match outcome {
            Outcome::Done => {
                state.outbox.remove(position);
                email.queued.fetch_sub(1, Ordering::Relaxed);
            }
            Outcome::Later(wait) => {
                email.send_at(conversation_id, Instant::now() + wait);
                continue;
            }
            Outcome::Retry => {
                let entry = &mut state.outbox[position];
                entry.attempts += 1;
                if entry.attempts >= MAX_ATTEMPTS {
                    tracing::warn!(message_id = %entry.message_id, "email: still failing after {MAX_ATTEMPTS} attempts; dropped");
                    email.dropped.fetch_add(1, Ordering::Relaxed);
                    state.outbox.remove(position);
                    email.queued.fetch_sub(1, Ordering::Relaxed);
                } else {
                    let wait = Duration::from_secs(email.settings.retry_seconds)
                        .saturating_mul(1 << (entry.attempts - 1).min(12))
                        .min(MAX_BACKOFF);
                    email.send_at(conversation_id, Instant::now() + wait);
                }
            }
        }
        email.store.put_email_state(conversation_id, &state).await?;
    }
    Ok(())
}

enum Outcome {
    /// Sent, or dropped for good: out of the outbox.
    Done,
    /// Failed for now: count the attempt and back off.
    Retry,
    /// Not tried (the hourly limit): try again after this long, without counting an attempt.
    Later(Duration),
}

async fn send_one(
    email: &Email,
    conversation_id: Uuid,
    queued: &Queued,
) -> Result<Outcome, StoreError> {
    let Some(conversation) = email.store.conversation(conversation_id)? else {
        return Ok(Outcome::Done);
    };
    // Every attempt counts against the hour: each is a connection to the relay.
    if let Err(wait) = email.per_hour.take(&()) {
        tracing::warn!(
            "email: email.per_hour ({}) reached; the outbox waits {} s",
            email.settings.per_hour,
            wait.as_secs()
        );
        email.throttled.fetch_add(1, Ordering::Relaxed);
        return Ok(Outcome::Later(wait));
    }
    // Counted once per email, not per attempt, so a relay that is down does not spend an address's allowance.
    if queued.attempts == 0
        && email
            .per_address
            .take(&queued.to.to_ascii_lowercase())
            .is_err()
    {
        tracing::warn!(message_id = %queued.message_id, "email: {} emails to one address today (email.per_address_per_day); this one is dropped", email.settings.per_address_per_day);
        email.throttled.fetch_add(1, Ordering::Relaxed);
        email.per_hour.give_back(&());
        return Ok(Outcome::Done);
    }
    let message = match compose_email(email, &conversation, queued) {
        Ok(message) => message,
        Err(reason) => {
            tracing::warn!(message_id = %queued.message_id, %reason, "email: cannot be written; dropped");
            email.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(Outcome::Done);
        }
    };
    let relay = email
        .relay
        .as_ref()
        .expect("the queue runs only with a relay");
    match relay.send(&message).await {
        Ok(answer) => {
            email.sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(message_id = %queued.message_id, %answer, "email sent");
            Ok(Outcome::Done)
        }
        Err(Failure::Permanent(reason)) => {
            email.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(message_id = %queued.message_id, %reason, "email refused for good; dropped");
            Ok(Outcome::Done)
        }
        Err(Failure::Temporary(reason)) => {
            email.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(message_id = %queued.message_id, attempt = queued.attempts + 1, %reason, "email not sent; will retry");
            Ok(Outcome::Retry)
        }
    }
}

fn compose_email(
    email: &Email,
    conversation: &Conversation,
    queued: &Queued,
) -> Result<lettre::Message, String> {
    let page = email
        .store
        .conversation_messages(
            conversation.id,
            None,
            Some(queued.last.saturating_add(1)),
            CONTEXT_LINES + MAX_NEW,
        )
        .map_err(|error| format!("{error:?}"))?;
    // The new messages, and up to CONTEXT_LINES before the first of them.
    let start = page
        .messages
        .iter()
        .position(|message| message.id >= queued.first)
        .unwrap_or(0)
        .saturating_sub(CONTEXT_LINES);
    let lines = &page.messages[start..];
    let host = email
        .public_origin
        .host()
        .trim_matches(['[', ']'])
        .to_string();
    let root = thread_root(conversation.id, queued.recipient, &host);
    let signer = email.signer.as_ref().ok_or("no link key")?;
    let from = email.from.as_ref().ok_or("email.from is not set")?;
    let (link, unsubscribe) = match queued.recipient {
        Recipient::Visitor => {
            let expires = (timestamp::now_millis() / 1000).max(0) as u64
                + u64::from(email.settings.link_days) * 86_400;
            let code = signer.sign(Purpose::Continue, conversation.id, expires);
            let token = signer.sign(Purpose::Unsubscribe, conversation.id, u64::MAX);
            (
                format!("{}#natter-continue={code}", page_url(email, conversation)),
                Some(format!(
                    "{}/email/unsubscribe?t={token}",
                    email.public_origin
                )),
            )
        }
        Recipient::Owner => (
            format!("{}/admin/#c={}", email.public_origin, conversation.id),
            None,
        ),
    };
    compose::build(&Parts {
        queued,
        conversation,
        lines,
        from,
        owner: email.owner.as_ref(),
        chat_name: &email.title,
        thread_root: &root,
        link: &link,
        unsubscribe: unsubscribe.as_deref(),
    })
}

/// The page the visitor chatted on, without its fragment (the link puts its own); natter's own page when the
/// visitor's page is unknown or not a web address.
fn page_url(email: &Email, conversation: &Conversation) -> String {
    conversation
        .page
        .as_ref()
        .map(|page| page.url.split('#').next().unwrap_or_default())
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .filter(|url| url.len() <= 2048 && !url.contains(char::is_control))
        .map_or_else(|| format!("{}/", email.public_origin), str::to_string)
}
