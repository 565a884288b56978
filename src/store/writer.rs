//! The writer thread: group commit, and the store file it may reopen after an I/O error.
//!
//! The thread takes a write, then every other write already queued (up to `MAX_BATCH`), applies them all in one
//! transaction and commits it without an fsync, then appends the batch's changes to the log (`wal`) with one
//! fdatasync. Only then does any caller hear back, so an acknowledged message is on disk. Now and then a commit is
//! durable itself (a checkpoint) and the log starts over. A batch that fails to commit (or to reach the disk) fails
//! every write in it, and nothing of it stays: the clients were not told, so they keep their messages and resend them.
//!
//! Within a batch each table is opened once, the message counter is read and written once, and each conversation
//! the batch touches is decoded and encoded once (`Tables`): with a hundred senders, that is most of the writer's
//! work per message.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::record;
use super::wal::{Journal, Logged, TableId, WAL_SEQ};
use super::{
    decode, encode, prepare, read_u64, Appended, Conversation, Message, Page, Sender, Session,
    StoreError, StoreStats, TokenHash, CLIENT_IDS, CONVERSATIONS, CONVERSATION_MESSAGES,
    INDEXED_UP_TO, INDEX_BATCH, MAX_BATCH, MESSAGES, META, NEXT_MESSAGE_ID, PUSH_SUBSCRIPTIONS,
    SESSIONS, VISITOR_TOKENS,
};
use crate::error::ApiError;
use crate::timestamp;

