//! Scenario 4, the reconnect storm after a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::{
    contains, dial, next_text, numbered, send, speak, sync_command, visitors, Endpoint, Peer,
};
use crate::echo::EchoServer;
use crate::fleet::Fleet;
use crate::natter::Natter;
use crate::options::Size;
use crate::progress;
use crate::report::{thousands, times, Report};
use crate::PATIENCE;

/// Every visitor in `tokens` (each with one stored message) reconnects as soon as `go` says so, syncs, and checks
/// that its message is in the history. Answers each visitor's time from `go` until its history was back.
async fn storm(
    endpoint: Endpoint,
    tokens: Arc<Vec<String>>,
    echo: bool,
    go: watch::Receiver<Option<Instant>>,
) -> (Vec<Duration>, usize) {
    let mut tasks = JoinSet::new();
    for index in 0..tokens.len() {
        let (endpoint, tokens, mut go) = (endpoint.clone(), tokens.clone(), go.clone());
        tasks.spawn(async move {
            let Ok(started) = go
                .wait_for(Option::is_some)
                .await
                .map(|started| started.expect("some"))
            else {
                return None;
            };
            let peer = if echo {
                Peer::Echo
            } else {
                Peer::Visitor(tokens[index].clone())
            };
            let back = async {
                let mut socket = loop {
                    match tokio::time::timeout(PATIENCE, dial(&endpoint, index, &peer)).await {
                        Ok(Ok(socket)) => break socket,
                        // Refused while natter starts: try again shortly, as the ActionCable client does.
                        _ if started.elapsed() < PATIENCE * 2 => {
                            tokio::time::sleep(Duration::from_millis(25)).await
                        }
                        _ => bail!("could not reconnect"),
                    }
                };
                if echo {
                    send(&mut socket, numbered(index)).await?;
                    next_text(&mut socket).await?;
                } else {
                    send(&mut socket, sync_command()).await?;
                    let mine = numbered(index).into_bytes();
                    loop {
                        let frame = next_text(&mut socket).await?;
                        if contains(&frame, br#""type":"history""#) {
                            if !contains(&frame, &mine) {
                                bail!("the history lacks the visitor's message");
                            }
                            break;
                        }
                    }
                }
                Ok::<_, anyhow::Error>((started.elapsed(), socket))
            };
            match back.await {
                Ok((elapsed, socket)) => Some((elapsed, socket)),
                Err(error) => {
                    progress(&format!("storm: visitor {index}: {error:#}"));
                    None
                }
            }
        });
    }
    let mut times = Vec::new();
    let mut sockets = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some((elapsed, socket))) = joined {
            times.push(elapsed);
            sockets.push(socket);
        }
    }
    let back = times.len();
    drop(sockets);
    (times, back)
}

fn spread(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    let at = |quantile: f64| times[((times.len() - 1) as f64 * quantile).round() as usize];
    (at(0.5), at(0.99), *times.last().expect("not empty"))
}

pub async fn storm_row(
    report: &mut Report,
    size: &Size,
    endpoint: &Endpoint,
    echo: &EchoServer,
    natter: &mut Natter,
) -> anyhow::Result<()> {
    let count = size.storm_visitors;
    progress(&format!("storm: {count} visitors connect and speak once"));
    let peers = visitors(count);
    let tokens: Arc<Vec<String>> = Arc::new(
        peers
            .iter()
            .map(|peer| match peer {
                Peer::Visitor(token) => token.clone(),
                _ => unreachable!("visitors"),
            })
            .collect(),
    );
    let fleet = Fleet::open(endpoint, peers, None, br#""type":"message""#).await?;
    for index in 0..count {
        fleet.send(index, speak(&numbered(index)));
    }
    fleet.wait_answered(count, "storm set-up").await?;
    let (go, going) = watch::channel(None);
    let storming = tokio::spawn(storm(endpoint.clone(), tokens.clone(), false, going));
    progress("storm: SIGTERM to natter, then start it again on the same port and data dir");
    let shutdown = natter.stop().await;
    // Every socket was told `server_restart` and closed; the clients' sockets are now dead.
    let closed = fleet.closed.load(Ordering::Relaxed);
    fleet.close().await;
    let spawned = natter.respawn()?;
    let _ = go.send(Some(spawned));
    let startup = natter.wait_until_serving(spawned).await?;
    let (mut natter_times, back) = storming.await?;
    let (p50, p99, all) = spread(&mut natter_times);

    progress(&format!(
        "storm: {count} sockets to the echo server at once"
    ));
    let (go, going) = watch::channel(None);
    let storming = tokio::spawn(storm(echo.endpoint(), tokens, true, going));
    let _ = go.send(Some(Instant::now()));
    let (mut echo_times, echo_back) = storming.await?;
    let (echo_p50, echo_p99, echo_all) = spread(&mut echo_times);
    let seconds = |duration: Duration| format!("{:.2} s", duration.as_secs_f64());
    report.row(&[
        &format!("Reconnect storm: {} visitors after a restart", thousands(count as f64)),
        &format!(
            "{back}/{count} had their history back {} after the new process started (p50 {}, p99 {}); natter up (/healthz) after {}; SIGTERM drain {} ({closed} sockets told to reconnect)",
            seconds(all),
            seconds(p50),
            seconds(p99),
            seconds(startup.healthy),
            seconds(shutdown)
        ),
        &format!("echo: {echo_back}/{count} connected and echoed in {} (p50 {}, p99 {})", seconds(echo_all), seconds(echo_p50), seconds(echo_p99)),
        &format!("{} (excluding start-up: {})", times(all.as_secs_f64(), echo_all.as_secs_f64()), times((all.saturating_sub(startup.tcp)).as_secs_f64(), echo_all.as_secs_f64())),
        "",
        &size.command(&format!("--scenario storm --storm {count}")),
    ]);
    Ok(())
}
