//! Bad input on the socket: each gets an `error` event or the right close code, and the connection (or, after a
//! close, the server) goes on working.

use fastwebsockets::{Frame, OpCode, Payload};
use serde_json::json;

use crate::helpers::*;

/// Writes one frame exactly as given (the client masks it unless told not to).
async fn send_frame(
    client: &mut Client,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
) -> Result<(), fastwebsockets::WebSocketError> {
    client
        .socket
        .write_frame(Frame::new(
            fin,
            opcode,
            None,
            Payload::Owned(payload.to_vec()),
        ))
        .await
}

#[tokio::test]
async fn malformed_commands_get_errors_and_the_connection_keeps_working() {
    let app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    let frames = [
        "this is not json".to_string(),
        json!({"command": "dance", "identifier": VISITOR_CHANNEL}).to_string(),
        json!({"command": "subscribe", "identifier": "{\"channel\":\"NoSuchChannel\"}"}).to_string(),
        json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": "{\"action\":\"fly\"}"}).to_string(),
        json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": "{\"action\":\"typing\",\"typing\":\"yes\"}"}).to_string(),
        json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": "not json either"}).to_string(),
        json!({"command": "message", "identifier": VISITOR_CHANNEL, "data": format!("{}{}", "[".repeat(5000), "]".repeat(5000))}).to_string(),
        json!({"command": "message", "identifier": 42}).to_string(),
    ];
    for frame in &frames {
        visitor.send_text(frame).await;
        let answer = visitor.next().await.expect("still open");
        let error = if answer["type"] == "error" {
            answer.clone()
        } else {
            answer["message"].clone()
        };
        assert_eq!(error["type"], "error", "{frame} -> {answer}");
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{answer}"
        );
    }
    let client_id = uuid();
    visitor.speak("x".repeat(4001), &client_id).await;
    let too_long = visitor.event("error").await;
    assert_eq!(too_long["code"], "too_long");
    assert_eq!(too_long["client_id"], client_id.as_str());
    visitor.speak(" \n ", uuid()).await;
    assert_eq!(visitor.event("error").await["code"], "invalid");

    visitor.speak("still here", uuid()).await;
    assert_eq!(
        visitor.event("message").await["message"]["content"],
        "still here"
    );
}

#[tokio::test]
async fn a_message_larger_than_the_limit_closes_with_1009_and_others_are_unaffected() {
    let app = spawn_app().await;
    let mut bystander = subscribed_visitor(&app, &uuid()).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor.send_text(&"x".repeat(200_000)).await;
    assert_eq!(visitor.closed().await.0, Some(1009));
    bystander.speak("fine", uuid()).await;
    assert_eq!(
        bystander.event("message").await["message"]["content"],
        "fine"
    );
}

#[tokio::test]
async fn binary_frames_and_endless_fragments_are_closed() {
    let app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    send_frame(&mut visitor, true, OpCode::Binary, &[1, 2, 3])
        .await
        .unwrap();
    assert_eq!(visitor.closed().await.0, Some(1003));

    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    send_frame(&mut visitor, false, OpCode::Text, b"[")
        .await
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..16 {
        if send_frame(&mut visitor, false, OpCode::Continuation, &chunk)
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        visitor.closed().await.0,
        Some(1009),
        "fragments add up to the same limit as one frame"
    );
}

#[tokio::test]
async fn a_thousand_duplicate_subscribes_are_each_confirmed_and_register_once() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    for _ in 0..1000 {
        visitor
            .send(json!({"command": "subscribe", "identifier": VISITOR_CHANNEL}))
            .await;
    }
    for _ in 0..1000 {
        let frame = visitor.next().await.unwrap();
        assert_eq!(frame["type"], "confirm_subscription");
    }
    visitor.speak("once", uuid()).await;
    visitor.event("message").await;
    admin.event("message").await;
    // One registration: the next event the visitor sees is the next message, not a copy.
    admin
        .perform(ADMIN_CHANNEL, json!({"action": "sync"}))
        .await;
    let sync = admin.event("sync").await;
    let conversation_id = sync["conversations"][0]["id"].clone();
    admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": "r", "client_id": uuid()})).await;
    assert_eq!(visitor.event("message").await["message"]["content"], "r");
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    assert_eq!(
        visitor.next().await.unwrap()["message"]["type"],
        "history",
        "no duplicate of the reply was queued"
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    send_frame(&mut visitor, true, OpCode::Text, &[0x7b, 0xff, 0xfe, 0x7d])
        .await
        .unwrap();
    assert_eq!(visitor.closed().await.0, Some(1007));
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    // RFC 6455 5.1: a server must close the connection when a client's frame is not masked.
    let app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor.socket.set_auto_apply_mask(false);
    send_frame(&mut visitor, true, OpCode::Text, br#"{"command":"x"}"#)
        .await
        .unwrap();
    assert_eq!(visitor.closed().await.0, Some(1002));
}

#[tokio::test]
async fn a_ping_gets_its_pong_and_a_close_gets_its_code_back() {
    let app = spawn_app().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    send_frame(&mut visitor, true, OpCode::Ping, b"are you there")
        .await
        .unwrap();
    let pong = loop {
        let frame = tokio::time::timeout(PATIENCE, visitor.socket.read_frame())
            .await
            .expect("a frame in time")
            .expect("the socket stays open");
        if frame.opcode == OpCode::Pong {
            break frame.payload.to_vec();
        }
    };
    assert_eq!(pong, b"are you there");
    visitor
        .socket
        .write_frame(Frame::close(4000, b"leaving"))
        .await
        .unwrap();
    assert_eq!(visitor.closed().await.0, Some(4000));
}

/// Regression (issue 15, item 9): after subscribing, a frame that began and never ended held its socket (and the
/// 64 KiB its header announced) forever.
#[tokio::test]
async fn a_frame_that_stops_halfway_is_closed_after_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|config| config.limits.idle_socket_seconds = 1).await;
    let visitor = subscribed_visitor(&app, &uuid()).await;
    let mut stream = visitor.socket.into_inner();
    // A masked text frame announcing 60,000 bytes, of which 10 arrive.
    let mut partial = vec![0x81, 0x80 | 126];
    partial.extend_from_slice(&60_000u16.to_be_bytes());
    partial.extend_from_slice(&[1, 2, 3, 4]);
    partial.extend_from_slice(&[b'x'; 10]);
    stream.write_all(&partial).await.unwrap();
    stream.flush().await.unwrap();
    let mut visitor = Client {
        socket: fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client),
    };
    let closed = tokio::time::timeout(PATIENCE, visitor.closed())
        .await
        .expect("closed by the server in time");
    assert_eq!(closed.0, Some(1008));
    assert!(
        closed
            .1
            .iter()
            .any(|frame| frame["reason"] == "frame_timeout"),
        "{:?}",
        closed.1
    );
}
