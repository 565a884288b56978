//! `/metrics`: Prometheus text for connections, messages, pushes, emails, the store and uptime.
//!
//! Readable from loopback, or from anywhere with `Authorization: Bearer <metrics.token>`: the figures say how busy
//! the owner's chat is, which is nobody else's business.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};

use crate::app::App;
use crate::error::ApiError;
use crate::http::Body;

pub fn render(app: &App, headers: &HeaderMap, ip: IpAddr) -> Result<Response<Body>, ApiError> {
    let token = &app.config.metrics.token;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let allowed = if token.is_empty() {
        ip.is_loopback()
    } else {
        bearer == Some(token.as_str()) || ip.is_loopback()
    };
    if !allowed {
        return Err(ApiError::forbidden(
            "metrics are readable from localhost, or with metrics.token",
        ));
    }
    let counters = &app.counters;
    let hub = &app.hub;
    let stats = app.store.stats();
    let store_bytes = std::fs::metadata(app.store.path()).map_or(0, |metadata| metadata.len());
    let mut text = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(
            text,
            "# HELP natter_{name} {help}\n# TYPE natter_{name} {kind}"
        );
        for (labels, value) in samples {
            let _ = writeln!(text, "natter_{name}{labels} {value}");
        }
    };
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    metric(
        "connections",
        "gauge",
        "Open WebSocket connections by kind.",
        &[
            (
                "{kind=\"visitor\"}",
                hub.open_visitor_sockets.load(Ordering::Relaxed) as u64,
            ),
            (
                "{kind=\"admin\"}",
                hub.open_admin_sockets.load(Ordering::Relaxed) as u64,
            ),
        ],
    );
    metric(
        "messages_total",
        "counter",
        "Messages stored since start, by sender.",
        &[
            ("{sender=\"visitor\"}", load(&counters.messages_visitor)),
            ("{sender=\"admin\"}", load(&counters.messages_admin)),
        ],
    );
    metric(
        "messages_stored",
        "gauge",
        "Messages in the store.",
        &[("", app.store.message_count().unwrap_or(0))],
    );
    metric(
        "conversations_stored",
        "gauge",
        "Conversations in the store.",
        &[("", app.store.conversation_count().unwrap_or(0))],
    );
    metric(
        "store_bytes",
        "gauge",
        "Size of the store file.",
        &[("", store_bytes)],
    );
    metric(
        "store_commits_total",
        "counter",
        "Store commits (write transactions, each a batch of writes).",
        &[("", load(&stats.commits))],
    );
    metric(
        "store_fsyncs_total",
        "counter",
        "fsyncs that made writes durable: of the store's log, and of commits that were checkpoints.",
        &[("", load(&stats.fsyncs))],
    );
    metric(
        "store_writes_total",
        "counter",
        "Writes committed.",
        &[("", load(&stats.writes))],
    );
    metric(
        "store_failed_commits_total",
        "counter",
        "Commits that failed; their writes were not acknowledged.",
        &[("", load(&stats.failed_commits))],
    );
    metric(
        "pushes_total",
        "counter",
        "Web Push requests by result.",
        &[
            ("{result=\"sent\"}", load(&app.push.sent)),
            ("{result=\"failed\"}", load(&app.push.failed)),
        ],
    );
    metric(
        "emails_total",
        "counter",
        "Email attempts by result: sent, failed (for now, retried), dropped (refused for good), throttled.",
        &[
            ("{result=\"sent\"}", load(&app.email.sent)),
            ("{result=\"failed\"}", load(&app.email.failed)),
            ("{result=\"dropped\"}", load(&app.email.dropped)),
            ("{result=\"throttled\"}", load(&app.email.throttled)),
        ],
    );
    metric(
        "emails_queued",
        "gauge",
        "Emails recorded in the store and not yet accepted by the relay.",
        &[("", app.email.queued.load(Ordering::Relaxed) as u64)],
    );
    metric(
        "slow_consumers_kicked_total",
        "counter",
        "Sockets closed because they did not keep up.",
        &[("", load(&hub.kicked))],
    );
    metric(
        "refused_connections_total",
        "counter",
        "Sockets refused by connection limits.",
        &[("", load(&counters.refused_connections))],
    );
    metric(
        "throttled_total",
        "counter",
        "Actions refused by rate limits.",
        &[("", load(&counters.throttled))],
    );
    if app.config.tls.mode == crate::config::TlsMode::Acme {
        let acme = &app.acme;
        metric(
            "tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the certificate served now expires (Unix time; 0 while there is none).",
            &[("", load(&acme.expiry))],
        );
        metric(
            "acme_orders_total",
            "counter",
            "ACME attempts to obtain or renew the certificate, by result.",
            &[
                ("{result=\"success\"}", load(&acme.successes)),
                ("{result=\"failure\"}", load(&acme.failures)),
            ],
        );
        if load(&acme.last_attempt) > 0 {
            metric(
                "acme_last_order_success",
                "gauge",
                "1 when the last ACME attempt obtained a certificate, 0 when it failed (see the log for why).",
                &[("", load(&acme.last_success))],
            );
            metric(
                "acme_last_order_timestamp_seconds",
                "gauge",
                "When the last ACME attempt ended (Unix time).",
                &[("", load(&acme.last_attempt))],
            );
        }
    }
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        &[("", app.started.elapsed().as_secs())],
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::new(Bytes::from(text)))
        .expect("valid response"))
}
