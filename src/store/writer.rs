//! The writer thread: group commit, and the store file it may open again after a write error.
//!
//! The thread takes a write, then every other write already queued (up to `MAX_BATCH`), applies them all in one
//! transaction and commits it durably (`Durability::Immediate`: redb writes the batch's pages and its header and syncs
//! the file once). Only then does any caller hear back, and only then can a reader see the batch (redb publishes a
//! durable commit to new read transactions after its sync), so an acknowledged message, and anything any reader was
//! shown, is on disk. While one batch syncs, the next gathers in the queue. A batch that fails to commit fails every
//! write in it, and nothing of it stays: the clients were not told, so they keep their messages and resend them.
//!
//! After a failed write (a full disk, say) redb refuses every write until the file is opened again, which the writer
//! does at once, so writing resumes by itself once the cause is gone. After a failed sync it stops for good instead
//! (see `disk`): every later write fails, `Store::failed` resolves, and natter exits for systemd to start it again.
//!
//! Within a batch each table is opened once, the message counter is read and written once, and each conversation
//! the batch touches is decoded and encoded once (`Tables`): with a hundred senders, that is most of the writer's
//! work per message.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, DatabaseError, StorageError, Table, WriteTransaction};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use super::conversations::{Appended, Conversation, ConversationWrite};
use super::disk::{self, Disk};
use super::email::EmailWrite;
use super::push_subscriptions::PushSubscriptionWrite;
use super::schema::{
    prepare, CLIENT_IDS, CONVERSATIONS, CONVERSATION_MESSAGES, INDEXED_UP_TO, MESSAGES, META,
    NEXT_MESSAGE_ID, PUSH_SUBSCRIPTIONS, SESSIONS, VISITOR_TOKENS,
};
use super::sessions::SessionWrite;
use super::{legacy_log, record, StoreError, StoreStats, TokenHash, INDEX_BATCH, MAX_BATCH};
use crate::timestamp;

/// One write, as a caller asked for it; each noun of the store applies its own (`Tables::apply`).
pub(super) enum Write {
    Conversation(ConversationWrite),
    Session(SessionWrite),
    PushSubscription(PushSubscriptionWrite),
    Email(EmailWrite),
    Meta { key: String, value: Vec<u8> },
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
    /// Writes that go into one batch together, whatever else is queued: the power-cut simulation (`power_cuts`) uses
    /// it to commit the same batches on every run of a seed.
    #[cfg(test)]
    Group(Vec<Job>),
    /// Commit what came before, answer, and end the writer thread.
    Stop(oneshot::Sender<()>),
}

/// The redb file, which the writer may close and open again after a write error. Readers take a clone of the `Arc`
/// for the length of one read transaction.
pub(super) struct StoreFile {
    /// `None` while the file is being (or could not be) opened again after a failure.
    pub(super) database: RwLock<Option<Arc<Database>>>,
    pub(super) path: PathBuf,
    pub(super) disk: Disk,
    /// Set by the store file's backend when a sync fails (`disk::Watched`).
    pub(super) sync_failed: Arc<AtomicBool>,
    /// Becomes true when the writer has stopped for good after a failed sync.
    pub(super) failed: watch::Sender<bool>,
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
    fn close(&self) {
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

    /// Opens the file again after a write error (redb comes back at its last commit). Readers meanwhile get an error
    /// at once instead of waiting for redb's repair.
    fn reopen(&self) -> Result<Arc<Database>, StoreError> {
        let database = Arc::new(open_database(&self.disk, &self.sync_failed)?);
        let log = self
            .path
            .with_file_name(legacy_log::FILE_NAME)
            .to_path_buf();
        prepare(&database, &log).map_err(|error| StoreError::Storage(format!("{error:#}")))?;
        // `prepare` indexed every message.
        self.unindexed
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
        tracing::info!(path = %self.path.display(), "the store is open again after a write error");
        *self
            .database
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(database.clone());
        Ok(database)
    }
}

/// Opens redb on `disk`, with `sync_failed` watching its syncs.
pub(super) fn open_database(
    disk: &Disk,
    sync_failed: &Arc<AtomicBool>,
) -> Result<Database, DatabaseError> {
    let backend = disk
        .open(sync_failed)
        .map_err(|error| DatabaseError::Storage(StorageError::Io(error)))?;
    Database::builder().create_with_backend(backend)
}

/// The writer thread's state between batches.
pub(super) struct Writer<'a> {
    pub(super) file: &'a StoreFile,
    pub(super) stats: &'a StoreStats,
    /// The runtime the callers wait in, if any (see `answer`).
    pub(super) runtime: Option<&'a Handle>,
    pub(super) recent: Recent,
}

