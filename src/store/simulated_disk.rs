//! A disk that loses power (tests only): what redb writes goes to a volatile layer, the page cache, and only a sync
//! moves it to the durable layer. A power cut keeps the durable layer and, of what was written since the last sync, a
//! seeded random choice: every 512-byte or 4 KiB block takes its own prefix of the writes that touched it, so a write
//! lands whole, torn, or not at all, and writes land out of order across blocks. The file's length is metadata and
//! goes its own way: it takes a prefix of the length changes (a `set_len`, or a write past the end), and nothing
//! beyond it is seen, as on a journaling file system, where the blocks a write puts beyond the old end are reachable
//! only once the length that covers them is committed. A sync can also fail with EIO: its writes are dropped and
//! never reach the disk (its length changes may, with the journal), while the cache goes on serving them (Linux after
//! a failed fsync).
//!
//! The driver (`power_cuts`) arms a cut at a mutating operation (a write, a length change or a sync) counted from the
//! moment it arms it; from that operation on the disk answers every call with EIO, as a machine that is off would.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

use super::power_cuts::Random;

#[derive(Clone, Debug, Default)]
pub(super) struct SimulatedDisk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// What reads see: the durable layer with every write since applied, including ones a failed sync dropped.
    cache: Vec<u8>,
    /// What survives any power cut.
    durable: Vec<u8>,
    /// Writes and length changes since the last sync, in order.
    pending: Vec<Change>,
    /// Mutating operations since the disk was armed.
    operations: u64,
    /// The operation the power goes at (`arm`).
    cut_at: Option<u64>,
    /// The sync, counted from `arm`, that fails with EIO.
    failing_sync: Option<u64>,
    syncs: u64,
    /// The power went: (operation, what it was).
    cut: Option<(u64, Operation)>,
}

