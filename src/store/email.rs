//! What the store keeps for email: per conversation, how far each side has been told, whether the visitor
//! unsubscribed, and the outbox (emails recorded and not yet accepted by the SMTP relay); the extra visitor tokens
//! that email links handed out; and the key that signs those links.
//!
//! Nothing here is written with the message that causes an email. What is owed is derived from the store instead: a
//! reply the visitor has not read and that lies beyond `visitor_up_to` is owed to the visitor, a visitor message beyond
//! `owner_up_to` and the owner's read mark is owed to the owner. So a crash between a reply's commit and its email's
//! record loses nothing: after the restart the reply is still beyond the mark. An email is recorded in the outbox in
//! the same write that moves the mark past it, so it is sent once (or, after a crash between the relay's answer and
//! the removal, again with the same `Message-ID`, which mail clients treat as one message).
//!
//! The records live in the `meta` table under `email/` keys, one record per conversation, so each of those writes is a
//! single key: atomic without a transaction of its own.

/// The writes of this module, as the writer applies them (`Tables::apply_email_write`).
pub(super) enum EmailWrite {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl EmailWrite {
    /// Records a conversation's email state (its outbox and marks) whole.
    pub(super) fn state(conversation_id: Uuid, state: &EmailState) -> EmailWrite {
        EmailWrite::Put {
            key: state_key(conversation_id),
            value: serde_json::to_vec(state).expect("an email state serializes"),
        }
    }

    pub(super) fn forget_state(conversation_id: Uuid) -> EmailWrite {
        EmailWrite::Delete {
            key: state_key(conversation_id),
        }
    }

    pub(super) fn alias(token_hash: &TokenHash, conversation_id: Uuid) -> EmailWrite {
        EmailWrite::Put {
            key: alias_key(token_hash),
            value: conversation_id.as_bytes().to_vec(),
        }
    }
}

impl From<EmailWrite> for Write {
    fn from(write: EmailWrite) -> Write {
        Write::Email(write)
    }
}

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use redb::{ReadableTable, WriteTransaction};

use super::schema::{CONVERSATIONS, MESSAGES, META};
use super::writer::{Outcome, Tables, Write};
use super::{Store, StoreError, TokenHash};

const STATE_PREFIX: &str = "email/state/";
const ALIAS_PREFIX: &str = "email/alias/";
/// The first message id email cares about: messages from before email was first turned on are never emailed.
const SINCE: &str = "email/since";

/// Who an email is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipient {
    Visitor,
    Owner,
}

/// An email recorded and not yet accepted by the relay (or refused for good).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The `Message-ID` header without its angle brackets; the same on every attempt.
    pub message_id: String,
    /// The `In-Reply-To` of this email (the thread's previous email, or its root).
    pub in_reply_to: String,
    pub recipient: Recipient,
    /// The address, as it was when the email was recorded.
    pub to: String,
    /// The new messages this email carries: ids `first..=last` of its sender side.
    pub first: u64,
    pub last: u64,
    /// Attempts that failed for a temporary reason.
    pub attempts: u32,
}

/// Email bookkeeping for one conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailState {
    /// Owner replies up to this id were emailed to the visitor (or needed no email).
    pub visitor_up_to: u64,
    /// Visitor messages up to this id were told to the owner (by email, push or an open dashboard).
    pub owner_up_to: u64,
    /// When the owner was last emailed about this conversation (milliseconds since the epoch), for the digest.
    pub owner_emailed_at: i64,
    /// The visitor asked for no more email about this conversation.
    pub unsubscribed: bool,
    /// The last `Message-ID` sent to each side, so the next one threads under it.
    pub visitor_thread: Option<String>,
    pub owner_thread: Option<String>,
    pub outbox: Vec<Queued>,
    /// Hashes of the visitor tokens email links handed out for this conversation (hex), deleted with it.
    pub aliases: Vec<String>,
}

impl Store {
    pub fn email_state(&self, conversation_id: Uuid) -> Result<Option<EmailState>, StoreError> {
        self.meta(&state_key(conversation_id))?
            .map(|bytes| decode_state(&bytes))
            .transpose()
    }

    /// Every conversation's email record.
    pub fn email_states(&self) -> Result<Vec<(Uuid, EmailState)>, StoreError> {
        let table = self.read()?.open_table(META)?;
        let mut states = Vec::new();
        for entry in table.range(STATE_PREFIX..)? {
            let (key, value) = entry?;
            let Some(id) = key.value().strip_prefix(STATE_PREFIX) else {
                break;
            };
            if let Ok(id) = Uuid::parse_str(id) {
                states.push((id, decode_state(value.value())?));
            }
        }
        Ok(states)
    }

