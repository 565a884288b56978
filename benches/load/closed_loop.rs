//! Closed-loop senders: each sends a message and waits for its acknowledgement before the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

use crate::client::{
    contains, dial, histogram, metrics, next_text, numbered, send, speak, Endpoint, Peer,
    DIAL_CONCURRENCY,
};
use crate::progress;
use crate::usage::CpuMeter;
use crate::PATIENCE;

pub struct ThroughputRun {
    pub errors: u64,
    pub per_second: f64,
    pub p50: u64,
    pub p99: u64,
    pub fsyncs_per_message: Option<f64>,
    /// The server's CPU use (natter or the echo server), as a percentage of one core.
    pub cpu: Option<f64>,
    /// The load generator's own CPU use: on a shared machine, what the server could not have.
    generator_cpu: Option<f64>,
}

impl ThroughputRun {
    /// CPU microseconds per acknowledged message, from a CPU percentage of the same run.
    fn per_message(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.per_second > 0.0)
            .map(|cpu| cpu / 100.0 / self.per_second * 1e6)
    }

    /// `server 44 µs, load generator 17 µs` per message, or what of it was measured.
    pub fn cpu_per_message(&self, server: &str) -> String {
        let parts: Vec<String> = [
            (server, self.per_message(self.cpu)),
            ("load generator", self.per_message(self.generator_cpu)),
        ]
        .into_iter()
        .filter_map(|(who, micros)| micros.map(|micros| format!("{who} {micros:.0} µs")))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("CPU per message: {}", parts.join(", "))
        }
    }
}

/// `senders` sockets each send a message and wait for its acknowledgement (natter: the visitor's own `message` echo,
/// which comes only after the fsync'd commit; echo server: the echo), then send the next, for `window`.
pub async fn closed_loop(
    endpoint: &Endpoint,
    echo: bool,
    senders: usize,
    window: Duration,
    pid: Option<u32>,
) -> anyhow::Result<ThroughputRun> {
    let barrier = Arc::new(Barrier::new(senders + 1));
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let acknowledgement: &'static [u8] = if echo { b"" } else { br#""type":"message""# };
    for index in 0..senders {
        let (endpoint, barrier, permits) = (endpoint.clone(), barrier.clone(), permits.clone());
        let peer = if echo {
            Peer::Echo
        } else {
            Peer::Visitor(uuid::Uuid::new_v4().to_string())
        };
        tasks.spawn(async move {
            // The first message opens the conversation, which is not what is measured.
            let ready = async {
                let permit = permits.acquire_owned().await.expect("never closed");
                let mut socket = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer))
                    .await
                    .map_err(|_| anyhow!("handshake timed out"))??;
                drop(permit);
                send(&mut socket, speak("warming up")).await?;
                while !contains(&next_text(&mut socket).await?, acknowledgement) {}
                Ok::<_, anyhow::Error>(socket)
            }
            .await;
            barrier.wait().await;
            let mut socket = ready?;
            let mut latencies = histogram();
            let (mut acknowledged, mut errors) = (0u64, 0u64);
            let deadline = Instant::now() + window;
            let mut last = Instant::now();
            let mut sequence = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                send(&mut socket, speak(&numbered(sequence))).await?;
                sequence += 1;
                loop {
                    let frame = next_text(&mut socket).await?;
                    if contains(&frame, br#""type":"error""#) {
                        errors += 1;
                        break;
                    }
                    if contains(&frame, acknowledgement) {
                        acknowledged += 1;
                        break;
                    }
                }
                last = Instant::now();
                latencies.saturating_record((last - sent).as_micros() as u64);
            }
            Ok::<_, anyhow::Error>((acknowledged, errors, latencies, last))
        });
    }
    barrier.wait().await;
    let before = if echo {
        None
    } else {
        metrics(endpoint.address).await.ok()
    };
    let started = Instant::now();
    let cpu = CpuMeter::start(pid);
    let generator = CpuMeter::start(Some(std::process::id()));
    let mut latencies = histogram();
    let (mut acknowledged, mut errors) = (0, 0);
    let mut last = started;
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((count, error_count, histogram, finished)) => {
                acknowledged += count;
                errors += error_count;
                latencies.add(&histogram).expect("same bounds");
                last = last.max(finished);
            }
            Err(error) => {
                if failures == 0 {
                    progress(&format!("a sender failed: {error:#}"));
                }
                failures += 1;
            }
        }
    }
    let cpu = cpu.percent();
    let generator_cpu = generator.percent();
    if failures > 0 {
        bail!("{failures} of {senders} senders failed");
    }
    let after = if echo {
        None
    } else {
        metrics(endpoint.address).await.ok()
    };
    let fsyncs_per_message = match (before, after) {
        (Some(before), Some(after)) => {
            let delta = |name: &str| {
                after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
            };
            let writes = delta("natter_store_writes_total");
            // A natter from before the write-ahead log has no such counter: no figure rather than a false 0.
            (writes > 0.0 && after.contains_key("natter_store_fsyncs_total"))
                .then(|| delta("natter_store_fsyncs_total") / writes)
        }
        _ => None,
    };
    Ok(ThroughputRun {
        errors,
        per_second: acknowledged as f64 / (last - started).as_secs_f64().max(1e-9),
        p50: latencies.value_at_quantile(0.5),
        p99: latencies.value_at_quantile(0.99),
        fsyncs_per_message,
        cpu,
        generator_cpu,
    })
}
