//! Conversations and their messages: what a visitor and the admin say, and the records that say who is talking, what
//! each side has read, and which page the visitor is on.

use std::collections::HashMap;

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schema::{
    CONVERSATIONS, CONVERSATION_MESSAGES, INDEXED_UP_TO, MESSAGES, META, NEXT_MESSAGE_ID,
    VISITOR_TOKENS,
};
use super::writer::{Outcome, Tables, Write};
use super::{decode, read_u64, record, Store, StoreError, TokenHash};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    Visitor,
    Admin,
}

/// A chat message exactly as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub conversation_id: Uuid,
    pub sender: Sender,
    pub content: String,
    pub created_at: String,
    pub client_id: Option<Uuid>,
}

/// The page a visitor is on, as the widget reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Page {
    pub url: String,
    pub title: String,
    pub referrer: String,
}

/// Stored as a `record`; the JSON form (`Deserialize`) is how stores before schema version 4 hold it, still read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct Conversation {
    pub id: Uuid,
    /// SHA-256 of the visitor token, so a reply can find the visitor's sockets (hex in the JSON form).
    #[serde(with = "hex_hash")]
    pub token_hash: TokenHash,
    pub visitor_name: Option<String>,
    pub email: Option<String>,
    /// Visitor messages the admin has not read.
    pub unread_count: u32,
    pub last_message_id: Option<u64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub page: Option<Page>,
    /// The highest visitor message id the admin has read.
    pub admin_read_up_to: u64,
    /// The highest admin message id the visitor has read.
    pub visitor_read_up_to: u64,
}

/// A token hash as the JSON conversation record of stores before schema version 4 holds it: 64 lowercase hex digits.
/// (Only tests write that record now.)
mod hex_hash {
    use serde::{de::Error, Deserialize, Deserializer};

    use super::TokenHash;

    #[cfg(test)]
    pub fn serialize<S: serde::Serializer>(
        hash: &TokenHash,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, byte) in text.chunks_exact_mut(2).zip(hash) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        serializer.serialize_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TokenHash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        if text.len() != 64 {
            return Err(D::Error::custom("a token hash is 64 hex digits"));
        }
        let mut hash = [0u8; 32];
        for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
                _ => return Err(D::Error::custom("a token hash is 64 hex digits")),
            }
        }
        Ok(hash)
    }
}

/// What a `speak` or `reply` did.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    /// `message` as the store wrote it: the JSON the wire shows.
    pub message_json: String,
    pub conversation: Conversation,
    /// The client id was seen before: `message` is the one stored then, and nothing new was written.
    pub duplicate: bool,
    /// This message started the conversation.
    pub created: bool,
}

/// A page of messages, oldest first; `more` says whether the range holds more than were returned.
#[derive(Debug, Clone, Default)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub more: bool,
}

/// The writes of this module, as the writer applies them (`Tables::apply_conversation_write`).
pub(super) enum ConversationWrite {
    Speak {
        token_hash: TokenHash,
        content: String,
        client_id: Uuid,
    },
    Reply {
        conversation_id: Uuid,
        content: String,
        client_id: Uuid,
    },
    Identify {
        token_hash: TokenHash,
        name: String,
        email: Option<String>,
    },
    AdminRead {
        conversation_id: Uuid,
        up_to: u64,
    },
    VisitorRead {
        conversation_id: Uuid,
        up_to: u64,
    },
    SetPage {
        conversation_id: Uuid,
        page: Page,
    },
    Delete {
        conversation_id: Uuid,
    },
}

impl From<ConversationWrite> for Write {
    fn from(write: ConversationWrite) -> Write {
        Write::Conversation(write)
    }
}

impl Store {
    /// Stores a visitor message, starting the conversation if this token has none. Idempotent on `client_id`.
    pub async fn speak(
        &self,
        token_hash: TokenHash,
        content: String,
        client_id: Uuid,
    ) -> Result<Appended, StoreError> {
        match self
            .write(ConversationWrite::Speak {
                token_hash,
                content,
                client_id,
            })
            .await?
        {
            Outcome::Appended(appended) => Ok(*appended),
            _ => unreachable!("speak answers Appended"),
        }
    }

    /// Stores an admin reply. Idempotent on `client_id`.
    pub async fn reply(
        &self,
        conversation_id: Uuid,
        content: String,
        client_id: Uuid,
    ) -> Result<Appended, StoreError> {
        match self
            .write(ConversationWrite::Reply {
                conversation_id,
                content,
                client_id,
            })
            .await?
        {
            Outcome::Appended(appended) => Ok(*appended),
            _ => unreachable!("reply answers Appended"),
        }
    }

