//! The chat itself: visitor and admin in both directions, tabs, resends, sync after a disconnect and a restart.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_visitor_message_reaches_the_admin_and_the_reply_comes_back() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let token = uuid();
    let mut visitor = subscribed_visitor(&app, &token).await;

    let client_id = uuid();
    visitor.perform(VISITOR_CHANNEL, json!({"action": "speak", "content": "  Hello there  ", "client_id": client_id})).await;
    let echoed = visitor.event("message").await;
    assert_eq!(echoed["message"]["content"], "Hello there");
    assert_eq!(echoed["message"]["sender"], "visitor");
    assert_eq!(echoed["message"]["client_id"], client_id.as_str());
    let created_at = echoed["message"]["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == 24, "{created_at}");

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
