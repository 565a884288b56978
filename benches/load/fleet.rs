//! Many sockets driven open-loop by one sender, and the probe that times what they receive.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use fastwebsockets::{Frame, OpCode, Payload};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::client::{contains, dial_all, histogram, is_ping, sequence_in, Endpoint, Peer};
use crate::PATIENCE;

/// Open-loop latency bookkeeping: when each numbered message was due to be sent, and a histogram of how long after
/// that it arrived (so a stalled sender counts against the server, not for it).
pub struct Probe {
    pub origin: Instant,
    pub due: Vec<AtomicU64>,
    /// Only frames containing this count (natter's admin sees a conversation's first message twice: in `message`
    /// and in the new conversation's summary).
    require: &'static [u8],
    pub histogram: Mutex<Histogram<u64>>,
    pub received: AtomicU64,
}

impl Probe {
    pub fn new(capacity: usize, require: &'static [u8]) -> Probe {
        Probe {
            origin: Instant::now(),
            due: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            require,
            histogram: Mutex::new(histogram()),
            received: AtomicU64::new(0),
        }
    }

    fn record(&self, payload: &[u8]) {
        if !contains(payload, self.require) {
            return;
        }
        let Some(sequence) = sequence_in(payload) else {
            return;
        };
        let Some(due) = self
            .due
            .get(sequence)
            .map(|due| due.load(Ordering::Relaxed))
        else {
            return;
        };
        if due == 0 {
            return;
        }
        let now = self.origin.elapsed().as_nanos() as u64;
        let microseconds = now.saturating_sub(due) / 1000;
        self.histogram
            .lock()
            .expect("not poisoned")
            .saturating_record(microseconds.max(1));
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Many sockets, each split into a reader task (drains frames, feeds the probe) and a writer task (sends what it is
/// given), so one sender can drive all of them open-loop.
pub struct Fleet {
    queues: Vec<mpsc::Sender<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    /// Members that have seen a frame containing `first` (warm-up).
    pub answered: Arc<AtomicUsize>,
    /// Members whose socket closed (for natter's admin: kicked as a slow consumer).
    pub closed: Arc<AtomicUsize>,
}

impl Fleet {
    pub async fn open(
        endpoint: &Endpoint,
        peers: Vec<Peer>,
        probe: Option<Arc<Probe>>,
        first: &'static [u8],
    ) -> anyhow::Result<Fleet> {
        let sockets = dial_all(endpoint, &peers).await?;
        let answered = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut fleet = Fleet {
            queues: Vec::new(),
            readers: Vec::new(),
            writers: Vec::new(),
            answered: answered.clone(),
            closed: closed.clone(),
        };
        for socket in sockets {
            let (mut reader, mut writer) = socket.split(tokio::io::split);
            let (queue, mut outbox) = mpsc::channel::<String>(1024);
            fleet.writers.push(tokio::spawn(async move {
                while let Some(text) = outbox.recv().await {
                    if writer
                        .write_frame(Frame::text(Payload::Owned(text.into_bytes())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = writer.write_frame(Frame::close(1000, b"")).await;
            }));
            let (probe, answered, closed) = (probe.clone(), answered.clone(), closed.clone());
            fleet.readers.push(tokio::spawn(async move {
                let mut seen = false;
                let mut ignore = |_: Frame<'_>| async { Ok::<(), Infallible>(()) };
                while let Ok(frame) = reader.read_frame(&mut ignore).await {
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary => {
                            if let Some(probe) = &probe {
                                probe.record(&frame.payload);
                            }
                            if !seen && contains(&frame.payload, first) && !is_ping(&frame.payload)
                            {
                                seen = true;
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        OpCode::Close => break,
                        _ => {}
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            }));
            fleet.queues.push(queue);
        }
        Ok(fleet)
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Queues a frame for member `index`; false when its queue is full (the server is not taking frames).
    pub fn send(&self, index: usize, text: String) -> bool {
        self.queues[index % self.queues.len()]
            .try_send(text)
            .is_ok()
    }

    pub async fn wait_answered(&self, count: usize, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE * 2;
        while self.answered.load(Ordering::Relaxed) < count {
            if Instant::now() > deadline {
                bail!(
                    "{what}: {} of {count} answered within {:?}",
                    self.answered.load(Ordering::Relaxed),
                    PATIENCE * 2
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    pub async fn close(self) {
        drop(self.queues);
        for writer in self.writers {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        for reader in self.readers {
            reader.abort();
        }
    }
}
