//! The store: everything natter keeps, in one redb file, behind typed methods.
//!
//! One module per thing it keeps: `conversations` (and their messages), `sessions`, `push_subscriptions`; `schema`
//! holds the tables and what opening a store does to them; `writer` the one writer thread (group commit); `disk` the
//! seam between redb and the disk; `snapshot` the consistent copy `natter backup` takes; `legacy_log` the write-ahead
//! log of earlier natters, taken in once when such a store is first opened.
//!
//! Reads open a read transaction on the caller's thread (redb readers never wait for the writer). Every write goes
//! through one writer thread that does group commit: it takes a write, then every other write already queued (up to
//! `MAX_BATCH`), applies them all in one transaction and commits it durably (one fsync); only after that does any
//! caller hear back, or any reader see it, so an acknowledged message is on disk. A batch that fails to commit fails
//! every write in it, and nothing of it stays: the clients were not told, so they keep their messages and send them
//! again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};

use redb::{ReadTransaction, ReadableDatabase};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ApiError;

mod conversations;
mod disk;
mod email;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod legacy_log;
#[cfg(test)]
mod power_cuts;
mod push_subscriptions;
mod record;
mod schema;
mod sessions;
#[cfg(test)]
mod simulated_disk;
mod snapshot;
mod writer;

pub use conversations::{
    conversation_ids, Appended, Conversation, Message, MessagePage, Page, Sender,
};
pub use disk::sync_directory;
use disk::Disk;
pub use email::{hex, EmailState, Queued, Recipient};
use schema::META;
pub use sessions::Session;
pub use snapshot::{count_copy, SnapshotSummary};
use writer::{Command, Job, Outcome, Recent, StoreFile, Write, Writer};

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
    /// Syncs of the store file: one per commit, each durable.
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

/// Makes a new, empty store at `path` under another name and renames it into place once it is whole and durable: a
/// power cut while redb writes a new file's first header would leave a file that is not a store, and natter would
/// refuse to start on it (the power-cut simulation found that; a store's later headers never tear that way).
fn create_whole(path: &Path) -> anyhow::Result<()> {
    let new = path.with_extension("redb.new");
    match std::fs::remove_file(&new) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
        _ => {}
    }
    create_private(&new)?;
    {
        let database = redb::Database::create(&new)?;
        let transaction = database.begin_write()?;
        transaction.open_table(META)?;
        transaction.commit()?;
    }
    std::fs::File::open(&new)?.sync_all()?;
    std::fs::rename(&new, path)?;
    if let Some(directory) = path.parent() {
        sync_directory(directory);
    }
    Ok(())
}

#[derive(Clone)]
pub struct Store {
    file: Arc<StoreFile>,
    writer: mpsc::Sender<Command>,
    stats: Arc<StoreStats>,
    failed: watch::Receiver<bool>,
}

impl Store {
    /// Opens (or creates) `natter.redb` in `data_dir`, takes in the log an earlier natter left beside it
    /// (`natter.wal`) and starts the writer thread.
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
        if std::fs::metadata(&path).map_or(true, |metadata| metadata.len() == 0) {
            create_whole(&path).map_err(|error| {
                anyhow::anyhow!("cannot create the store {}: {error:#}", path.display())
            })?;
        }
        Store::open_on(Disk::File(path), data_dir)
    }

    /// Opens the store on `disk`; `data_dir` holds what goes beside it (an earlier natter's log, `disk::SYNC_FAILED`).
    fn open_on(disk: Disk, data_dir: &Path) -> anyhow::Result<Store> {
        let path = data_dir.join("natter.redb");
        disk::settle(&disk, data_dir).map_err(|error| {
            anyhow::anyhow!(
                "a sync of the store failed before, and writing it back failed too: {error}; check the disk"
            )
        })?;
        let sync_failed = Arc::new(AtomicBool::new(false));
        let database = writer::open_database(&disk, &sync_failed).map_err(|error| {
            if sync_failed.load(std::sync::atomic::Ordering::SeqCst) {
                disk::mark_sync_failed(data_dir);
            }
            match error {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{} is already open in another natter process; stop it first (one process per data dir)",
                path.display()
            ),
            other => anyhow::anyhow!("cannot open the store {}: {other}", path.display()),
        }})?;
        if let Err(error) = schema::prepare(&database, &data_dir.join(legacy_log::FILE_NAME)) {
            if sync_failed.load(std::sync::atomic::Ordering::SeqCst) {
                // As when the writer's sync fails (`disk`): the next start must write the store back first.
                disk::mark_sync_failed(data_dir);
            }
            return Err(error);
        }
        let (failed, failed_receiver) = watch::channel(false);
        let file = Arc::new(StoreFile {
            database: RwLock::new(Some(Arc::new(database))),
            path,
            disk,
            sync_failed,
            failed,
            unindexed: RwLock::default(),
        });
        let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(StoreStats::default());
        {
            let file = file.clone();
            let stats = stats.clone();
            let runtime = tokio::runtime::Handle::try_current().ok();
            std::thread::Builder::new()
                .name("natter-store-writer".into())
                .spawn(move || {
                    Writer {
                        file: &file,
                        stats: &stats,
                        runtime: runtime.as_ref(),
                        recent: Recent::default(),
                    }
                    .run(queue)
                })?;
        }
        Ok(Store {
            file,
            writer,
            stats,
            failed: failed_receiver,
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

    /// Resolves when the writer has stopped for good after a failed sync (see `disk`): natter must exit then, so
    /// systemd starts it again. Never resolves otherwise.
    pub async fn failed(&self) {
        let mut failed = self.failed.clone();
        if failed.wait_for(|failed| *failed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn write(&self, write: impl Into<Write>) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Command::Write(Job {
                write: write.into(),
                reply,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.write(Write::Meta {
            key: key.to_string(),
            value,
        })
        .await
        .map(drop)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.file.database()?.begin_read()?)
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.read()?.open_table(META)?;
        Ok(table.get(key)?.map(|value| value.value().to_vec()))
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialize")
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
