//! The write-ahead log natter kept before issue 17 (`natter.wal`), read once to bring a store up to date.
//!
//! Earlier natters committed each batch to redb without an fsync and appended its changes to this log with one
//! fdatasync; now and then a durable commit (a checkpoint) made the log start over. A store such a natter left behind
//! may hold less than the log beside it. The first start of this natter replays the log (`replay`) in the transaction
//! that opens the store, commits it durably, and removes the log (`remove`); from then on every batch is a durable
//! commit of its own and there is no log.
//!
//! A record holds the batch's number (`seq`, which every transaction also wrote to `META` as `WAL_SEQ`) and its changes
//! as raw redb keys and values (table, key, value or removal). `replay` applies the records after the store's `WAL_SEQ`,
//! in order, up to the first torn or stale one: a record whose answers went out was fsynced before, so nothing
//! acknowledged is lost. Replaying twice (a crash between the commit and the removal) skips what the store holds.
//!
//! File: a 32-byte header (magic, then the store's id from `META`, so the log of another store — a backup restored
//! after a crash — is set aside, not replayed), then records: payload length (u32), CRC-32 of seq and payload (u32),
//! seq (u64), payload. All little-endian.

use std::path::{Path, PathBuf};

use redb::{Key, ReadableTable, TableDefinition, Value, WriteTransaction};

use super::schema::{
    CLIENT_IDS, CONVERSATIONS, CONVERSATION_MESSAGES, MESSAGES, META, PUSH_SUBSCRIPTIONS, SESSIONS,
    VISITOR_TOKENS,
};
use super::{read_u64, StoreError};

/// `META` key: the `seq` of the last batch an earlier natter committed (see the module documentation).
const WAL_SEQ: &str = "wal_seq";

/// The log's name in the data dir.
pub(super) const FILE_NAME: &str = "natter.wal";

const MAGIC: &[u8; 16] = b"natter-wal\0\0\0\0\0\x01";
const HEADER_LEN: u64 = 32;
const RECORD_HEADER_LEN: usize = 16;
/// A record longer than this is taken for a torn length, not read.
const MAX_RECORD: usize = 1 << 30;

/// Removes the log once the store holds all of it (its replay is committed durably), and makes the removal durable.
pub(super) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(directory) = path.parent() {
                super::disk::sync_directory(directory);
            }
            tracing::info!(log = %path.display(), "the store holds its old write-ahead log now; the log is removed");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Applies the log's records that come after the store's last commit (`WAL_SEQ` in `META`), in `transaction`, and