    /// Sets the visitor's name and email, starting the conversation if needed.
    pub async fn identify(
        &self,
        token_hash: TokenHash,
        name: String,
        email: Option<String>,
    ) -> Result<Conversation, StoreError> {
        self.conversation_write(ConversationWrite::Identify {
            token_hash,
            name,
            email,
        })
        .await?
        .ok_or(StoreError::Closed)
    }

    /// The admin read the conversation up to `up_to`: the unread count goes to zero.
    pub async fn admin_read(
        &self,
        conversation_id: Uuid,
        up_to: u64,
    ) -> Result<Option<Conversation>, StoreError> {
        self.conversation_write(ConversationWrite::AdminRead {
            conversation_id,
            up_to,
        })
        .await
    }

    pub async fn visitor_read(
        &self,
        conversation_id: Uuid,
        up_to: u64,
    ) -> Result<Option<Conversation>, StoreError> {
        self.conversation_write(ConversationWrite::VisitorRead {
            conversation_id,
            up_to,
        })
        .await
    }

    pub async fn set_page(
        &self,
        conversation_id: Uuid,
        page: Page,
    ) -> Result<Option<Conversation>, StoreError> {
        self.conversation_write(ConversationWrite::SetPage {
            conversation_id,
            page,
        })
        .await
    }

    /// Deletes a conversation with its messages and token; answers the deleted conversation, if it existed.
    pub async fn delete_conversation(
        &self,
        conversation_id: Uuid,
    ) -> Result<Option<Conversation>, StoreError> {
        self.conversation_write(ConversationWrite::Delete { conversation_id })
            .await
    }

    async fn conversation_write(
        &self,
        write: ConversationWrite,
    ) -> Result<Option<Conversation>, StoreError> {
        match self.write(write).await? {
            Outcome::Conversation(conversation) => Ok(conversation.map(|boxed| *boxed)),
            _ => unreachable!("conversation writes answer Conversation"),
        }
    }

    pub fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        table
            .get(id.as_u128())?
            .map(|value| record::decode(value.value()))
            .transpose()
    }

    pub fn conversation_of_token(
        &self,
        token_hash: &TokenHash,
    ) -> Result<Option<Conversation>, StoreError> {
        let transaction = self.read()?;
        let tokens = transaction.open_table(VISITOR_TOKENS)?;
        let Some(id) = tokens
            .get(token_hash.as_slice())?
            .map(|value| value.value())
        else {
            return Ok(None);
        };
        let conversations = transaction.open_table(CONVERSATIONS)?;
        conversations
            .get(id)?
            .map(|value| record::decode(value.value()))
            .transpose()
    }

    /// Every conversation, most recently active first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        let mut conversations = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            conversations.push(record::decode(value.value())?);
        }
        conversations.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
        Ok(conversations)
    }

    pub fn conversations_by_id(&self, ids: &[Uuid]) -> Result<Vec<Conversation>, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        let mut conversations = Vec::new();
        for id in ids {
            if let Some(value) = table.get(id.as_u128())? {
                conversations.push(record::decode(value.value())?);
            }
        }
        Ok(conversations)
    }

    pub fn message(&self, id: u64) -> Result<Option<Message>, StoreError> {
        let table = self.read()?.open_table(MESSAGES)?;
        table
            .get(id)?
            .map(|value| decode(value.value()))
            .transpose()
    }

    /// Messages of one conversation with `after < id < before`, at most `limit`. With `before`, the newest such
    /// messages (paging backwards); otherwise the oldest (catching up). Oldest first either way.
    pub fn conversation_messages(
        &self,
        conversation_id: Uuid,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let key = conversation_id.as_u128();
        let low = after.map_or(0, |after| after.saturating_add(1));
        let high = before.unwrap_or(u64::MAX);
        if low >= high {
            return Ok(MessagePage::default());
        }
        // The newest messages may not be in the index yet. Holding the lock while the transaction starts means the
        // writer cannot drop entries from `unindexed` that this transaction's index does not have.
        let (transaction, unindexed) = {
            let unindexed = self
                .file
                .unindexed
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            let transaction = self.read()?;
            let indexed_up_to = transaction
                .open_table(META)?
                .get(INDEXED_UP_TO)?
                .map_or(0, |value| read_u64(value.value()));
            let from = low.max(indexed_up_to.saturating_add(1));
            let ids: Vec<u64> = if from < high {
                unindexed
                    .range((key, from)..(key, high))
                    .map(|(_, id)| *id)
                    .collect()
            } else {
                Vec::new()
            };
            (transaction, ids)
        };
        let index = transaction.open_table(CONVERSATION_MESSAGES)?;
        let messages = transaction.open_table(MESSAGES)?;
        let indexed = index
            .range((key, low)..(key, high))?
            .map(|entry| entry.map(|(ids, _)| ids.value().1));
        let unindexed = unindexed.into_iter().map(Ok);
        // Every unindexed id is above every indexed one.
        let (ids, more) = if before.is_some() {
            let (mut ids, more) = first_ids(unindexed.rev().chain(indexed.rev()), limit)?;
            ids.reverse();
            (ids, more)
        } else {
            first_ids(indexed.chain(unindexed), limit)?
        };
        let mut page = MessagePage {
            messages: Vec::with_capacity(ids.len()),
            more,
        };
        for id in ids {
            if let Some(value) = messages.get(id)? {
                page.messages.push(decode(value.value())?);
            }
        }
        Ok(page)
    }

    /// Messages of every conversation with id > `after`, oldest first, at most `limit`.
    pub fn messages_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let table = self.read()?.open_table(MESSAGES)?;
        let low = after.map_or(0, |after| after.saturating_add(1));
        let mut page = MessagePage::default();
        for entry in table.range(low..)? {
            if page.messages.len() == limit {
                page.more = true;
                break;
            }
            page.messages.push(decode(entry?.1.value())?);
        }
        Ok(page)
    }

    /// How many messages the store holds (for metrics).
    pub fn message_count(&self) -> Result<u64, StoreError> {
        let table = self.read()?.open_table(MESSAGES)?;
        Ok(table.len()?)
    }

    pub fn conversation_count(&self) -> Result<u64, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        Ok(table.len()?)
    }
}

