//! What the store file sits on: the seam between redb and the disk.
//!
//! redb reads and writes through a `StorageBackend`. natter's is `Watched`: the real file (or, in tests, the simulated
//! disk of `simulated_disk`) plus one flag that a failed sync sets. A failed sync is the one I/O error the writer may
//! not recover from by opening the file again: Linux marks the pages it could not write clean and goes on serving them
//! from its cache, so a store opened again would build on a commit that is not on the disk ("fsyncgate"). The writer
//! stops for good instead (natter exits and systemd starts it again), and leaves `SYNC_FAILED` in the data dir: the
//! next start reads the whole file and writes it back with a sync before it opens it (`settle`), so whatever the cache
//! still holds of the failed commit reaches the disk, or the start fails the same way.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::{BackendError, StorageBackend};

/// A file in the data dir that says a sync of the store failed and the store has not been written back since.
pub(super) const SYNC_FAILED: &str = "natter.sync-failed";

/// Where the store file lives: opened again by the writer after a write error, so it is a recipe, not a handle.
#[derive(Clone, Debug)]
pub(super) enum Disk {
    File(PathBuf),
    #[cfg(test)]
    Simulated(super::simulated_disk::SimulatedDisk),
}

impl Disk {
    /// A backend on the store file; `sync_failed` is set when one of its syncs fails.
    pub(super) fn open(&self, sync_failed: &Arc<AtomicBool>) -> io::Result<Watched> {
        let backend: Box<dyn StorageBackend> = match self {
            Disk::File(path) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
                Box::new(redb::backends::FileBackend::new(file).map_err(io::Error::other)?)
            }
            #[cfg(test)]
            Disk::Simulated(disk) => Box::new(disk.clone()),
        };
        Ok(Watched {
            backend,
            sync_failed: sync_failed.clone(),
        })
    }
}

/// A backend that notes a failed sync (see the module documentation) and otherwise passes every call through.
#[derive(Debug)]
pub(super) struct Watched {
    backend: Box<dyn StorageBackend>,
    sync_failed: Arc<AtomicBool>,
}

impl StorageBackend for Watched {
    fn len(&self) -> io::Result<u64> {
        self.backend.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.backend.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.backend.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let result = self.backend.sync_data();
        if result.is_err() {
            self.sync_failed.store(true, Ordering::SeqCst);
        }
        result
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.backend.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.backend.close()
    }

    // The locks keep a second natter off the same data dir; they are the file backend's.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.backend.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.backend.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.backend.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.backend.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.backend.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.backend.query_lock_range(start, end)
    }
}

/// Bytes read and written back at a time by `settle`.
const SETTLE_CHUNK: usize = 1 << 20;

/// After a failed sync (`SYNC_FAILED` in `data_dir`): reads the whole store file and writes it back, then syncs it, so
/// the disk holds what the cache serves; then removes the marker. Before redb opens the file.
pub(super) fn settle(disk: &Disk, data_dir: &Path) -> io::Result<()> {
    let marker = data_dir.join(SYNC_FAILED);
    if !marker.exists() {
        return Ok(());
    }
    tracing::warn!(
        "a sync of the store failed before natter last stopped: writing the whole store back before opening it"
    );
    let backend = disk.open(&Arc::new(AtomicBool::new(false)))?;
    let length = backend.len()?;
    let mut buffer = vec![0; SETTLE_CHUNK];
    let mut offset = 0;
    while offset < length {
        let size = SETTLE_CHUNK.min((length - offset) as usize);
        backend.read(offset, &mut buffer[..size])?;
        backend.write(offset, &buffer[..size])?;
        offset += size as u64;
    }
    backend.sync_data()?;
    backend.close()?;
    std::fs::remove_file(&marker)?;
    sync_directory(data_dir);
    Ok(())
}

/// Leaves `SYNC_FAILED` in `data_dir` (see `settle`); a failure to do so is logged, there is nothing else to try.
pub(super) fn mark_sync_failed(data_dir: &Path) {
    if let Err(error) = File::create(data_dir.join(SYNC_FAILED)) {
        tracing::error!(%error, "cannot leave {SYNC_FAILED} in the data dir");
    }
}

/// Makes a name just created, renamed or removed in `directory` durable. Some file systems refuse to sync a directory;
/// there the file's own sync is all there is.
pub fn sync_directory(directory: &Path) {
    if let Err(error) = File::open(directory).and_then(|directory| directory.sync_all()) {
        tracing::debug!(%error, directory = %directory.display(), "syncing a directory");
    }
}
