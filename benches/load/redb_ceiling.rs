//! The storage ceiling: raw redb commits of natter's message size.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::histogram;

/// The storage ceiling: `batch` messages of natter's size per redb transaction, each committed with an fsync.
/// Answers messages per second and the latency of each commit (microseconds).
pub fn redb_ceiling(
    directory: &Path,
    batch: usize,
    window: Duration,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    const MESSAGES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    let path = directory.join(format!("ceiling-{batch}.redb"));
    let database = redb::Database::create(&path)?;
    let value = vec![b'x'; 250];
    let started = Instant::now();
    let mut written = 0u64;
    let mut commits = histogram();
    while started.elapsed() < window {
        let commit_started = Instant::now();
        let mut transaction = database.begin_write()?;
        transaction.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = transaction.open_table(MESSAGES)?;
            for _ in 0..batch {
                table.insert(written, value.as_slice())?;
                written += 1;
            }
        }
        transaction.commit()?;
        commits.saturating_record(commit_started.elapsed().as_micros() as u64);
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    drop(database);
    let _ = std::fs::remove_file(&path);
    Ok((rate, commits))
}
