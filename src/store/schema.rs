//! The store's tables, and what opening a store does to them: check the schema (bringing an older one up to date),
//! create what is missing, take in an earlier natter's log, and index what the index lacks.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::conversations::Message;
use super::{decode, legacy_log, read_u64, StoreError};

/// Bumped when the layout of the tables changes; a store written by a newer natter is refused, not misread, and one
/// written by an older natter is brought up to date when it is opened (`prepare`).
pub(super) const SCHEMA_VERSION: u64 = 4;

/// Small bookkeeping values: the schema version, the message counter, the generated admin password hash, keys.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Conversation id → `Conversation` (a binary record, `record`; JSON in stores before schema version 4).
pub(super) const CONVERSATIONS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("conversations");
/// Message id → `Message` (JSON, exactly as the wire shows it, so reads send it without re-encoding).
pub(super) const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (conversation id, message id): the messages of one conversation in order.
///
/// Written a thousand entries at a time, not with each message: with many conversations busy at once, each new entry
/// would otherwise dirty a page of its own in every commit (a commit's cost is its dirty pages). Every message up to
/// `indexed_up_to` (in `META`) has its entry; the ones above it are kept in memory (`StoreFile::unindexed`), and
/// indexed again from `MESSAGES` when the store is opened. (Schema version 2 indexed every message at once.)
pub(super) const CONVERSATION_MESSAGES: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("conversation_messages");
/// SHA-256 of a visitor token → its conversation id. The token itself is never stored.
pub(super) const VISITOR_TOKENS: TableDefinition<&[u8], u128> =
    TableDefinition::new("visitor_tokens");
/// (client id, conversation id) → message id: a resent `speak` or `reply` finds the message it already stored.
/// Keyed by conversation too, so one visitor cannot fish for another's message by guessing its client id. The client
/// id comes first because natter's clients make time-ordered ones (UUIDv7): a commit's new entries then sit together
/// at the end of the table, a page or two, where keyed by conversation first they took a page per conversation.
/// (Schema version 1 had the conversation first.)
pub(super) const CLIENT_IDS: TableDefinition<(u128, u128), u64> =
    TableDefinition::new("client_ids");
/// SHA-256 of a session token → `Session` (JSON).
pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// Push endpoint URL → the subscription (JSON, owned by the push module).
pub(super) const PUSH_SUBSCRIPTIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("push_subscriptions");

/// `META` keys.
pub(super) const NEXT_MESSAGE_ID: &str = "next_message_id";
pub(super) const INDEXED_UP_TO: &str = "indexed_up_to";
/// 16 random bytes naming this store. A copy (`snapshot_to`) has none until it is first opened, so every backup
/// restored is a store of its own: an earlier natter's log left in the data dir names another store and is set aside.
pub(super) const STORE_ID: &str = "store_id";

/// Makes an opened store file ready for the writer, in one durable commit: checks the schema (bringing an older one up
/// to date), creates what is missing (tables, the store id), takes in the log an earlier natter left at `log_path`
/// (then removes it) and indexes what the index lacks.
pub(super) fn prepare(database: &Database, log_path: &Path) -> anyhow::Result<()> {
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
    let replayed =
        legacy_log::replay(&transaction, log_path, store_id).map_err(|error| match error {
            StoreError::Storage(detail) => anyhow::anyhow!(detail),
            other => anyhow::anyhow!("replaying {}: {other:?}", log_path.display()),
        })?;
    index_the_rest(&transaction)
        .map_err(|error| anyhow::anyhow!("indexing the latest messages: {error:?}"))?;
    let forgotten = super::email::forget_deleted(&transaction).map_err(|error| {
        anyhow::anyhow!("removing deleted conversations' email records: {error:?}")
    })?;
    if forgotten > 0 {
        tracing::info!(
            forgotten,
            "removed the email records of conversations deleted just before natter last stopped"
        );
    }
    transaction.commit()?;
    if replayed {
        legacy_log::remove(log_path).map_err(|error| {
            anyhow::anyhow!(
                "the store took in {} but cannot remove it: {error}",
                log_path.display()
            )
        })?;
    }
    Ok(())
}

/// The store's id (`STORE_ID` in `META`), made on first use.
fn store_id(transaction: &WriteTransaction) -> anyhow::Result<[u8; 16]> {
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
fn index_the_rest(transaction: &WriteTransaction) -> Result<(), StoreError> {
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
fn migrate_client_ids(transaction: &WriteTransaction) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::store::{encode, hash_token, record, Store};

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
}
