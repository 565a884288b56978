//! Static figures: binary size, start-up, idle RSS, `widget.js` gzipped.

use std::time::Duration;

use anyhow::bail;

use crate::client::{http, Endpoint};
use crate::natter::{Natter, Startup};
use crate::options::Size;
use crate::report::{megabytes, thousands, Report};
use crate::usage::rss_kib;

pub async fn static_rows(
    report: &mut Report,
    size: &Size,
    natter: &Natter,
    endpoint: &Endpoint,
    startup: &Startup,
) -> anyhow::Result<()> {
    let binary = std::fs::metadata(&natter.binary)?.len();
    report.row(&[
        "Binary size",
        &format!("{:.1} MB", binary as f64 / 1_000_000.0),
        "",
        "",
        "",
        "`ls -l target/release/natter`",
    ]);
    report.row(&[
        "Start-up (spawn → /healthz 200)",
        &format!(
            "{:.0} ms (port open after {:.0} ms)",
            startup.healthy.as_secs_f64() * 1000.0,
            startup.tcp.as_secs_f64() * 1000.0
        ),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(natter.pid()).unwrap_or(0);
    report.row(&[
        "Idle RSS (no sockets)",
        &megabytes(rss),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    let widget = widget_gzipped(endpoint).await?;
    report.row(&[
        "`widget.js` gzipped",
        &format!("{} B", thousands(widget as f64)),
        "",
        "",
        "",
        &size.command("--scenario static"),
    ]);
    Ok(())
}

/// The bytes a browser downloads for the widget loader: natter's own gzip if it sends one, else `gzip -9` of the body.
pub async fn widget_gzipped(endpoint: &Endpoint) -> anyhow::Result<usize> {
    let answer = http(
        endpoint.address,
        "GET",
        "/widget.js",
        &[("accept-encoding", "gzip")],
        None,
    )
    .await?;
    if answer.status != 200 {
        bail!("/widget.js answered {}", answer.status);
    }
    let gzipped = answer
        .headers
        .get("content-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if gzipped {
        return Ok(answer.body.len());
    }
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&answer.body)?;
    Ok(encoder.finish()?.len())
}
