//! The routes an email's links lead to.
//!
//! - `POST /email/continue` with the code as a `text/plain` body (from the widget, on an allowed origin): trades the
//!   continuation code of a visitor's email for a new visitor token of that conversation, `{"token": "<uuid>"}`. The
//!   widget keeps it as its token, so the conversation opens in whatever browser the email was read in. The original
//!   token stays secret (natter only has its hash); the new one is stored as a hash too, and goes when the
//!   conversation is deleted. A plain-text POST is a "simple" cross-origin request (no preflight); the answer is
//!   readable by the allowed origin that asked, without credentials, as `/widget/allowed` is.
//! - `POST /email/unsubscribe?t=...`: RFC 8058 one-click unsubscribe (a mail provider posts
//!   `List-Unsubscribe=One-Click`); no more email about that conversation. `GET` shows a page with the button, because
//!   link scanners follow GET links and must not unsubscribe anyone.

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use uuid::Uuid;

use super::link::Purpose;
use super::{Email, Signer};
use crate::error::ApiError;
use crate::http::{body_bytes, json_response, Body};
use crate::store::{hash_token, hex, Recipient};
use crate::timestamp;

/// Visitor tokens one conversation's links may hand out (a phone, a laptop, a work computer, a few spares).
const MAX_ALIASES: usize = 20;

pub async fn continue_conversation(
    email: &Email,
    request: &mut Request<Incoming>,
    ip: IpAddr,
    origin: Option<HeaderValue>,
) -> Result<Response<Body>, ApiError> {
    let Some(origin) = origin else {
        return Err(ApiError::forbidden(
            "the link opens the chat only on a site in widget.allowed_origins",
        ));
    };
    if let Err(wait) = email.continues.take(&ip) {
        return Err(ApiError::throttled(format!(
            "too many links opened from your address; try again in {} minutes",
            wait.as_secs() / 60 + 1
        )));
    }
    let body = body_bytes(request).await?;
    let code = std::str::from_utf8(&body).unwrap_or_default().trim();
    let conversation_id = signer(email)?
        .verify(code, Purpose::Continue, now_seconds())
        .ok_or_else(|| {
            ApiError::forbidden(
                "this link is not valid any more; links in emails work for email.link_days days",
            )
        })?;
    let _records = email.records.lock().await;
    if email.store.conversation(conversation_id)?.is_none() {
        return Err(ApiError::not_found("this conversation was deleted"));
    }
    let mut state = email.record(&email.store, conversation_id)?;
    if state.aliases.len() >= MAX_ALIASES {
        return Err(ApiError::throttled(
            "this conversation was opened from too many browsers; continue in one of them",
        ));
    }
    let token = Uuid::new_v4().hyphenated().to_string();
    let token_hash = hash_token(&token);
    // The alias first: if natter stops in between, the token works and is only missing from the list deleted with
    // the conversation (an alias of a deleted conversation opens nothing).
    email.store.put_alias(&token_hash, conversation_id).await?;
    state.aliases.push(hex(&token_hash));
    email.store.put_email_state(conversation_id, &state).await?;
    let mut response = json_response(StatusCode::OK, &json!({ "token": token }));
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    Ok(response)
}

pub async fn unsubscribe(
    email: &Email,
    request: &Request<Incoming>,
    confirm: bool,
) -> Result<Response<Body>, ApiError> {
    let token = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "t")
        .map(|(_, value)| value)
        .unwrap_or_default();
    let conversation_id = signer(email)?
        .verify(token, Purpose::Unsubscribe, now_seconds())
        .ok_or_else(|| ApiError::not_found("this unsubscribe link is not valid"))?;
    if !confirm {
        return Ok(page(
            "Stop email about this conversation?",
            "<form method=\"post\"><button type=\"submit\">Stop email about this conversation</button></form>",
        ));
    }
    let _records = email.records.lock().await;
    if email.store.conversation(conversation_id)?.is_some() {
        let mut state = email.record(&email.store, conversation_id)?;
        let before = state.outbox.len();
        state.unsubscribed = true;
        state
            .outbox
            .retain(|queued| queued.recipient != Recipient::Visitor);
        email.queued.fetch_sub(
            before - state.outbox.len(),
            std::sync::atomic::Ordering::Relaxed,
        );
        email.store.put_email_state(conversation_id, &state).await?;
        tracing::info!(%conversation_id, "a visitor unsubscribed from email");
    }
    Ok(page(
        "Unsubscribed",
        "<p>You will get no more email about this conversation. The chat itself still works.</p>",
    ))
}

fn signer(email: &Email) -> Result<&Signer, ApiError> {
    email
        .signer
        .as_ref()
        .ok_or_else(|| ApiError::not_found("email is off on this server"))
}

fn now_seconds() -> u64 {
    (timestamp::now_millis() / 1000).max(0) as u64
}

/// A small page of natter's own (the content is fixed text, never data).
fn page(title: &str, content: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{title}</title></head><body><h1>{title}</h1>{content}</body></html>"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_SECURITY_POLICY,
            crate::assets::CONTENT_SECURITY_POLICY,
        )
        .header("x-content-type-options", "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Body::new(Bytes::from(html)))
        .expect("valid response")
}
