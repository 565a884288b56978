//! The write-ahead log (`natter.wal`): what makes a batch durable without an fsync of redb's file.
//!
//! The writer commits a batch to redb with `Durability::None` (visible at once, no fsync), appends the batch's changes
//! to this log as one record with one fdatasync, and only then answers its callers. That costs far less than redb's
//! own durable commit, which writes and checksums every page the batch dirtied and syncs the file. Every
//! `CHECKPOINT_INTERVAL` (and when the log grows past `CHECKPOINT_BYTES`) the writer commits a batch with
//! `Durability::Immediate` instead; everything before it is then in redb's file, and the log starts over at its
//! beginning. Non-durable commits between checkpoints also reuse the pages of the ones before them, so a page that
//! many batches change is written to the file once per checkpoint, not once per batch.
//!
//! A record holds the batch's number (`seq`, which every transaction also writes to `META`) and its changes as raw
//! redb keys and values (table, key, value or removal), so replaying it does exactly what the batch did. After a crash
//! redb comes back at its last durable commit; `replay` applies the records after that commit's `seq`, in order, up to
//! the first torn or stale one. A record whose answers went out was fsynced before, so nothing acknowledged is lost.
//!
//! File: a 32-byte header (magic, then the store's id from `META`, so the log of another store — a backup restored
//! after a crash — is set aside, not replayed), then records: payload length (u32), CRC-32 of seq and payload (u32),
//! seq (u64), payload. All little-endian.

use std::borrow::Borrow;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::ops::Deref;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    read_u64, StoreError, CLIENT_IDS, CONVERSATIONS, CONVERSATION_MESSAGES, MESSAGES, META,
    PUSH_SUBSCRIPTIONS, SESSIONS, VISITOR_TOKENS,
};
use redb::{
    AccessGuard, Key, ReadableTable, StorageError, Table, TableDefinition, Value, WriteTransaction,
};

/// `META` key: the `seq` of the last batch committed (see the module documentation).
pub(super) const WAL_SEQ: &str = "wal_seq";
/// `META` key: 16 random bytes naming this store, written in the log's header.
pub(super) const STORE_ID: &str = "store_id";

/// How long the log may grow before the writer commits to redb durably and the log starts over. Replaying it after a
/// crash takes about as long as writing it did; each checkpoint costs the writer one fsync of redb's file.
/// (Unit tests checkpoint by size only, so where their checkpoints fall does not depend on the machine's speed.)
const CHECKPOINT_INTERVAL: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_millis(250)
};
/// The same, in bytes of records.
const CHECKPOINT_BYTES: u64 = if cfg!(test) { 4096 } else { 8 << 20 };

const MAGIC: &[u8; 16] = b"natter-wal\0\0\0\0\0\x01";
const HEADER_LEN: u64 = 32;
const RECORD_HEADER_LEN: usize = 16;
/// A record longer than this is taken for a torn length, not read.
const MAX_RECORD: usize = 1 << 30;

/// The redb tables a record can change, by their number in the log.
#[derive(Clone, Copy)]
pub(super) enum TableId {
    Meta = 0,
    Conversations = 1,
    Messages = 2,
    ConversationMessages = 3,
    VisitorTokens = 4,
    ClientIds = 5,
    Sessions = 6,
    PushSubscriptions = 7,
}

/// A table of the writer's transaction whose every change is also written into the batch's record. Reads go to the
/// table itself (`Deref` gives only `&Table`, so nothing can change it unrecorded).
pub(super) struct Logged<'txn, K: Key + 'static, V: Value + 'static> {
    table: Table<'txn, K, V>,
    id: TableId,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Logged<'txn, K, V> {
    pub(super) fn open(
        transaction: &'txn WriteTransaction,
        definition: TableDefinition<K, V>,
        id: TableId,
    ) -> Result<Self, StoreError> {
        Ok(Logged {
            table: transaction.open_table(definition)?,
            id,
        })
    }

    pub(super) fn insert<'k, 'v>(
        &mut self,
        redo: &mut Vec<u8>,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        push_change(
            redo,
            self.id,
            K::as_bytes(key.borrow()).as_ref(),
            Some(V::as_bytes(value.borrow()).as_ref()),
        );
        self.table.insert(key, value)
    }

    pub(super) fn remove<'k>(
        &mut self,
        redo: &mut Vec<u8>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        push_change(redo, self.id, K::as_bytes(key.borrow()).as_ref(), None);
        self.table.remove(key)
    }
}