impl Writer<'_> {
    pub(super) fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(command) = queue.blocking_recv() {
            let mut next = Some(command);
            let mut stop = None;
            while let Some(command) = next.take() {
                match command {
                    Command::Write(job) => batch.push(job),
                    #[cfg(test)]
                    Command::Group(jobs) => {
                        batch.extend(jobs);
                        break;
                    }
                    Command::Stop(done) => {
                        stop = Some(done);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            let stopped_for_good = !batch.is_empty() && !self.write(&mut batch);
            if stopped_for_good || stop.is_some() {
                // Every write queued or still to come fails (`Closed`). The file is closed before anyone hears of it,
                // so a new `Store::open` of the same file right after `close` finds it free (redb allows one open
                // instance per file).
                queue.close();
                self.file.close();
                if stopped_for_good {
                    let _ = self.file.failed.send(true);
                } else if let Some(done) = stop {
                    let _ = done.send(());
                }
                refuse_the_rest(queue);
                return;
            }
        }
    }

    /// Commits one batch; answers false when the writer must stop for good (a sync failed).
    fn write(&mut self, batch: &mut Vec<Job>) -> bool {
        let database = match self.file.database().or_else(|_| self.reopen()) {
            Ok(database) => database,
            Err(error) => {
                fail_batch(batch, &error, self.stats);
                return true;
            }
        };
        let error = match self.commit(&database, batch) {
            Ok(()) => return true,
            Err(error) => error,
        };
        fail_batch(batch, &error, self.stats);
        drop(database);
        if self.file.sync_failed.load(Ordering::SeqCst) {
            tracing::error!(
                "a sync of the store failed: the writer stops for good (natter exits, and its next start writes the whole store back)"
            );
            if let Some(data_dir) = self.file.path.parent() {
                disk::mark_sync_failed(data_dir);
            }
            return false;
        }
        // redb refuses all writes after an I/O error until the file is opened again; do that now, so writing resumes
        // by itself once the cause (a full disk, say) is gone.
        self.file.close();
        let _ = self.reopen();
        true
    }

    fn reopen(&mut self) -> Result<Arc<Database>, StoreError> {
        self.recent = Recent::default();
        self.file.reopen()
    }

    /// Applies every job in one transaction and commits it durably; then, and only then, answers them.
    fn commit(&mut self, database: &Database, batch: &mut Vec<Job>) -> Result<(), StoreError> {
        let transaction = database.begin_write()?;
        let (outcomes, learned) = {
            let mut tables = Tables::open(&transaction, &self.recent, &self.file.unindexed)?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in batch.iter_mut() {
                let write = std::mem::replace(
                    &mut job.write,
                    Write::Meta {
                        key: String::new(),
                        value: Vec::new(),
                    },
                );
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
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut tail = self
                .file
                .unindexed
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            if learned.indexed {
                tail.clear();
            }
            tail.extend(learned.unindexed.iter().copied());
        }
        self.recent.learn(learned);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        answer(
            batch.drain(..).map(|job| job.reply).zip(outcomes).collect(),
            self.runtime,
        );
        Ok(())
    }
}

/// Refuses every command still in the closed `queue`, and every one a caller is about to put in it, then lets the
/// queue go. Dropping the receiver alone is not enough: a caller that got its place in the queue just before the close
/// puts its command in after the receiver's last look, and that command, with the caller's reply channel, then sits
/// in the channel unanswered for as long as the `Store` lives. (The power-cut simulation found it: a `close()` right
/// after a failed sync that never returned, once in about 500,000 cuts.) `blocking_recv` on a closed queue waits for
/// those places to be used and then says there is nothing more; each command it hands over is dropped, which fails its
/// caller's write with `Closed`, or ends its `close()`.
fn refuse_the_rest(mut queue: mpsc::Receiver<Command>) {
    while queue.blocking_recv().is_some() {}
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

/// A commit's answers: each caller's reply channel and what it gets.
type Answers = Vec<(
    oneshot::Sender<Result<Outcome, StoreError>>,
    Result<Outcome, StoreError>,
)>;

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

/// What the writer remembers between batches, so a message does not read and decode its conversation from the file
/// every time: the committed state of recently used conversations, and visitor token → conversation. Only the writer
/// changes those tables, and it learns a batch's changes only after the batch commits, so this never holds what the
/// file does not.
#[derive(Default)]
pub(super) struct Recent {
    pub(super) conversations: HashMap<u128, Conversation>,
    pub(super) tokens: HashMap<TokenHash, u128>,
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
}

/// The tables of one write transaction, opened once for a batch, with the batch's working state: the next message
/// id and the conversations it changed, written back once by `finish`. Each noun of the store adds the methods that
/// apply its writes (`conversations`, `sessions`, `push_subscriptions`).
pub(super) struct Tables<'txn, 'r> {
    pub(super) recent: &'r Recent,
    /// Committed messages without an index entry (`StoreFile::unindexed`).
    unindexed: &'r RwLock<BTreeSet<(u128, u64)>>,
    /// This batch's messages without an index entry.
    pub(super) appended: Vec<(u128, u64)>,
    /// Whether this batch has written the index entries of everything committed before it.
    indexed: bool,
    pub(super) meta: Table<'txn, &'static str, &'static [u8]>,
    pub(super) conversations: Table<'txn, u128, &'static [u8]>,
    pub(super) messages: Table<'txn, u64, &'static [u8]>,
    pub(super) conversation_messages: Table<'txn, (u128, u64), ()>,
    pub(super) visitor_tokens: Table<'txn, &'static [u8], u128>,
    pub(super) client_ids: Table<'txn, (u128, u128), u64>,
    pub(super) sessions: Table<'txn, &'static [u8], &'static [u8]>,
    pub(super) push_subscriptions: Table<'txn, &'static str, &'static [u8]>,
    /// The id the next message gets; `None` until a message needs one.
    pub(super) next_message_id: Option<u64>,
    /// Conversations read or changed in this batch (the latest version wins); `None` marks one deleted.
    pub(super) touched: HashMap<u128, Option<Conversation>>,
    /// Which of `touched` must be written back.
    pub(super) dirty: HashSet<u128>,
    /// Tokens looked up, added or removed in this batch (the latest wins); `None` marks one removed.
    pub(super) tokens: HashMap<TokenHash, Option<u128>>,
    /// The batch's moment (milliseconds since the epoch), and as a message shows it: what it stores happens at once,
    /// and the clock is read and formatted once, not per message.
    pub(super) now: i64,
    pub(super) now_text: String,
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
            meta: transaction.open_table(META)?,
            conversations: transaction.open_table(CONVERSATIONS)?,
            messages: transaction.open_table(MESSAGES)?,
            conversation_messages: transaction.open_table(CONVERSATION_MESSAGES)?,
            visitor_tokens: transaction.open_table(VISITOR_TOKENS)?,
            client_ids: transaction.open_table(CLIENT_IDS)?,
            sessions: transaction.open_table(SESSIONS)?,
            push_subscriptions: transaction.open_table(PUSH_SUBSCRIPTIONS)?,
            next_message_id: None,
            touched: HashMap::new(),
            dirty: HashSet::new(),
            tokens: HashMap::new(),
            now,
            now_text: timestamp::rfc3339(now),
        })
    }

    fn apply(&mut self, write: Write) -> Result<Outcome, StoreError> {
        match write {
            Write::Conversation(write) => self.apply_conversation_write(write),
            Write::Session(write) => self.apply_session_write(write),
            Write::PushSubscription(write) => self.apply_push_subscription_write(write),
            Write::Email(write) => self.apply_email_write(write),
            Write::Meta { key, value } => {
                self.meta.insert(key.as_str(), value.as_slice())?;
                Ok(Outcome::Done)
            }
        }
    }

    /// Writes the index entries of every message that has none yet, committed or in this batch, and moves the
    /// store's `indexed_up_to` past them.
    pub(super) fn index_all(&mut self) -> Result<(), StoreError> {
        let earlier: Vec<(u128, u64)> = self
            .unindexed
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .copied()
            .collect();
        let mut up_to = None;
        for &(key, id) in earlier.iter().chain(&self.appended) {
            self.conversation_messages.insert((key, id), ())?;
            up_to = up_to.max(Some(id));
        }
        if let Some(up_to) = up_to {
            self.meta
                .insert(INDEXED_UP_TO, up_to.to_le_bytes().as_slice())?;
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
            self.meta
                .insert(NEXT_MESSAGE_ID, next.to_le_bytes().as_slice())?;
        }
        let mut bytes = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            if let Some(Some(conversation)) = self.touched.get(&key) {
                bytes.clear();
                record::encode(conversation, &mut bytes);
                self.conversations.insert(key, bytes.as_slice())?;
            }
        }
        Ok(Learned {
            conversations: std::mem::take(&mut self.touched),
            tokens: std::mem::take(&mut self.tokens),
            indexed: self.indexed,
            unindexed: std::mem::take(&mut self.appended),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::simulated_disk::SimulatedDisk;
    use crate::store::Store;

    /// Puts a write in the place `place` was given in the queue and answers whether the writer refused it; fails the
    /// test if the write is never answered (the bug: it sat in the queue after the writer had gone).
    async fn refused(place: mpsc::Permit<'_, Command>) -> bool {
        // Give the writer time to go as far as it will: on the bug it has dropped its queue by now.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (reply, answer) = oneshot::channel();
        place.send(Command::Write(Job {
            write: Write::Meta {
                key: "late".into(),
                value: Vec::new(),
            },
            reply,
        }));
        let answer = tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .expect(
            "a write that had its place in the queue before the writer stopped was never answered",
        );
        answer.is_err()
    }

    #[tokio::test]
    async fn a_write_queued_as_the_store_closes_is_refused_not_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let place = store.writer.reserve().await.unwrap();
        store.close().await;
        assert!(refused(place).await);
    }

    #[tokio::test]
    async fn a_write_queued_as_the_writer_stops_after_a_failed_sync_is_refused_not_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimulatedDisk::with_image(Vec::new());
        let store = Store::open_on(Disk::Simulated(disk.clone()), dir.path()).unwrap();
        disk.arm(u64::MAX, Some(1));
        let place = store.writer.reserve().await.unwrap();
        assert!(store.put_meta("a", Vec::new()).await.is_err());
        store.failed().await;
        assert!(refused(place).await);
    }
}
