//! Who may connect and what they may see: tokens, sessions, origins, the login throttle.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_visitor_sees_only_their_own_conversation_and_cannot_act_as_admin() {
    let app = spawn_app().await;
    let mut alice = subscribed_visitor(&app, &uuid()).await;
    alice.speak("alice's secret", uuid()).await;
    let alice_message = alice.event("message").await["message"].clone();

    let mut bob = subscribed_visitor(&app, &uuid()).await;
    bob.perform(VISITOR_CHANNEL, json!({"action": "sync"}))
        .await;
    let history = bob.event("history").await;
    assert_eq!(history["messages"], json!([]), "bob sees nothing of alice");

    // Reusing alice's client id from bob's token stores bob's own message, it does not hand back alice's.
    bob.speak("bob", alice_message["client_id"].as_str().unwrap())
        .await;
    let bobs = bob.event("message").await["message"].clone();
    assert_eq!(bobs["content"], "bob");
    assert_ne!(bobs["conversation_id"], alice_message["conversation_id"]);

    let answer = bob.subscribe(ADMIN_CHANNEL).await;
    assert_eq!(answer["type"], "reject_subscription");
    bob.perform(ADMIN_CHANNEL, json!({"action": "sync"})).await;
    let error = bob.event("error").await;
    assert_eq!(error["code"], "forbidden");
    // The admin REST API does not open to a visitor either.
    assert_eq!(
        app.http("GET", "/conversations", &[], None).await.status,
        401
    );
}

#[tokio::test]
async fn a_token_that_is_not_a_uuid_is_told_unauthorized_and_not_to_reconnect() {
    let app = spawn_app().await;
    for path in ["/cable?token=not-a-uuid", "/cable?token="] {
        let mut client = Client::connect(app.address, path, BLOG, None)
            .await
            .expect("upgraded, then told");
        let (code, frames) = client.closed().await;
        assert_eq!(
            frames,
            vec![json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})],
            "{path}"
        );
        assert_eq!(code, Some(1008));
    }
}

#[tokio::test]
async fn an_admin_socket_needs_a_live_session() {
    let app = spawn_app().await;
    for cookie in [None, Some("natter_session=forged"), Some("other=1")] {
        let mut client = Client::connect(app.address, "/cable", &app.origin(), cookie)
            .await
            .expect("upgraded, then told");
        let (_, frames) = client.closed().await;
        assert_eq!(frames[0]["reason"], "unauthorized", "{cookie:?}");
    }
}

#[tokio::test]
async fn sockets_from_origins_not_allowed_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let token = uuid();
    let visitor_path = format!("/cable?token={token}");
    for origin in [
        "https://evil.example",
        "http://blog.test:8080.evil.example",
        "http://blog.test",
        "http://evil.blog.test:8080",
        "https://blog.test:8080",
        "null",
        "",
    ] {
        let refused = Client::connect(app.address, &visitor_path, origin, None)
            .await
            .err();
        assert_eq!(
            refused.map(|refused| refused.status),
            Some(Some(http::StatusCode::FORBIDDEN)),
            "visitor from {origin:?}"
        );
    }
    // The admin socket only from natter's own origin, even from an allowed blog.
    let refused = Client::connect(app.address, "/cable", BLOG, Some(&cookie))
        .await
        .err();
    assert_eq!(
        refused.map(|refused| refused.status),
        Some(Some(http::StatusCode::FORBIDDEN))
    );
    // And the real origins work.
    subscribed_visitor(&app, &token).await;
    subscribed_admin(&app, &cookie).await;
}