/// The first `limit` message ids, and whether there were more.
fn first_ids(
    ids: impl Iterator<Item = Result<u64, redb::StorageError>>,
    limit: usize,
) -> Result<(Vec<u64>, bool), StoreError> {
    let mut first = Vec::with_capacity(limit.min(256));
    for id in ids {
        if first.len() == limit {
            return Ok((first, true));
        }
        first.push(id?);
    }
    Ok((first, false))
}

/// Groups messages by conversation id, keeping order; used to build admin `sync` answers.
pub fn conversation_ids(messages: &[Message]) -> Vec<Uuid> {
    let mut seen = HashMap::new();
    let mut ids = Vec::new();
    for message in messages {
        if seen.insert(message.conversation_id, ()).is_none() {
            ids.push(message.conversation_id);
        }
    }
    ids
}

impl Tables<'_, '_> {
    pub(super) fn apply_conversation_write(
        &mut self,
        write: ConversationWrite,
    ) -> Result<Outcome, StoreError> {
        match write {
            ConversationWrite::Speak {
                token_hash,
                content,
                client_id,
            } => {
                let (conversation, created) = match self.conversation_of_token(&token_hash)? {
                    Some(conversation) => (conversation, false),
                    None => (self.new_conversation(&token_hash)?, true),
                };
                self.append(conversation, Sender::Visitor, content, client_id, created)
            }
            ConversationWrite::Reply {
                conversation_id,
                content,
                client_id,
            } => {
                let conversation =
                    self.conversation(conversation_id.as_u128())?
                        .ok_or_else(|| {
                            StoreError::Rejected(ApiError::not_found("no such conversation"))
                        })?;
                self.append(conversation, Sender::Admin, content, client_id, false)
            }
            ConversationWrite::Identify {
                token_hash,
                name,
                email,
            } => {
                let mut conversation = match self.conversation_of_token(&token_hash)? {
                    Some(conversation) => conversation,
                    None => self.new_conversation(&token_hash)?,
                };
                conversation.visitor_name = Some(name).filter(|name| !name.is_empty());
                conversation.email = email;
                conversation.updated_at = self.now;
                self.save(conversation.clone());
                Ok(Outcome::Conversation(Some(Box::new(conversation))))
            }
            ConversationWrite::AdminRead {
                conversation_id,
                up_to,
            } => self.update(conversation_id, |conversation| {
                conversation.unread_count = 0;
                conversation.admin_read_up_to = conversation.admin_read_up_to.max(up_to);
            }),
            ConversationWrite::VisitorRead {
                conversation_id,
                up_to,
            } => self.update(conversation_id, |conversation| {
                conversation.visitor_read_up_to = conversation.visitor_read_up_to.max(up_to);
            }),
            ConversationWrite::SetPage {
                conversation_id,
                page,
            } => self.update(conversation_id, |conversation| {
                conversation.page = Some(page);
            }),
            ConversationWrite::Delete { conversation_id } => self.delete(conversation_id),
        }
    }

