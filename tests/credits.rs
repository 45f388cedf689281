//! Provider credits against the fake upstream's OpenRouter and OpenAI
//! account endpoints: limits, null limits, management keys (and keys that
//! are not), bad and rate-limited keys; manual balances; the low-balance and
//! key-limit alerts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use serde_json::{Value, json};
use tollgate::alerts::evaluator::Evaluator;
use tollgate::alerts::{AlertType, Severity};

use common::{TestApp, TestDatabase, connect_store, spawn_app, test_config};

async fn app(database: &TestDatabase, base: &str, keys: &[(&str, &str)]) -> TestApp {
    let openrouter = format!("{base}/openrouter/api/v1");
    let openai = format!("{base}/openai/v1");
    let mut settings = vec![
        ("providers.openrouter.base_url", openrouter.as_str()),
        ("providers.openai.base_url", openai.as_str()),
        ("credits.poll_interval_seconds", "3600"),
    ];
    settings.extend_from_slice(keys);
    spawn_app(test_config(&database.url, &database.spool_dir(), &settings)).await
}

async fn refresh(app: &TestApp, provider: &str) -> Value {
    let (status, body) = app
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/providers/{provider}/refresh"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn openrouter_key_limits_management_credits_and_key_status_are_read() {
    let base = common::fake_upstream_base().await;
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        // A normal key: its remaining limit is the balance.
        (
            "sk-or-test",
            None,
            json!({"key_status": "valid", "key_limit_usd": "100", "key_limit_remaining_usd": "74.5", "balance_usd": "74.5", "total_credits_usd": null}),
        ),
        // A management key reads the account: credits − usage.
        (
            "sk-or-test",
            Some("sk-or-mgmt"),
            json!({"key_status": "valid", "balance_usd": "74.75", "total_credits_usd": "100.5", "total_usage_usd": "25.75"}),
        ),
        // A "management key" that is not one (403): the key's limit stays the balance.
        (
            "sk-or-test",
            Some("sk-or-test"),
            json!({"key_status": "valid", "balance_usd": "74.5", "total_credits_usd": null}),
        ),
        // Null limits: unlimited, no balance known.
        (
            "sk-or-unlimited",
            None,
            json!({"key_status": "valid", "key_limit_usd": null, "key_limit_remaining_usd": null, "balance_usd": null}),
        ),
        // A bad key.
        (
            "sk-or-bad",
            None,
            json!({"key_status": "invalid", "balance_usd": null}),
        ),
    ];
    for (key, management, expected) in cases {
        let database = TestDatabase::sqlite();
        let mut keys = vec![("providers.openrouter.api_key", key)];
        if let Some(management) = management {
            keys.push(("providers.openrouter.management_key", management));
        }
        let app = app(&database, &base, &keys).await;
        let got = refresh(&app, "openrouter").await;
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(
                &got[field], value,
                "{key} / {management:?}: {field} in {got}"
            );
        }
        assert!(got["checked_at"].is_string());
        app.stop().await;
    }
}

#[tokio::test]
async fn openai_key_status_and_manual_balances() {
    let base = common::fake_upstream_base().await;
    for (key, status) in [
        ("sk-test", "valid"),
        ("sk-bad", "invalid"),
        ("sk-limited", "rate_limited"),
    ] {
        let database = TestDatabase::sqlite();
        let app = app(&database, &base, &[("providers.openai.api_key", key)]).await;
        assert_eq!(refresh(&app, "openai").await["key_status"], status, "{key}");
        app.stop().await;
    }
    let database = TestDatabase::sqlite();
    let app = app(&database, &base, &[]).await;
    assert_eq!(
        refresh(&app, "openai").await["key_status"],
        "missing",
        "no key configured"
    );
    // OpenAI has no balance API: a balance set by hand survives polls.
    let (status, set) = app
        .admin(
            reqwest::Method::PUT,
            "/api/v1/providers/openai",
            Some(json!({"balance_usd": "42.5", "low_balance_threshold_usd": 50})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        (
            set["balance_usd"].as_str(),
            set["low_balance_threshold_usd"].as_str()
        ),
        (Some("42.5"), Some("50"))
    );
    assert_eq!(refresh(&app, "openai").await["balance_usd"], "42.5");
    let (_, listed) = app
        .admin(reqwest::Method::GET, "/api/v1/providers", None)
        .await;
    let providers: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, vec!["openai", "openrouter", "local"]);
    for (body, param) in [
        (json!({"balance_usd": "-1"}), "balance_usd"),
        (
            json!({"low_balance_threshold_usd": "lots"}),
            "low_balance_threshold_usd",
        ),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (status, answer) = app
            .admin(
                reqwest::Method::PUT,
                "/api/v1/providers/openai",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, answer["error"]["param"].as_str()),
            (422, Some(param)),
            "{body}"
        );
    }
    let (status, _) = app
        .admin(
            reqwest::Method::PUT,
            "/api/v1/providers/anthropic",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    // Cleared by null.
    let (_, cleared) = app
        .admin(
            reqwest::Method::PUT,
            "/api/v1/providers/openai",
            Some(json!({"balance_usd": null})),
        )
        .await;
    assert_eq!(cleared["balance_usd"], Value::Null);
    assert_eq!(cleared["low_balance_threshold_usd"], "50");
    app.stop().await;
}