/// answers whether there was a log of this store to remove once the transaction is durable. A log written for another
/// store (its header names another store id) is renamed aside with a warning, not replayed.
pub(super) fn replay(
    transaction: &WriteTransaction,
    path: &Path,
    store_id: [u8; 16],
) -> Result<bool, StoreError> {
    let mut seq = transaction
        .open_table(META)?
        .get(WAL_SEQ)?
        .map_or(0, |value| read_u64(value.value()));
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => {
            return Err(StoreError::Storage(format!(
                "cannot read the log {}: {error}",
                path.display()
            )))
        }
    };
    if bytes.len() < HEADER_LEN as usize {
        // Torn while it was being created: it never held a record.
        return Ok(true);
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
        return Ok(false);
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
    Ok(true)
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
        // (Tables 0 and 7, `META` and `PUSH_SUBSCRIPTIONS`, have text keys.)
        let text_key = table == 0 || table == 7;
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

/// Writes logs as earlier natters did, for the tests of the upgrade.
#[cfg(test)]
pub(super) mod old_format {
    use std::path::Path;

    use super::{HEADER_LEN, MAGIC};

    /// The tables' numbers in a record.
    pub const META: u8 = 0;
    pub const CONVERSATIONS: u8 = 1;
    pub const MESSAGES: u8 = 2;
    pub const VISITOR_TOKENS: u8 = 4;
    pub const CLIENT_IDS: u8 = 5;

    /// One change: table (u8), key length (u32), key, then 1 and the value's length (u32) and value, or 0 for a
    /// removal.
    pub fn push_change(redo: &mut Vec<u8>, table: u8, key: &[u8], value: Option<&[u8]>) {
        redo.push(table);
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

    pub fn push_record(buffer: &mut Vec<u8>, seq: u64, payload: &[u8]) {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(payload);
        buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buffer.extend_from_slice(&crc.finalize().to_le_bytes());
        buffer.extend_from_slice(&seq.to_le_bytes());
        buffer.extend_from_slice(payload);
    }

    /// The log's header for the store `store_id`.
    pub fn header(store_id: [u8; 16]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&store_id);
        assert_eq!(bytes.len() as u64, HEADER_LEN);
        bytes
    }

    /// A store as an earlier natter left it after a crash: `natter.redb` at its last checkpoint with one conversation
    /// of three messages, and beside it a log of two batches it acknowledged after that (a fourth message, then a new
    /// visitor name), and the torn start of a third that was never acknowledged.
    pub async fn store_with_log(dir: &Path) -> (crate::store::Appended, uuid::Uuid) {
        use crate::store::{hash_token, record, Store};
        let store = Store::open(dir).unwrap();
        let mut last = None;
        for index in 0..3 {
            last = Some(
                store
                    .speak(
                        hash_token("alice"),
                        format!("m{index}"),
                        uuid::Uuid::now_v7(),
                    )
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        let store_id: [u8; 16] = store.meta("store_id").unwrap().unwrap().try_into().unwrap();
        store.close().await;
        let client_id = uuid::Uuid::now_v7();
        let mut message = last.message.clone();
        message.id = 4;
        message.content = "in the log".into();
        message.client_id = Some(client_id);
        let mut conversation = last.conversation.clone();
        conversation.last_message_id = Some(4);
        conversation.unread_count = 4;
        let key = conversation.id.as_u128();
        let mut first = Vec::new();
        let json = serde_json::to_vec(&message).unwrap();
        push_change(&mut first, MESSAGES, &4u64.to_le_bytes(), Some(&json));
        let mut client_key = client_id.as_u128().to_le_bytes().to_vec();
        client_key.extend_from_slice(&key.to_le_bytes());
        push_change(
            &mut first,
            CLIENT_IDS,
            &client_key,
            Some(&4u64.to_le_bytes()),
        );
        let mut bytes = Vec::new();
        record::encode(&conversation, &mut bytes);
        push_change(&mut first, CONVERSATIONS, &key.to_le_bytes(), Some(&bytes));
        push_change(
            &mut first,
            META,
            b"next_message_id",
            Some(&5u64.to_le_bytes()),
        );
        push_change(&mut first, META, b"wal_seq", Some(&1u64.to_le_bytes()));
        conversation.visitor_name = Some("Ada".into());
        let mut second = Vec::new();
        bytes.clear();
        record::encode(&conversation, &mut bytes);
        push_change(&mut second, CONVERSATIONS, &key.to_le_bytes(), Some(&bytes));
        push_change(&mut second, META, b"wal_seq", Some(&2u64.to_le_bytes()));
        let mut log = header(store_id);
        push_record(&mut log, 1, &first);
        push_record(&mut log, 2, &second);
        let mut torn = Vec::new();
        push_change(
            &mut torn,
            VISITOR_TOKENS,
            &[9; 32],
            Some(&key.to_le_bytes()),
        );
        push_record(&mut log, 3, &torn);
        log.truncate(log.len() - 3);
        std::fs::write(dir.join(super::FILE_NAME), log).unwrap();
        (last, client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::old_format::{self, header, push_change, push_record, store_with_log};
    use super::{replay, StoreError, FILE_NAME};
    use redb::Database;
    use redb::ReadableTable;
    use std::path::Path;

    /// A log whose only record passes its CRC but holds `payload`.
    fn log_with(path: &Path, store_id: [u8; 16], payload: &[u8]) {
        let mut bytes = header(store_id);
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
            old_format::MESSAGES,
            &[0; 9],
            Some(b"{}"),
        );
        let mut good = Vec::new();
        push_change(
            &mut good,
            old_format::MESSAGES,
            &5u64.to_le_bytes(),
            Some(b"{}"),
        );
        let mut meta_key_not_utf8 = Vec::new();
        push_change(
            &mut meta_key_not_utf8,
            old_format::META,
            &[0xff, 0xfe],
            None,
        );
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
        assert!(replay(&transaction, &log, id).unwrap());
        let messages = transaction
            .open_table(crate::store::schema::MESSAGES)
            .unwrap();
        assert_eq!(messages.get(5).unwrap().unwrap().value(), b"{}");
    }

    #[tokio::test]
    async fn a_store_left_with_an_earlier_natters_log_takes_it_in_and_the_log_goes() {
        use crate::store::{hash_token, Store};
        let dir = tempfile::tempdir().unwrap();
        let (last, client_id) = store_with_log(dir.path()).await;
        let log = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join(FILE_NAME).exists(), "the log is removed");
        let message = store
            .message(4)
            .unwrap()
            .expect("the logged message is in the store");
        assert_eq!(message.content, "in the log");
        let conversation = store
            .conversation(last.message.conversation_id)
            .unwrap()
            .unwrap();
        assert_eq!(conversation.last_message_id, Some(4));
        assert_eq!(conversation.visitor_name.as_deref(), Some("Ada"));
        let page = store
            .conversation_messages(conversation.id, None, None, 10)
            .unwrap();
        assert_eq!(page.messages.len(), 4, "the logged message is indexed too");
        let resent = store
            .speak(hash_token("alice"), "in the log".into(), client_id)
            .await
            .unwrap();
        assert!(
            resent.duplicate,
            "a resend of the logged message is stored once"
        );
        let next = store
            .speak(hash_token("alice"), "after".into(), uuid::Uuid::now_v7())
            .await
            .unwrap();
        assert_eq!(next.message.id, 5, "ids go on after the log's");
        store.close().await;

        // A crash after the durable commit and before the removal leaves the log: opening again skips its records.
        std::fs::write(dir.path().join(FILE_NAME), log).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.message(5).unwrap().unwrap().content, "after");
        assert_eq!(store.message_count().unwrap(), 5, "nothing replayed twice");
        assert_eq!(
            store
                .conversation(last.message.conversation_id)
                .unwrap()
                .unwrap()
                .last_message_id,
            Some(5),
            "the old records did not put the conversation back"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn an_earlier_natters_log_beside_a_restored_backup_is_set_aside() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        store_with_log(dir.path()).await;
        let log = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let restored = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        for directory in &restored {
            store
                .snapshot_to(&directory.path().join("natter.redb"))
                .unwrap();
            std::fs::write(directory.path().join(FILE_NAME), &log).unwrap();
        }
        store.close().await;
        let mut ids = Vec::new();
        for directory in &restored {
            let store = Store::open(directory.path()).unwrap();
            assert_eq!(
                store.message_count().unwrap(),
                3,
                "only what the backup holds"
            );
            ids.push(store.meta("store_id").unwrap().unwrap());
            store.close().await;
            let aside: Vec<String> = std::fs::read_dir(directory.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("natter.wal.orphaned-"))
                .collect();
            assert_eq!(aside.len(), 1, "the old log is kept aside: {aside:?}");
        }
        assert_ne!(ids[0], ids[1], "each restored copy is a store of its own");
    }
}
