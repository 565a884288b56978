//! The store: everything natter keeps, in one redb file, behind typed methods.
//!
//! `writer` holds the one writer thread (group commit); `wal` the write-ahead log that makes its batches durable;
//! `snapshot` the consistent copy `natter backup` takes.
//!
//! Reads open a read transaction on the caller's thread (redb readers never wait for the writer). Every write goes
//! through one writer thread that does group commit: it takes a write, then every other write already queued (up to
//! `MAX_BATCH`), applies them all in one transaction and commits it without an fsync, then appends the batch's
//! changes to the log (`natter.wal`) with one fdatasync; only after that does any caller hear back, so an acknowledged
//! message is on disk (now and then a commit is durable itself, and the log starts over). A batch that fails to commit
//! fails every write in it, and nothing of it stays: the clients were not told, so they keep their messages and send
//! them again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod record;
mod snapshot;
mod wal;
mod writer;

pub use snapshot::SnapshotSummary;
use wal::{Journal, STORE_ID};
use writer::{run_writer, Command, Job, Outcome, StoreFile, Write};

/// Bumped when the layout of the tables changes; a store written by a newer natter is refused, not misread, and one
/// written by an older natter is brought up to date when it is opened (`migrate`).
const SCHEMA_VERSION: u64 = 4;

/// Small bookkeeping values: the schema version, the message counter, the generated admin password hash, keys.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Conversation id → `Conversation` (a binary record, `record`; JSON in stores before schema version 4).
const CONVERSATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("conversations");
/// Message id → `Message` (JSON, exactly as the wire shows it, so reads send it without re-encoding).
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (conversation id, message id): the messages of one conversation in order.
///
/// Written a thousand entries at a time, not with each message: with many conversations busy at once, each new entry
/// would otherwise dirty a page of its own in every commit (a commit's cost is its dirty pages). Every message up to
/// `indexed_up_to` (in `META`) has its entry; the ones above it are kept in memory (`StoreFile::unindexed`), and
/// indexed again from `MESSAGES` when the store is opened. (Schema version 2 indexed every message at once.)
const CONVERSATION_MESSAGES: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("conversation_messages");
/// SHA-256 of a visitor token → its conversation id. The token itself is never stored.
const VISITOR_TOKENS: TableDefinition<&[u8], u128> = TableDefinition::new("visitor_tokens");
/// (client id, conversation id) → message id: a resent `speak` or `reply` finds the message it already stored.
/// Keyed by conversation too, so one visitor cannot fish for another's message by guessing its client id. The client
/// id comes first because natter's clients make time-ordered ones (UUIDv7): a commit's new entries then sit together
/// at the end of the table, a page or two, where keyed by conversation first they took a page per conversation.
/// (Schema version 1 had the conversation first.)
const CLIENT_IDS: TableDefinition<(u128, u128), u64> = TableDefinition::new("client_ids");
/// SHA-256 of a session token → `Session` (JSON).
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// Push endpoint URL → the subscription (JSON, owned by the push module).
const PUSH_SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("push_subscriptions");

const NEXT_MESSAGE_ID: &str = "next_message_id";
const INDEXED_UP_TO: &str = "indexed_up_to";

/// Unindexed messages that make the writer index them all in its next commit. Small enough that the work is short
/// and the memory small, large enough that each page of the index gets many entries per write. The commit that
/// indexes rewrites a page or so of each conversation's index: with 100 senders that is a tenth of the writer's
/// time, but 4,096 made that commit a stall of several milliseconds with 1,000 conversations (visitor → admin p99
/// at 1,000 msg/s went from about 2.7 to about 6 ms), so it stays at 1,024.
const INDEX_BATCH: usize = if cfg!(test) { 4 } else { 1024 };

/// How many queued writes one commit takes at most. Large enough that 1,000 concurrent senders share a handful of
/// fsyncs, small enough that one transaction stays short.
const MAX_BATCH: usize = 1024;