pub(super) enum Write {
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

pub(super) enum Outcome {
    Appended(Box<Appended>),
    Conversation(Option<Box<Conversation>>),
    Done,
}

pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

pub(super) enum Command {
    Write(Job),
    /// Commit what came before, answer, and end the writer thread.
    Stop(oneshot::Sender<()>),
}

/// A commit's answers: each caller's reply channel and what it gets.
type Answers = Vec<(
    oneshot::Sender<Result<Outcome, StoreError>>,
    Result<Outcome, StoreError>,
)>;

/// `runtime`: the runtime the callers wait in, if any (see `answer`).
pub(super) fn run_writer(
    file: &StoreFile,
    mut queue: mpsc::Receiver<Command>,
    stats: &StoreStats,
    mut journal: Journal,
    runtime: Option<&Handle>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut recent = Recent::default();
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
        // Stopping, the last commit is durable, so the file needs no log to be whole.
        let stopping = stop.is_some() && !journal.all_durable();
        if !batch.is_empty() || stopping {
            let durable = stopping || journal.checkpoint_due();
            match file
                .database()
                .or_else(|_| reopen(file, &mut journal, &mut recent))
            {
                Ok(database) => {
                    if !commit_batch(
                        &database,
                        &mut batch,
                        durable,
                        stats,
                        &mut recent,
                        &file.unindexed,
                        &mut journal,
                        runtime,
                    ) {
                        drop(database);
                        // redb refuses all writes after an I/O error until the file is opened again; do that now,
                        // so writing resumes by itself once the cause (a full disk, say) is gone.
                        file.close_for_reopen();
                        let _ = reopen(file, &mut journal, &mut recent);
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
pub(super) struct StoreFile {
    /// `None` while the file is being (or could not be) opened again after a failure.
    pub(super) database: RwLock<Option<Arc<Database>>>,
    pub(super) path: PathBuf,
    /// The log (`wal`), replayed when the file is opened again.
    pub(super) wal_path: PathBuf,
    /// (conversation, message id) of the committed messages not yet in `CONVERSATION_MESSAGES` (all have ids above
    /// the store's `indexed_up_to`). Only the writer changes it, after a commit and before anyone hears of it.
    pub(super) unindexed: RwLock<BTreeSet<(u128, u64)>>,
}

impl StoreFile {
    pub(super) fn database(&self) -> Result<Arc<Database>, StoreError> {
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

    /// Opens the file again and brings it up to date from the log (redb comes back at its last durable commit);
    /// answers it and the last batch's `seq`.
    fn reopen(&self) -> Result<(Arc<Database>, u64), StoreError> {
        let mut slot = self
            .database
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let database = Database::create(&self.path)?;
        let (seq, _) = prepare(&database, &self.wal_path)
            .map_err(|error| StoreError::Storage(format!("{error:#}")))?;
        let database = Arc::new(database);
        // `prepare` indexed every message.
        self.unindexed
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
        tracing::info!(path = %self.path.display(), "the store is open again after a write error");
        *slot = Some(database.clone());
        Ok((database, seq))
    }
}

/// Opens the store again after a write error; the writer then starts from what the file and the log hold.
fn reopen(
    file: &StoreFile,
    journal: &mut Journal,
    recent: &mut Recent,
) -> Result<Arc<Database>, StoreError> {
    let (database, seq) = file.reopen()?;
    journal.recovered(seq);
    *recent = Recent::default();
    Ok(database)
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

/// What the writer remembers between batches, so a message does not read and decode its conversation from the file
/// every time: the committed state of recently used conversations, and visitor token → conversation. Only the writer
/// changes those tables, and it learns a batch's changes only after the batch commits, so this never holds what the
/// file does not.
#[derive(Default)]
pub(super) struct Recent {
    conversations: HashMap<u128, Conversation>,
    tokens: HashMap<TokenHash, u128>,
}

/// Conversations (and tokens) `Recent` holds before it starts over: a few MB at most.
const RECENT_LIMIT: usize = 4096;

impl Recent {
    fn learn(&mut self, learned: Learned) {
        remember(&mut self.conversations, learned.conversations);
        remember(&mut self.tokens, learned.tokens);
    }
}

/// Takes a batch's committed values into `known` (`None`: gone), starting over when it would grow past the limit.
fn remember<K: std::hash::Hash + Eq, V>(known: &mut HashMap<K, V>, learned: HashMap<K, Option<V>>) {
    if known.len() + learned.len() > RECENT_LIMIT {
        known.clear();
    }
    for (key, value) in learned {
        match value {
            Some(value) => known.insert(key, value),
            None => known.remove(&key),
        };
    }
}

/// What one batch read and wrote, for `Recent` once it has committed (`None`: deleted).
struct Learned {
    conversations: HashMap<u128, Option<Conversation>>,
    tokens: HashMap<TokenHash, Option<u128>>,
    /// The batch wrote the index entries of every message committed before it (`Tables::index_all`).
    indexed: bool,
    /// The batch's messages that have no index entry yet.
    unindexed: Vec<(u128, u64)>,
    /// The batch's changes, for the log.
    redo: Vec<u8>,
}

/// Applies every job in one transaction and commits once: `durable`, with an fsync of redb's file (a checkpoint);
/// otherwise without, and the batch's changes go to the log (`wal`) with one fdatasync. Then, and only then, answers
/// them. Answers whether the commit succeeded.
#[allow(clippy::too_many_arguments)]
fn commit_batch(
    database: &Database,
    batch: &mut Vec<Job>,
    durable: bool,
    stats: &StoreStats,
    recent: &mut Recent,
    unindexed: &RwLock<BTreeSet<(u128, u64)>>,
    journal: &mut Journal,
    runtime: Option<&Handle>,
) -> bool {
    let result = (|| -> Result<(Vec<Result<Outcome, StoreError>>, Learned), StoreError> {
        let mut transaction = database.begin_write()?;
        transaction.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let (outcomes, learned) = {
            let mut tables = Tables::open(&transaction, recent, unindexed)?;
            tables.meta.insert(
                &mut tables.redo,
                WAL_SEQ,
                journal.next_seq().to_le_bytes().as_slice(),
            )?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in batch.iter_mut() {
                let write =
                    std::mem::replace(&mut job.write, Write::DeleteSession { hash: [0; 32] });
                let outcome = tables.apply(write);
                // A storage error may have left the transaction half-written: give up on all of it.
                if let Err(StoreError::Storage(detail)) = outcome {
                    return Err(StoreError::Storage(detail));
                }
                outcomes.push(outcome);
            }
            let learned = tables.finish()?;
            (outcomes, learned)
        };
        transaction.commit()?;
        if let Err(error) = journal.committed(durable, &learned.redo) {
            // The batch is visible but not on disk. Make it durable in redb's file instead; if that fails too, the
            // batch fails, and opening the file again forgets it (redb returns to its last durable commit).
            tracing::error!(%error, "appending to the store's log failed; committing to the store file instead");
            let mut checkpoint = database.begin_write()?;
            checkpoint.set_durability(Durability::Immediate)?;
            checkpoint.commit()?;
            journal.checkpointed();
        }
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok((outcomes, learned))
    })();
    match result {
        Ok((outcomes, learned)) => {
            {
                let mut tail = unindexed
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner());
                if learned.indexed {
                    tail.clear();
                }
                tail.extend(learned.unindexed.iter().copied());
            }
            recent.learn(learned);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            answer(
                batch.drain(..).map(|job| job.reply).zip(outcomes).collect(),
                runtime,
            );
            true
        }
        Err(error) => {
            fail_batch(batch, &error, stats);
            false
        }
    }
}

/// Tells a committed batch's callers. With a runtime, from one task in it: woken from this thread, each caller's
/// task would go through the runtime's shared queue (a lock) and might wake a sleeping worker thread, once per
/// caller; woken from a task, they go onto that worker's own queue. Measured with 100 senders: fewer futex calls
/// per message.
fn answer(answers: Answers, runtime: Option<&Handle>) {
    let send_all = |answers: Answers| {
        for (reply, outcome) in answers {
            let _ = reply.send(outcome);
        }
    };
    match runtime {
        Some(runtime) if answers.len() > 1 => {
            runtime.spawn(async move { send_all(answers) });
        }
        _ => send_all(answers),
    }
}

/// The tables of one write transaction, opened once for a batch, with the batch's working state: the next message
/// id and the conversations it changed, written back once by `finish`.
struct Tables<'txn, 'r> {
    recent: &'r Recent,
    /// Committed messages without an index entry (`StoreFile::unindexed`).
    unindexed: &'r RwLock<BTreeSet<(u128, u64)>>,
    /// This batch's messages without an index entry.
    appended: Vec<(u128, u64)>,
    /// Whether this batch has written the index entries of everything committed before it.
    indexed: bool,
    meta: Logged<'txn, &'static str, &'static [u8]>,
    conversations: Logged<'txn, u128, &'static [u8]>,
    messages: Logged<'txn, u64, &'static [u8]>,
    conversation_messages: Logged<'txn, (u128, u64), ()>,
    visitor_tokens: Logged<'txn, &'static [u8], u128>,
    client_ids: Logged<'txn, (u128, u128), u64>,
    sessions: Logged<'txn, &'static [u8], &'static [u8]>,
    push_subscriptions: Logged<'txn, &'static str, &'static [u8]>,
    /// Every change the batch made, for the log (`wal`).
    redo: Vec<u8>,
    /// The id the next message gets; `None` until a message needs one.
    next_message_id: Option<u64>,
    /// Conversations read or changed in this batch (the latest version wins); `None` marks one deleted.
    touched: HashMap<u128, Option<Conversation>>,
    /// Which of `touched` must be written back.
    dirty: HashSet<u128>,
    /// Tokens looked up, added or removed in this batch (the latest wins); `None` marks one removed.
    tokens: HashMap<TokenHash, Option<u128>>,
    /// The batch's moment (milliseconds since the epoch), and as a message shows it: what it stores happens at once,
    /// and the clock is read and formatted once, not per message.
    now: i64,
    now_text: String,
}

impl<'txn, 'r> Tables<'txn, 'r> {
    fn open(
        transaction: &'txn WriteTransaction,
        recent: &'r Recent,
        unindexed: &'r RwLock<BTreeSet<(u128, u64)>>,
    ) -> Result<Tables<'txn, 'r>, StoreError> {
        let now = timestamp::now_millis();
        Ok(Tables {
            recent,
            unindexed,
            appended: Vec::new(),
            indexed: false,
            meta: Logged::open(transaction, META, TableId::Meta)?,
            conversations: Logged::open(transaction, CONVERSATIONS, TableId::Conversations)?,
            messages: Logged::open(transaction, MESSAGES, TableId::Messages)?,
            conversation_messages: Logged::open(
                transaction,
                CONVERSATION_MESSAGES,
                TableId::ConversationMessages,
            )?,
            visitor_tokens: Logged::open(transaction, VISITOR_TOKENS, TableId::VisitorTokens)?,
            client_ids: Logged::open(transaction, CLIENT_IDS, TableId::ClientIds)?,
            sessions: Logged::open(transaction, SESSIONS, TableId::Sessions)?,
            push_subscriptions: Logged::open(
                transaction,
                PUSH_SUBSCRIPTIONS,
                TableId::PushSubscriptions,
            )?,
            redo: Vec::new(),
            next_message_id: None,
            touched: HashMap::new(),
            dirty: HashSet::new(),
            tokens: HashMap::new(),
            now,
            now_text: timestamp::rfc3339(now),
        })
    }

    /// Writes the index entries of every message that has none yet, committed or in this batch, and moves the
    /// store's `indexed_up_to` past them.
    fn index_all(&mut self) -> Result<(), StoreError> {
        let earlier: Vec<(u128, u64)> = self
            .unindexed
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .copied()
            .collect();
        let mut up_to = None;
        for &(key, id) in earlier.iter().chain(&self.appended) {
            self.conversation_messages
                .insert(&mut self.redo, (key, id), ())?;
            up_to = up_to.max(Some(id));
        }
        if let Some(up_to) = up_to {
            self.meta.insert(
                &mut self.redo,
                INDEXED_UP_TO,
                up_to.to_le_bytes().as_slice(),
            )?;
        }
        self.appended.clear();
        self.indexed = true;
        Ok(())
    }

    /// Writes back the counter and every changed conversation, and the index once enough of it waits; answers what
    /// the batch has learned.
    fn finish(&mut self) -> Result<Learned, StoreError> {
        let waiting = self
            .unindexed
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .len();
        if !self.indexed && waiting + self.appended.len() >= INDEX_BATCH {
            self.index_all()?;
        }
        if let Some(next) = self.next_message_id {
            self.meta.insert(
                &mut self.redo,
                NEXT_MESSAGE_ID,
                next.to_le_bytes().as_slice(),
            )?;
        }
        let mut bytes = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            if let Some(Some(conversation)) = self.touched.get(&key) {
                bytes.clear();
                record::encode(conversation, &mut bytes);
                self.conversations
                    .insert(&mut self.redo, key, bytes.as_slice())?;
            }
        }
        Ok(Learned {
            conversations: std::mem::take(&mut self.touched),
            tokens: std::mem::take(&mut self.tokens),
            indexed: self.indexed,
            unindexed: std::mem::take(&mut self.appended),
            redo: std::mem::take(&mut self.redo),
        })
    }

    fn apply(&mut self, write: Write) -> Result<Outcome, StoreError> {
        match write {
            Write::Speak {
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
            Write::Reply {
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
            Write::Identify {
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
            Write::AdminRead {
                conversation_id,
                up_to,
            } => self.update(conversation_id, |conversation| {
                conversation.unread_count = 0;
                conversation.admin_read_up_to = conversation.admin_read_up_to.max(up_to);
            }),
            Write::VisitorRead {
                conversation_id,
                up_to,
            } => self.update(conversation_id, |conversation| {
                conversation.visitor_read_up_to = conversation.visitor_read_up_to.max(up_to);
            }),
            Write::SetPage {
                conversation_id,
                page,
            } => self.update(conversation_id, |conversation| {
                conversation.page = Some(page);
            }),
            Write::Delete { conversation_id } => self.delete(conversation_id),
            Write::PutSession { hash, session } => {
                self.sessions.insert(
                    &mut self.redo,
                    hash.as_slice(),
                    encode(&session).as_slice(),
                )?;
                Ok(Outcome::Done)
            }
            Write::DeleteSession { hash } => {
                self.sessions.remove(&mut self.redo, hash.as_slice())?;
                Ok(Outcome::Done)
            }
            Write::DeleteSessionsOf { username } => {
                let now = self.now;
                let mut ended = Vec::new();
                for entry in self.sessions.iter()? {
                    let (hash, value) = entry?;
                    let keep =
                        serde_json::from_slice::<Session>(value.value()).is_ok_and(|session| {
                            session.username != username && session.expires_at > now
                        });
                    if !keep {
                        ended.push(hash.value().to_vec());
                    }
                }
                for hash in ended {
                    self.sessions.remove(&mut self.redo, hash.as_slice())?;
                }
                Ok(Outcome::Done)
            }
            Write::PutMeta { key, value } => {
                self.meta
                    .insert(&mut self.redo, key.as_str(), value.as_slice())?;
                Ok(Outcome::Done)
            }
            Write::PutPushSubscription { endpoint, json } => {
                self.push_subscriptions.insert(
                    &mut self.redo,
                    endpoint.as_str(),
                    json.as_slice(),
                )?;
                Ok(Outcome::Done)
            }
            Write::DeletePushSubscription { endpoint } => {
                self.push_subscriptions
                    .remove(&mut self.redo, endpoint.as_str())?;
                Ok(Outcome::Done)
            }
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
            .insert(&mut self.redo, (client_id.as_u128(), key), id)?
            .map(|value| value.value());
        if let Some(existing) = taken {
            self.client_ids
                .insert(&mut self.redo, (client_id.as_u128(), key), existing)?;
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
        self.messages
            .insert(&mut self.redo, id, message_json.as_bytes())?;
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
            if let Some(removed) = self.messages.remove(&mut self.redo, id)? {
                if let Some(client_id) = decode::<Message>(removed.value())?.client_id {
                    client_ids.push(client_id.as_u128());
                }
            }
            self.conversation_messages
                .remove(&mut self.redo, (key, id))?;
        }
        for client_id in client_ids {
            self.client_ids.remove(&mut self.redo, (client_id, key))?;
        }
        let hash = conversation.token_hash;
        self.visitor_tokens
            .remove(&mut self.redo, hash.as_slice())?;
        self.tokens.insert(hash, None);
        self.conversations.remove(&mut self.redo, key)?;
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
        self.visitor_tokens.insert(
            &mut self.redo,
            token_hash.as_slice(),
            conversation.id.as_u128(),
        )?;
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