#[tokio::test]
async fn low_balances_and_used_up_key_limits_raise_alerts_that_clear() {
    let base = common::fake_upstream_base().await;
    let database = TestDatabase::sqlite();
    let app = app(
        &database,
        &base,
        &[("providers.openrouter.api_key", "sk-or-spent")],
    )
    .await;
    refresh(&app, "openrouter").await;
    app.admin(
        reqwest::Method::PUT,
        "/api/v1/providers/openai",
        Some(json!({"balance_usd": "4", "low_balance_threshold_usd": "10"})),
    )
    .await;
    let store = connect_store(&database.url).await;
    let evaluator = Evaluator::new(store.clone(), common::evaluator_settings());
    let now = chrono::Utc::now();
    evaluator.evaluate(now).await.unwrap();
    let low = store.open_alerts(&[AlertType::LowBalance]).await.unwrap();
    assert_eq!(low.len(), 1);
    assert_eq!(
        (low[0].severity, low[0].provider.map(|p| p.as_str())),
        (Severity::High, Some("openai"))
    );
    let quota = store
        .open_alerts(&[AlertType::QuotaExceeded])
        .await
        .unwrap();
    assert_eq!(quota.len(), 1, "the OpenRouter key's limit is used up");
    assert_eq!(quota[0].severity, Severity::Critical);
    // Spent to zero: escalates in place.
    app.admin(
        reqwest::Method::PUT,
        "/api/v1/providers/openai",
        Some(json!({"balance_usd": "0"})),
    )
    .await;
    evaluator.evaluate(now).await.unwrap();
    let low = store.open_alerts(&[AlertType::LowBalance]).await.unwrap();
    assert_eq!((low.len(), low[0].severity), (1, Severity::Critical));
    // Topped up: resolved.
    app.admin(
        reqwest::Method::PUT,
        "/api/v1/providers/openai",
        Some(json!({"balance_usd": "100"})),
    )
    .await;
    assert_eq!(evaluator.evaluate(now).await.unwrap().resolved, 1);
    assert!(
        store
            .open_alerts(&[AlertType::LowBalance])
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
    store.close().await;
}

/// With an admin key, what OpenAI billed today is read from its costs API
/// and set beside what the ledger recorded.
#[tokio::test]
async fn openai_billing_is_reconciled_with_the_ledger() {
    let base = common::fake_upstream_base().await;
    let database = TestDatabase::sqlite();
    let app = app(
        &database,
        &base,
        &[
            ("providers.openai.api_key", "sk-test"),
            ("providers.openai.admin_key", "sk-admin-test"),
        ],
    )
    .await;
    for cost in ["0.75", "0.25"] {
        let response = app
            .post_usage(&json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "cost_usd": cost}).to_string())
            .await;
        assert_eq!(response.status(), 202);
    }
    // Another provider's spend is not OpenAI's.
    app.post_usage(&json!({"provider": "openrouter", "model": "openai/gpt-4o", "task_type": "chat", "cost_usd": "9"}).to_string())
        .await;
    app.recorder.flush().await.unwrap();
    let openai = refresh(&app, "openai").await;
    let reconciliation = &openai["reconciliation"];
    assert_eq!(
        reconciliation["day"],
        chrono::Utc::now().date_naive().to_string(),
        "{openai}"
    );
    assert_eq!(
        reconciliation["billed_usd"], "1.75",
        "two cost lines: 1.25 and 0.5"
    );
    assert_eq!(reconciliation["recorded_usd"], "1");
    assert_eq!(reconciliation["difference_usd"], "0.75");
    app.stop().await;
    // A project key where an admin key belongs: no billing, the key still valid.
    let database = TestDatabase::sqlite();
    let app = app_with(&database, &base, "sk-test").await;
    let openai = refresh(&app, "openai").await;
    assert_eq!(
        (openai["key_status"].as_str(), &openai["reconciliation"]),
        (Some("valid"), &Value::Null)
    );
    app.stop().await;
}

async fn app_with(database: &TestDatabase, base: &str, admin_key: &str) -> TestApp {
    app(
        database,
        base,
        &[
            ("providers.openai.api_key", "sk-test"),
            ("providers.openai.admin_key", admin_key),
        ],
    )
    .await
}