/// Queued writes waiting for the writer. When full, callers wait (backpressure) instead of growing memory.
const QUEUE_CAPACITY: usize = 8192;

pub type TokenHash = [u8; 32];

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
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

#[derive(Debug)]
pub enum StoreError {
    /// A storage failure (I/O, a full disk, corruption). The caller is not acknowledged.
    Storage(String),
    /// The write was refused for what it asked (an unknown conversation, for example).
    Rejected(ApiError),
    /// The writer has stopped: natter is shutting down.
    Closed,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Rejected(error) => error,
            StoreError::Storage(_) => ApiError::storage(),
            StoreError::Closed => {
                ApiError::unavailable("natter is restarting; try again in a moment")
            }
        }
    }
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(error: E) -> StoreError {
        StoreError::Storage(error.into().to_string())
    }
}

/// Counters the metrics page shows.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    /// fdatasyncs of the log, and commits that were durable themselves.
    pub fsyncs: AtomicU64,
    pub writes: AtomicU64,
    pub failed_commits: AtomicU64,
}

/// Creates the file at `path` readable and writable by natter's user only (mode 0600), unless it exists; redb sets an
/// empty file up as a new store. A store, a snapshot and a backup hold every conversation, so other users of the
/// machine may not read them, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

#[derive(Clone)]
pub struct Store {
    file: Arc<StoreFile>,
    writer: mpsc::Sender<Command>,
    stats: Arc<StoreStats>,
}