impl<'txn, K: Key + 'static, V: Value + 'static> Deref for Logged<'txn, K, V> {
    type Target = Table<'txn, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

/// One change: table (u8), key length (u32), key, then 1 and the value's length (u32) and value, or 0 for a removal.
fn push_change(redo: &mut Vec<u8>, table: TableId, key: &[u8], value: Option<&[u8]>) {
    redo.push(table as u8);
    redo.extend_from_slice(&(key.len() as u32).to_le_bytes());
    redo.extend_from_slice(key);
    match value {
        Some(value) => {
            redo.push(1);
            redo.extend_from_slice(&(value.len() as u32).to_le_bytes());
            redo.extend_from_slice(value);
        }
        None => redo.push(0),
    }
}

/// The writer's log: the file, where the next record goes, and when the next commit must be durable.
pub(super) struct Journal {
    file: File,
    /// Where the next record goes: right after the header when nothing since the last checkpoint is in the log.
    offset: u64,
    /// The record being written, kept for its allocation.
    buffer: Vec<u8>,
    /// The last batch committed (its `seq`).
    seq: u64,
    last_checkpoint: Instant,
}

impl Journal {
    /// Creates the log file afresh: the store has just replayed the old one, up to `seq`, and committed durably.
    pub(super) fn create(path: &Path, store_id: [u8; 16], seq: u64) -> anyhow::Result<Journal> {
        let file = create(path, store_id).map_err(|error| {
            anyhow::anyhow!("cannot create the log {}: {error}", path.display())
        })?;
        Ok(Journal {
            file,
            offset: HEADER_LEN,
            buffer: Vec::new(),
            seq,
            last_checkpoint: Instant::now(),
        })
    }

    /// The `seq` the next batch gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Whether the next commit should be durable itself (a checkpoint).
    pub(super) fn checkpoint_due(&self) -> bool {
        self.offset >= CHECKPOINT_BYTES || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
    }

    /// Whether everything committed so far is in redb's file (every batch since the checkpoint has a record).
    pub(super) fn all_durable(&self) -> bool {
        self.offset == HEADER_LEN
    }

    /// Takes the batch just committed with `next_seq`: a durable one is a checkpoint, after which the log starts
    /// over; the changes (`redo`) of one that is not are appended and fdatasynced. When that fails the batch is
    /// not on disk, and the writer must make it durable another way (`checkpointed`) or fail it.
    pub(super) fn committed(&mut self, durable: bool, redo: &[u8]) -> std::io::Result<()> {
        self.seq += 1;
        if durable {
            self.checkpointed();
            return Ok(());
        }
        self.buffer.clear();
        push_record(&mut self.buffer, self.seq, redo);
        self.file.write_all_at(&self.buffer, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buffer.len() as u64;
        Ok(())
    }

    /// Everything committed is in redb's file: the log starts over at its beginning, over the old records (a crash
    /// before the next record is whole leaves them, and `replay` knows them by their `seq`).
    pub(super) fn checkpointed(&mut self) {
        self.offset = HEADER_LEN;
        self.last_checkpoint = Instant::now();
    }

    /// The store was opened again (after a write error) and has replayed the log up to `seq`, durably.
    pub(super) fn recovered(&mut self, seq: u64) {
        self.seq = seq;
        self.checkpointed();
    }
}

/// Creates (or empties) the log file (mode 0600: it holds the conversations, like the store) and writes its header;
/// makes both the file and its name durable.
fn create(path: &Path, store_id: [u8; 16]) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let mut header = [0; HEADER_LEN as usize];
    header[..16].copy_from_slice(MAGIC);
    header[16..].copy_from_slice(&store_id);
    file.write_all(&header)?;
    file.sync_all()?;
    if let Some(directory) = path.parent() {
        // Some file systems refuse to sync a directory; there the file's own sync is all there is.
        if let Err(error) = File::open(directory).and_then(|directory| directory.sync_all()) {
            tracing::debug!(%error, "syncing the data dir after creating the log");
        }
    }
    Ok(file)
}

fn push_record(buffer: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc.finalize().to_le_bytes());
    buffer.extend_from_slice(&seq.to_le_bytes());
    buffer.extend_from_slice(payload);
}

