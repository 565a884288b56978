//! Scenario 3, persisted throughput: natter against its ceilings, in interleaved rounds.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::client::{login, wait_for_no_sockets, Endpoint, Peer};
use crate::closed_loop::{closed_loop, ThroughputRun};
use crate::echo::EchoServer;
use crate::fleet::Fleet;
use crate::options::Size;
use crate::progress;
use crate::redb_ceiling::redb_ceiling;
use crate::report::{milliseconds, thousands, verdict, Report};

/// One round of the throughput scenario: natter, then its ceilings, a few seconds apart.
struct Round {
    natter: ThroughputRun,
    echo: ThroughputRun,
    /// The echo server committing each frame to redb before echoing it.
    durable_echo: ThroughputRun,
    /// Raw redb commits in batches of the same size, messages per second.
    storage: f64,
}

impl Round {
    /// How many times faster than natter the durable echo was in this round: natter's ceiling for persisted
    /// throughput, as it pays for a socket and a durable write per message, like natter, and for nothing else.
    fn ratio(&self) -> f64 {
        self.durable_echo.per_second / self.natter.per_second.max(1e-9)
    }

    /// The same against the lower of the two single ceilings (the bare echo, raw redb), which each pay for only half
    /// of that.
    fn single_ratio(&self) -> f64 {
        self.storage.min(self.echo.per_second) / self.natter.per_second.max(1e-9)
    }
}

/// The round whose `key` is the median (the lower middle one of an even count).
fn median_by(rounds: &[Round], key: impl Fn(&Round) -> f64) -> &Round {
    let mut sorted: Vec<&Round> = rounds.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[(sorted.len() - 1) / 2]
}

/// The lowest and highest of several values; `None` for fewer than two.
fn range(values: &[f64]) -> Option<(f64, f64)> {
    (values.len() > 1).then(|| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(sorted.len() - 1) / 2]
}

