//! Input hardening: SQL injection payloads in every query parameter of the
//! API and in the `Authorization` header change nothing. Each payload is
//! answered exactly as a harmless value that matches nothing would be (same
//! status, same body shape), quickly (a `pg_sleep` that ran would show),
//! and the ledger is intact afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{ADMIN_TOKEN, TestApp, TestDatabase, spawn_app, test_config};

both_backends_with_database!(injection_payloads_change_nothing);

const PAYLOADS: [&str; 8] = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE ai_provider_usage; --",
    "1); DELETE FROM api_keys; --",
    "' UNION SELECT key_hash FROM api_keys --",
    "'||(SELECT pg_sleep(3))||'",
    "1 AND 1=(SELECT 1 FROM pg_sleep(3))",
    "\" OR \"\"=\"",
];

/// Routes and the parameters they take.
const ROUTES: [(&str, &[&str]); 9] = [
    (
        "/api/v1/usage/records",
        &[
            "provider",
            "model",
            "task_type",
            "org_id",
            "user_id",
            "tag",
            "start_date",
            "end_date",
            "limit",
            "cursor",
        ],
    ),
    (
        "/api/v1/usage/stats",
        &["model", "org_id", "user_id", "tag", "start_date"],
    ),
    (
        "/api/v1/usage/daily",
        &["model", "org_id", "user_id", "tag"],
    ),
    (
        "/api/v1/usage/export",
        &["model", "org_id", "user_id", "tag", "format"],
    ),
    ("/api/v1/alerts", &["status", "severity", "org_id", "limit"]),
    ("/api/v1/budgets", &["org_id"]),
    ("/api/v1/keys", &["org_id"]),
    ("/api/v1/users", &["org_id"]),
    (
        "/api/v1/audit",
        &["actor", "action", "org_id", "target", "before_id", "limit"],
    ),
];

async fn get(
    app: &TestApp,
    token: &str,
    path: &str,
    query: &[(&str, &str)],
) -> (u16, String, Duration) {
    let started = Instant::now();
    let url = reqwest::Url::parse_with_params(&app.url(path), query).unwrap();
    let response = app
        .client
        .get(url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, text, started.elapsed())
}

/// The body with what differs between two harmless queries blanked out:
/// error messages and params name the value given.
fn shape(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut object)) => {
            if let Some(Value::Object(error)) = object.get_mut("error") {
                error.remove("message");
            }
            Value::Object(object)
        }
        Ok(other) => other,
        Err(_) => Value::String(format!("{} bytes of text", text.len().min(1))),
    }
}

async fn injection_payloads_change_nothing(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let record = json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat",
        "input_tokens": 10, "output_tokens": 1, "org_id": "acme", "user_id": "alice"});
    let response = app
        .post_usage(&json!({"records": [record, record]}).to_string())
        .await;
    assert_eq!(response.status(), 202);
    app.recorder.flush().await.unwrap();
    let before = app.all_records().await.len();
    assert_eq!(before, 2);

    for (path, parameters) in ROUTES {
        for parameter in parameters {
            // What a harmless value that matches nothing gets.
            let (status, text, _) =
                get(&app, ADMIN_TOKEN, path, &[(parameter, "zz-nothing")]).await;
            let expected = (status, shape(&text));
            for payload in PAYLOADS {
                let (status, text, took) =
                    get(&app, ADMIN_TOKEN, path, &[(parameter, payload)]).await;
                assert_eq!(
                    (status, shape(&text)),
                    expected,
                    "{path}?{parameter}={payload}: {text}"
                );
                assert!(
                    took < Duration::from_secs(2),
                    "{path}?{parameter}={payload} took {took:?}"
                );
            }
        }
    }
    // In the Authorization header: refused like any wrong token, quickly.
    let (status, text, _) = get(&app, "zz-nothing", "/api/v1/usage/stats", &[]).await;
    let expected = (status, shape(&text));
    assert_eq!(status, 401);
    for payload in PAYLOADS.iter().copied().chain([
        "tg_' OR '1'='1",
        "tg_0000000000000000000000000000000000000000000000'--",
    ]) {
        for path in ["/api/v1/usage/stats", "/api/v1/keys"] {
            let (status, text, took) = get(&app, payload, path, &[]).await;
            assert_eq!((status, shape(&text)), expected, "Bearer {payload}: {text}");
            assert!(
                took < Duration::from_secs(2),
                "Bearer {payload} took {took:?}"
            );
        }
        let gateway = app
            .client
            .post(app.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {payload}"))
            .json(&json!({"model": "gpt-4o", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(gateway.status(), 401, "gateway, Bearer {payload}");
    }
    // Nothing was dropped, deleted or added.
    assert_eq!(app.all_records().await.len(), before);
    let (status, keys, _) = get(&app, ADMIN_TOKEN, "/api/v1/keys", &[]).await;
    assert_eq!(status, 200, "{keys}");
    app.stop().await;
}