/// Applies the log's records that come after the store's last commit (`WAL_SEQ` in `META`), in `transaction`, and
/// answers the `seq` the store is at then. A log written for another store (its header names another store id) is
/// renamed aside with a warning, not replayed.
pub(super) fn replay(
    transaction: &WriteTransaction,
    path: &Path,
    store_id: [u8; 16],
) -> Result<u64, StoreError> {
    let mut seq = transaction
        .open_table(META)?
        .get(WAL_SEQ)?
        .map_or(0, |value| read_u64(value.value()));
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(seq),
        Err(error) => {
            return Err(StoreError::Storage(format!(
                "cannot read the log {}: {error}",
                path.display()
            )))
        }
    };
    if bytes.len() < HEADER_LEN as usize {
        // Torn while it was being created: it never held a record.
        return Ok(seq);
    }
    if &bytes[..16] != MAGIC || bytes[16..32] != store_id {
        let aside = PathBuf::from(format!(
            "{}.orphaned-{}",
            path.display(),
            crate::timestamp::now_millis()
        ));
        std::fs::rename(path, &aside).map_err(|error| {
            StoreError::Storage(format!(
                "{} belongs to another store and cannot be moved aside: {error}",
                path.display()
            ))
        })?;
        tracing::warn!(
            kept = %aside.display(),
            "the store's log belongs to another store (was a backup restored after a crash?); it was not replayed"
        );
        return Ok(seq);
    }
    let mut at = HEADER_LEN as usize;
    let mut expected = None;
    while let Some((record_seq, payload, next)) = read_record(&bytes, at) {
        match expected {
            // A record from before the last start-over, left behind the newer ones: the log ends here.
            Some(expected) if record_seq != expected => break,
            None if record_seq > seq + 1 => {
                return Err(StoreError::Storage(format!(
                    "the log {} starts at batch {record_seq} but the store ends at batch {seq}: batches are missing; restore a backup, or move the log away to start without them",
                    path.display()
                )))
            }
            _ => {}
        }
        expected = Some(record_seq + 1);
        if record_seq > seq {
            apply_changes(transaction, payload).map_err(|error| match error {
                StoreError::Storage(detail) => StoreError::Storage(format!(
                    "{detail} (batch {record_seq} in {}): move the log away to start without its writes",
                    path.display()
                )),
                other => other,
            })?;
            seq = record_seq;
        }
        at = next;
    }
    transaction
        .open_table(META)?
        .insert(WAL_SEQ, seq.to_le_bytes().as_slice())?;
    Ok(seq)
}

/// The record at `at`, if a whole one with a matching CRC is there: (seq, payload, where the next one starts).
fn read_record(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at + RECORD_HEADER_LEN)?;
    let length = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq_bytes = &header[8..16];
    if length > MAX_RECORD {
        return None;
    }
    let start = at + RECORD_HEADER_LEN;
    let payload = bytes.get(start..start + length)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(seq_bytes);
    hasher.update(payload);
    (hasher.finalize() == crc).then(|| (read_u64(seq_bytes), payload, start + length))
}

