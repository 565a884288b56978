//! Scenario 1, idle capacity: thousands of subscribed sockets, their memory and the CPU their pings cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::client::{dial, wait_for_no_sockets, Endpoint, Peer, DIAL_CONCURRENCY};
use crate::echo::EchoServer;
use crate::options::Size;
use crate::progress;
use crate::report::{megabytes, thousands, times, verdict, Report};
use crate::usage::{rss_kib, CpuMeter};
use crate::PATIENCE;

struct IdleRun {
    sockets: usize,
    connected: usize,
    answered: usize,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    cpu: Option<f64>,
}

impl IdleRun {
    fn per_socket_kib(&self) -> Option<f64> {
        Some((self.rss_after? as f64 - self.rss_before? as f64) / self.connected.max(1) as f64)
    }
}

/// Opens `count` sockets, subscribes them (natter), waits, measures the server's RSS and CPU, then checks that every
/// socket still answers a WebSocket ping.
async fn idle_run(
    endpoint: &Endpoint,
    echo: bool,
    count: usize,
    pid: Option<u32>,
) -> anyhow::Result<IdleRun> {
    let rss_before = pid.and_then(rss_kib);
    let (phase, phases) = watch::channel(0u8);
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let checked = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for index in 0..count {
        let peer = if echo {
            Peer::Echo
        } else {
            Peer::Visitor(uuid::Uuid::new_v4().to_string())
        };
        let (endpoint, permits, mut phases) = (endpoint.clone(), permits.clone(), phases.clone());
        let (connected, failed, answered, checked) = (
            connected.clone(),
            failed.clone(),
            answered.clone(),
            checked.clone(),
        );
        tasks.spawn(async move {
            let permit = permits.acquire_owned().await.expect("never closed");
            let dialed = tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer)).await;
            drop(permit);
            let mut socket = match dialed {
                Ok(Ok(socket)) => socket,
                Ok(Err(error)) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        progress(&format!("a socket did not open: {error:#}"));
                    }
                    return;
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let _ = phases.wait_for(|phase| *phase >= 1).await;
            let pinged = tokio::time::timeout(PATIENCE, async {
                socket
                    .write_frame(Frame::new(
                        true,
                        OpCode::Ping,
                        None,
                        Payload::Borrowed(b"still there?"),
                    ))
                    .await?;
                loop {
                    if socket.read_frame().await?.opcode == OpCode::Pong {
                        return Ok::<(), WebSocketError>(());
                    }
                }
            })
            .await;
            if matches!(pinged, Ok(Ok(()))) {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            checked.fetch_add(1, Ordering::Relaxed);
            let _ = phases.wait_for(|phase| *phase >= 2).await;
            let _ = socket.write_frame(Frame::close(1000, b"")).await;
        });
    }
    let deadline = started + PATIENCE + Duration::from_millis(count as u64 * 5);
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < count
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected_count = connected.load(Ordering::Relaxed);
    progress(&format!(
        "{connected_count} of {count} sockets open after {:.1} s; settling",
        started.elapsed().as_secs_f64()
    ));
    // Let the server finish what connecting started (subscriptions, first pings), then measure a quiet stretch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = CpuMeter::start(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = pid.and_then(rss_kib);
    let cpu = cpu.percent();
    let _ = phase.send(1);
    let deadline = Instant::now() + PATIENCE + Duration::from_secs(5);
    while checked.load(Ordering::Relaxed) < connected_count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = phase.send(2);
    while tasks.join_next().await.is_some() {}
    Ok(IdleRun {
        sockets: count,
        connected: connected_count,
        answered: answered.load(Ordering::Relaxed),
        rss_before,
        rss_after,
        cpu,
    })
}

pub async fn idle_row(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let count = size.idle_sockets;
    progress(&format!("idle: {count} visitor sockets to natter"));
    let natter = idle_run(endpoint, false, count, pid).await?;
    wait_for_no_sockets(endpoint).await;
    progress(&format!("idle: {count} sockets to the echo server"));
    let ceiling = idle_run(&echo.endpoint(), true, count, Some(echo.pid())).await?;
    let natter_per = natter.per_socket_kib();
    let ceiling_per = ceiling.per_socket_kib();
    let natter_cell = format!(
        "{}/{} subscribed, {}/{} answered a ping; RSS {} ({}/socket){}",
        natter.connected,
        natter.sockets,
        natter.answered,
        natter.connected,
        natter.rss_after.map_or_else(|| "–".into(), megabytes),
        natter_per.map_or_else(|| "–".into(), |kib| format!("{:.1} KB", kib * 1.024)),
        natter
            .cpu
            .map_or_else(String::new, |cpu| format!("; {cpu:.1}% CPU idle (pings)")),
    );
    let ceiling_cell = format!(
        "echo: RSS {} ({}/socket), {}/{} answered",
        ceiling.rss_after.map_or_else(|| "–".into(), megabytes),
        ceiling_per.map_or_else(|| "–".into(), |kib| format!("{:.1} KB", kib * 1.024)),
        ceiling.answered,
        ceiling.connected,
    );
    let ratio = match (natter_per, ceiling_per) {
        (Some(natter), Some(ceiling)) => format!("{} per socket", times(natter, ceiling)),
        _ => "–".into(),
    };
    // The target is for 10,000 sockets; other sizes are projected from the per-socket figure.
    let projected = match (natter.rss_before, natter_per) {
        (Some(before), Some(per)) => Some(before as f64 + per * 10_000.0),
        _ => None,
    };
    let target = match projected {
        Some(kib) => format!(
            "10k sockets < 100 MB: {} ({})",
            verdict(kib * 1024.0 < 100e6 && natter.answered == natter.sockets),
            if count == 10_000 {
                "measured".to_string()
            } else {
                format!("projected {}", megabytes(kib as u64))
            }
        ),
        None => String::new(),
    };
    report.row(&[
        &format!("Idle: {} visitor sockets", thousands(count as f64)),
        &natter_cell,
        &ceiling_cell,
        &ratio,
        &target,
        &size.command(&format!("--scenario idle --sockets {count}")),
    ]);
    Ok(())
}