pub async fn throughput_rows(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    password: Option<&str>,
    pid: Option<u32>,
    workspace: &Path,
) -> anyhow::Result<()> {
    let durable_echo = EchoServer::start(Some(&workspace.join("durable-echo.redb")))?;
    // The owner's dashboard is open, as it would be: every message also fans out to it.
    let cookie = match password {
        Some(password) => Some(login(endpoint, password).await?),
        None => None,
    };
    let open_admin =
        |cookie: &String| Fleet::open(endpoint, vec![Peer::Admin(cookie.clone())], None, b"");
    let mut admin = match &cookie {
        Some(cookie) => Some(open_admin(cookie).await?),
        None => None,
    };
    for &senders in &size.senders {
        // This machine's speed drifts from one minute to the next (the echo ceiling alone has measured 75k-118k msg/s
        // in consecutive runs), so one natter window against one echo window says little. natter, echo and redb run
        // in turns, several rounds; each round's ratio compares runs seconds apart, and the row shows the medians.
        let mut rounds = Vec::with_capacity(size.throughput_rounds);
        let mut admin_kicked = false;
        for round in 1..=size.throughput_rounds {
            progress(&format!(
                "throughput: {senders} natter senders for {:?} (round {round} of {})",
                size.throughput_window, size.throughput_rounds
            ));
            let natter = closed_loop(endpoint, false, senders, size.throughput_window, pid).await?;
            // A burst of acknowledgements larger than natter's admin queue kicks the dashboard: say so, reconnect it.
            if let (Some(fleet), Some(cookie)) = (admin.take(), &cookie) {
                if fleet.closed.load(Ordering::Relaxed) > 0 {
                    admin_kicked = true;
                    fleet.close().await;
                    admin = Some(open_admin(cookie).await?);
                } else {
                    admin = Some(fleet);
                }
            }
            wait_for_no_sockets(endpoint).await;
            progress(&format!(
                "throughput: {senders} echo senders, durable echo senders, then redb in batches of {senders} (round {round})"
            ));
            let echo_run = echo.closed_loop(senders, size.throughput_window).await?;
            let durable_echo_run = durable_echo
                .closed_loop(senders, size.throughput_window)
                .await?;
            let directory = workspace.to_path_buf();
            let window = size.redb_window;
            let storage = tokio::task::spawn_blocking(move || {
                redb_ceiling(&directory, senders, window).map(|(rate, _)| rate)
            })
            .await??;
            rounds.push(Round {
                natter,
                echo: echo_run,
                durable_echo: durable_echo_run,
                storage,
            });
        }
        let natter = median_by(&rounds, |round| round.natter.per_second);
        let socket_ceiling = median_by(&rounds, |round| round.echo.per_second);
        let durable_ceiling = median_by(&rounds, |round| round.durable_echo.per_second);
        let storage_ceiling = median_by(&rounds, |round| round.storage).storage;
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
        let ratio = median(&ratios);
        let single_ratios: Vec<f64> = rounds.iter().map(Round::single_ratio).collect();
        let spread = |rate: fn(&Round) -> f64| {
            let rates: Vec<f64> = rounds.iter().map(rate).collect();
            match range(&rates) {
                Some((low, high)) => format!(", rounds {}–{}", thousands(low), thousands(high)),
                None => String::new(),
            }
        };
        let natter_cell = format!(
            "{} msg/s acked{} (ack p50 {} · p99 {} ms){}{}{}{}{}",
            thousands(natter.natter.per_second),
            spread(|round| round.natter.per_second),
            milliseconds(natter.natter.p50),
            milliseconds(natter.natter.p99),
            natter
                .natter
                .fsyncs_per_message
                .map_or_else(String::new, |fsyncs| format!("; {fsyncs:.3} fsyncs/msg")),
            match rounds.iter().map(|round| round.natter.errors).sum::<u64>() {
                0 => String::new(),
                errors => format!("; **{errors} errors**"),
            },
            natter
                .natter
                .cpu
                .map_or_else(String::new, |cpu| format!("; server CPU {cpu:.0}%")),
            match natter.natter.cpu_per_message("natter") {
                text if text.is_empty() => text,
                text => format!("; {text}"),
            },
            if admin_kicked {
                "; admin dashboard kicked as a slow consumer"
            } else {
                ""
            },
        );
        let ceiling_cell = format!(
            "durable echo: {} msg/s{} (ack p50 {} · p99 {} ms; {}); echo: {} msg/s{} ({}); redb batches of {senders}: {} msg/s",
            thousands(durable_ceiling.durable_echo.per_second),
            spread(|round| round.durable_echo.per_second),
            milliseconds(durable_ceiling.durable_echo.p50),
            milliseconds(durable_ceiling.durable_echo.p99),
            durable_ceiling.durable_echo.cpu_per_message("server"),
            thousands(socket_ceiling.echo.per_second),
            spread(|round| round.echo.per_second),
            socket_ceiling.echo.cpu_per_message("echo server"),
            thousands(storage_ceiling),
        );
        let rounds_of = |ratios: &[f64]| match range(ratios) {
            Some((low, high)) => format!(" (rounds {low:.1}x–{high:.1}x)"),
            None => String::new(),
        };
        let ratio_cell = format!(
            "{ratio:.1}x of the durable echo{}; {:.1}x of the lower of echo and redb{} (medians of {} rounds)",
            rounds_of(&ratios),
            median(&single_ratios),
            rounds_of(&single_ratios),
            rounds.len(),
        );
        let target = if senders == 100 {
            format!(
                "≥ 20,000 msg/s, ≤ 2x ceiling: {}",
                verdict(natter.natter.per_second >= 20_000.0 && ratio <= 2.0)
            )
        } else {
            String::new()
        };
        report.row(&[
            &format!(
                "Persisted throughput, {} sender{}",
                thousands(senders as f64),
                if senders == 1 { "" } else { "s" }
            ),
            &natter_cell,
            &ceiling_cell,
            &ratio_cell,
            &target,
            &size.command(&format!("--scenario throughput --senders {senders}")),
        ]);
    }
    if let Some(admin) = admin {
        admin.close().await;
    }
    Ok(())
}
