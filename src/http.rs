//! HTTP's vocabulary, at the bottom of the house: the one body type, JSON answers and bodies, the error catalog's
//! HTTP form, and the guards the admin routes share (a same-origin request, a live session).
//!
//! The routing table and the nouns' handlers (`push`, `assets`, `metrics`, the conversations) speak it. It knows
//! none of them, nor `App`: each guard takes just what it checks, and only the admin guard looks below, at `auth`'s
//! sessions. Callers import its items (`use crate::http::{json_response, Body}`), never the module, so that `http::`
//! keeps naming the http crate.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::auth::Auth;
use crate::config::Origin;
use crate::error::ApiError;
use crate::store::{Session, Store, TokenHash};

/// Every answer natter builds is one buffer: JSON, an embedded asset, Prometheus text, or nothing.
pub type Body = Full<Bytes>;

/// The largest request body any route takes (a push subscription is under 1 KB; a login far less).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A body must arrive within this time after the headers.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin session of a request, or 401.
pub fn admin(
    auth: &Auth,
    store: &Store,
    headers: &HeaderMap,
) -> Result<(TokenHash, Session), ApiError> {
    auth.session(store, cookie_header(headers))
        .ok_or_else(ApiError::unauthorized)
}

/// An admin session on a same-origin request, for routes that change something.
pub fn admin_write(
    public_origin: &Origin,
    auth: &Auth,
    store: &Store,
    headers: &HeaderMap,
) -> Result<(TokenHash, Session), ApiError> {
    same_origin(public_origin, headers)?;
    admin(auth, store, headers)
}

/// Refuses requests from other sites: the `Origin` must be natter's own (`public_origin`), or the browser says
/// same-origin.
pub fn same_origin(public_origin: &Origin, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Origin::parse(value).ok())
        .is_some_and(|origin| origin == *public_origin);
    let fetch_site_ok = headers
        .get("sec-fetch-site")
        .is_some_and(|value| value == "same-origin");
    if origin_ok || fetch_site_ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this request must come from {public_origin}"
        )))
    }
}

pub fn cookie_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
}

/// Reads a JSON body of at most `MAX_BODY_BYTES` within `BODY_TIMEOUT`.
pub async fn json_body<T: DeserializeOwned>(
    request: &mut Request<Incoming>,
) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    serde_json::from_slice(&body_bytes(request).await?)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON: {error}")))
}

/// Reads a body of at most `MAX_BODY_BYTES` within `BODY_TIMEOUT`, whatever its type.
pub async fn body_bytes(request: &mut Request<Incoming>) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(request.body_mut(), MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| ApiError::bad_request("the request body did not arrive in time"))?
    .map_err(|_| {
        ApiError::too_long(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ))
    })?;
    Ok(collected.to_bytes())
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Body::new(Bytes::from(value.to_string())))
        .expect("valid response")
}

/// An error of the catalog as HTTP: its status, its JSON body, and `Retry-After` on 429 when the caller set none.
pub fn error_response(error: &ApiError) -> Response<Body> {
    if error.status.is_server_error() {
        tracing::warn!(code = error.code, message = %error.message, "request failed");
    }
    let mut response = json_response(error.status, &error.body());
    if error.status == StatusCode::TOO_MANY_REQUESTS
        && !response.headers().contains_key(header::RETRY_AFTER)
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}