    pub async fn put_email_state(
        &self,
        conversation_id: Uuid,
        state: &EmailState,
    ) -> Result<(), StoreError> {
        self.write(EmailWrite::state(conversation_id, state))
            .await
            .map(drop)
    }

    /// Removes a deleted conversation's email record and the visitor tokens its links handed out.
    pub async fn delete_email_state(&self, conversation_id: Uuid) -> Result<(), StoreError> {
        if let Some(state) = self.email_state(conversation_id)? {
            for alias in &state.aliases {
                self.delete_meta(format!("{ALIAS_PREFIX}{alias}")).await?;
            }
        }
        self.write(EmailWrite::forget_state(conversation_id))
            .await
            .map(drop)
    }

    /// The conversation a visitor token was handed out for by an email link, if it was.
    pub fn alias_conversation(&self, token_hash: &TokenHash) -> Result<Option<Uuid>, StoreError> {
        Ok(self
            .meta(&alias_key(token_hash))?
            .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok())
            .map(Uuid::from_bytes))
    }

    /// Records a visitor token handed out for `conversation_id`. The caller adds it to the conversation's
    /// `EmailState::aliases` too, so it goes with the conversation.
    pub async fn put_alias(
        &self,
        token_hash: &TokenHash,
        conversation_id: Uuid,
    ) -> Result<(), StoreError> {
        self.write(EmailWrite::alias(token_hash, conversation_id))
            .await
            .map(drop)
    }

    /// The first message id email may tell of; set to the next message id the first time it is asked for.
    pub async fn email_since(&self) -> Result<u64, StoreError> {
        if let Some(bytes) = self.meta(SINCE)? {
            return Ok(super::read_u64(&bytes));
        }
        let next = self.last_message_id()?.map_or(1, |id| id + 1);
        self.put_email(SINCE.to_string(), next.to_le_bytes().to_vec())
            .await?;
        Ok(next)
    }

    fn last_message_id(&self) -> Result<Option<u64>, StoreError> {
        let table = self.read()?.open_table(MESSAGES)?;
        let last = table.last()?.map(|(key, _)| key.value());
        Ok(last)
    }

    async fn put_email(&self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        self.write(EmailWrite::Put { key, value }).await.map(drop)
    }

    async fn delete_meta(&self, key: String) -> Result<(), StoreError> {
        self.write(EmailWrite::Delete { key }).await.map(drop)
    }
}

impl Tables<'_, '_> {
    pub(super) fn apply_email_write(&mut self, write: EmailWrite) -> Result<Outcome, StoreError> {
        match write {
            EmailWrite::Put { key, value } => {
                self.meta.insert(key.as_str(), value.as_slice())?;
            }
            EmailWrite::Delete { key } => {
                self.meta.remove(key.as_str())?;
            }
        }
        Ok(Outcome::Done)
    }
}

/// Removes the email records and link tokens of conversations that no longer exist, in the opening transaction: the
/// owner's delete removes the conversation first and its email record after it (`email::conversation_deleted`), so a
/// stop in between leaves them behind. Answers how many went.
pub(super) fn forget_deleted(transaction: &WriteTransaction) -> Result<usize, StoreError> {
    let conversations = transaction.open_table(CONVERSATIONS)?;
    let mut meta = transaction.open_table(META)?;
    let mut gone = Vec::new();
    for prefix in [STATE_PREFIX, ALIAS_PREFIX] {
        for entry in meta.range(prefix..)? {
            let (key, value) = entry?;
            let Some(rest) = key.value().strip_prefix(prefix) else {
                break;
            };
            let conversation = if prefix == STATE_PREFIX {
                Uuid::parse_str(rest).ok()
            } else {
                <[u8; 16]>::try_from(value.value())
                    .ok()
                    .map(Uuid::from_bytes)
            };
            if let Some(conversation) = conversation {
                if conversations.get(conversation.as_u128())?.is_none() {
                    gone.push(key.value().to_string());
                }
            }
        }
    }
    for key in &gone {
        meta.remove(key.as_str())?;
    }
    Ok(gone.len())
}

fn alias_key(token_hash: &TokenHash) -> String {
    let mut key = String::with_capacity(ALIAS_PREFIX.len() + 64);
    key.push_str(ALIAS_PREFIX);
    key.push_str(&hex(token_hash));
    key
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn state_key(conversation_id: Uuid) -> String {
    format!("{STATE_PREFIX}{}", conversation_id.hyphenated())
}

fn decode_state(bytes: &[u8]) -> Result<EmailState, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| {
        StoreError::Storage(format!("an email record does not read back: {error}"))
    })
}
