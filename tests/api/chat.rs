//! The chat itself: visitor and admin in both directions, tabs, resends, sync after a disconnect and a restart.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn a_visitor_message_reaches_the_admin_and_the_reply_comes_back() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;

    let client_id = uuid();
    visitor.speak("  Hello there  ", &client_id).await;
    let echoed = visitor.event("message").await;
    assert_eq!(echoed["message"]["content"], "Hello there");
    assert_eq!(echoed["message"]["sender"], "visitor");
    assert_eq!(echoed["message"]["client_id"], client_id.as_str());
    let created_at = echoed["message"]["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );

    let received = admin.event("message").await;
    let conversation_id = received["conversation_id"].as_str().unwrap().to_string();
    assert_eq!(received["message"], echoed["message"]);

    let reply_id = uuid();
    admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": "Hi! How can I help?", "client_id": reply_id})).await;
    let reply = visitor.event("message").await;
    assert_eq!(reply["message"]["sender"], "admin");
    assert_eq!(reply["message"]["content"], "Hi! How can I help?");
    assert!(reply["message"]["id"].as_u64() > echoed["message"]["id"].as_u64());
}

#[tokio::test]
async fn opening_the_chat_creates_nothing_until_the_first_message() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    let history = visitor.event("history").await;
    assert_eq!(history["conversation"], serde_json::Value::Null);
    assert_eq!(history["messages"], json!([]));
    assert_eq!(history["more"], false);
    let list = app
        .http("GET", "/conversations", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(list.json()["conversations"], json!([]));
}

#[tokio::test]
async fn every_tab_of_a_visitor_sees_both_sides() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut first_tab = subscribed_visitor(&app, &token).await;
    let mut second_tab = subscribed_visitor(&app, &token).await;

    first_tab.speak("from tab one", uuid()).await;
    assert_eq!(
        first_tab.event("message").await["message"]["content"],
        "from tab one"
    );
    assert_eq!(
        second_tab.event("message").await["message"]["content"],
        "from tab one"
    );
    let conversation_id = admin.event("message").await["conversation_id"].clone();

    admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": "to both", "client_id": uuid()})).await;
    assert_eq!(
        first_tab.event("message").await["message"]["content"],
        "to both"
    );
    assert_eq!(
        second_tab.event("message").await["message"]["content"],
        "to both"
    );
}

#[tokio::test]
async fn a_resent_message_is_stored_once_and_answered_with_the_original() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    let client_id = uuid();
    let speak = json!({"action": "speak", "content": "only once", "client_id": client_id});
    visitor.perform(VISITOR_CHANNEL, speak.clone()).await;
    let first = visitor.event("message").await;
    visitor.perform(VISITOR_CHANNEL, speak).await;
    let second = visitor.event("message").await;
    assert_eq!(
        first["message"], second["message"],
        "the resend is answered with the stored message"
    );

    let conversation_id = admin.event("message").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The admin heard of it once: the next message event it sees is a new one.
    visitor.speak("next", uuid()).await;
    assert_eq!(admin.event("message").await["message"]["content"], "next");

    let reply_id = uuid();
    for _ in 0..2 {
        admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": "reply once", "client_id": reply_id})).await;
        // Both the first answer and the resend's answer carry the same stored message.
        admin
            .next_where(|frame| {
                frame["message"]["type"] == "message"
                    && frame["message"]["message"]["content"] == "reply once"
            })
            .await;
    }
    let messages = app
        .http(
            "GET",
            &format!("/conversations/{conversation_id}/messages"),
            &[("cookie", &cookie)],
            None,
        )
        .await
        .json();
    let contents: Vec<&str> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["only once", "next", "reply once"]);
}

