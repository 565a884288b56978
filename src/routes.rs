//! The one routing table, and the HTTP API's handlers.
//!
//! Every route is in `route`; each handler parses its input at the boundary and answers JSON, or an error from the
//! catalog in `error`. Admin routes need the session cookie; admin writes also need a same-origin request, so a
//! page elsewhere cannot act with the owner's cookie. No route answers CORS: nothing here is for another site to read
//! (the widget's own files are public, with `Access-Control-Allow-Origin: *` and no credentials, from `assets`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::App;
use crate::auth::{self, LoginError};
use crate::cable;
use crate::channels::{self, event};
use crate::config::Origin;
use crate::error::ApiError;
use crate::http::{
    admin, admin_write, cookie_header, error_response, json_body, json_response, same_origin, Body,
};

const MAX_PAGE: usize = 200;

/// Browsers that saw natter over HTTPS keep to HTTPS for a year (not its subdomains: those may be other sites).
const HSTS: &str = "max-age=31536000";

/// The client of a forwarded request whose address cannot be told (a proxy wrote something that is not an address,
/// or one of loopback): such clients share one throttle bucket, and none of them is taken for a local one.
const UNKNOWN_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Answers one HTTP request.
pub async fn handle(
    app: Arc<App>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let ip = client_ip(&app, &request, peer);
    let mut response = match route(&app, &mut request, ip).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    if app.public_origin.is_https() {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

async fn route(
    app: &Arc<App>,
    request: &mut Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["cable"]) => cable::upgrade(app, request, ip),
        (&Method::POST, ["auth", "login"]) => login(app, request, ip).await,
        (&Method::POST, ["auth", "logout"]) => logout(app, request).await,
        (&Method::POST, ["auth", "logout_everywhere"]) => logout_everywhere(app, request).await,
        (&Method::GET, ["auth", "session"]) => {
            // `?optional=1` answers "not signed in" with 200: the dashboard asks on every visit, and a 401 there is
            // logged by the browser as an error before the owner has done anything.
            let optional = request.uri().query() == Some("optional=1");
            match admin(&app.auth, &app.store, request.headers()) {
                // The widget's sites: the dashboard links only to visitors' pages on them.
                Ok((_, session)) => Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "admin": true,
                        "username": session.username,
                        "allowed_origins": app.config.widget.allowed_origins,
                    }),
                )),
                Err(_) if optional => Ok(json_response(StatusCode::OK, &json!({ "admin": false }))),
                Err(error) => Err(error),
            }
        }
        (&Method::GET, ["conversations"]) => {
            admin(&app.auth, &app.store, request.headers())?;
            let stored = app.store.conversations()?;
            let conversations: Vec<_> = stored
                .iter()
                .map(|conversation| channels::summary(app, conversation))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "conversations": conversations }),
            ))
        }
        (&Method::GET, ["conversations", id, "messages"]) => {
            admin(&app.auth, &app.store, request.headers())?;
            messages(
                app,
                parse_id(id)?,
                request.uri().query().unwrap_or_default(),
            )
        }
        (&Method::DELETE, ["conversations", id]) => {
            admin_write(&app.public_origin, &app.auth, &app.store, request.headers())?;
            delete_conversation(app, parse_id(id)?).await
        }
        (&Method::GET, ["refused_origins"]) => {
            admin(&app.auth, &app.store, request.headers())?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "refused_origins": app.refused_origins.list() }),
            ))
        }
        (&Method::GET, ["widget", "allowed"]) => Ok(widget_allowed(app, request.headers())),
        (&Method::GET, ["push", "key"]) => crate::push::key(&app.push),
        (&Method::POST, ["push_subscriptions"]) => {
            crate::push::subscribe(&app.push, &app.auth, request).await
        }
        (&Method::DELETE, ["push_subscriptions"]) => {
            crate::push::unsubscribe(&app.push, &app.auth, request).await
        }
        (&Method::POST, ["email", "continue"]) => {
            // The exact Origin header, echoed to an allowed origin only.
            let allowed = request
                .headers()
                .get(header::ORIGIN)
                .filter(|_| {
                    request_origin(request.headers())
                        .is_some_and(|origin| app.is_widget_origin(&origin))
                })
                .cloned();
            crate::email::web::continue_conversation(&app.email, request, ip, allowed).await
        }
        (&Method::GET, ["email", "unsubscribe"]) => {
            crate::email::web::unsubscribe(&app.email, request, false).await
        }
        (&Method::POST, ["email", "unsubscribe"]) => {
            crate::email::web::unsubscribe(&app.email, request, true).await
        }
        (&Method::GET, ["healthz"]) => Ok(json_response(StatusCode::OK, &json!({ "ok": true }))),
        (&Method::GET, ["metrics"]) => crate::metrics::render(app, request.headers(), ip),
        (&Method::GET | &Method::HEAD, _) => {
            if path == "/admin" {
                return Ok(redirect("/admin/"));
            }
            app.assets
                .serve(&path, request.headers(), method == Method::HEAD)
                .ok_or_else(|| ApiError::not_found(format!("nothing at {path}")))
        }
        (
            _,
            ["cable" | "healthz" | "metrics" | "conversations" | "auth" | "push_subscriptions"
            | "refused_origins" | "email", ..],
        ) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found(format!("nothing at {path}"))),
    }
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    app: &Arc<App>,
    request: &mut Request<Incoming>,
    ip: IpAddr,
) -> Result<Response<Body>, ApiError> {
    same_origin(&app.public_origin, request.headers())?;
    let body: Login = json_body(request).await?;
    let token = match app
        .auth
        .login(&app.store, ip, &body.username, &body.password)
        .await
    {
        Ok(token) => token,
        Err(error @ (LoginError::Throttled(_) | LoginError::Busy)) => {
            let wait = match error {
                LoginError::Throttled(wait) => wait,
                _ => auth::LOGIN_BUSY_RETRY,
            };
            let mut response = error_response(&error.into());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            return Ok(response);
        }
        Err(error) => {
            tracing::info!(%ip, "failed admin login");
            return Err(error.into());
        }
    };
    let mut response = json_response(StatusCode::OK, &json!({ "ok": true }));
    set_cookie(&mut response, &app.auth.session_cookie(&token));
    Ok(response)
}

