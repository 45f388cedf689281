//! The ingest and records API through a real server on port 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::proxy::{Proxy, postgres_address};
use common::{ADMIN_TOKEN, TestDatabase, eventually, spawn_app, test_config};

fn record(request_id: &str, cost: &str) -> Value {
    json!({
        "request_id": request_id,
        "provider": "openai",
        "model": "gpt-4o",
        "task_type": "chat",
        "input_tokens": 1000,
        "cached_input_tokens": 200,
        "output_tokens": 500,
        "cost_usd": cost,
        "latency_ms": 640,
        "org_id": "acme",
        "user_id": "alice",
    })
}

/// Segment files waiting in a test server's spool.
fn spool_segments(database: &TestDatabase) -> usize {
    std::fs::read_dir(database.spool_dir())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.file_name().to_string_lossy().starts_with("segment-"))
        })
        .count()
}

fn uuid(n: u32) -> String {
    format!("0193a1b2-0000-7000-8000-{n:012}")
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("an error body in JSON");
    (status, body["error"].clone())
}

#[tokio::test]
async fn a_priced_record_is_stored_with_its_catalog_cost() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let body = json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat",
        "input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 500});
    let response = app.post_usage(&body.to_string()).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["request_id"], accepted["request_ids"][0]);
    // 800 × $2.50 + 200 × $1.25 + 500 × $10 per million = $0.00725.
    assert_eq!(records[0]["cost_usd"], "0.00725");
    assert_eq!(records[0]["cost_nano_usd"], 7_250_000);
    assert_eq!(records[0]["cost_status"], "priced");
    assert_eq!(records[0]["success"], true);
    assert_eq!(records[0]["org_id"], "default");
    app.stop().await;
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_names_its_field() {
    let database = TestDatabase::sqlite();
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("server.max_body_bytes", "4096"),
            ("ingest.max_batch_records", "3"),
        ],
    );
    let app = spawn_app(config).await;
    let far_future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let good = record(&uuid(1), "0.001");
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        ("{\"records\": [".to_owned(), 400, None),
        ("[]".to_owned(), 422, None),
        (json!({"records": [good, {"provider": "openai", "model": "gpt-4o", "task_type": "chat", "input_tokens": -1}]}).to_string(), 422, Some("records[1].input_tokens")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "created_at": far_future}).to_string(), 422, Some("created_at")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "sing"}).to_string(), 422, Some("task_type")),
        (json!({"provider": "openai", "model": "gpt-4o"}).to_string(), 422, Some("task_type")),
        (json!({"records": [good, {"provider": "openai", "task_type": "chat"}]}).to_string(), 422, Some("records[1].model")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "input_tokens": 5, "cached_input_tokens": 6}).to_string(), 422, Some("cached_input_tokens")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "cost_usd": "-0.5"}).to_string(), 422, Some("cost_usd")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "org_id": ""}).to_string(), 422, Some("org_id")),
        (json!({"provider": "openai", "model": "gpt-4o\u{0}x", "task_type": "chat"}).to_string(), 422, Some("model")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "metadata": {"note": "a\u{0}b"}}).to_string(), 422, Some("metadata")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "input_tokens": 9_223_372_036_854_775_807_u64}).to_string(), 422, Some("input_tokens")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "cost_usd": "5000000"}).to_string(), 422, Some("cost_usd")),
        (json!({"provider": "openai", "model": "gpt-image-1", "task_type": "image_generation", "input_tokens": 10, "cached_input_tokens": 5, "usage_details": {"input_image_tokens": 6}}).to_string(), 422, Some("usage_details")),
        (json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "created_at": "1999-12-31T23:59:59Z"}).to_string(), 422, Some("created_at")),
        (json!({"records": [record(&uuid(2), "0"), record(&uuid(3), "0"), record(&uuid(4), "0"), record(&uuid(5), "0")]}).to_string(), 413, None),
        (format!("{{\"model\": \"{}\"}}", "x".repeat(5000)), 413, None),
    ];
    for (body, status, param) in cases {
        let (got, error) = error_of(app.post_usage(&body).await).await;
        assert_eq!(got, status, "{body:.120}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{body:.120}");
        }
    }
    app.recorder.flush().await.unwrap();
    assert!(
        app.all_records().await.is_empty(),
        "a refused batch records nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_api_refuses_callers_without_the_admin_token() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    for token in [None, Some("wrong-token"), Some("")] {
        let mut request = app.client.get(app.url("/api/v1/usage/records"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(error["code"], "invalid_api_key");
    }
    let response = app
        .client
        .get(app.url("/api/v1/usage/records"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn with_no_admin_token_configured_the_api_is_closed() {
    let database = TestDatabase::sqlite();
    let mut config = test_config(&database.url, &database.spool_dir(), &[]);
    config.server.admin_token = None;
    let app = spawn_app(config).await;
    let (status, _) = error_of(app.post_usage(&record(&uuid(1), "0.1").to_string()).await).await;
    assert_eq!(status, 401);
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_batch_is_not_counted_twice() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let batch =
        json!({"records": (1..=50).map(|n| record(&uuid(n), "0.000123456")).collect::<Vec<_>>()});
    for _ in 0..3 {
        assert_eq!(app.post_usage(&batch.to_string()).await.status(), 202);
    }
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    assert_eq!(records.len(), 50);
    let total: i64 = records
        .iter()
        .map(|r| r["cost_nano_usd"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 50 * 123_456);
    assert!(
        records
            .iter()
            .all(|r| r["cost_status"] == "provider_reported")
    );
    app.stop().await;
    // The rollup, where double counting would show, counts each record once.
    let store = common::connect_store(&database.url).await;
    let rollups = store
        .rollups(
            &tollgate::store::RecordFilter {
                scope: tollgate::store::Scope::All,
                ..Default::default()
            },
            chrono_tz::UTC,
        )
        .await
        .unwrap();
    assert_eq!(
        rollups.iter().map(|(_, delta)| delta.requests).sum::<i64>(),
        50
    );
    assert_eq!(
        rollups
            .iter()
            .map(|(_, delta)| delta.cost_nano_usd)
            .sum::<i64>(),
        50 * 123_456
    );
    store.close().await;
}

#[tokio::test]
async fn records_are_filtered_and_paged_through_the_api() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let records: Vec<Value> = (1..=25)
        .map(|n| {
            let mut entry = record(&uuid(n), "0.01");
            entry["created_at"] = json!(format!("2026-11-{:02}T12:00:00Z", n));
            entry["user_id"] = json!(if n % 2 == 0 { "bob" } else { "alice" });
            entry
        })
        .collect();
    assert_eq!(
        app.post_usage(&json!({"records": records}).to_string())
            .await
            .status(),
        202
    );
    app.recorder.flush().await.unwrap();
    let page: Value = app
        .get_records("?user_id=bob&start_date=2026-11-05&end_date=2026-11-10&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let days: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["created_at"].as_str().unwrap()[..10])
        .collect();
    assert_eq!(days, ["2026-11-10", "2026-11-08"]);
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = app
        .get_records(&format!(
            "?user_id=bob&start_date=2026-11-05&end_date=2026-11-10&limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    let days: Vec<&str> = next["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["created_at"].as_str().unwrap()[..10])
        .collect();
    assert_eq!(days, ["2026-11-06"]);
    assert_eq!(next["has_more"], false);
    for (query, param) in [
        ("?start_date=last-week", "start_date"),
        ("?start_date=2026-11-10&end_date=2026-11-01", "end_date"),
        ("?provider=azure", "provider"),
        ("?limit=100000", "limit"),
        ("?page=2", "page"),
    ] {
        let (status, error) = error_of(app.get_records(query).await).await;
        assert_eq!(
            (status, error["param"].as_str()),
            (422, Some(param)),
            "{query}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn records_sent_while_postgres_is_down_appear_once_it_returns() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = Proxy::start(postgres_address(&database.url)).await;
    let config = test_config(
        &database.url_through(proxy.address),
        &database.spool_dir(),
        &[],
    );
    let app = spawn_app(config).await;

    assert_eq!(
        app.post_usage(
            &json!({"records": (1..=10).map(|n| record(&uuid(n), "0.001")).collect::<Vec<_>>()})
                .to_string()
        )
        .await
        .status(),
        202
    );
    app.recorder.flush().await.unwrap();

    proxy.take_down();
    // The outage is not an ingest outage: records are accepted and spooled.
    for chunk in 0..5 {
        let batch: Vec<Value> = (1..=20)
            .map(|n| record(&uuid(100 + chunk * 20 + n), "0.001"))
            .collect();
        assert_eq!(
            app.post_usage(&json!({"records": batch}).to_string())
                .await
                .status(),
            202
        );
    }
    app.recorder.flush().await.unwrap();
    assert_eq!(
        app.get_records("").await.status(),
        503,
        "reads need the database"
    );
    let spooled = spool_segments(&database);
    assert!(spooled >= 1, "records wait in the spool on disk");

    proxy.bring_up();
    let all_there = eventually(Duration::from_secs(20), || async {
        let response = app.get_records("?limit=1000").await;
        if response.status() != 200 {
            return false;
        }
        let page: Value = response.json().await.unwrap();
        page["data"].as_array().map(Vec::len) == Some(110)
    })
    .await;
    assert!(all_there, "all 110 records are written after the outage");
    let records = app.all_records().await;
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 110, "no duplicates");
    app.stop().await;
}

#[tokio::test]
async fn spooled_records_survive_a_restart_and_are_written_at_the_next_start() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = Proxy::start(postgres_address(&database.url)).await;
    let url = database.url_through(proxy.address);
    let app = spawn_app(test_config(&url, &database.spool_dir(), &[])).await;
    proxy.take_down();
    let batch: Vec<Value> = (1..=30).map(|n| record(&uuid(n), "0.002")).collect();
    assert_eq!(
        app.post_usage(&json!({"records": batch}).to_string())
            .await
            .status(),
        202
    );
    app.stop().await;

    proxy.bring_up();
    let restarted = spawn_app(test_config(&url, &database.spool_dir(), &[])).await;
    restarted.recorder.flush().await.unwrap();
    let records = restarted.all_records().await;
    assert_eq!(records.len(), 30);
    assert_eq!(spool_segments(&database), 0, "the spool is emptied");
    restarted.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["database"], "sqlite");
    let written = || async {
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("tollgate_recorder_written_records_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = written().await;
    assert_eq!(
        app.post_usage(&record(&uuid(1), "0.5").to_string())
            .await
            .status(),
        202
    );
    app.recorder.flush().await.unwrap();
    // The registry is process-wide, so other tests may add more; ours adds one at least.
    assert!(written().await >= before + 1.0);
    let (status, error) = error_of(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_records_nothing_of_that_call() {
    use sqlx::Connection;
    let database = TestDatabase::sqlite();
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("recorder.max_queued_records", "10"),
            ("database.acquire_timeout_ms", "3000"),
        ],
    );
    let app = spawn_app(config).await;
    // Another process holds SQLite's write lock, so the writer cannot drain the queue.
    let mut blocker = sqlx::SqliteConnection::connect(&database.url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let first: Vec<Value> = (1..=8).map(|n| record(&uuid(n), "0.001")).collect();
    let second: Vec<Value> = (9..=16).map(|n| record(&uuid(n), "0.001")).collect();
    assert_eq!(
        app.post_usage(&json!({"records": first}).to_string())
            .await
            .status(),
        202
    );
    let refused = app
        .post_usage(&json!({"records": second.clone()}).to_string())
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (_, error) = error_of(refused).await;
    assert_eq!(error["code"], "overloaded");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();
    let drained = eventually(Duration::from_secs(10), || async {
        app.recorder.queued() == 0
    })
    .await;
    assert!(drained);
    assert_eq!(
        app.post_usage(&json!({"records": second}).to_string())
            .await
            .status(),
        202
    );
    app.recorder.flush().await.unwrap();
    assert_eq!(
        app.all_records().await.len(),
        16,
        "each record once: the refused call added nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn records_sharing_a_provider_id_are_kept_apart() {
    // Ollama numbers its responses from 1 again after every restart.
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let mut first = record(&uuid(1), "0");
    let mut second = record(&uuid(2), "0");
    first["provider_request_id"] = json!("chatcmpl-1");
    second["provider_request_id"] = json!("chatcmpl-1");
    assert_eq!(
        app.post_usage(&json!({"records": [first, second]}).to_string())
            .await
            .status(),
        202
    );
    app.recorder.flush().await.unwrap();
    assert_eq!(app.all_records().await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn an_unpriced_model_is_refused_when_the_policy_says_reject() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(
        &database.url,
        &database.spool_dir(),
        &[("pricing.unpriced", "reject")],
    ))
    .await;
    let unknown = json!({"provider": "openai", "model": "gpt-unknown-9", "task_type": "chat", "input_tokens": 5});
    let priced =
        json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat", "input_tokens": 5});
    let (status, error) = error_of(
        app.post_usage(&json!({"records": [priced, unknown]}).to_string())
            .await,
    )
    .await;
    assert_eq!(
        (status, error["param"].as_str()),
        (422, Some("records[1].model"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("gpt-unknown-9"),
        "{error}"
    );
    app.recorder.flush().await.unwrap();
    assert!(app.all_records().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_unpriced_model_is_recorded_as_unpriced_by_default() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let unknown = json!({"provider": "openai", "model": "gpt-unknown-9", "task_type": "chat", "input_tokens": 5});
    assert_eq!(app.post_usage(&unknown.to_string()).await.status(), 202);
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    assert_eq!(records[0]["cost_status"], "unpriced");
    assert_eq!(records[0]["cost_usd"], Value::Null, "unpriced is not $0");
    assert!(
        records[0]["metadata"]["cost_note"]
            .as_str()
            .unwrap()
            .contains("no price")
    );
    app.stop().await;
}
