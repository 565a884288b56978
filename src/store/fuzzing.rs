//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, never in a release build): the decoders of
//! what natter reads back from its own files, which a torn write, a failing disk or an older natter may have left.
//! Each answers an error for bad bytes; a panic is the bug the fuzzer looks for.

/// Decodes a record as `CONVERSATIONS` holds it and, when it decodes, answers it encoded again.
pub fn conversation_record(bytes: &[u8]) -> Option<Vec<u8>> {
    let conversation = super::record::decode(bytes).ok()?;
    let mut encoded = Vec::new();
    super::record::encode(&conversation, &mut encoded);
    Some(encoded)
}

/// The format byte that starts a binary conversation record (older records are JSON).
pub const BINARY_RECORD: u8 = super::record::FORMAT;

/// Applies the changes of one log record (the payload an earlier natter's log, `legacy_log`, holds for a batch) to
/// an in-memory store, as a replay does, then reads back every conversation and message; answers whether the changes
/// applied. The store is made once and every input's transaction is aborted, so each input starts from the same empty
/// store.
pub fn log_record(payload: &[u8]) -> bool {
    use redb::ReadableTable;
    static DATABASE: std::sync::OnceLock<redb::Database> = std::sync::OnceLock::new();
    let database = DATABASE.get_or_init(|| {
        redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory store opens")
    });
    let transaction = database.begin_write().expect("a write transaction starts");
    let applied = super::legacy_log::apply_changes(&transaction, payload).is_ok();
    if let Ok(conversations) = transaction.open_table(super::schema::CONVERSATIONS) {
        for (_, record) in conversations
            .range::<u128>(..)
            .expect("a range reads")
            .flatten()
        {
            let _ = super::record::decode(record.value());
        }
    }
    if let Ok(messages) = transaction.open_table(super::schema::MESSAGES) {
        for (_, message) in messages.range::<u64>(..).expect("a range reads").flatten() {
            let _ = super::decode::<super::Message>(message.value());
        }
    }
    transaction.abort().expect("an in-memory abort succeeds");
    applied
}