#[derive(Debug)]
enum Change {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

/// A mutating operation, for the record of where a cut fell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Operation {
    Write,
    SetLen,
    Sync,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl SimulatedDisk {
    /// A disk holding `image`, all of it durable.
    pub(super) fn with_image(image: Vec<u8>) -> SimulatedDisk {
        let state = State {
            cache: image.clone(),
            durable: image,
            ..State::default()
        };
        SimulatedDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The power goes at mutating operation `cut_at` from now; sync number `failing_sync` from now fails with EIO.
    pub(super) fn arm(&self, cut_at: u64, failing_sync: Option<u64>) {
        let mut state = self.state();
        state.operations = 0;
        state.syncs = 0;
        state.cut_at = Some(cut_at);
        state.failing_sync = failing_sync;
    }

    /// Where the power went, if it has.
    pub(super) fn cut(&self) -> Option<(u64, Operation)> {
        self.state().cut
    }

    /// Whether the sync armed to fail has failed since `arm`.
    pub(super) fn sync_failed(&self) -> bool {
        let state = self.state();
        state
            .failing_sync
            .is_some_and(|failing| state.syncs >= failing)
    }

    /// The power goes now, if it has not yet.
    pub(super) fn cut_now(&self) {
        let mut state = self.state();
        if state.cut.is_none() {
            state.cut = Some((state.operations, Operation::Sync));
        }
    }

    /// What the disk holds when the power comes back: the durable layer and a random part of what was pending.
    pub(super) fn after_power_cut(&self, random: &mut Random) -> Vec<u8> {
        let state = self.state();
        let mut image = state.durable.clone();
        let block = if random.chance(2) { 512 } else { 4096 };
        let all = state.pending.len() as u64;
        // Mostly a random part; now and then everything or nothing, the edges a uniform choice rarely hits.
        let threshold = |random: &mut Random| match random.below(4) {
            0 => all,
            1 => 0,
            _ => random.below(all + 1),
        };
        let mut kept: HashMap<usize, u64> = HashMap::new();
        let length_kept = threshold(random);
        let mut length = image.len();
        for (index, change) in state.pending.iter().enumerate() {
            let index = index as u64;
            match change {
                Change::SetLen(new_length) => {
                    if index < length_kept {
                        image.resize(*new_length, 0);
                        length = *new_length;
                    }
                }
                Change::Write { offset, data } => {
                    let end = offset + data.len();
                    let mut at = *offset;
                    while at < end {
                        let number = at / block;
                        let block_end = ((number + 1) * block).min(end);
                        let limit = *kept
                            .entry(number)
                            .or_insert_with(|| threshold(&mut *random));
                        if index < limit {
                            if image.len() < block_end {
                                image.resize(block_end, 0);
                            }
                            image[at..block_end]
                                .copy_from_slice(&data[at - offset..block_end - offset]);
                        }
                        at = block_end;
                    }
                }
            }
        }
        image.resize(length, 0);
        image
    }

    /// Counts a mutating operation; answers whether the power is (now) off.
    fn operate(state: &mut State, operation: Operation) -> bool {
        if state.cut.is_some() {
            return true;
        }
        state.operations += 1;
        if state.cut_at == Some(state.operations) {
            state.cut = Some((state.operations, operation));
        }
        false
    }
}

impl StorageBackend for SimulatedDisk {
    fn len(&self) -> io::Result<u64> {
        let state = self.state();
        if state.cut.is_some() {
            return Err(eio());
        }
        Ok(state.cache.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state();
        if state.cut.is_some() {
            return Err(eio());
        }
        let start = offset as usize;
        let bytes = state
            .cache
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if SimulatedDisk::operate(&mut state, Operation::SetLen) {
            return Err(eio());
        }
        state.cache.resize(len as usize, 0);
        state.pending.push(Change::SetLen(len as usize));
        // The power may have gone during this very operation: it is pending, and may or may not have landed.
        if state.cut.is_some() {
            return Err(eio());
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        // (`sync_data` makes the length durable too: the data cannot be read back without it.)
        let mut state = self.state();
        if SimulatedDisk::operate(&mut state, Operation::Sync) || state.cut.is_some() {
            return Err(eio());
        }
        state.syncs += 1;
        let pending = std::mem::take(&mut state.pending);
        if state.failing_sync == Some(state.syncs) {
            // The writes are lost to the disk, but the cache keeps serving them. The length changes are metadata the
            // file system's journal commits on its own: they may still reach the disk.
            state.pending = pending
                .into_iter()
                .filter(|change| matches!(change, Change::SetLen(_)))
                .collect();
            return Err(eio());
        }
        for change in pending {
            match change {
                Change::SetLen(length) => state.durable.resize(length, 0),
                Change::Write { offset, data } => {
                    let end = offset + data.len();
                    if state.durable.len() < end {
                        state.durable.resize(end, 0);
                    }
                    state.durable[offset..end].copy_from_slice(&data);
                }
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        if SimulatedDisk::operate(&mut state, Operation::Write) {
            return Err(eio());
        }
        let offset = offset as usize;
        let end = offset + data.len();
        if state.cache.len() < end {
            // A write past the end makes the file longer: a length change of its own.
            state.cache.resize(end, 0);
            state.pending.push(Change::SetLen(end));
        }
        state.cache[offset..end].copy_from_slice(data);
        state.pending.push(Change::Write {
            offset,
            data: data.to_vec(),
        });
        if state.cut.is_some() {
            return Err(eio());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Found by seed 1005296 of the long run: the write-back after a failed sync (`disk::settle`) writes past the
    /// durable end, and a power cut tearing it left the file at 167,424 bytes, a length no operation had set, inside
    /// one of redb's regions (redb refuses such a file: no real disk makes one). The length is now a length the file
    /// had: the durable one, or one that a kept length change set.
    #[test]
    fn after_a_power_cut_the_length_is_one_the_file_had() {
        for seed in 0..2000 {
            let disk = SimulatedDisk::with_image(vec![1; 8192]);
            disk.set_len(16384).unwrap();
            disk.write(8192, &[2; 8192]).unwrap();
            disk.write(16384, &[3; 5000]).unwrap();
            let image = disk.after_power_cut(&mut Random::new(seed));
            assert!(
                [8192, 16384, 21384].contains(&image.len()),
                "seed {seed}: length {}",
                image.len()
            );
            assert!(image[..8192].iter().all(|byte| *byte == 1));
        }
    }

    /// A failed sync loses its writes but not the length changes, which the file system's journal commits on its own:
    /// after the power cut the file has the old length or the new one, and the new part holds what was written or
    /// zeros.
    #[test]
    fn a_failed_sync_loses_the_writes_and_may_keep_the_length() {
        let mut lengths = HashSet::new();
        for seed in 0..2000 {
            let disk = SimulatedDisk::with_image(vec![1; 8192]);
            disk.arm(100, Some(1));
            disk.set_len(16384).unwrap();
            disk.write(8192, &[2; 8192]).unwrap();
            assert!(disk.sync_data().is_err());
            disk.write(8192, &[4; 8192]).unwrap();
            let image = disk.after_power_cut(&mut Random::new(seed));
            lengths.insert(image.len());
            assert!(image[8192..].iter().all(|byte| *byte == 0 || *byte == 4));
        }
        assert_eq!(lengths, HashSet::from([8192, 16384]));
    }
}