    fn append(
        &mut self,
        mut conversation: Conversation,
        sender: Sender,
        content: String,
        client_id: Uuid,
        created: bool,
    ) -> Result<Outcome, StoreError> {
        let key = conversation.id.as_u128();
        let id = match self.next_message_id {
            Some(id) => id,
            None => self
                .meta
                .get(NEXT_MESSAGE_ID)?
                .map_or(1, |value| read_u64(value.value())),
        };
        // Claim the client id for the new message; a resend finds it taken and gets the stored message back. (One
        // B-tree operation in the usual case instead of a lookup and an insert.)
        let taken = self
            .client_ids
            .insert((client_id.as_u128(), key), id)?
            .map(|value| value.value());
        if let Some(existing) = taken {
            self.client_ids
                .insert((client_id.as_u128(), key), existing)?;
            let stored = self
                .messages
                .get(existing)?
                .map(|value| value.value().to_vec());
            if let Some(json) = stored {
                return Ok(Outcome::Appended(Box::new(Appended {
                    message: decode(&json)?,
                    message_json: String::from_utf8(json)
                        .map_err(|_| StoreError::Storage("a stored message is not UTF-8".into()))?,
                    conversation,
                    duplicate: true,
                    created: false,
                })));
            }
        }
        self.next_message_id = Some(id + 1);
        let now = self.now;
        let message = Message {
            id,
            conversation_id: conversation.id,
            sender,
            content,
            created_at: self.now_text.clone(),
            client_id: Some(client_id),
        };
        // Sized for the whole message at once (the fields around the content take under 200 bytes).
        let mut encoded = Vec::with_capacity(message.content.len() + 200);
        serde_json::to_writer(&mut encoded, &message).expect("a message always serializes");
        let message_json = String::from_utf8(encoded).expect("serde_json writes UTF-8");
        self.messages.insert(id, message_json.as_bytes())?;
        // Its index entry waits for `index_all`, which writes many at once (see `INDEX_BATCH`).
        self.appended.push((key, id));
        conversation.last_message_id = Some(id);
        conversation.updated_at = now;
        match sender {
            Sender::Visitor => {
                conversation.unread_count = conversation.unread_count.saturating_add(1)
            }
            // Replying means the admin has read everything before the reply.
            Sender::Admin => {
                conversation.unread_count = 0;
                conversation.admin_read_up_to = id;
            }
        }
        self.save(conversation.clone());
        Ok(Outcome::Appended(Box::new(Appended {
            message,
            message_json,
            conversation,
            duplicate: false,
            created,
        })))
    }

    fn delete(&mut self, conversation_id: Uuid) -> Result<Outcome, StoreError> {
        let key = conversation_id.as_u128();
        let Some(conversation) = self.conversation(key)? else {
            return Ok(Outcome::Conversation(None));
        };
        // Every message of the conversation in the index first, so the range below finds them all.
        self.index_all()?;
        let ids: Vec<u64> = self
            .conversation_messages
            .range((key, 0)..=(key, u64::MAX))?
            .map(|entry| entry.map(|(ids, _)| ids.value().1))
            .collect::<Result<_, _>>()?;
        let mut client_ids = Vec::new();
        for id in ids {
            if let Some(removed) = self.messages.remove(id)? {
                if let Some(client_id) = decode::<Message>(removed.value())?.client_id {
                    client_ids.push(client_id.as_u128());
                }
            }
            self.conversation_messages.remove((key, id))?;
        }
        for client_id in client_ids {
            self.client_ids.remove((client_id, key))?;
        }
        let hash = conversation.token_hash;
        self.visitor_tokens.remove(hash.as_slice())?;
        self.tokens.insert(hash, None);
        self.conversations.remove(key)?;
        self.touched.insert(key, None);
        Ok(Outcome::Conversation(Some(Box::new(conversation))))
    }