#[tokio::test]
async fn logins_are_checked_throttled_and_ended_by_logout() {
    let app = spawn_app_with(|config| config.limits.login_failures = 3).await;
    let origin = app.origin();
    let headers = [
        ("origin", origin.as_str()),
        ("content-type", "application/json"),
    ];
    let wrong_password = app
        .http(
            "POST",
            "/auth/login",
            &headers,
            Some(json!({"username": "admin", "password": "nope"})),
        )
        .await;
    let wrong_user = app
        .http(
            "POST",
            "/auth/login",
            &headers,
            Some(json!({"username": "root", "password": PASSWORD})),
        )
        .await;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(
        wrong_password.body, wrong_user.body,
        "a wrong user and a wrong password look the same"
    );
    assert_eq!(wrong_password.json()["error"], "wrong_credentials");

    let from_elsewhere = app
        .http(
            "POST",
            "/auth/login",
            &[("origin", BLOG), ("content-type", "application/json")],
            Some(json!({"username": "admin", "password": PASSWORD})),
        )
        .await;
    assert_eq!(from_elsewhere.status, 403, "login is a same-origin request");

    let cookie = app.login().await;
    let set_cookie = app
        .http(
            "POST",
            "/auth/login",
            &headers,
            Some(json!({"username": "admin", "password": PASSWORD})),
        )
        .await
        .header("set-cookie")
        .unwrap();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );

    app.http(
        "POST",
        "/auth/login",
        &headers,
        Some(json!({"username": "admin", "password": "nope"})),
    )
    .await;
    let throttled = app
        .http(
            "POST",
            "/auth/login",
            &headers,
            Some(json!({"username": "admin", "password": PASSWORD})),
        )
        .await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    let retry_after: u64 = throttled
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);

    // The session from before the throttle still works, and logout ends it and its sockets.
    let session = app
        .http("GET", "/auth/session", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(session.json(), json!({"admin": true, "username": "admin"}));
    let mut admin = subscribed_admin(&app, &cookie).await;
    let logout = app
        .http(
            "POST",
            "/auth/logout",
            &[("cookie", &cookie), ("origin", &origin)],
            None,
        )
        .await;
    assert_eq!(logout.status, 200);
    assert!(logout.header("set-cookie").unwrap().contains("Max-Age=0"));
    let (_, frames) = admin.closed().await;
    assert!(
        frames.iter().any(|frame| frame["type"] == "disconnect"),
        "{frames:?}"
    );
    assert_eq!(
        app.http("GET", "/auth/session", &[("cookie", &cookie)], None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn admin_routes_need_the_cookie_and_writes_need_the_origin() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let id = uuid();
    for (method, path) in [
        ("GET", "/conversations".to_string()),
        ("GET", format!("/conversations/{id}/messages")),
        ("GET", "/auth/session".into()),
    ] {
        let response = app.http(method, &path, &[], None).await;
        assert_eq!(response.status, 401, "{method} {path}");
        assert_eq!(response.json()["error"], "unauthorized");
    }
    let no_origin = app
        .http(
            "DELETE",
            &format!("/conversations/{id}"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(no_origin.status, 403);
    let same_site = app
        .http(
            "DELETE",
            &format!("/conversations/{id}"),
            &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(
        same_site.status, 404,
        "allowed, and the conversation does not exist"
    );
    let not_json = app
        .http(
            "POST",
            "/auth/login",
            &[("origin", &app.origin()), ("content-type", "text/plain")],
            Some(json!({})),
        )
        .await;
    assert_eq!(not_json.status, 415);
    let huge = app
        .http(
            "POST",
            "/auth/login",
            &[
                ("origin", &app.origin()),
                ("content-type", "application/json"),
            ],
            Some(json!({"username": "admin", "password": "x".repeat(100_000)})),
        )
        .await;
    assert_eq!(huge.status, 413);
}

#[tokio::test]
async fn the_blog_gets_cors_with_credentials_and_others_get_none() {
    let app = spawn_app().await;
    let allowed = app.http("GET", "/healthz", &[("origin", BLOG)], None).await;
    assert_eq!(
        allowed.header("access-control-allow-origin").as_deref(),
        Some(BLOG)
    );
    assert_eq!(
        allowed
            .header("access-control-allow-credentials")
            .as_deref(),
        Some("true")
    );
    let other = app
        .http(
            "GET",
            "/healthz",
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None);
}

/// Issue 16: a blog preview on an origin that is not allowed failed silently: the widget retried forever, the server
/// logged nothing, and only the browser console showed a 403. The dashboard now hears of each refused origin live
/// (once per few minutes) and can list them; the widget can ask whether its page may open the chat.
#[tokio::test]
async fn a_refused_origin_is_told_to_the_dashboard_and_the_widget_can_ask_why() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let mut admin = subscribed_admin(&app, &cookie).await;
    let preview = "http://localhost:8088";
    let visitor_path = format!("/cable?token={}", uuid());
    for _ in 0..3 {
        let refused = Client::connect(app.address, &visitor_path, preview, None)
            .await
            .err()
            .expect("an origin that is not allowed is refused");
        assert_eq!(refused.status, Some(http::StatusCode::FORBIDDEN));
    }
    // Pings keep the socket busy, so `event` alone would wait forever for an announcement that never comes.
    let told = tokio::time::timeout(PATIENCE, admin.event("refused_origin"))
        .await
        .expect("the dashboard hears of the refused origin");
    assert_eq!(told["refused_origin"]["origin"], preview);
    assert_eq!(told["refused_origin"]["attempts"], 1);

    let listed = app
        .http("GET", "/refused_origins", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(listed.status, http::StatusCode::OK);
    let listed = listed.json();
    assert_eq!(listed["refused_origins"][0]["origin"], preview);
    assert_eq!(listed["refused_origins"][0]["attempts"], 3);
    assert_eq!(
        app.http("GET", "/refused_origins", &[], None).await.status,
        http::StatusCode::UNAUTHORIZED
    );

    // The widget on that page asks, without credentials, and learns it is not allowed; the blog is.
    let answer = app
        .http("GET", "/widget/allowed", &[("origin", preview)], None)
        .await;
    assert_eq!(answer.status, http::StatusCode::OK);
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    assert_eq!(answer.json()["allowed"], false);
    let answer = app
        .http("GET", "/widget/allowed", &[("origin", BLOG)], None)
        .await;
    assert_eq!(answer.json()["allowed"], true);
    // Only the first refusal reached the dashboard: the next event is the one this visitor from the blog causes.
    let mut visitor = subscribed_visitor(&app, &uuid()).await;
    visitor.speak("hello", uuid()).await;
    let next = admin.next().await.expect("an event");
    assert_ne!(next["message"]["type"], "refused_origin", "{next}");
}

/// Issue 16: the dashboard asked `GET /auth/session` on every visit, and the 401 before sign-in showed as an error
/// in the browser's console. With `?optional=1` "not signed in" is a 200; without it the answer stays 401.
#[tokio::test]
async fn the_session_probe_answers_signed_out_without_an_error_status() {
    let app = spawn_app().await;
    let probe = app.http("GET", "/auth/session?optional=1", &[], None).await;
    assert_eq!(probe.status, http::StatusCode::OK);
    assert_eq!(probe.json(), json!({ "admin": false }));
    assert_eq!(
        app.http("GET", "/auth/session", &[], None).await.status,
        http::StatusCode::UNAUTHORIZED
    );
    let cookie = app.login().await;
    let probe = app
        .http(
            "GET",
            "/auth/session?optional=1",
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(probe.json()["admin"], true);
}
