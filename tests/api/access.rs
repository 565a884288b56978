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
    assert_eq!(
        session.json(),
        json!({"admin": true, "username": "admin", "allowed_origins": [BLOG]})
    );
    let mut admin = subscribed_admin(&app, &cookie).await;
    let logout = app.logout(&cookie).await;
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

/// Regression (issue 15, item 2): every route answered the blog with CORS and credentials, so a script on the blog
/// could read every conversation with the owner's cookie. Now only the widget's files are readable from elsewhere
/// (they are public: `*`, which browsers never combine with credentials), and nothing else is.
#[tokio::test]
async fn the_blog_can_read_the_widget_s_files_and_nothing_else_and_never_with_credentials() {
    let app = spawn_app().await;
    let cookie = app.login().await;
    let from_blog = [("origin", BLOG), ("cookie", cookie.as_str())];
    for path in ["/widget/panel.css", "/widget/panel.js", "/widget.js"] {
        let response = app.http("GET", path, &from_blog, None).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("access-control-allow-origin").as_deref(),
            Some("*"),
            "{path}"
        );
        assert_eq!(
            response.header("access-control-allow-credentials"),
            None,
            "{path}"
        );
    }
    for path in [
        "/conversations",
        "/auth/session",
        "/healthz",
        "/push/key",
        "/admin/",
        "/admin/api.js",
    ] {
        let response = app.http("GET", path, &from_blog, None).await;
        assert_eq!(
            response.header("access-control-allow-origin"),
            None,
            "{path} is not readable from the blog"
        );
        assert_eq!(response.header("access-control-allow-credentials"), None);
    }
}

/// Regression (issue 15, item 1): forty wrong logins sent at once from one address got 37 answers of 401, because
/// the throttle was checked before the hash and charged after it. Now a try is reserved before the hash.
#[tokio::test]
async fn a_burst_of_logins_from_one_address_gets_no_more_tries_than_the_limit() {
    let app = spawn_app_with(|config| config.limits.login_failures = 5).await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..40 {
        attempts.spawn(login_attempt(app.address, "wrong"));
    }
    let answers = attempts.join_all().await;
    let count = |status: u16| {
        answers
            .iter()
            .filter(|answer| answer.status == status)
            .count()
    };
    assert!(
        count(401) <= 5,
        "{} wrong passwords were checked",
        count(401)
    );
    assert!(count(429) >= 1);
    assert_eq!(count(401) + count(429) + count(503), 40);
    for answer in answers.iter().filter(|answer| answer.status != 401) {
        assert!(answer.header("retry-after").is_some(), "{}", answer.text());
    }
}

/// Regression (issue 15, item 11): logout answered before its session was deleted.
#[tokio::test]
async fn a_cookie_is_dead_as_soon_as_logout_answers() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let cookie = app.login().await;
        assert_eq!(app.logout(&cookie).await.status, 200);
        let session = app
            .http("GET", "/auth/session", &[("cookie", &cookie)], None)
            .await;
        assert_eq!(session.status, 401);
    }
}

/// Regression (issue 15, item 5): a new password left every old session valid for up to 30 days.
#[tokio::test]
async fn a_new_password_ends_every_session_and_the_same_one_keeps_them() {
    let mut app = spawn_app().await;
    let cookie = app.login().await;
    let session = |app: &TestApp, cookie: String| {
        let address = app.address;
        async move {
            http(
                address,
                "GET",
                "/auth/session",
                &[("cookie", &cookie)],
                None,
            )
            .await
            .status
        }
    };
    app.restart().await;
    assert_eq!(
        session(&app, cookie.clone()).await,
        200,
        "a restart with the same password keeps the owner logged in"
    );
    app.restart_with_password("a brand new password").await;
    assert_eq!(session(&app, cookie).await, 401);
    let cookie = app.login_with("a brand new password").await;
    assert_eq!(session(&app, cookie).await, 200);
}