#[tokio::test]
async fn sync_after_a_disconnect_returns_exactly_what_was_missed() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    visitor.speak("before", uuid()).await;
    let seen = visitor.event("message").await["message"]["id"]
        .as_u64()
        .unwrap();
    let conversation_id = admin.event("message").await["conversation_id"].clone();
    drop(visitor);

    for content in ["missed one", "missed two"] {
        admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": content, "client_id": uuid()})).await;
        admin
            .next_where(|frame| {
                frame["message"]["type"] == "message"
                    && frame["message"]["message"]["content"] == content
            })
            .await;
    }

    let mut visitor = subscribed_visitor(&app, &token).await;
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync", "after": seen}))
        .await;
    let history = visitor.event("history").await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["missed one", "missed two"]);
    assert_eq!(history["conversation"]["id"], conversation_id);
    assert_eq!(history["admin_online"], true);
}

#[tokio::test]
async fn sync_after_a_restart_returns_exactly_what_was_missed() {
    let mut app = spawn_app().await;
    let token = uuid();
    let mut ids = Vec::new();
    {
        let mut visitor = subscribed_visitor(&app, &token).await;
        for index in 0..5 {
            visitor.speak(format!("m{index}"), uuid()).await;
            ids.push(
                visitor.event("message").await["message"]["id"]
                    .as_u64()
                    .unwrap(),
            );
        }
        app.restart().await;
        // The socket was told to come back.
        let (code, frames) = visitor.closed().await;
        assert_eq!(code, Some(1012));
        assert!(
            frames.iter().any(|frame| frame["type"] == "disconnect"
                && frame["reason"] == "server_restart"
                && frame["reconnect"] == true),
            "{frames:?}"
        );
    }
    let mut visitor = subscribed_visitor(&app, &token).await;
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync", "after": ids[2]}))
        .await;
    let history = visitor.event("history").await;
    let got: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[3..]);

    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    admin
        .perform(ADMIN_CHANNEL, json!({"action": "sync", "after": ids[0]}))
        .await;
    let sync = admin.event("sync").await;
    let got: Vec<u64> = sync["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[1..]);
    assert_eq!(sync["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(sync["conversations"][0]["unread_count"], 5);

    // New ids keep increasing after the restart.
    visitor.speak("after", uuid()).await;
    assert!(
        visitor.event("message").await["message"]["id"]
            .as_u64()
            .unwrap()
            > ids[4]
    );
}

#[tokio::test]
async fn admins_get_a_summary_when_a_conversation_starts_and_only_the_message_after_that() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;

    visitor.speak("first", uuid()).await;
    assert_eq!(admin.event("message").await["message"]["content"], "first");
    let started = admin.event("conversation").await["conversation"].clone();
    assert_eq!(started["unread_count"], 1);
    assert_eq!(started["last_message"]["content"], "first");

    // The next message changes only what follows from the message itself: no summary, just the message.
    visitor.speak("second", uuid()).await;
    visitor
        .perform(
            VISITOR_CHANNEL,
            json!({"action": "identify", "name": "Ada"}),
        )
        .await;
    let events: Vec<Value> = [admin.next().await, admin.next().await]
        .into_iter()
        .map(|frame| frame.expect("the socket stays open")["message"].clone())
        .collect();
    assert_eq!(
        (
            events[0]["type"].as_str(),
            events[0]["message"]["content"].as_str()
        ),
        (Some("message"), Some("second"))
    );
    assert_eq!(
        events[1]["type"], "conversation",
        "identify's summary comes next"
    );
    assert_eq!(events[1]["conversation"]["visitor_name"], "Ada");
    assert_eq!(events[1]["conversation"]["unread_count"], 2);
    assert_eq!(
        events[1]["conversation"]["last_message"]["content"],
        "second"
    );
}

#[tokio::test]
async fn identify_typing_read_and_visit_reach_the_other_side() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;

    visitor.perform(VISITOR_CHANNEL, json!({"action": "visit", "url": format!("{BLOG}/post"), "title": "A post", "referrer": ""})).await;
    visitor.speak("hi", uuid()).await;
    let message = admin.event("message").await;
    let conversation_id = message["conversation_id"].clone();
    let message_id = message["message"]["id"].clone();
    let summary = admin.event("conversation").await["conversation"].clone();
    assert_eq!(summary["unread_count"], 1);
    assert_eq!(summary["online"], true);

    visitor
        .perform(
            VISITOR_CHANNEL,
            json!({"action": "identify", "name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    let identified = admin.event("conversation").await["conversation"].clone();
    assert_eq!(identified["visitor_name"], "Ada");
    assert_eq!(identified["email"], "ada@example.com");
    assert_eq!(identified["page"]["url"], format!("{BLOG}/post"));

    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "typing", "typing": true}))
        .await;
    let typing = admin.event("typing").await;
    assert_eq!(
        (typing["conversation_id"].clone(), typing["typing"].clone()),
        (conversation_id.clone(), json!(true))
    );

    admin
        .perform(
            ADMIN_CHANNEL,
            json!({"action": "typing", "conversation_id": conversation_id, "typing": true}),
        )
        .await;
    assert_eq!(visitor.event("typing").await["typing"], true);

    admin
        .perform(
            ADMIN_CHANNEL,
            json!({"action": "read", "conversation_id": conversation_id, "up_to": message_id}),
        )
        .await;
    assert_eq!(visitor.event("read").await["up_to"], message_id);
    let read = admin
        .next_where(|frame| {
            frame["message"]["type"] == "conversation"
                && frame["message"]["conversation"]["unread_count"] == 0
        })
        .await;
    assert_eq!(read["message"]["conversation"]["id"], conversation_id);

    admin.perform(ADMIN_CHANNEL, json!({"action": "reply", "conversation_id": conversation_id, "content": "hello Ada", "client_id": uuid()})).await;
    let reply_id = visitor.event("message").await["message"]["id"].clone();
    visitor
        .perform(
            VISITOR_CHANNEL,
            json!({"action": "read", "up_to": reply_id}),
        )
        .await;
    let seen = admin.event("read").await;
    assert_eq!(
        (seen["conversation_id"].clone(), seen["up_to"].clone()),
        (conversation_id.clone(), reply_id)
    );

    visitor.perform(VISITOR_CHANNEL, json!({"action": "visit", "url": format!("{BLOG}/other"), "title": "Other", "referrer": "https://blog.test/post"})).await;
    let presence = admin.event("presence").await;
    assert_eq!(presence["page"]["url"], format!("{BLOG}/other"));
    assert_eq!(presence["online"], true);
    drop(visitor);
    let gone = admin.event("presence").await;
    assert_eq!(
        (gone["conversation_id"].clone(), gone["online"].clone()),
        (conversation_id, json!(false))
    );
}

