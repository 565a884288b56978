//! Scenario 5, a burst of logins (issue 15): 500 wrong passwords sent at once from 500 loopback addresses, so no
//! per-address throttle answers for natter. Each login is an argon2 computation of 19 MiB; the figures are natter's
//! resident memory before, at its peak during the burst, and a moment after, and whether the right password still
//! logs in once the burst is over.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinSet;

use crate::client::{login_attempt, Endpoint};
use crate::natter::ADMIN_PASSWORD;
use crate::progress;
use crate::report::{megabytes, verdict, Report};
use crate::usage::rss_kib;

const LOGINS: usize = 500;
/// The targets: the peak stays under this, and the memory comes back to within `BACK_WITHIN` of idle.
const PEAK_TARGET_KIB: u64 = 64 * 1_000_000 / 1024;
const BACK_WITHIN_KIB: u64 = 5 * 1_000_000 / 1024;
/// How long after the last answer the memory is read again: glibc gives memory back at `free`, not later.
const SETTLE: Duration = Duration::from_secs(1);

/// The `index`th of 500 loopback addresses, 127.1.0.1 onwards (127.0.0.0/8 is all loopback on Linux).
fn source(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        (index / 250) as u8,
        (index % 250 + 1) as u8,
    ))
}

pub async fn login_burst_row(
    report: &mut Report,
    endpoint: &Endpoint,
    pid: u32,
) -> anyhow::Result<()> {
    progress(&format!(
        "login burst: {LOGINS} wrong passwords at once from {LOGINS} addresses"
    ));
    let idle = rss_kib(pid).unwrap_or(0);
    // Read the memory every few milliseconds while the burst lasts; the highest reading is the peak.
    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut logins = JoinSet::new();
    for index in 0..LOGINS {
        let endpoint = endpoint.clone();
        logins.spawn(async move {
            login_attempt(&endpoint, Some(source(index)), "not the password")
                .await
                .map(|answer| answer.status)
        });
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(answer) = logins.join_next().await {
        let status = match answer? {
            Ok(status) => status.to_string(),
            Err(error) => format!("no answer ({error:#})"),
        };
        *statuses.entry(status).or_default() += 1;
    }
    tokio::time::sleep(SETTLE).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let after = rss_kib(pid).unwrap_or(0);
    let peak = peak.load(Ordering::Relaxed).max(after);
    let right = login_attempt(endpoint, Some(source(LOGINS)), ADMIN_PASSWORD).await?;
    if right.status != 200 {
        bail!(
            "after the burst the right password was answered {}",
            right.status
        );
    }
    let answers = statuses
        .iter()
        .map(|(status, count)| format!("{count} × {status}"))
        .collect::<Vec<_>>()
        .join(", ");
    let met = peak < PEAK_TARGET_KIB && after < idle + BACK_WITHIN_KIB;
    report.row(&[
        &format!("Login burst: {LOGINS} wrong passwords at once from {LOGINS} addresses"),
        &format!(
            "peak {} (idle {}), {} {} s after the last answer; answered {answers}; the right password then: 200",
            megabytes(peak),
            megabytes(idle),
            megabytes(after),
            SETTLE.as_secs()
        ),
        "",
        "",
        &format!("peak < 64 MB, back within 5 MB of idle: {}", verdict(met)),
        "`cargo bench --bench load -- --scenario logins`",
    ]);
    Ok(())
}
