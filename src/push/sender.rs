//! Sending: one dispatcher task takes jobs from a bounded queue, finds the subscriptions they go to, and starts one
//! short task per push, at most `MAX_IN_FLIGHT` at a time. Each push is encrypted (RFC 8291, web-push-native),
//! signed (RFC 8292) and POSTed through hyper-util's client with rustls (ring); DNS goes through `crate::dns`.
//!
//! A push service that is slow, down or hostile costs at most `MAX_IN_FLIGHT` tasks and sockets for at most
//! `REQUEST_TIMEOUT` each (plus waits between retries); behind them the queue fills and further pushes are dropped
//! and counted. The message path never waits on any of it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, Semaphore};
use web_push_native::WebPushBuilder;

use crate::dns::Resolver;

use super::subscription::{audience_origin, endpoint_uri, literal_ip, Audience, Subscription};
use super::{Job, Push, MAX_IN_FLIGHT};

/// One attempt (connect, TLS, request, response headers) must finish within this. Push services answer in well
/// under a second; ten leaves room for a slow mobile uplink on the owner's Raspberry Pi.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per push: the first and two retries (after 429 or 5xx or a failed connection).
const MAX_ATTEMPTS: u32 = 3;
/// The wait before the first retry when the service does not say; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this is not waited for: by then the notification is stale, so the push is dropped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Owner notifications stay deliverable for a day (a phone that was off overnight still learns of the message);
/// the `Topic` makes a newer one replace an older undelivered one of the same conversation.
const TIME_TO_LIVE_SECONDS: u32 = 24 * 3600;

type HttpClient = Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>;

/// The client every push goes through: http/1.1, TLS with rustls and ring and the Mozilla roots compiled in (no
/// dependence on the host's certificate store), DNS through `Resolver`.
fn client(resolver: Resolver) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(REQUEST_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports rustls' default protocol versions")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build(https)
}

/// Starts the sender task. It holds `Push` weakly, so it ends when the server's state is dropped.
pub fn start(push: &Arc<Push>) {
    let jobs = push
        .jobs
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take();
    if let Some(jobs) = jobs {
        let client = client(push.resolver.clone());
        tokio::spawn(dispatch(Arc::downgrade(push), jobs, client));
    }
}

/// Takes jobs until the queue closes (`Push` is gone). Holds only a weak reference between jobs, so a stopped
/// server's state is freed.
async fn dispatch(push: Weak<Push>, mut jobs: mpsc::Receiver<Job>, client: HttpClient) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(job) = jobs.recv().await {
        let Some(push) = push.upgrade() else { break };
        let subscriptions = match push.store.push_subscriptions() {
            Ok(subscriptions) => subscriptions,
            Err(error) => {
                tracing::warn!(?error, "cannot read push subscriptions");
                continue;
            }
        };
        let job = Arc::new(job);
        for (endpoint, json) in subscriptions {
            let subscription: Subscription = match serde_json::from_slice(&json) {
                Ok(subscription) => subscription,
                Err(error) => {
                    tracing::warn!(%error, %endpoint, "unreadable push subscription; removing it");
                    let _ = push.store.delete_push_subscription(&endpoint).await;
                    continue;
                }
            };
            if subscription.audience != job.audience {
                continue;
            }
            // Waiting here (not in the message path) is the backpressure: while every slot is taken, jobs wait in
            // the bounded queue, and when that is full the trigger drops new ones.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let (push, client, job) = (push.clone(), client.clone(), job.clone());
            tokio::spawn(async move {
                send(&push, &client, &subscription, &job).await;
                drop(permit);
            });
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// The subscription is gone for good (404, 410): delete it.
    Gone,
    /// Worth another try after this long (429, 5xx, a failed connection).
    Retry(Duration),
    /// Not worth another try (a timeout, a refused address, another 4xx).
    Failed(String),
}

/// Sends one push with retries, and counts the outcome.
async fn send(push: &Push, client: &HttpClient, subscription: &Subscription, job: &Job) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        match send_once(push, client, subscription, job).await {
            Attempt::Delivered => {
                push.sent.fetch_add(1, Ordering::Relaxed);
                if job.audience == Audience::Owner {
                    push.delivered(job.conversation_id);
                }
                tracing::debug!(endpoint = %subscription.endpoint, waited = ?job.queued.elapsed(), "push delivered");
                return;
            }
            Attempt::Gone => {
                tracing::info!(endpoint = %subscription.endpoint, "the push service forgot this subscription; removing it");
                let _ = push
                    .store
                    .delete_push_subscription(&subscription.endpoint)
                    .await;
                push.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Attempt::Retry(wait) if attempt < MAX_ATTEMPTS && wait <= MAX_RETRY_AFTER => {
                tokio::time::sleep(wait.max(backoff)).await;
                backoff *= 2;
            }
            Attempt::Retry(_) => {
                tracing::warn!(endpoint = %subscription.endpoint, "push service still busy or failing; push dropped");
                break;
            }
            Attempt::Failed(reason) => {
                tracing::warn!(endpoint = %subscription.endpoint, %reason, "push failed");
                break;
            }
        }
    }
    push.failed.fetch_add(1, Ordering::Relaxed);
}