impl Store {
    /// Opens (or creates) `natter.redb` in `data_dir`, brings it up to date from its log (`natter.wal`) and starts the
    /// writer thread.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        // Only natter's user may read the conversations: the data dir is made 0700 (the unit also sets UMask=0077).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(data_dir).map_err(|error| {
            anyhow::anyhow!(
                "cannot create the data dir {}: {error}; set server.data_dir or --data-dir",
                data_dir.display()
            )
        })?;
        let path = data_dir.join("natter.redb");
        create_private(&path).map_err(|error| {
            anyhow::anyhow!("cannot create the store {}: {error}", path.display())
        })?;
        let database = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{} is already open in another natter process; stop it first (one process per data dir)",
                path.display()
            ),
            other => anyhow::anyhow!("cannot open the store {}: {other}", path.display()),
        })?;
        let wal_path = data_dir.join("natter.wal");
        let (seq, store_id) = prepare(&database, &wal_path)?;
        let file = Arc::new(StoreFile {
            database: RwLock::new(Some(Arc::new(database))),
            path,
            wal_path,
            unindexed: RwLock::default(),
        });
        let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(StoreStats::default());
        let journal = Journal::create(&file.wal_path, store_id, seq)?;
        {
            let file = file.clone();
            let stats = stats.clone();
            let runtime = tokio::runtime::Handle::try_current().ok();
            std::thread::Builder::new()
                .name("natter-store-writer".into())
                .spawn(move || run_writer(&file, queue, &stats, journal, runtime.as_ref()))?;
        }
        Ok(Store {
            file,
            writer,
            stats,
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Stops the writer after it has committed every write queued before this call; later writes fail with `Closed`.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.writer.send(Command::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }

    async fn write(&self, write: Write) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Write(Job { write, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    // ---- writes ----

    /// Stores a visitor message, starting the conversation if this token has none. Idempotent on `client_id`.
    pub async fn speak(
        &self,
        token_hash: TokenHash,
        content: String,
        client_id: Uuid,
    ) -> Result<Appended, StoreError> {
        match self
            .write(Write::Speak {
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
            .write(Write::Reply {
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
        self.conversation_write(Write::Identify {
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
        self.conversation_write(Write::AdminRead {
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
        self.conversation_write(Write::VisitorRead {
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
        self.conversation_write(Write::SetPage {
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
        self.conversation_write(Write::Delete { conversation_id })
            .await
    }

    async fn conversation_write(&self, write: Write) -> Result<Option<Conversation>, StoreError> {
        match self.write(write).await? {
            Outcome::Conversation(conversation) => Ok(conversation.map(|boxed| *boxed)),
            _ => unreachable!("conversation writes answer Conversation"),
        }
    }

    pub async fn put_session(&self, hash: TokenHash, session: Session) -> Result<(), StoreError> {
        self.write(Write::PutSession { hash, session })
            .await
            .map(drop)
    }

    pub async fn delete_session(&self, hash: TokenHash) -> Result<(), StoreError> {
        self.write(Write::DeleteSession { hash }).await.map(drop)
    }

    /// Ends every session of a user (after a password change).
    pub async fn delete_sessions_of(&self, username: &str) -> Result<(), StoreError> {
        self.write(Write::DeleteSessionsOf {
            username: username.to_string(),
        })
        .await
        .map(drop)
    }

    pub async fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.write(Write::PutMeta {
            key: key.to_string(),
            value,
        })
        .await
        .map(drop)
    }

    pub async fn put_push_subscription(
        &self,
        endpoint: &str,
        json: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write(Write::PutPushSubscription {
            endpoint: endpoint.to_string(),
            json,
        })
        .await
        .map(drop)
    }

    pub async fn delete_push_subscription(&self, endpoint: &str) -> Result<(), StoreError> {
        self.write(Write::DeletePushSubscription {
            endpoint: endpoint.to_string(),
        })
        .await
        .map(drop)
    }

    // ---- reads ----

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.file.database()?.begin_read()?)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.read()?.open_table(META)?;
        Ok(table.get(key)?.map(|value| value.value().to_vec()))
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

    pub fn session(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let table = self.read()?.open_table(SESSIONS)?;
        table
            .get(hash.as_slice())?
            .map(|value| decode(value.value()))
            .transpose()
    }

    pub fn push_subscriptions(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let table = self.read()?.open_table(PUSH_SUBSCRIPTIONS)?;
        let mut subscriptions = Vec::new();
        for entry in table.iter()? {
            let (endpoint, json) = entry?;
            subscriptions.push((endpoint.value().to_string(), json.value().to_vec()));
        }
        Ok(subscriptions)
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

/// Makes an opened store file ready for the writer, in one durable commit: checks the schema (bringing an older one up
/// to date), creates what is missing (tables, the store id), replays the log and indexes what the index lacks. Answers
/// the last batch's `seq` and the store id.
fn prepare(database: &Database, wal_path: &Path) -> anyhow::Result<(u64, [u8; 16])> {
    let transaction = database.begin_write()?;
    {
        let mut meta = transaction.open_table(META)?;
        let version = meta
            .get("schema_version")?
            .map(|value| read_u64(value.value()));
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(SCHEMA_VERSION) => {}
            // Version 2 needs nothing: its index is complete, and `index_the_rest` finds nothing to do. Version 3's
            // conversation records are JSON, which `record` still reads.
            Some(old @ (1..=3)) => {
                if old == 1 {
                    migrate_client_ids(&transaction).map_err(|error| {
                        anyhow::anyhow!("bringing the store to schema version 2: {error:?}")
                    })?;
                }
                meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            Some(other) => anyhow::bail!(
                "the store has schema version {other}, this natter knows {SCHEMA_VERSION}: run the newer natter, or restore a backup"
            ),
        }
        transaction.open_table(CONVERSATIONS)?;
        transaction.open_table(MESSAGES)?;
        transaction.open_table(CONVERSATION_MESSAGES)?;
        transaction.open_table(VISITOR_TOKENS)?;
        transaction.open_table(CLIENT_IDS)?;
        transaction.open_table(SESSIONS)?;
        transaction.open_table(PUSH_SUBSCRIPTIONS)?;
    }
    let store_id = store_id(&transaction)?;
    let seq = wal::replay(&transaction, wal_path, store_id).map_err(|error| match error {
        StoreError::Storage(detail) => anyhow::anyhow!(detail),
        other => anyhow::anyhow!("replaying {}: {other:?}", wal_path.display()),
    })?;
    index_the_rest(&transaction)
        .map_err(|error| anyhow::anyhow!("indexing the latest messages: {error:?}"))?;
    transaction.commit()?;
    Ok((seq, store_id))
}

/// The store's id (`STORE_ID` in `META`), made on first use.
fn store_id(transaction: &redb::WriteTransaction) -> anyhow::Result<[u8; 16]> {
    let mut meta = transaction.open_table(META)?;
    let known = meta
        .get(STORE_ID)?
        .and_then(|value| <[u8; 16]>::try_from(value.value()).ok());
    if let Some(id) = known {
        return Ok(id);
    }
    let id = Uuid::new_v4().into_bytes();
    meta.insert(STORE_ID, id.as_slice())?;
    Ok(id)
}

/// Writes the index entries of the messages above `indexed_up_to` (the ones that were still in memory when natter
/// last stopped), reading their conversation from the messages themselves.
fn index_the_rest(transaction: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = transaction.open_table(META)?;
    let indexed_up_to = meta
        .get(INDEXED_UP_TO)?
        .map_or(0, |value| read_u64(value.value()));
    let messages = transaction.open_table(MESSAGES)?;
    let mut index = transaction.open_table(CONVERSATION_MESSAGES)?;
    let mut last = None;
    for entry in messages.range(indexed_up_to.saturating_add(1)..)? {
        let (id, value) = entry?;
        let message: Message = decode(value.value())?;
        index.insert((message.conversation_id.as_u128(), id.value()), ())?;
        last = Some(id.value());
    }
    if let Some(last) = last {
        meta.insert(INDEXED_UP_TO, last.to_le_bytes().as_slice())?;
    }
    Ok(())
}

/// Schema version 1 → 2: client-id keys go from (conversation, client) to (client, conversation).
fn migrate_client_ids(transaction: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut table = transaction.open_table(CLIENT_IDS)?;
    let entries: Vec<((u128, u128), u64)> = table
        .iter()?
        .map(|entry| entry.map(|(key, value)| (key.value(), value.value())))
        .collect::<Result<_, _>>()?;
    table.retain(|_, _| false)?;
    for ((conversation, client), id) in entries {
        table.insert((client, conversation), id)?;
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Storage(format!("a stored record does not decode: {error}")))
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

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_le_bytes)
}

/// Hashes a secret token (a visitor token or a session token) for storage.
pub fn hash_token(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
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

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn a_version_1_store_is_migrated_and_its_client_ids_still_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let alice = hash_token("alice");
        let client = Uuid::new_v4();
        let store = Store::open(dir.path()).unwrap();
        let first = store.speak(alice, "hello".into(), client).await.unwrap();
        let path = store.path().to_path_buf();
        store.close().await;
        // Turn the file back into what natter wrote with schema version 1: conversation first in the client-id keys.
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut table = transaction.open_table(CLIENT_IDS).unwrap();
                let conversation = first.message.conversation_id.as_u128();
                let id = table
                    .remove((client.as_u128(), conversation))
                    .unwrap()
                    .unwrap()
                    .value();
                table.insert((conversation, client.as_u128()), id).unwrap();
                let mut meta = transaction.open_table(META).unwrap();
                meta.insert("schema_version", 1u64.to_le_bytes().as_slice())
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.meta("schema_version").unwrap().unwrap(),
            SCHEMA_VERSION.to_le_bytes()
        );
        let again = store.speak(alice, "hello".into(), client).await.unwrap();
        assert!(
            again.duplicate,
            "the resend is recognised after the migration"
        );
        assert_eq!(again.message, first.message);
        store.close().await;
    }

    #[tokio::test]
    async fn a_version_3_store_keeps_its_json_conversations_and_rewrites_each_on_its_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let alice = hash_token("alice");
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .speak(alice, "hello".into(), Uuid::new_v4())
            .await
            .unwrap();
        store
            .identify(alice, "Alice".into(), Some("alice@example.com".into()))
            .await
            .unwrap();
        let id = first.message.conversation_id;
        let before = store.conversation(id).unwrap().unwrap();
        let path = store.path().to_path_buf();
        store.close().await;
        // What natter wrote with schema version 3: the conversation as JSON.
        let stored = |path: &Path| {
            let database = Database::create(path).unwrap();
            let transaction = database.begin_read().unwrap();
            let table = transaction.open_table(CONVERSATIONS).unwrap();
            let bytes = table.get(id.as_u128()).unwrap().unwrap().value().to_vec();
            bytes
        };
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            {
                let mut table = transaction.open_table(CONVERSATIONS).unwrap();
                table
                    .insert(id.as_u128(), encode(&before).as_slice())
                    .unwrap();
                let mut meta = transaction.open_table(META).unwrap();
                meta.insert("schema_version", 3u64.to_le_bytes().as_slice())
                    .unwrap();
            }
            transaction.commit().unwrap();
        }
        assert_eq!(stored(&path).first(), Some(&b'{'));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.meta("schema_version").unwrap().unwrap(),
            SCHEMA_VERSION.to_le_bytes()
        );
        assert_eq!(store.conversation(id).unwrap().unwrap(), before);
        assert_eq!(store.conversations().unwrap(), vec![before.clone()]);
        let second = store
            .speak(alice, "again".into(), Uuid::new_v4())
            .await
            .unwrap();
        assert_eq!(second.conversation.visitor_name.as_deref(), Some("Alice"));
        assert_eq!(second.conversation.unread_count, 2);
        store.close().await;
        let bytes = stored(&path);
        assert_ne!(bytes.first(), Some(&b'{'), "rewritten as a binary record");
        let after = record::decode(&bytes).unwrap();
        assert_eq!(after.last_message_id, Some(second.message.id));
        assert_eq!(after.email.as_deref(), Some("alice@example.com"));
    }

    /// The store's files as they are now, copied into `into`: what a killed process leaves behind (its writes are in
    /// the page cache; only what was never written is lost).
    fn copy_files(from: &Path, into: &Path, names: &[&str]) {
        for name in names {
            std::fs::copy(from.join(name), into.join(name)).unwrap();
        }
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_a_crash_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut sent = Vec::new();
        // One write per batch; unit tests checkpoint every 4 KiB of log, so these cross several checkpoints (and the
        // log starts over each time, over the records of the round before).
        for index in 0..40 {
            let token = hash_token(&format!("visitor {}", index % 3));
            let appended = store
                .speak(token, format!("message {index}"), Uuid::now_v7())
                .await
                .unwrap();
            sent.push(appended.message);
        }
        let named = store
            .identify(hash_token("visitor 0"), "Ada".into(), None)
            .await
            .unwrap();
        let mode = |name: &str| {
            let metadata = std::fs::metadata(dir.path().join(name)).unwrap();
            std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777
        };
        assert_eq!(
            mode("natter.redb"),
            0o600,
            "only natter's user reads the store"
        );
        assert_eq!(
            mode("natter.wal"),
            0o600,
            "the log holds the conversations too"
        );
        let crashed = tempfile::tempdir().unwrap();
        copy_files(dir.path(), crashed.path(), &["natter.redb", "natter.wal"]);
        let bare = tempfile::tempdir().unwrap();
        copy_files(dir.path(), bare.path(), &["natter.redb"]);
        store.close().await;

        // The store file alone is at its last checkpoint: the latest writes are only in the log.
        let alone = Store::open(bare.path()).unwrap();
        let without_log = alone.message_count().unwrap();
        alone.close().await;
        assert!(
            without_log < sent.len() as u64,
            "the last writes were not checkpointed ({without_log} of {} messages in the file alone)",
            sent.len()
        );

        let recovered = Store::open(crashed.path()).unwrap();
        for message in &sent {
            assert_eq!(
                recovered.message(message.id).unwrap().as_ref(),
                Some(message)
            );
        }
        let conversation = recovered.conversation(named.id).unwrap().unwrap();
        assert_eq!(conversation.visitor_name.as_deref(), Some("Ada"));
        assert_eq!(
            conversation.last_message_id,
            sent.iter()
                .filter(|message| message.conversation_id == named.id)
                .map(|message| message.id)
                .max()
        );
        let page = recovered
            .conversation_messages(named.id, None, None, 100)
            .unwrap();
        assert_eq!(
            page.messages.len(),
            14,
            "visitor 0 sent every third message"
        );
        let next = recovered
            .speak(hash_token("visitor 1"), "after".into(), Uuid::now_v7())
            .await
            .unwrap();
        assert_eq!(next.message.id, sent.len() as u64 + 1);
        recovered.close().await;

        // A log older than the file (all its records from batches the file already holds) changes nothing.
        let stale = tempfile::tempdir().unwrap();
        copy_files(crashed.path(), stale.path(), &["natter.redb"]);
        let log = std::fs::read(dir.path().join("natter.wal")).unwrap();
        let replayed_log = std::fs::read(crashed.path().join("natter.wal")).unwrap();
        assert_ne!(log, replayed_log, "opening the copy began a new log");
        std::fs::write(stale.path().join("natter.wal"), &log).unwrap();
        let store = Store::open(stale.path()).unwrap();
        assert_eq!(store.message_count().unwrap(), sent.len() as u64 + 1);
        let visitor_1 = store
            .conversation(next.message.conversation_id)
            .unwrap()
            .unwrap();
        assert_eq!(
            visitor_1.last_message_id,
            Some(next.message.id),
            "the old records did not put the conversation back"
        );
        let newest = store
            .speak(hash_token("visitor 2"), "newest".into(), Uuid::now_v7())
            .await
            .unwrap();
        assert_eq!(
            newest.message.id,
            next.message.id + 1,
            "nor the message counter"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_log_cut_inside_its_last_record_replays_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .speak(hash_token("a"), "kept".into(), Uuid::now_v7())
            .await
            .unwrap();
        let last = store
            .speak(hash_token("a"), "torn".into(), Uuid::now_v7())
            .await
            .unwrap();
        let crashed = tempfile::tempdir().unwrap();
        copy_files(dir.path(), crashed.path(), &["natter.redb", "natter.wal"]);
        store.close().await;
        let log = crashed.path().join("natter.wal");
        let length = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let store = Store::open(crashed.path()).unwrap();
        assert_eq!(
            store.message(first.message.id).unwrap(),
            Some(first.message)
        );
        assert_eq!(store.message(last.message.id).unwrap(), None);
        let again = store
            .speak(hash_token("a"), "resent".into(), Uuid::now_v7())
            .await
            .unwrap();
        assert_eq!(
            again.message.id, last.message.id,
            "the torn write never happened"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_backup_restored_after_a_crash_does_not_replay_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .speak(hash_token("a"), "in the backup".into(), Uuid::now_v7())
            .await
            .unwrap();
        let restored = tempfile::tempdir().unwrap();
        store
            .snapshot_to(&restored.path().join("natter.redb"))
            .unwrap();
        store
            .speak(hash_token("a"), "after the backup".into(), Uuid::now_v7())
            .await
            .unwrap();
        // The crash: the old log stays in the data dir, next to the backup put in place.
        copy_files(dir.path(), restored.path(), &["natter.wal"]);
        store.close().await;
        let store = Store::open(restored.path()).unwrap();
        assert_eq!(
            store.message_count().unwrap(),
            1,
            "only what the backup holds"
        );
        let aside: Vec<String> = std::fs::read_dir(restored.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("natter.wal.orphaned-"))
            .collect();
        assert_eq!(aside.len(), 1, "the old log is kept aside: {aside:?}");
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
