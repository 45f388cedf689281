//! The dashboard's server side: its page and files, and sessions that stand
//! in for a key — HttpOnly SameSite=Strict cookies, a CSRF token on every
//! change, the key's scope and role, and an end when the key is revoked.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{ADMIN_TOKEN, TestDatabase, spawn_app, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends_with_database!(
    the_page_and_its_files_are_served_with_protective_headers,
    a_session_stands_in_for_its_key
);

/// Every asset the page names, with its size: what a first visit loads.
fn referenced_assets(html: &str) -> Vec<String> {
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (index, _) in html.match_indices(attribute) {
            let rest = &html[index + attribute.len()..];
            let value = &rest[..rest.find('"').unwrap()];
            if value.starts_with("/admin/ai-usage/assets/") {
                assets.push(value.to_owned());
            }
        }
    }
    assets
}

async fn the_page_and_its_files_are_served_with_protective_headers(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let client = reqwest::Client::new();
    let page = client.get(app.url("/admin/ai-usage")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    // Nothing inline: the policy would block it, so the page must not need it.
    assert!(!html.contains("<script>"), "inline script in the page");
    assert!(!html.contains(" style=\""), "inline style in the page");
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(external), "the page loads from elsewhere");
    }

    let assets = referenced_assets(&html);
    for expected in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
        assert!(
            assets.iter().any(|asset| asset.ends_with(expected)),
            "the page does not load {expected}: {assets:?}"
        );
    }
    let mut total = html.len();
    for asset in &assets {
        let response = client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = if asset.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(kind.starts_with(expected), "{asset}: {kind}");
        let etag = response.headers()["etag"].clone();
        total += response.bytes().await.unwrap().len();
        // Unchanged: 304 without a body.
        let again = client
            .get(app.url(asset))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{asset}");
    }
    assert!(total < 300 * 1024, "first load is {total} bytes");
    let sizes: usize = tollgate::http::dashboard::first_load()
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert_eq!(sizes, total, "the page loads exactly the built-in files");

    let missing = client
        .get(app.url("/admin/ai-usage/assets/../../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let missing = client
        .get(app.url("/admin/ai-usage/assets/secrets.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].as_str().is_some());
    app.stop().await;
}

/// A client that sends one cookie, and the CSRF token when asked.
struct Browser<'a> {
    client: reqwest::Client,
    base: &'a str,
    cookie: String,
}

impl Browser<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("cookie", format!("theme=dark; {}", self.cookie));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Logs in with `key`: the cookie (name=value) and the session's body.
async fn login(client: &reqwest::Client, base: &str, key: &str) -> (String, Value) {
    let response = client
        .post(format!("{base}/admin/ai-usage/session"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(key),
        "the cookie must not carry the key"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("tollgate_session="));
    (cookie, response.json().await.unwrap())
}

async fn a_session_stands_in_for_its_key(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let client = reqwest::Client::new();
    let base = app.address.clone();
    let records: Vec<Value> = ["alice", "bob"]
        .iter()
        .map(|user| {
            json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat",
                   "org_id": "acme", "user_id": user, "input_tokens": 10, "output_tokens": 5,
                   "latency_ms": 100, "success": true})
        })
        .collect();
    assert_eq!(
        app.post_usage(&json!({ "records": records }).to_string())
            .await
            .status(),
        202
    );
    let store = common::connect_store(&database.url).await;
    store.ensure_org("acme").await.unwrap();
    for user in ["alice", "bob"] {
        store.ensure_user(user, "acme").await.unwrap();
    }
    store.close().await;
    let (status, created) = app
        .admin(
            Method::POST,
            "/api/v1/keys",
            Some(json!({"org_id": "acme", "user_id": "alice", "role": "member"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let member_key = created["key"].as_str().unwrap().to_owned();
    let member_key_id = created["id"].as_str().unwrap().to_owned();
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            app.all_records().await.len() == 2
        })
        .await
    );

    // Bad logins: a clear error, no cookie.
    for (body, expected) in [
        (json!({"key": "tg_0000"}), 401),
        (json!({"key": format!("tg_{}", "0".repeat(48))}), 401),
        (json!({"key": "not-the-admin-token"}), 401),
        (json!({"token": member_key}), 422),
        (json!({"key": member_key, "role": "admin"}), 422),
    ] {
        let response = client
            .post(format!("{base}/admin/ai-usage/session"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{body}");
        assert!(response.headers().get("set-cookie").is_none());
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].as_str().is_some(), "{error}");
    }
    // Logins come as JSON from this server's own page.
    let text = client
        .post(format!("{base}/admin/ai-usage/session"))
        .header("content-type", "text/plain")
        .body(json!({ "key": member_key }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 400);
    let elsewhere = client
        .post(format!("{base}/admin/ai-usage/session"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "key": member_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.headers().get("set-cookie").is_none());
    let malformed = client
        .post(format!("{base}/admin/ai-usage/session"))
        .header("content-type", "application/json")
        .body("{\"key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let no_session = client
        .get(format!("{base}/admin/ai-usage/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), 401);

    // The member's session: their role, their rows, nobody else's.
    let (cookie, session) = login(&client, &base, &member_key).await;
    assert_eq!(session["role"], "member");
    assert_eq!(session["user_id"], "alice");
    assert_eq!(session["org_id"], "acme");
    assert_eq!(session["timezone"], "UTC");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let member = Browser {
        client: client.clone(),
        base: &base,
        cookie: cookie.clone(),
    };
    let (status, current) = member
        .call(Method::GET, "/admin/ai-usage/session", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(current["csrf_token"], csrf.as_str());
    let (status, page) = member
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 200);
    let users: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice"]);
    let (status, _) = member
        .call(Method::GET, "/api/v1/usage/stats?user_id=bob", None, None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = member
        .call(Method::GET, "/api/v1/providers", None, None)
        .await;
    assert_eq!(status, 403, "a member's session is a member");

    // Changes need the CSRF token: none, a wrong one, another session's.
    let (_, other_session) = login(&client, &base, &member_key).await;
    let other_csrf = other_session["csrf_token"].as_str().unwrap().to_owned();
    assert_ne!(other_csrf, csrf);
    let wrong = "0".repeat(64);
    for presented in [
        None,
        Some(""),
        Some(wrong.as_str()),
        Some(other_csrf.as_str()),
    ] {
        let (status, body) = member
            .call(
                Method::POST,
                "/api/v1/keys",
                presented,
                Some(json!({"name": "from the dashboard"})),
            )
            .await;
        assert_eq!(status, 403, "{presented:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("CSRF"));
    }
    // A change with the right token but from another site's page (a
    // browser says so) is refused too.
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
    ] {
        let response = client
            .post(format!("{base}/api/v1/keys"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header(header, value)
            .json(&json!({"name": "from elsewhere"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{header}: {value}");
    }
    let (status, made) = member
        .call(
            Method::POST,
            "/api/v1/keys",
            Some(&csrf),
            Some(json!({"name": "from the dashboard"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let same_origin = client
        .post(format!("{base}/api/v1/keys"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("sec-fetch-site", "same-origin")
        .header("origin", &base)
        .json(&json!({"name": "from the dashboard too"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 201);
    // Two session cookies (one planted for a narrower path) are no session.
    let planted = Browser {
        client: client.clone(),
        base: &base,
        cookie: format!("{cookie}; {cookie}"),
    };
    let (status, _) = planted
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(made["user_id"], "alice");
    // A bearer token still works without any CSRF token (no cookie involved).
    let bearer = client
        .get(format!("{base}/api/v1/usage/records"))
        .bearer_auth(&member_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    // A forged or altered cookie is no session.
    let forged = Browser {
        client: client.clone(),
        base: &base,
        cookie: format!("{}0", cookie),
    };
    let (status, _) = forged
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 401);

    // The admin token logs in too, as the bootstrap admin.
    let (admin_cookie, admin_session) = login(&client, &base, ADMIN_TOKEN).await;
    assert_eq!(admin_session["role"], "admin");
    let admin = Browser {
        client: client.clone(),
        base: &base,
        cookie: admin_cookie,
    };
    let (status, page) = admin
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);

    // Logins are audited.
    let (status, audit) = app
        .admin(Method::GET, "/api/v1/audit?action=session.login", None)
        .await;
    assert_eq!(status, 200);
    assert!(audit["data"].as_array().unwrap().len() >= 3, "{audit}");

    // Logging out always works (no token needed), clears the cookie and
    // ends the session on this instance.
    let response = client
        .delete(format!("{base}/admin/ai-usage/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("tollgate_session=;") && cleared.contains("Max-Age=0"));
    let (status, _) = member
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 401, "a copy of a logged-out cookie is refused");

    // Revoking the key ends its other sessions at once.
    let (second_cookie, _) = login(&client, &base, &member_key).await;
    let member = Browser {
        client: client.clone(),
        base: &base,
        cookie: second_cookie,
    };
    let (status, _) = member
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/keys/{member_key_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = member
        .call(Method::GET, "/api/v1/usage/records", None, None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = member
        .call(Method::GET, "/admin/ai-usage/session", None, None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}