/// Issue 15, item 5: "log out everywhere" ends every session of the owner and closes their sockets.
#[tokio::test]
async fn logging_out_everywhere_ends_every_session_and_closes_every_dashboard() {
    let app = spawn_app().await;
    let origin = app.origin();
    let phone = app.login().await;
    let laptop = app.login().await;
    let mut phone_socket = subscribed_admin(&app, &phone).await;
    let cross_site = app
        .http(
            "POST",
            "/auth/logout_everywhere",
            &[("cookie", &laptop), ("origin", BLOG)],
            None,
        )
        .await;
    assert_eq!(cross_site.status, 403);
    let everywhere = app
        .http(
            "POST",
            "/auth/logout_everywhere",
            &[("cookie", &laptop), ("origin", &origin)],
            None,
        )
        .await;
    assert_eq!(everywhere.status, 200, "{}", everywhere.text());
    assert!(everywhere
        .header("set-cookie")
        .unwrap()
        .contains("Max-Age=0"));
    for cookie in [&phone, &laptop] {
        let session = app
            .http("GET", "/auth/session", &[("cookie", cookie)], None)
            .await;
        assert_eq!(session.status, 401);
    }
    let (_, frames) = phone_socket.closed().await;
    assert!(
        frames.iter().any(|frame| frame["type"] == "disconnect"),
        "{frames:?}"
    );
}

/// Regression (issue 15, item 6): natter behind HTTPS sent no HSTS, and its cookie had no `__Host-` prefix.
#[tokio::test]
async fn over_https_the_cookie_is_host_only_and_browsers_are_told_to_stay_on_https() {
    let app = spawn_app_with(|config| config.server.public_url = "https://chat.test".into()).await;
    let login = app
        .http(
            "POST",
            "/auth/login",
            &[
                ("origin", "https://chat.test"),
                ("content-type", "application/json"),
            ],
            Some(json!({"username": "admin", "password": PASSWORD})),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let set_cookie = login.header("set-cookie").unwrap();
    assert!(
        set_cookie.starts_with("__Host-natter_session=")
            && set_cookie.contains("; Secure")
            && set_cookie.contains("Path=/")
            && !set_cookie.contains("Domain"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let session = app
        .http("GET", "/auth/session", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(session.status, 200);
    assert_eq!(
        session.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    // The unprefixed name is not a session over HTTPS (a sibling site could have planted it).
    let planted = cookie.replacen("__Host-", "", 1);
    let session = app
        .http("GET", "/auth/session", &[("cookie", &planted)], None)
        .await;
    assert_eq!(session.status, 401);

    let plain = spawn_app().await;
    let healthz = plain.http("GET", "/healthz", &[], None).await;
    assert_eq!(healthz.header("strict-transport-security"), None);
}

/// Regression (issue 15, item 7): entries of `X-Forwarded-For` that did not parse were skipped, so the attacker's
/// own entry to their left was believed, loopback included (`/metrics` opened to anyone).
#[tokio::test]
async fn a_forwarded_request_is_never_taken_for_loopback() {
    let app = spawn_app_with(|config| {
        config.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let metrics = |forwarded: Option<&'static str>| {
        let address = app.address;
        async move {
            let headers: Vec<(&str, &str)> = forwarded
                .map(|value| vec![("x-forwarded-for", value)])
                .unwrap_or_default();
            http(address, "GET", "/metrics", &headers, None)
                .await
                .status
        }
    };
    assert_eq!(metrics(None).await, 200, "the proxy's own host");
    for forwarded in [
        "127.0.0.1, unknown",
        "127.0.0.1, 203.0.113.9:4711",
        "127.0.0.1, [2001:db8::1]",
        "::1, _hidden",
        "127.0.0.1",
        "127.0.0.1, 127.0.0.1",
        "",
    ] {
        assert_eq!(metrics(Some(forwarded)).await, 403, "{forwarded:?}");
    }
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