async fn send_once(
    push: &Push,
    client: &HttpClient,
    subscription: &Subscription,
    job: &Job,
) -> Attempt {
    let request = match request(push, subscription, job) {
        Ok(request) => request,
        Err(reason) => return Attempt::Failed(reason),
    };
    // An endpoint written as an IP address skips DNS, so the connector's resolver never sees it: check it here.
    if let Some(ip) = literal_ip(request.uri()) {
        if !push
            .policy
            .allows(ip, request.uri().scheme_str() == Some("https"))
        {
            return Attempt::Failed(format!("{ip} is not a public address"));
        }
    }
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, client.request(request)).await {
        Err(_) => return Attempt::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
        Ok(Err(error)) if error.is_connect() => return Attempt::Retry(Duration::ZERO),
        Ok(Err(error)) => return Attempt::Failed(error.to_string()),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read (a bounded amount of) the body so the connection can go back to the pool; its text helps the log.
    let body = tokio::time::timeout(
        REQUEST_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), 4096).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|collected| String::from_utf8_lossy(&collected.to_bytes()).into_owned())
    .unwrap_or_default();
    match status {
        status if status.is_success() => Attempt::Delivered,
        StatusCode::NOT_FOUND | StatusCode::GONE => Attempt::Gone,
        StatusCode::TOO_MANY_REQUESTS => Attempt::Retry(retry_after.unwrap_or(Duration::ZERO)),
        status if status.is_server_error() => Attempt::Retry(retry_after.unwrap_or(Duration::ZERO)),
        status => Attempt::Failed(format!(
            "{status}: {}",
            body.chars().take(200).collect::<String>()
        )),
    }
}

/// The encrypted, signed request for one subscription.
fn request(
    push: &super::Push,
    subscription: &Subscription,
    job: &Job,
) -> Result<Request<Full<Bytes>>, String> {
    let uri = endpoint_uri(&subscription.endpoint, push.policy).map_err(|error| error.message)?;
    let audience = audience_origin(&uri).ok_or("the endpoint has no origin")?;
    let (public_key, auth) = subscription.keys().ok_or("the stored keys are damaged")?;
    let built = WebPushBuilder::new(uri, public_key, auth)
        .build(job.payload.as_slice())
        .map_err(|error| error.to_string())?;
    let authorization = push.vapid.authorization(&audience)?;
    let (mut parts, body) = built.into_parts();
    let headers = &mut parts.headers;
    headers.insert("ttl", HeaderValue::from(TIME_TO_LIVE_SECONDS));
    headers.insert("urgency", HeaderValue::from_static("high"));
    headers.insert(
        "topic",
        HeaderValue::from_str(&job.topic).map_err(|error| error.to_string())?,
    );
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&authorization).map_err(|error| error.to_string())?,
    );
    Ok(Request::from_parts(parts, Full::new(Bytes::from(body))))
}
