//! The store: everything natter keeps, in one redb file, behind typed methods.
//!
//! Reads open a read transaction on the caller's thread (redb readers never wait for the writer). Every write goes
//! through one writer thread that does group commit: it takes a write, then every other write already queued (up to
//! `MAX_BATCH`), applies them all in one transaction and commits it with `Durability::Immediate` (one fsync for the
//! whole batch). Only after that commit returns does any caller hear back, so an acknowledged message is on disk. A
//! batch that fails to commit fails every write in it, and nothing of it is visible: the clients were not told, so they
//! keep their messages and send them again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::ApiError;
use crate::timestamp;

/// Bumped when the layout of the tables changes; a store written by a newer natter is refused, not misread.
const SCHEMA_VERSION: u64 = 1;

/// Small bookkeeping values: the schema version, the message counter, the generated admin password hash, keys.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Conversation id → `Conversation` (JSON).
const CONVERSATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("conversations");
/// Message id → `Message` (JSON, exactly as the wire shows it, so reads send it without re-encoding).
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (conversation id, message id): the messages of one conversation in order.
const CONVERSATION_MESSAGES: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("conversation_messages");
/// SHA-256 of a visitor token → its conversation id. The token itself is never stored.
const VISITOR_TOKENS: TableDefinition<&[u8], u128> = TableDefinition::new("visitor_tokens");
/// (conversation id, client id) → message id: a resent `speak` or `reply` finds the message it already stored.
/// Keyed by conversation too, so one visitor cannot fish for another's message by guessing its client id.
const CLIENT_IDS: TableDefinition<(u128, u128), u64> = TableDefinition::new("client_ids");
/// SHA-256 of a session token → `Session` (JSON).
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// Push endpoint URL → the subscription (JSON, owned by the push module).
const PUSH_SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("push_subscriptions");

const NEXT_MESSAGE_ID: &str = "next_message_id";

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Uuid,
    /// Hex SHA-256 of the visitor token, so a reply can find the visitor's sockets.
    pub token_hash: String,
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

impl Conversation {
    pub fn token_hash(&self) -> Option<TokenHash> {
        let mut hash = [0u8; 32];
        let bytes = self.token_hash.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        for (index, pair) in bytes.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).ok()?;
            hash[index] = u8::from_str_radix(text, 16).ok()?;
        }
        Some(hash)
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

enum Write {
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
    PutSession {
        hash: TokenHash,
        session: Session,
    },
    DeleteSession {
        hash: TokenHash,
    },
    DeleteSessionsOf {
        username: String,
    },
    PutMeta {
        key: String,
        value: Vec<u8>,
    },
    PutPushSubscription {
        endpoint: String,
        json: Vec<u8>,
    },
    DeletePushSubscription {
        endpoint: String,
    },
}

enum Outcome {
    Appended(Box<Appended>),
    Conversation(Option<Box<Conversation>>),
    Done,
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

enum Command {
    Write(Job),
    /// Commit what came before, answer, and end the writer thread.
    Stop(oneshot::Sender<()>),
}

/// Counters the metrics page shows.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub failed_commits: AtomicU64,
}

#[derive(Clone)]
pub struct Store {
    file: Arc<StoreFile>,
    writer: mpsc::Sender<Command>,
    stats: Arc<StoreStats>,
}

