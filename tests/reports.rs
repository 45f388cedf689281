//! Scheduled reports: the API refuses what cannot run; the scheduler writes
//! JSON and CSV whose figures are the records', POSTs the same JSON signed,
//! runs each period once, catches up after downtime with one run, and tries
//! again after a failed delivery. On both backends.
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
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tollgate::generate::{Generator, Settings};
use tollgate::reports::{Scheduler, SchedulerSettings};
use tollgate::webhooks::signature;

use common::{TestDatabase, spawn_app, test_config};

both_backends_with_database!(
    reports_run_once_per_period_deliver_the_records_figures_and_retry_failures
);

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that answers 500 while `failing` is above zero (counting it
/// down), 200 after.
async fn receiver(failing: Arc<AtomicUsize>) -> (String, Received) {
    let received: Received = Arc::default();
    let log = Arc::clone(&received);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = Arc::clone(&log);
            let failing = Arc::clone(&failing);
            async move {
                log.lock().await.push((headers, body));
                let left = failing.load(Ordering::SeqCst);
                if left > 0 {
                    failing.store(left - 1, Ordering::SeqCst);
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

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

async fn reports_run_once_per_period_deliver_the_records_figures_and_retry_failures(
    database: &TestDatabase,
) {
    let folder = tempfile::TempDir::new().unwrap();
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("webhooks.allow_private", "true"),
            ("reports.folder", folder.path().to_str().unwrap()),
            // The test runs the scheduler itself, at the times it chooses.
            ("reports.enabled", "false"),
        ],
    );
    let app = spawn_app(config).await;
    let failing = Arc::new(AtomicUsize::new(0));
    let (url, received) = receiver(Arc::clone(&failing)).await;
    let (status, webhook) = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": url, "secret": "whsec_reports_0123456789"})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();

    // Refusals, each named.
    for (body, param) in [
        (
            json!({"name": "x", "frequency": "hourly", "folder": "a"}),
            "frequency",
        ),
        (
            json!({"name": "x", "frequency": "daily", "folder": "../etc"}),
            "folder",
        ),
        (
            json!({"name": "x", "frequency": "daily", "folder": "/tmp"}),
            "folder",
        ),
        (json!({"name": "x", "frequency": "daily"}), "webhook_id"),
        (
            json!({"name": "x", "frequency": "daily", "webhook_id": uuid::Uuid::now_v7()}),
            "webhook_id",
        ),
        (
            json!({"name": "", "frequency": "daily", "folder": "a"}),
            "name",
        ),
    ] {
        let (status, error) = app
            .admin(Method::POST, "/api/v1/reports", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    let (status, report) = app
        .admin(
            Method::POST,
            "/api/v1/reports",
            Some(json!({"name": "Daily spend", "frequency": "daily", "org_id": "acme", "folder": "finance", "webhook_id": webhook_id})),
        )
        .await;
    assert_eq!(status, 201, "{report}");

    // A day of usage, 2026-11-10 (UTC), plus some on the days around it.
    let mut settings = Settings::new(900, 3, at("2026-11-12T00:00:00Z"));
    settings.orgs = 2;
    let events: Vec<_> = Generator::new(settings).collect();
    app.recorder.record(events).unwrap();
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    let day: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record["org_id"] == "acme"
                && record["created_at"]
                    .as_str()
                    .unwrap()
                    .starts_with("2026-11-10")
        })
        .collect();
    assert!(!day.is_empty());

    let store = common::connect_store(&database.url).await;
    let scheduler = Scheduler::new(
        store.clone(),
        SchedulerSettings {
            root: folder.path().to_owned(),
            timezone: chrono_tz::Tz::UTC,
            allow_private: true,
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let now = at("2026-11-11T06:00:00Z");
    assert_eq!(scheduler.run_due(now).await.unwrap(), 1);
    let json_path = folder
        .path()
        .join("finance/daily-spend-daily-2026-11-10.json");
    let written: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let requests = day.len() as i64;
    let cost: i64 = day
        .iter()
        .map(|record| record["cost_nano_usd"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(written["totals"]["requests"], requests);
    assert_eq!(
        written["totals"]["cost_usd"],
        tollgate::money::NanoUsd::from_nanos(cost).to_string()
    );
    assert_eq!(written["first_day"], "2026-11-10");
    assert!(written["top_models"].as_array().unwrap().len() <= 10);
    assert!(written["projection"]["method"].is_string());
    let csv_path = folder
        .path()
        .join("finance/daily-spend-daily-2026-11-10.csv");
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let total = reader.records().next().unwrap().unwrap();
    assert_eq!(&total[0], "total");
    assert_eq!(total[3].parse::<i64>().unwrap(), requests);
    // The webhook got the same report, signed.
    {
        let received = received.lock().await;
        assert_eq!(received.len(), 1);
        let (headers, body) = &received[0];
        let header = headers[signature::HEADER].to_str().unwrap();
        assert!(signature::verify(
            "whsec_reports_0123456789",
            header,
            body,
            Utc::now().timestamp(),
            10_000_000_000
        ));
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["event"], "report");
        assert_eq!(body["report"], written);
    }
    // The same period again: nothing.
    assert_eq!(
        scheduler.run_due(now + TimeDelta::hours(5)).await.unwrap(),
        0
    );
    assert_eq!(received.lock().await.len(), 1);

    // Three days later (downtime): one run, for the latest complete day.
    failing.store(1, Ordering::SeqCst);
    let later = now + TimeDelta::days(3);
    assert_eq!(
        scheduler.run_due(later).await.unwrap(),
        0,
        "the delivery fails"
    );
    let (_, listed) = app.admin(Method::GET, "/api/v1/reports", None).await;
    let listed = &listed["data"][0];
    assert!(
        listed["last_error"].as_str().unwrap().contains("500"),
        "{listed}"
    );
    assert_eq!(listed["last_period_start"], "2026-11-10", "not marked done");
    assert_eq!(scheduler.run_due(later).await.unwrap(), 1, "tried again");
    assert_eq!(received.lock().await.len(), 3);
    assert!(
        folder
            .path()
            .join("finance/daily-spend-daily-2026-11-13.json")
            .exists()
    );
    for skipped in ["2026-11-11", "2026-11-12"] {
        assert!(
            !folder
                .path()
                .join(format!("finance/daily-spend-daily-{skipped}.json"))
                .exists()
        );
    }
    let (_, listed) = app.admin(Method::GET, "/api/v1/reports", None).await;
    assert_eq!(listed["data"][0]["last_period_start"], "2026-11-13");
    assert!(listed["data"][0]["last_error"].is_null());

    let id = report["id"].as_str().unwrap();
    let (status, _) = app
        .admin(Method::DELETE, &format!("/api/v1/reports/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .admin(Method::DELETE, &format!("/api/v1/reports/{id}"), None)
        .await;
    assert_eq!(status, 404);
    store.close().await;
    app.stop().await;
}