pub(super) fn apply_changes(
    transaction: &WriteTransaction,
    mut payload: &[u8],
) -> Result<(), StoreError> {
    let malformed = || StoreError::Storage("a record in the store's log is malformed".into());
    fn take<'a>(payload: &mut &'a [u8], length: usize) -> Option<&'a [u8]> {
        let (taken, rest) = (payload.get(..length)?, payload.get(length..)?);
        *payload = rest;
        Some(taken)
    }
    fn take_sized<'a>(payload: &mut &'a [u8]) -> Option<&'a [u8]> {
        let length = u32::from_le_bytes(take(payload, 4)?.try_into().ok()?) as usize;
        take(payload, length)
    }
    while !payload.is_empty() {
        let table = take(&mut payload, 1).ok_or_else(malformed)?[0];
        let key = take_sized(&mut payload).ok_or_else(malformed)?;
        let value = match take(&mut payload, 1).ok_or_else(malformed)?[0] {
            0 => None,
            1 => Some(take_sized(&mut payload).ok_or_else(malformed)?),
            _ => return Err(malformed()),
        };
        // redb reads a `&str` key without checking it (it panics on bytes that are not UTF-8).
        let text_key = table == TableId::Meta as u8 || table == TableId::PushSubscriptions as u8;
        if text_key && std::str::from_utf8(key).is_err() {
            return Err(malformed());
        }
        match table {
            0 => apply(transaction, META, key, value),
            1 => apply(transaction, CONVERSATIONS, key, value),
            2 => apply(transaction, MESSAGES, key, value),
            3 => apply(transaction, CONVERSATION_MESSAGES, key, value),
            4 => apply(transaction, VISITOR_TOKENS, key, value),
            5 => apply(transaction, CLIENT_IDS, key, value),
            6 => apply(transaction, SESSIONS, key, value),
            7 => apply(transaction, PUSH_SUBSCRIPTIONS, key, value),
            _ => Err(malformed()),
        }?;
    }
    Ok(())
}

fn apply<K: Key + 'static, V: Value + 'static>(
    transaction: &WriteTransaction,
    definition: TableDefinition<K, V>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    let fits = |width: Option<usize>, bytes: &[u8]| width.is_none_or(|width| width == bytes.len());
    if !fits(K::fixed_width(), key) || !value.is_none_or(|value| fits(V::fixed_width(), value)) {
        return Err(StoreError::Storage(
            "a record in the store's log has a key or value of the wrong size".into(),
        ));
    }
    let mut table = transaction.open_table(definition)?;
    match value {
        Some(value) => table.insert(K::from_bytes(key), V::from_bytes(value))?,
        None => table.remove(K::from_bytes(key))?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::Database;

    /// A log whose only record passes its CRC but holds `payload`.
    fn log_with(path: &Path, store_id: [u8; 16], payload: &[u8]) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&store_id);
        push_record(&mut bytes, 1, payload);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_whole_record_with_a_malformed_change_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::create(dir.path().join("natter.redb")).unwrap();
        let log = dir.path().join("natter.wal");
        let id = [7; 16];
        let mut u64_key_with_9_bytes = Vec::new();
        push_change(
            &mut u64_key_with_9_bytes,
            TableId::Messages,
            &[0; 9],
            Some(b"{}"),
        );
        let mut good = Vec::new();
        push_change(
            &mut good,
            TableId::Messages,
            &5u64.to_le_bytes(),
            Some(b"{}"),
        );
        let mut meta_key_not_utf8 = Vec::new();
        push_change(&mut meta_key_not_utf8, TableId::Meta, &[0xff, 0xfe], None);
        for payload in [
            &good[..good.len() - 1],
            &[9, 0, 0, 0, 0, 0][..],
            &u64_key_with_9_bytes,
            &meta_key_not_utf8,
        ] {
            log_with(&log, id, payload);
            let transaction = database.begin_write().unwrap();
            let Err(StoreError::Storage(detail)) = replay(&transaction, &log, id) else {
                panic!("replayed {payload:?}");
            };
            assert!(detail.contains("move the log away"), "{detail}");
        }
        log_with(&log, id, &good);
        let transaction = database.begin_write().unwrap();
        assert_eq!(replay(&transaction, &log, id).unwrap(), 1);
        let messages = transaction.open_table(MESSAGES).unwrap();
        assert_eq!(messages.get(5).unwrap().unwrap().value(), b"{}");
    }
}