impl Store {
    /// Opens (or creates) `natter.redb` in `data_dir` and starts the writer thread.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            anyhow::anyhow!(
                "cannot create the data dir {}: {error}; set server.data_dir or --data-dir",
                data_dir.display()
            )
        })?;
        let path = data_dir.join("natter.redb");
        let database = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{} is already open in another natter process; stop it first (one process per data dir)",
                path.display()
            ),
            other => anyhow::anyhow!("cannot open the store {}: {other}", path.display()),
        })?;
        Store::init_tables(&database)?;
        let file = Arc::new(StoreFile {
            database: RwLock::new(Some(Arc::new(database))),
            path,
        });
        let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(StoreStats::default());
        {
            let file = file.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("natter-store-writer".into())
                .spawn(move || run_writer(&file, queue, &stats))?;
        }
        Ok(Store {
            file,
            writer,
            stats,
        })
    }

    fn init_tables(database: &Database) -> anyhow::Result<()> {
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
        transaction.commit()?;
        Ok(())
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
            .map(|value| decode(value.value()))
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
            .map(|value| decode(value.value()))
            .transpose()
    }

    /// Every conversation, most recently active first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        let mut conversations = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            conversations.push(decode::<Conversation>(value.value())?);
        }
        conversations.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
        Ok(conversations)
    }

    pub fn conversations_by_id(&self, ids: &[Uuid]) -> Result<Vec<Conversation>, StoreError> {
        let table = self.read()?.open_table(CONVERSATIONS)?;
        let mut conversations = Vec::new();
        for id in ids {
            if let Some(value) = table.get(id.as_u128())? {
                conversations.push(decode(value.value())?);
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
        let transaction = self.read()?;
        let index = transaction.open_table(CONVERSATION_MESSAGES)?;
        let messages = transaction.open_table(MESSAGES)?;
        let key = conversation_id.as_u128();
        let low = after.map_or(0, |after| after.saturating_add(1));
        let high = before.unwrap_or(u64::MAX);
        if low >= high {
            return Ok(MessagePage::default());
        }
        let range = index.range((key, low)..(key, high))?;
        let mut ids = Vec::with_capacity(limit.min(256));
        let mut more = false;
        let mut collect = |entry: Result<
            (
                redb::AccessGuard<'_, (u128, u64)>,
                redb::AccessGuard<'_, ()>,
            ),
            redb::StorageError,
        >|
         -> Result<bool, StoreError> {
            if ids.len() == limit {
                more = true;
                return Ok(false);
            }
            ids.push(entry?.0.value().1);
            Ok(true)
        };
        if before.is_some() {
            for entry in range.rev() {
                if !collect(entry)? {
                    break;
                }
            }
            ids.reverse();
        } else {
            for entry in range {
                if !collect(entry)? {
                    break;
                }
            }
        }
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

    /// Copies every table, as one read transaction sees it, into a new redb file at `destination`: a consistent
    /// backup taken while the writer goes on (redb readers never block it). `natter backup` uses it through the
    /// server's control socket. A table this method does not know is an error, not a silent gap in the backup.
    pub fn snapshot_to(&self, destination: &Path) -> Result<SnapshotSummary, StoreError> {
        use redb::TableHandle;
        let source = self.read()?;
        let target = Database::create(destination)?;
        let transaction = target.begin_write()?;
        let copied = [
            copy_table(&source, &transaction, META)?,
            copy_table(&source, &transaction, CONVERSATIONS)?,
            copy_table(&source, &transaction, MESSAGES)?,
            copy_table(&source, &transaction, CONVERSATION_MESSAGES)?,
            copy_table(&source, &transaction, VISITOR_TOKENS)?,
            copy_table(&source, &transaction, CLIENT_IDS)?,
            copy_table(&source, &transaction, SESSIONS)?,
            copy_table(&source, &transaction, PUSH_SUBSCRIPTIONS)?,
        ];
        for table in source.list_tables()? {
            if !copied.iter().any(|(name, _)| name == table.name()) {
                return Err(StoreError::Storage(format!(
                    "the snapshot does not know the table {:?}",
                    table.name()
                )));
            }
        }
        transaction.commit()?;
        let messages = copied
            .iter()
            .find(|(name, _)| name == MESSAGES.name())
            .map_or(0, |(_, rows)| *rows);
        Ok(SnapshotSummary {
            messages,
            tables: copied.len(),
        })
    }
}

fn run_writer(file: &StoreFile, mut queue: mpsc::Receiver<Command>, stats: &StoreStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stop = None;
    while let Some(command) = queue.blocking_recv() {
        let mut next = Some(command);
        while let Some(command) = next.take() {
            match command {
                Command::Write(job) => batch.push(job),
                Command::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            match file.database().or_else(|_| file.reopen()) {
                Ok(database) => {
                    if !commit_batch(&database, &mut batch, stats) {
                        drop(database);
                        // redb refuses all writes after an I/O error until the file is opened again; do that now,
                        // so writing resumes by itself once the cause (a full disk, say) is gone.
                        file.close_for_reopen();
                        let _ = file.reopen();
                    }
                }
                Err(error) => fail_batch(&mut batch, &error, stats),
            }
        }
        if let Some(done) = stop.take() {
            // Close the file before saying so, so a new `Store::open` of the same file right after `close` finds it
            // free (redb allows one open instance per file).
            file.close_for_reopen();
            let _ = done.send(());
            return;
        }
    }
}

/// The redb file, which the writer may close and open again after an I/O error. Readers take a clone of the `Arc`
/// for the length of one read transaction.
struct StoreFile {
    /// `None` while the file is being (or could not be) opened again after a failure.
    database: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
}

impl StoreFile {
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.database
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Storage("the store is reopening after a write error".into()))
    }

    /// Takes the database out, waits (briefly) for readers to finish with it, and closes it.
    fn close_for_reopen(&self) {
        let taken = self
            .database
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(mut database) = taken {
            for _ in 0..500 {
                match Arc::try_unwrap(database) {
                    Ok(database) => {
                        drop(database);
                        return;
                    }
                    Err(shared) => {
                        database = shared;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
            tracing::error!("readers held the store for 5 s after a write error; it stays closed until they finish");
        }
    }

    fn reopen(&self) -> Result<Arc<Database>, StoreError> {
        let mut slot = self
            .database
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(database) = slot.as_ref() {
            return Ok(database.clone());
        }
        let database = Arc::new(Database::create(&self.path)?);
        tracing::info!(path = %self.path.display(), "the store is open again after a write error");
        *slot = Some(database.clone());
        Ok(database)
    }
}

fn fail_batch(batch: &mut Vec<Job>, error: &StoreError, stats: &StoreStats) {
    stats.failed_commits.fetch_add(1, Ordering::Relaxed);
    let detail = match error {
        StoreError::Storage(detail) => detail.clone(),
        other => format!("{other:?}"),
    };
    tracing::error!(error = %detail, writes = batch.len(), "store commit failed; the writes were not acknowledged");
    for job in batch.drain(..) {
        let _ = job.reply.send(Err(StoreError::Storage(detail.clone())));
    }
}

/// Applies every job in one transaction and commits once; then, and only then, answers them. Answers whether the
/// commit succeeded.
fn commit_batch(database: &Database, batch: &mut Vec<Job>, stats: &StoreStats) -> bool {
    let result = (|| -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let mut transaction = database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let write = std::mem::replace(&mut job.write, Write::DeleteSession { hash: [0; 32] });
            outcomes.push(apply(&transaction, write));
        }
        // A storage error inside one job may have left the transaction half-written: give up on all of it.
        if outcomes
            .iter()
            .any(|outcome| matches!(outcome, Err(StoreError::Storage(_))))
        {
            let detail = outcomes
                .iter()
                .find_map(|outcome| match outcome {
                    Err(StoreError::Storage(detail)) => Some(detail.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(StoreError::Storage(detail));
        }
        transaction.commit()?;
        Ok(outcomes)
    })();
    match result {
        Ok(outcomes) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
            true
        }
        Err(error) => {
            fail_batch(batch, &error, stats);
            false
        }
    }
}

fn apply(transaction: &WriteTransaction, write: Write) -> Result<Outcome, StoreError> {
    match write {
        Write::Speak {
            token_hash,
            content,
            client_id,
        } => {
            let (conversation, created) = match conversation_for_token(transaction, &token_hash)? {
                Some(conversation) => (conversation, false),
                None => (new_conversation(transaction, &token_hash)?, true),
            };
            append(
                transaction,
                conversation,
                Sender::Visitor,
                content,
                client_id,
                created,
            )
        }
        Write::Reply {
            conversation_id,
            content,
            client_id,
        } => {
            let conversation = load_conversation(transaction, conversation_id)?
                .ok_or_else(|| StoreError::Rejected(ApiError::not_found("no such conversation")))?;
            append(
                transaction,
                conversation,
                Sender::Admin,
                content,
                client_id,
                false,
            )
        }
        Write::Identify {
            token_hash,
            name,
            email,
        } => {
            let mut conversation = match conversation_for_token(transaction, &token_hash)? {
                Some(conversation) => conversation,
                None => new_conversation(transaction, &token_hash)?,
            };
            conversation.visitor_name = Some(name).filter(|name| !name.is_empty());
            conversation.email = email;
            conversation.updated_at = timestamp::now_millis();
            save_conversation(transaction, &conversation)?;
            Ok(Outcome::Conversation(Some(Box::new(conversation))))
        }
        Write::AdminRead {
            conversation_id,
            up_to,
        } => update_conversation(transaction, conversation_id, |conversation| {
            conversation.unread_count = 0;
            conversation.admin_read_up_to = conversation.admin_read_up_to.max(up_to);
        }),
        Write::VisitorRead {
            conversation_id,
            up_to,
        } => update_conversation(transaction, conversation_id, |conversation| {
            conversation.visitor_read_up_to = conversation.visitor_read_up_to.max(up_to);
        }),
        Write::SetPage {
            conversation_id,
            page,
        } => update_conversation(transaction, conversation_id, |conversation| {
            conversation.page = Some(page);
        }),
        Write::Delete { conversation_id } => {
            let Some(conversation) = load_conversation(transaction, conversation_id)? else {
                return Ok(Outcome::Conversation(None));
            };
            let key = conversation_id.as_u128();
            let mut index = transaction.open_table(CONVERSATION_MESSAGES)?;
            let mut messages = transaction.open_table(MESSAGES)?;
            let ids: Vec<u64> = index
                .range((key, 0)..=(key, u64::MAX))?
                .map(|entry| entry.map(|(ids, _)| ids.value().1))
                .collect::<Result<_, _>>()?;
            for id in ids {
                messages.remove(id)?;
                index.remove((key, id))?;
            }
            let mut client_ids = transaction.open_table(CLIENT_IDS)?;
            client_ids.retain_in((key, 0)..=(key, u128::MAX), |_, _| false)?;
            if let Some(hash) = conversation.token_hash() {
                transaction
                    .open_table(VISITOR_TOKENS)?
                    .remove(hash.as_slice())?;
            }
            transaction.open_table(CONVERSATIONS)?.remove(key)?;
            Ok(Outcome::Conversation(Some(Box::new(conversation))))
        }
        Write::PutSession { hash, session } => {
            transaction
                .open_table(SESSIONS)?
                .insert(hash.as_slice(), encode(&session).as_slice())?;
            Ok(Outcome::Done)
        }
        Write::DeleteSession { hash } => {
            transaction.open_table(SESSIONS)?.remove(hash.as_slice())?;
            Ok(Outcome::Done)
        }
        Write::DeleteSessionsOf { username } => {
            let now = timestamp::now_millis();
            transaction.open_table(SESSIONS)?.retain(|_, value| {
                serde_json::from_slice::<Session>(value)
                    .is_ok_and(|session| session.username != username && session.expires_at > now)
            })?;
            Ok(Outcome::Done)
        }
        Write::PutMeta { key, value } => {
            transaction
                .open_table(META)?
                .insert(key.as_str(), value.as_slice())?;
            Ok(Outcome::Done)
        }
        Write::PutPushSubscription { endpoint, json } => {
            transaction
                .open_table(PUSH_SUBSCRIPTIONS)?
                .insert(endpoint.as_str(), json.as_slice())?;
            Ok(Outcome::Done)
        }
        Write::DeletePushSubscription { endpoint } => {
            transaction
                .open_table(PUSH_SUBSCRIPTIONS)?
                .remove(endpoint.as_str())?;
            Ok(Outcome::Done)
        }
    }
}

fn append(
    transaction: &WriteTransaction,
    mut conversation: Conversation,
    sender: Sender,
    content: String,
    client_id: Uuid,
    created: bool,
) -> Result<Outcome, StoreError> {
    let key = conversation.id.as_u128();
    let mut client_ids = transaction.open_table(CLIENT_IDS)?;
    let mut messages = transaction.open_table(MESSAGES)?;
    if let Some(existing) = client_ids
        .get((key, client_id.as_u128()))?
        .map(|value| value.value())
    {
        if let Some(message) = messages
            .get(existing)?
            .map(|value| decode::<Message>(value.value()))
            .transpose()?
        {
            return Ok(Outcome::Appended(Box::new(Appended {
                message,
                conversation,
                duplicate: true,
                created: false,
            })));
        }
    }
    let id = next_message_id(transaction)?;
    let now = timestamp::now_millis();
    let message = Message {
        id,
        conversation_id: conversation.id,
        sender,
        content,
        created_at: timestamp::rfc3339(now),
        client_id: Some(client_id),
    };
    messages.insert(id, encode(&message).as_slice())?;
    transaction
        .open_table(CONVERSATION_MESSAGES)?
        .insert((key, id), ())?;
    client_ids.insert((key, client_id.as_u128()), id)?;
    conversation.last_message_id = Some(id);
    conversation.updated_at = now;
    match sender {
        Sender::Visitor => conversation.unread_count = conversation.unread_count.saturating_add(1),
        // Replying means the admin has read everything before the reply.
        Sender::Admin => {
            conversation.unread_count = 0;
            conversation.admin_read_up_to = id;
        }
    }
    save_conversation(transaction, &conversation)?;
    Ok(Outcome::Appended(Box::new(Appended {
        message,
        conversation,
        duplicate: false,
        created,
    })))
}

fn next_message_id(transaction: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = transaction.open_table(META)?;
    let id = meta
        .get(NEXT_MESSAGE_ID)?
        .map_or(1, |value| read_u64(value.value()));
    meta.insert(NEXT_MESSAGE_ID, (id + 1).to_le_bytes().as_slice())?;
    Ok(id)
}

fn conversation_for_token(
    transaction: &WriteTransaction,
    token_hash: &TokenHash,
) -> Result<Option<Conversation>, StoreError> {
    let id = transaction
        .open_table(VISITOR_TOKENS)?
        .get(token_hash.as_slice())?
        .map(|value| value.value());
    match id {
        Some(id) => load_conversation(transaction, Uuid::from_u128(id)),
        None => Ok(None),
    }
}

fn new_conversation(
    transaction: &WriteTransaction,
    token_hash: &TokenHash,
) -> Result<Conversation, StoreError> {
    let now = timestamp::now_millis();
    let conversation = Conversation {
        id: Uuid::new_v4(),
        token_hash: token_hash
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
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
    transaction
        .open_table(VISITOR_TOKENS)?
        .insert(token_hash.as_slice(), conversation.id.as_u128())?;
    save_conversation(transaction, &conversation)?;
    Ok(conversation)
}

fn load_conversation(
    transaction: &WriteTransaction,
    id: Uuid,
) -> Result<Option<Conversation>, StoreError> {
    let table = transaction.open_table(CONVERSATIONS)?;
    let value = table.get(id.as_u128())?;
    value.map(|value| decode(value.value())).transpose()
}

fn save_conversation(
    transaction: &WriteTransaction,
    conversation: &Conversation,
) -> Result<(), StoreError> {
    transaction
        .open_table(CONVERSATIONS)?
        .insert(conversation.id.as_u128(), encode(conversation).as_slice())?;
    Ok(())
}

fn update_conversation(
    transaction: &WriteTransaction,
    id: Uuid,
    change: impl FnOnce(&mut Conversation),
) -> Result<Outcome, StoreError> {
    let Some(mut conversation) = load_conversation(transaction, id)? else {
        return Ok(Outcome::Conversation(None));
    };
    change(&mut conversation);
    save_conversation(transaction, &conversation)?;
    Ok(Outcome::Conversation(Some(Box::new(conversation))))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialize")
}

/// What `Store::snapshot_to` copied.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSummary {
    pub messages: u64,
    pub tables: usize,
}

/// Copies one table row by row; answers its name and how many rows it held.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &ReadTransaction,
    target: &WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<(String, u64), StoreError> {
    use redb::TableHandle;
    let from = source.open_table(definition)?;
    let mut to = target.open_table(definition)?;
    let mut rows = 0;
    for entry in from.iter()? {
        let (key, value) = entry?;
        to.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok((definition.name().to_string(), rows))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Storage(format!("a stored record does not decode: {error}")))
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