#[tokio::test]
async fn the_visitor_hears_when_the_owner_comes_and_goes() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    let admin = subscribed_admin(&app, &cookie).await;
    assert_eq!(visitor.event("status").await["admin_online"], true);
    drop(admin);
    assert_eq!(visitor.event("status").await["admin_online"], false);
}

#[tokio::test]
async fn deleting_a_conversation_tells_both_sides_and_the_visitor_starts_afresh() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;
    visitor.speak("forget me", uuid()).await;
    let conversation_id = admin.event("message").await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();

    let path = format!("/conversations/{conversation_id}");
    let refused = app
        .http(
            "DELETE",
            &path,
            &[("cookie", &cookie), ("origin", BLOG)],
            None,
        )
        .await;
    assert_eq!(
        refused.status, 403,
        "an admin write from another origin is refused"
    );
    let deleted = app
        .http(
            "DELETE",
            &path,
            &[("cookie", &cookie), ("origin", &app.origin())],
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    visitor.event("deleted").await;
    assert_eq!(
        admin.event("deleted").await["conversation_id"],
        conversation_id.as_str()
    );

    let gone = app
        .http(
            "GET",
            &format!("{path}/messages"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"], "not_found");
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    assert_eq!(
        visitor.event("history").await["conversation"],
        serde_json::Value::Null
    );

    // Speaking again on the same socket, with the same client id as before, opens a new conversation: nothing of
    // the old one (its token, its client ids) is remembered anywhere.
    let reused_client_id = uuid();
    visitor.speak("hello again", &reused_client_id).await;
    let answer = visitor.answer().await;
    assert_eq!(answer["message"]["message"]["content"], "hello again");
    let fresh = admin.event("message").await;
    let fresh_id = fresh["conversation_id"].as_str().unwrap().to_string();
    assert_ne!(fresh_id, conversation_id);
    visitor.speak("hello again", &reused_client_id).await;
    assert_eq!(
        visitor.answer().await["message"]["message"]["id"],
        answer["message"]["message"]["id"],
        "a resend in the new conversation is still recognised"
    );
    let history = app
        .http(
            "GET",
            &format!("/conversations/{fresh_id}/messages"),
            &[("cookie", &cookie)],
            None,
        )
        .await
        .json();
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["hello again"]);
}

#[tokio::test]
async fn messages_page_backwards_through_the_rest_api() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    let mut ids = Vec::new();
    for index in 0..7 {
        visitor.speak(format!("m{index}"), uuid()).await;
        ids.push(visitor.event("message").await["message"].clone());
    }
    let conversation_id = ids[0]["conversation_id"].as_str().unwrap();
    let get = |query: String| {
        let path = format!("/conversations/{conversation_id}/messages?{query}");
        let cookie = cookie.clone();
        let app = &app;
        async move {
            app.http("GET", &path, &[("cookie", &cookie)], None)
                .await
                .json()
        }
    };
    let newest = get("limit=3".into()).await;
    assert_eq!(newest["messages"].as_array().unwrap(), &ids[4..].to_vec());
    assert_eq!(newest["more"], true);
    let older = get(format!("before={}&limit=3", ids[4]["id"])).await;
    assert_eq!(older["messages"].as_array().unwrap(), &ids[1..4].to_vec());
    let oldest = get(format!("before={}&limit=3", ids[1]["id"])).await;
    assert_eq!(oldest["messages"].as_array().unwrap(), &ids[..1].to_vec());
    assert_eq!(oldest["more"], false);
    let after = get(format!("after={}", ids[5]["id"])).await;
    assert_eq!(after["messages"].as_array().unwrap(), &ids[6..].to_vec());

    let list = app
        .http("GET", "/conversations", &[("cookie", &cookie)], None)
        .await
        .json();
    assert_eq!(list["conversations"][0]["last_message"], ids[6]);
    assert_eq!(list["conversations"][0]["unread_count"], 7);
}

/// Regression (issue 15, item 10): a visitor's page was any URL with any title, and the dashboard linked to it under
/// that title. Now a page must be on one of the widget's sites.
#[tokio::test]
async fn a_page_elsewhere_than_the_widget_s_sites_is_refused() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor.speak("hi", uuid()).await;
    visitor.event("message").await;
    for url in [
        "https://evil.example/login".to_string(),
        format!("{BLOG}.evil.example/x"),
        format!("http://user@{}/x", BLOG.trim_start_matches("http://")),
        "javascript:alert(1)".to_string(),
        "blog.test:8080/x".to_string(),
    ] {
        visitor
            .perform(
                VISITOR_CHANNEL,
                json!({"action": "visit", "url": url, "title": "Your bank", "referrer": ""}),
            )
            .await;
        let error = visitor.event("error").await;
        assert_eq!(error["code"], "invalid", "{url}: {error}");
    }
    visitor
        .perform(VISITOR_CHANNEL, json!({"action": "visit", "url": format!("{BLOG}/post?x=1#top"), "title": "A post", "referrer": ""}))
        .await;
    let presence = admin.event("presence").await;
    assert_eq!(presence["page"]["url"], format!("{BLOG}/post?x=1#top"));
}
