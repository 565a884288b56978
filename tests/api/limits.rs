//! Limits and throttles: each would let one client take the service from everyone else without it.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn a_visitor_sending_too_fast_is_throttled_with_a_clear_error() {
    let app = spawn_app_with(|config| config.limits.messages_per_minute = 3).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    for index in 0..3 {
        visitor.speak(format!("m{index}"), uuid()).await;
        visitor.event("message").await;
    }
    let client_id = uuid();
    visitor.speak("one too many", &client_id).await;
    let error = visitor.event("error").await;
    assert_eq!(error["code"], "throttled");
    assert_eq!(error["client_id"], client_id.as_str());
    assert!(
        error["message"].as_str().unwrap().contains("try again"),
        "{error}"
    );
    // Other visitors are not affected.
    let mut other = subscribed_visitor(&app, &uuid()).await;
    other.speak("fine", uuid()).await;
    other.event("message").await;
}

#[tokio::test]
async fn one_address_cannot_open_endless_conversations() {
    let app = spawn_app_with(|config| config.limits.conversations_per_hour = 2).await;
    for index in 0..3 {
        let mut visitor = subscribed_visitor(&app, &uuid()).await;
        visitor.speak("hello", uuid()).await;
        let answer = visitor
            .next_where(|frame| frame["message"]["type"].is_string())
            .await;
        if index < 2 {
            assert_eq!(answer["message"]["type"], "message", "{answer}");
        } else {
            assert_eq!(answer["message"]["code"], "throttled", "{answer}");
        }
    }
}

#[tokio::test]
async fn connections_are_limited_per_address_and_in_total_but_the_owner_gets_in() {
    let app = spawn_app_with(|config| config.limits.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(subscribed_visitor(&app, &uuid()).await);
    }
    let refused = Client::connect(app.address, &format!("/cable?token={}", uuid()), BLOG, None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, Some(http::StatusCode::TOO_MANY_REQUESTS));
    held.pop();
    // The slot comes back when a socket closes.
    let mut again = None;
    for _ in 0..100 {
        if let Ok(client) =
            Client::connect(app.address, &format!("/cable?token={}", uuid()), BLOG, None).await
        {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot is given back");

    let app = spawn_app_with(|config| config.limits.max_connections = 2).await;
    let cookie = app.login().await;
    let _first = subscribed_visitor(&app, &uuid()).await;
    let _second = subscribed_visitor(&app, &uuid()).await;
    let refused = Client::connect(app.address, &format!("/cable?token={}", uuid()), BLOG, None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, Some(http::StatusCode::SERVICE_UNAVAILABLE));
    subscribed_admin(&app, &cookie).await;
}

#[tokio::test]
async fn made_up_tokens_from_one_address_are_throttled() {
    let app = spawn_app_with(|config| config.limits.conversations_per_hour = 1).await;
    // The allowance is three times the conversations per hour, at least 10.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let result =
            Client::connect(app.address, &format!("/cable?token={}", uuid()), BLOG, None).await;
        statuses.push(result.err().and_then(|refused| refused.status));
    }
    assert!(statuses[..10].iter().all(Option::is_none), "{statuses:?}");
    assert_eq!(statuses[10], Some(http::StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test]
async fn a_socket_that_never_subscribes_is_closed() {
    let app = spawn_app_with(|config| config.limits.idle_socket_seconds = 1).await;
    let mut idle = app.visitor(&uuid()).await.welcomed().await;
    // Chatter that is not a subscription does not keep it open.
    idle.send(json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": "{}"}))
        .await;
    let (code, frames) = idle.closed().await;
    assert_eq!(code, Some(1008));
    assert!(
        frames
            .iter()
            .any(|frame| frame["reason"] == "subscribe_timeout"),
        "{frames:?}"
    );
    // A subscribed socket stays.
    let mut subscribed = subscribed_visitor(&app, &uuid()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    subscribed
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    subscribed.event("history").await;
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_and_the_others_carry_on() {
    let app = spawn_app().await;
    let token = uuid();
    // This tab never reads again.
    let stalled = subscribed_visitor(&app, &token).await;
    let mut busy = subscribed_visitor(&app, &token).await;
    let mut bystander = subscribed_visitor(&app, &uuid()).await;
    let content = "y".repeat(4000);
    let mut kicked = false;
    for round in 0..3000 {
        busy.speak(&content, uuid()).await;
        busy.event("message").await;
        if round % 100 == 99 {
            let metrics = app.http("GET", "/metrics", &[], None).await.text();
            if metrics.lines().any(|line| {
                line.starts_with("natter_slow_consumers_kicked_total ") && !line.ends_with(" 0")
            }) {
                kicked = true;
                break;
            }
        }
    }
    assert!(kicked, "the stalled tab was kicked");
    bystander.speak("still quick", uuid()).await;
    assert_eq!(
        bystander.event("message").await["message"]["content"],
        "still quick"
    );
    // The stalled socket's end: whatever was buffered, then the close.
    let mut stalled = stalled;
    let (_, frames) = stalled.closed().await;
    assert!(frames.len() < 3000, "its queue was bounded");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    // No more bytes: hyper's header timeout answers 408 or closes; either way the connection ends on its own.
    let read = tokio::time::timeout(PATIENCE * 2, async {
        let mut total = Vec::new();
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return total,
                Ok(read) => total.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "a client that never finishes its headers is disconnected"
    );
}

#[tokio::test]
async fn path_traversal_in_any_encoding_finds_nothing() {
    let app = spawn_app().await;
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/admin/..%2f..%2fsrc/main.rs",
        "/%2e%2e%5cCargo.toml",
        "/admin/../../Cargo.toml",
        "/.%2e/.%2e/etc/passwd",
        "//etc/passwd",
    ] {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 404") || response.starts_with("HTTP/1.1 400"),
            "{path}: {response}"
        );
        assert!(
            !response.contains("[package]") && !response.contains("root:"),
            "{path}"
        );
    }
}
