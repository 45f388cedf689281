//! Webhooks: a receiver in the test checks the signature and the body,
//! failures are retried, deliveries survive a restart, and private targets
//! are refused unless allowed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tollgate::webhooks::signature;

use common::{TestApp, TestDatabase, eventually, spawn_app, test_config};

/// What the receiver got: headers and bodies, in order.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver on 127.0.0.1 that answers 500 to the first
/// `failures` requests and 200 after.
async fn receiver(failures: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let log = Arc::clone(&received);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = Arc::clone(&log);
            let seen = Arc::clone(&seen);
            async move {
                log.lock().await.push((headers, body));
                if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received)
}

fn config(database: &TestDatabase, allow_private: &str) -> tollgate::config::Config {
    test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("webhooks.allow_private", allow_private),
            ("webhooks.first_backoff_seconds", "0"),
            ("webhooks.max_attempts", "5"),
        ],
    )
}

async fn create_webhook(app: &TestApp, url: &str) -> Value {
    let (status, webhook) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "secret": "whsec_0123456789abcdef", "min_severity": "medium"})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    webhook
}

async fn raise(app: &TestApp, severity: &str, key: &str) -> Value {
    let (status, alert) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/alerts",
            Some(json!({"severity": severity, "title": "Disk filling", "message": "95% used", "dedupe_key": key})),
        )
        .await;
    assert!(status == 201 || status == 200, "{alert}");
    alert
}

#[tokio::test]
async fn events_are_signed_delivered_and_retried_until_accepted_on_sqlite() {
    events_are_signed_delivered_and_retried(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn events_are_signed_delivered_and_retried_until_accepted_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    events_are_signed_delivered_and_retried(database).await;
}

async fn events_are_signed_delivered_and_retried(database: TestDatabase) {
    let (url, received) = receiver(2).await;
    let app = spawn_app(config(&database, "true")).await;
    let webhook = create_webhook(&app, &url).await;
    assert_eq!(
        webhook["secret"], "whsec_0123456789abcdef",
        "shown once, at creation"
    );
    let (_, listed) = app
        .admin(reqwest::Method::GET, "/api/v1/webhooks", None)
        .await;
    assert!(listed["data"][0].get("secret").is_none(), "never listed");
    // Below the webhook's minimum severity: not sent.
    raise(&app, "low", "disk:a").await;
    let alert = raise(&app, "high", "disk:b").await;
    let delivered = eventually(Duration::from_secs(10), || async {
        received.lock().await.len() >= 3
    })
    .await;
    assert!(delivered, "three attempts: two failures, then accepted");
    let attempts = received.lock().await.clone();
    let now = chrono::Utc::now().timestamp();
    let mut event_ids = Vec::new();
    for (headers, body) in &attempts {
        let signed = headers.get(signature::HEADER).unwrap().to_str().unwrap();
        assert!(
            signature::verify("whsec_0123456789abcdef", signed, body, now, 300),
            "{signed}"
        );
        assert!(!signature::verify(
            "another-secret-entirely",
            signed,
            body,
            now,
            300
        ));
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["event"], "alert.created");
        assert_eq!(body["alert_id"], alert["id"]);
        assert_eq!(body["alert_type"], "custom");
        assert_eq!(body["severity"], "high");
        assert_eq!(body["title"], "Disk filling");
        assert_eq!(body["status"], "active");
        assert!(body["timestamp"].is_string());
        assert_eq!(
            headers
                .get("x-tollgate-event-id")
                .unwrap()
                .to_str()
                .unwrap(),
            body["id"].as_str().unwrap()
        );
        event_ids.push(body["id"].clone());
    }
    event_ids.dedup();
    assert_eq!(
        event_ids.len(),
        1,
        "one event, the same id on every attempt"
    );
    let path = format!(
        "/api/v1/webhooks/{}/deliveries",
        webhook["id"].as_str().unwrap()
    );
    let settled = eventually(Duration::from_secs(5), || async {
        let (_, deliveries) = app.admin(reqwest::Method::GET, &path, None).await;
        deliveries["data"][0]["status"] == "delivered"
    })
    .await;
    let (_, deliveries) = app.admin(reqwest::Method::GET, &path, None).await;
    assert!(settled, "{deliveries}");
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 1);
    assert_eq!(deliveries["data"][0]["attempts"], 3);
    assert_eq!(deliveries["data"][0]["last_status_code"], 200);
    // Acknowledging is an event too.
    let id = alert["id"].as_str().unwrap();
    app.admin(
        reqwest::Method::POST,
        &format!("/api/v1/alerts/{id}/acknowledge"),
        None,
    )
    .await;
    let acknowledged = eventually(Duration::from_secs(5), || async {
        received.lock().await.iter().any(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["event"] == "alert.acknowledged"
        })
    })
    .await;
    assert!(acknowledged);
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_waiting_for_a_retry_is_made_after_a_restart() {
    // The receiver refuses everything at first.
    let (url, received) = receiver(usize::MAX).await;
    let database = TestDatabase::sqlite();
    let app = spawn_app(config(&database, "true")).await;
    create_webhook(&app, &url).await;
    raise(&app, "critical", "db:down").await;
    let tried = eventually(Duration::from_secs(5), || async {
        !received.lock().await.is_empty()
    })
    .await;
    assert!(tried);
    app.stop().await;
    // A new receiver that accepts, at the same URL path on a new port: point
    // the stored webhook at it, as an operator would after fixing theirs.
    let (good_url, good) = receiver(0).await;
    let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
    sqlx::query("UPDATE webhooks SET url = ?")
        .bind(&good_url)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let restarted = spawn_app(config(&database, "true")).await;
    let delivered = eventually(Duration::from_secs(10), || async {
        !good.lock().await.is_empty()
    })
    .await;
    assert!(delivered, "the queued delivery survives the restart");
    let body: Value = serde_json::from_slice(&good.lock().await[0].1).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["severity"].as_str()),
        (Some("alert.created"), Some("critical"))
    );
    restarted.stop().await;
}

#[tokio::test]
async fn private_targets_and_bad_webhooks_are_refused() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(config(&database, "false")).await;
    for (body, param) in [
        (json!({"url": "http://127.0.0.1:9/hook"}), "url"),
        (json!({"url": "http://localhost/hook"}), "url"),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            "url",
        ),
        (json!({"url": "http://[::1]/hook"}), "url"),
        (json!({"url": "ftp://example.com/hook"}), "url"),
        (
            json!({"url": "https://8.8.8.8/hook", "events": ["exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://8.8.8.8/hook", "min_severity": "dire"}),
            "min_severity",
        ),
        (
            json!({"url": "https://8.8.8.8/hook", "format": "xml"}),
            "format",
        ),
        (
            json!({"url": "https://8.8.8.8/hook", "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://8.8.8.8/hook", "colour": "red"}),
            "colour",
        ),
        (json!({}), "url"),
    ] {
        let (status, answer) = app
            .admin(
                reqwest::Method::POST,
                "/api/v1/webhooks",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
    }
    // A public address is accepted (nothing is sent until an alert).
    let (status, created) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://8.8.8.8/hook", "format": "slack", "events": ["created", "escalated"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "a secret is made when none is given"
    );
    let id = created["id"].as_str().unwrap();
    let (status, _) = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}