/// `POST /auth/logout`: the session is gone from the store, and its sockets closed, before the answer, so the
/// cookie is dead even if the browser keeps it.
async fn logout(app: &Arc<App>, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    same_origin(&app.public_origin, request.headers())?;
    if let Some((hash, _)) = app
        .auth
        .session(&app.store, cookie_header(request.headers()))
    {
        app.store.delete_session(hash).await?;
        app.hub.kick_session(&hash);
    }
    Ok(logged_out(app))
}

/// `POST /auth/logout_everywhere`: ends every session of the owner (a lost phone, a shared computer) and closes
/// every dashboard socket.
async fn logout_everywhere(
    app: &Arc<App>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (_, session) = admin_write(&app.public_origin, &app.auth, &app.store, request.headers())?;
    app.store.delete_sessions_of(&session.username).await?;
    app.hub.kick_admins();
    Ok(logged_out(app))
}

fn logged_out(app: &App) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, &json!({ "ok": true }));
    set_cookie(&mut response, &app.auth.clear_cookie());
    response
}

fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(cookie).expect("the cookie is ASCII"),
    );
}

fn messages(app: &Arc<App>, id: Uuid, query: &str) -> Result<Response<Body>, ApiError> {
    let mut after = None;
    let mut before = None;
    let mut limit = 50;
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a number")))
        };
        match name {
            "after" if !value.is_empty() => after = Some(number()?),
            "before" if !value.is_empty() => before = Some(number()?),
            "limit" if !value.is_empty() => {
                limit = usize::try_from(number()?)
                    .unwrap_or(MAX_PAGE)
                    .clamp(1, MAX_PAGE)
            }
            _ => {}
        }
    }
    if app.store.conversation(id)?.is_none() {
        return Err(ApiError::not_found("no such conversation"));
    }
    // Without a cursor, the newest page: that is what opening a conversation shows.
    let before = if after.is_none() && before.is_none() {
        Some(u64::MAX)
    } else {
        before
    };
    let page = app.store.conversation_messages(id, after, before, limit)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "messages": page.messages, "more": page.more }),
    ))
}

async fn delete_conversation(app: &Arc<App>, id: Uuid) -> Result<Response<Body>, ApiError> {
    let conversation = app
        .store
        .delete_conversation(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    if let Err(error) = crate::push::conversation_deleted(&app.push).await {
        tracing::warn!(?error, conversation = %id, "the deleted conversation's push subscriptions were kept");
    }
    if let Err(error) = crate::email::conversation_deleted(&app.email, id).await {
        tracing::warn!(?error, conversation = %id, "the deleted conversation's email record was kept");
    }
    app.hub.to_visitor(
        &conversation.token_hash,
        &event(json!({ "type": "deleted" })),
    );
    app.hub
        .to_admins(&event(json!({ "type": "deleted", "conversation_id": id })));
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::default())
        .expect("valid response"))
}

/// The request's `Origin`, when it is a valid one.
fn request_origin(headers: &HeaderMap) -> Option<Origin> {
    Origin::parse(headers.get(header::ORIGIN)?.to_str().ok()?).ok()
}

/// Whether the page asking may open the chat: the widget asks when its socket is refused, so it can say the chat is
/// not set up for this site instead of retrying forever (a refused WebSocket tells the page nothing). Readable from
/// any origin and carrying no credentials: whether an origin is allowed is no secret, any client can try the socket.
fn widget_allowed(app: &App, headers: &HeaderMap) -> Response<Body> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Origin::parse(value).ok());
    let allowed = origin
        .as_ref()
        .is_some_and(|origin| app.is_widget_origin(origin));
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "origin": origin, "allowed": allowed }),
    );
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location)
        .body(Body::default())
        .expect("valid response")
}

/// The client's address: the peer's, or for a request a trusted proxy forwarded, the first address in
/// `X-Forwarded-For` from the right that no trusted proxy has. Walking from the right, an entry that is not a plain
/// address (a port, brackets, `unknown`) ends the walk: what stands to its left was written by whoever sent the
/// request, and is not believed. A forwarded client is never loopback (`/metrics` trusts loopback).
fn client_ip(app: &App, request: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let trusted = &app.config.server.trusted_proxies;
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let entries: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .collect();
    if entries.is_empty() {
        return peer_ip;
    }
    forwarded_client(&entries, trusted)
}

fn forwarded_client(entries: &[&str], trusted: &[IpAddr]) -> IpAddr {
    for entry in entries.iter().rev() {
        let Ok(address) = entry
            .parse::<IpAddr>()
            .map(|address| address.to_canonical())
        else {
            break;
        };
        if trusted.contains(&address) {
            continue;
        }
        if address.is_loopback() {
            break;
        }
        return address;
    }
    UNKNOWN_CLIENT
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::not_found("no such conversation"))
}
