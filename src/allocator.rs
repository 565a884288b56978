//! Giving freed memory back to the system after a burst of connections.
//!
//! glibc's allocator returns freed memory to the system only from the top of each heap. After a burst (500 logins or
//! 500 page loads at once from as many addresses) the connections' buffers are freed, but whatever outlived the burst
//! and was allocated during it (a throttle entry per address, a grown map) sits above them, so the process stays
//! several MB above idle for as long as it runs. On a Raspberry Pi that is memory the next burst cannot use.
//! `malloc_trim(0)` walks every heap and hands whole free pages back (`madvise`), which brings RSS back to within a
//! fraction of a MB of idle. It locks each arena while it walks, so it runs only once a burst is over, on a blocking
//! thread, and never more often than `CHECK_EVERY`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often the connection counts are looked at: a burst's memory is back within about this long after it ends.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A burst is this many connections closed since the last trim. Steady traffic of a blog's chat closes far fewer per
/// quarter second, so natter does not walk its heaps all the time.
const BURST: usize = 64;
/// ... and it is over when no more than this many connections are still open.
const SETTLED: usize = 8;

/// Connections opened and closed, as the listener counts them.
#[derive(Default)]
pub struct Connections {
    open: AtomicUsize,
    closed: AtomicUsize,
}

impl Connections {
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Until shutdown: once a burst of connections is over, gives the memory it freed back to the system.
pub async fn trim_after_bursts(connections: Arc<Connections>, mut shutdown: watch::Receiver<bool>) {
    let mut closed_at_last_trim = 0;
    let mut interval = tokio::time::interval(CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let closed = connections.closed.load(Ordering::Relaxed);
        if closed.wrapping_sub(closed_at_last_trim) >= BURST && connections.open() <= SETTLED {
            closed_at_last_trim = closed;
            let _ = tokio::task::spawn_blocking(give_back).await;
        }
    }
}

/// Hands the pages glibc holds free back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn give_back() {
    // SAFETY: `malloc_trim` takes no pointer and touches only the allocator's own state, under the allocator's locks;
    // it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, for one) return freed memory themselves, or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}