    fn conversation(&mut self, key: u128) -> Result<Option<Conversation>, StoreError> {
        if let Some(touched) = self.touched.get(&key) {
            return Ok(touched.clone());
        }
        if let Some(known) = self.recent.conversations.get(&key) {
            self.touched.insert(key, Some(known.clone()));
            return Ok(Some(known.clone()));
        }
        let stored = self
            .conversations
            .get(key)?
            .map(|value| record::decode(value.value()))
            .transpose()?;
        self.touched.insert(key, stored.clone());
        Ok(stored)
    }

    fn conversation_of_token(
        &mut self,
        token_hash: &TokenHash,
    ) -> Result<Option<Conversation>, StoreError> {
        let known = self
            .tokens
            .get(token_hash)
            .copied()
            .or_else(|| self.recent.tokens.get(token_hash).map(|id| Some(*id)));
        let id = match known {
            Some(id) => id,
            None => {
                let id = self
                    .visitor_tokens
                    .get(token_hash.as_slice())?
                    .map(|value| value.value());
                if let Some(id) = id {
                    self.tokens.insert(*token_hash, Some(id));
                }
                id
            }
        };
        match id {
            Some(id) => self.conversation(id),
            None => Ok(None),
        }
    }

    fn new_conversation(&mut self, token_hash: &TokenHash) -> Result<Conversation, StoreError> {
        let now = self.now;
        let conversation = Conversation {
            // Time-ordered (UUIDv7): the conversations talking now are mostly recent ones, so their records and
            // index entries sit together at the end of their tables, and a commit that touches many conversations
            // dirties a few pages, not one per conversation. (The id is not a secret: the visitor token is.)
            id: Uuid::now_v7(),
            token_hash: *token_hash,
            visitor_name: None,
            email: None,
            unread_count: 0,
            last_message_id: None,
            created_at: now,
            updated_at: now,
            page: None,
            admin_read_up_to: 0,
            visitor_read_up_to: 0,
        };
        self.visitor_tokens
            .insert(token_hash.as_slice(), conversation.id.as_u128())?;
        self.tokens
            .insert(*token_hash, Some(conversation.id.as_u128()));
        self.save(conversation.clone());
        Ok(conversation)
    }

    /// Keeps the conversation's new state for `finish` to write.
    fn save(&mut self, conversation: Conversation) {
        let key = conversation.id.as_u128();
        self.touched.insert(key, Some(conversation));
        self.dirty.insert(key);
    }

