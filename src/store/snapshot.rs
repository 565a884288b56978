//! A consistent copy of the whole store, taken while natter runs.

use std::path::Path;

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::schema::{
    CLIENT_IDS, CONVERSATIONS, CONVERSATION_MESSAGES, MESSAGES, META, PUSH_SUBSCRIPTIONS, SESSIONS,
    STORE_ID, VISITOR_TOKENS,
};
use super::{Store, StoreError};

impl Store {
    /// Copies every table, as one read transaction sees it, into a new redb file at `destination`: a consistent
    /// backup taken while the writer goes on (redb readers never block it). `natter backup` uses it through the
    /// server's control socket. A table this method does not know is an error, not a silent gap in the backup.
    pub fn snapshot_to(&self, destination: &Path) -> Result<SnapshotSummary, StoreError> {
        use redb::TableHandle;
        let source = self.read()?;
        super::create_private(destination).map_err(|error| {
            StoreError::Storage(format!("cannot create {}: {error}", destination.display()))
        })?;
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
        // The copy is a store of its own: without the original's id it gets one when first opened, so a log left by
        // the original (say, after a crash, when this backup is restored) is not replayed into it.
        transaction.open_table(META)?.remove(STORE_ID)?;
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

/// Reads a copy `Store::snapshot_to` made (a backup) without changing it, and answers (messages, conversations): a
/// copy that does not open as a store of this natter's schema is not a backup. Read-only, because the first open of
/// a store gives it its store id, and each restore of a backup must get an id of its own.
pub fn count_copy(path: &Path) -> Result<(u64, u64), StoreError> {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let database = redb::ReadOnlyDatabase::open(path)?;
    let transaction = database.begin_read()?;
    let version = transaction
        .open_table(META)?
        .get("schema_version")?
        .map(|value| super::read_u64(value.value()));
    if version != Some(super::schema::SCHEMA_VERSION) {
        return Err(StoreError::Storage(format!(
            "the copy has schema version {version:?}, this natter writes {}",
            super::schema::SCHEMA_VERSION
        )));
    }
    let messages = transaction.open_table(MESSAGES)?.len()?;
    let conversations = transaction.open_table(CONVERSATIONS)?.len()?;
    Ok((messages, conversations))
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
