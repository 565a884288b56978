//! Scenario 2, visitor → admin latency at fixed open-loop rates.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{
    histogram, login, numbered, speak, visitors, wait_for_no_sockets, Endpoint, Peer,
};
use crate::echo::EchoServer;
use crate::fleet::{Fleet, Probe};
use crate::options::Size;
use crate::progress;
use crate::redb_ceiling::redb_ceiling;
use crate::report::{milliseconds, thousands, times, verdict, Report};
use crate::usage::CpuMeter;

struct LatencyRun {
    sent: u64,
    received: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    cpu: Option<f64>,
}

/// Sends numbered messages round-robin over the fleet at `rate` per second for `window`, open loop (each at its due
/// time, whether or not earlier ones were answered), and waits for the probe to see them.
async fn open_loop(
    fleet: &Fleet,
    probe: &Probe,
    first_sequence: usize,
    rate: u64,
    window: Duration,
    pid: Option<u32>,
) -> LatencyRun {
    let total = (rate as f64 * window.as_secs_f64()) as usize;
    let received_before = probe.received.load(Ordering::Relaxed);
    let cpu = CpuMeter::start(pid);
    let start = Instant::now() + Duration::from_millis(20);
    let interval = 1.0 / rate as f64;
    let mut refused = 0;
    for index in 0..total {
        let due = start + Duration::from_secs_f64(index as f64 * interval);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let sequence = first_sequence + index;
        probe.due[sequence].store(
            due.duration_since(probe.origin).as_nanos() as u64,
            Ordering::Relaxed,
        );
        if !fleet.send(index, speak(&numbered(sequence))) {
            refused += 1;
        }
    }
    let cpu = cpu.percent();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.received.load(Ordering::Relaxed) - received_before < (total - refused) as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let histogram = std::mem::replace(
        &mut *probe.histogram.lock().expect("not poisoned"),
        histogram(),
    );
    LatencyRun {
        sent: total as u64,
        received: probe.received.load(Ordering::Relaxed) - received_before,
        p50: histogram.value_at_quantile(0.50),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
        cpu,
    }
}

pub async fn latency_rows(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    password: &str,
    pid: Option<u32>,
    workspace: &Path,
) -> anyhow::Result<()> {
    let count = size.latency_visitors;
    let capacity: usize = size
        .rates
        .iter()
        .map(|rate| (*rate as f64 * size.latency_window(*rate).as_secs_f64()) as usize + 1)
        .sum();

    progress(&format!(
        "latency: {count} visitors and the admin connect; each visitor speaks once"
    ));
    let cookie = login(endpoint, password).await?;
    let probe = Arc::new(Probe::new(capacity, br#""type":"message""#));
    let open_admin = || {
        Fleet::open(
            endpoint,
            vec![Peer::Admin(cookie.clone())],
            Some(probe.clone()),
            b"",
        )
    };
    let mut admin = open_admin().await?;
    let fleet = Fleet::open(endpoint, visitors(count), None, br#""type":"message""#).await?;
    for index in 0..fleet.len() {
        fleet.send(
            index,
            speak("warming up: this visitor's conversation starts here"),
        );
        // Paced at about 1,000 per second: a burst of more than ~500 messages committed together overflows natter's
        // admin queue (two admin frames per message), and the admin would be kicked before the measurement starts.
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fleet.wait_answered(count, "warm-up").await?;
    if admin.closed.load(Ordering::Relaxed) > 0 {
        progress("latency: the admin was kicked during the warm-up; reconnecting it");
        admin.close().await;
        admin = open_admin().await?;
    }
    let mut natter_runs = Vec::new();
    let mut sequence = 0;
    for &rate in &size.rates {
        let window = size.latency_window(rate);
        progress(&format!("latency: natter at {rate} msg/s for {window:?}"));
        let run = open_loop(&fleet, &probe, sequence, rate, window, pid).await;
        sequence += (rate as f64 * window.as_secs_f64()) as usize + 1;
        // A kicked admin (too slow a consumer for natter's queue) misses everything after: say so, and reconnect
        // for the next rate.
        let kicked = admin.closed.load(Ordering::Relaxed) > 0;
        if kicked {
            admin.close().await;
            admin = open_admin().await?;
        }
        natter_runs.push((run, kicked));
    }
    fleet.close().await;
    admin.close().await;
    wait_for_no_sockets(endpoint).await;

    progress(&format!("latency: {count} sockets to the echo server"));
    let echo_probe = Arc::new(Probe::new(capacity, b""));
    let echoes = Fleet::open(
        &echo.endpoint(),
        vec![Peer::Echo; count],
        Some(echo_probe.clone()),
        b"",
    )
    .await?;
    for index in 0..echoes.len() {
        echoes.send(index, speak("warming up"));
    }
    echoes.wait_answered(count, "echo warm-up").await?;
    let mut sequence = 0;
    for (&rate, (natter, admin_kicked)) in size.rates.iter().zip(&natter_runs) {
        let window = size.latency_window(rate);
        progress(&format!("latency: echo at {rate} msg/s for {window:?}"));
        let ceiling = open_loop(&echoes, &echo_probe, sequence, rate, window, None).await;
        sequence += (rate as f64 * window.as_secs_f64()) as usize + 1;
        let lost = natter.sent - natter.received;
        let natter_cell = format!(
            "p50 {} · p99 {} · p99.9 {} · max {} ms{}{}{}",
            milliseconds(natter.p50),
            milliseconds(natter.p99),
            milliseconds(natter.p999),
            milliseconds(natter.max),
            if lost > 0 {
                format!("; **{lost} of {} not received**", natter.sent)
            } else {
                String::new()
            },
            if *admin_kicked {
                "; admin kicked as slow consumer"
            } else {
                ""
            },
            natter
                .cpu
                .map_or_else(String::new, |cpu| format!("; server CPU {cpu:.0}%")),
        );
        // natter tells nobody before the fsync, so its floor is a socket round trip plus one commit.
        let directory = workspace.to_path_buf();
        let (_, commits) = tokio::task::spawn_blocking(move || {
            redb_ceiling(&directory, 1, Duration::from_secs(1))
        })
        .await??;
        let floor = |echo: u64, quantile: f64| echo + commits.value_at_quantile(quantile);
        let floor_p99 = floor(ceiling.p99, 0.99);
        let ceiling_cell = format!(
            "echo round trip p50 {} · p99 {} · p99.9 {} ms + one redb commit p50 {} · p99 {} · p99.9 {} ms = floor p99 {} ms",
            milliseconds(ceiling.p50),
            milliseconds(ceiling.p99),
            milliseconds(ceiling.p999),
            milliseconds(commits.value_at_quantile(0.5)),
            milliseconds(commits.value_at_quantile(0.99)),
            milliseconds(commits.value_at_quantile(0.999)),
            milliseconds(floor_p99),
        );
        let target = if rate == 1_000 {
            format!(
                "p99 < 5 ms, ≤ 2x floor: {}",
                verdict(natter.p99 < 5_000 && lost == 0 && natter.p99 <= 2 * floor_p99.max(1))
            )
        } else {
            String::new()
        };
        report.row(&[
            &format!(
                "Visitor → admin, {} msg/s, {} visitors",
                thousands(rate as f64),
                thousands(count as f64)
            ),
            &natter_cell,
            &ceiling_cell,
            &format!("{} at p99", times(natter.p99 as f64, floor_p99 as f64)),
            &target,
            &size.command(&format!("--scenario latency --rates {rate}")),
        ]);
    }
    echoes.close().await;
    Ok(())
}