    fn update(
        &mut self,
        id: Uuid,
        change: impl FnOnce(&mut Conversation),
    ) -> Result<Outcome, StoreError> {
        let Some(mut conversation) = self.conversation(id.as_u128())? else {
            return Ok(Outcome::Conversation(None));
        };
        change(&mut conversation);
        self.save(conversation.clone());
        Ok(Outcome::Conversation(Some(Box::new(conversation))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hash_token;

    #[test]
    fn a_conversation_keeps_its_token_hash_as_hex_on_disk() {
        // As every earlier natter wrote it: lowercase hex in the JSON record.
        let hash = hash_token("visitor");
        let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        let stored = format!(
            r#"{{"id":"0190b7a4-0000-7000-8000-000000000001","token_hash":"{hex}","visitor_name":null,"email":null,"unread_count":0,"last_message_id":null,"created_at":1,"updated_at":1,"page":null,"admin_read_up_to":0,"visitor_read_up_to":0}}"#
        );
        let conversation: Conversation = serde_json::from_str(&stored).unwrap();
        assert_eq!(conversation.token_hash, hash);
        assert_eq!(serde_json::to_string(&conversation).unwrap(), stored);
        for bad in ["abc", &"g".repeat(64), &hex[..62]] {
            let record = stored.replace(&hex, bad);
            assert!(
                serde_json::from_str::<Conversation>(&record).is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn speak_is_idempotent_and_ids_increase_across_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = hash_token("alice");
        let bob = hash_token("bob");
        let client = Uuid::new_v4();
        let first = store.speak(alice, "hello".into(), client).await.unwrap();
        assert!(first.created && !first.duplicate);
        let again = store.speak(alice, "hello".into(), client).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.message, first.message);
        // Bob reusing Alice's client id gets his own message, not hers.
        let other = store.speak(bob, "hi".into(), client).await.unwrap();
        assert!(!other.duplicate);
        assert!(other.message.id > first.message.id);
        assert_ne!(other.message.conversation_id, first.message.conversation_id);
        let page = store
            .conversation_messages(first.message.conversation_id, None, None, 10)
            .unwrap();
        assert_eq!(page.messages.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn concurrent_writes_all_land_with_distinct_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writes = (0..200).map(|index| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .speak(hash_token(&format!("v{index}")), "x".into(), Uuid::new_v4())
                    .await
            })
        });
        let mut ids = std::collections::BTreeSet::new();
        for write in writes {
            ids.insert(write.await.unwrap().unwrap().message.id);
        }
        // How many commits they shared depends on timing; the benchmark reports fsyncs per message.
        assert_eq!(ids.len(), 200);
        assert_eq!(store.message_count().unwrap(), 200);
        store.close().await;
    }

    /// Pages of one conversation, read every way, as ids.
    fn every_page(store: &Store, conversation: Uuid, ids: &[u64]) -> Vec<Vec<u64>> {
        let page = |after, before, limit| {
            let page = store
                .conversation_messages(conversation, after, before, limit)
                .unwrap();
            let mut seen: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
            seen.push(u64::from(page.more));
            seen
        };
        let mut pages = vec![page(None, None, 100), page(None, Some(u64::MAX), 3)];
        for &id in ids {
            pages.push(page(Some(id), None, 3));
            pages.push(page(None, Some(id), 3));
        }
        pages
    }

    #[tokio::test]
    async fn messages_are_found_the_same_before_and_after_they_are_indexed() {
        // In tests the writer indexes every 4 messages, so these 23 messages are read with some of each
        // conversation in the index and some in memory; then after a restart, which indexes the rest from the file.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (alice, bob) = (hash_token("alice"), hash_token("bob"));
        let (mut alices, mut bobs) = (Vec::new(), Vec::new());
        for index in 0..23 {
            let (token, ids) = if index % 3 == 0 {
                (bob, &mut bobs)
            } else {
                (alice, &mut alices)
            };
            let appended = store
                .speak(token, format!("m{index}"), Uuid::new_v4())
                .await
                .unwrap();
            ids.push(appended.message.id);
            let conversation = appended.message.conversation_id;
            let all = store
                .conversation_messages(conversation, None, None, 100)
                .unwrap();
            assert_eq!(all.messages.iter().map(|m| m.id).collect::<Vec<_>>(), *ids);
        }
        let alice_id = store.conversation_of_token(&alice).unwrap().unwrap().id;
        let bob_id = store.conversation_of_token(&bob).unwrap().unwrap().id;
        let before_restart = (
            every_page(&store, alice_id, &alices),
            every_page(&store, bob_id, &bobs),
        );
        assert_eq!(before_restart.0[0][..alices.len()], alices[..]);
        store.close().await;

        let store = Store::open(dir.path()).unwrap();
        let after_restart = (
            every_page(&store, alice_id, &alices),
            every_page(&store, bob_id, &bobs),
        );
        assert_eq!(after_restart, before_restart);
        // Deleting one conversation takes all of its messages, indexed or not, and leaves the other whole.
        store
            .speak(bob, "late".into(), Uuid::new_v4())
            .await
            .unwrap();
        store.delete_conversation(bob_id).await.unwrap();
        assert_eq!(store.message_count().unwrap(), alices.len() as u64);
        assert_eq!(every_page(&store, alice_id, &alices), before_restart.0);
        store.close().await;
    }

    #[tokio::test]
    async fn paging_backwards_and_forwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let token = hash_token("t");
        let mut ids = Vec::new();
        for index in 0..5 {
            ids.push(
                store
                    .speak(token, format!("m{index}"), Uuid::new_v4())
                    .await
                    .unwrap()
                    .message
                    .id,
            );
        }
        let conversation = store.conversation_of_token(&token).unwrap().unwrap();
        let latest = store
            .conversation_messages(conversation.id, None, Some(u64::MAX), 2)
            .unwrap();
        assert_eq!(
            latest.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids[3..]
        );
        assert!(latest.more);
        let older = store
            .conversation_messages(conversation.id, None, Some(ids[3]), 10)
            .unwrap();
        assert_eq!(older.messages.len(), 3);
        assert!(!older.more);
        let after = store
            .conversation_messages(conversation.id, Some(ids[1]), None, 10)
            .unwrap();
        assert_eq!(
            after.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            ids[2..]
        );
        let deleted = store.delete_conversation(conversation.id).await.unwrap();
        assert!(deleted.is_some());
        assert!(store.conversation_of_token(&token).unwrap().is_none());
        assert_eq!(store.message_count().unwrap(), 0);
        store.close().await;
    }
}
