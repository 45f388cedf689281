//! A 30-second PostgreSQL outage under load through the gateway: the
//! database first refuses connections, then swallows them (a partition).
//! Unbudgeted keys keep getting answers the whole time; a key under a hard
//! budget follows `budgets.fail_closed` (answers while its instance's claim
//! lasts, then 503, then answers again once the database is back). Every
//! answered request's record waits in the spool and reaches the database
//! after it returns, once, and the ledger reconciles.
//! `TOLLGATE_OUTAGE_SECONDS` shortens the outage for a quick local run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::print_stderr,
    reason = "tests fail loudly and run their own load"
)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::proxy::{Proxy, postgres_address};
use common::{
    TestApp, TestDatabase, assert_ledger_reconciles, connect_store, create_key, eventually,
    spawn_app, test_config,
};

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// Request ids of answers received in full.
    answered: Vec<String>,
    /// (status, error message) of refusals.
    refused: Vec<(u16, String)>,
    /// Requests that got no well-formed answer at all.
    broken: Vec<String>,
    /// The slowest answer while the database was down.
    slowest_in_outage: Duration,
    last_status: u16,
}

/// A client sending requests back to back with `key` until `stop`,
/// alternating whole answers and streams.
async fn client_loop(
    app: Arc<TestApp>,
    key: String,
    stop: CancellationToken,
    outage: Arc<std::sync::atomic::AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut stream = false;
    while !stop.is_cancelled() {
        stream = !stream;
        let body = json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 16,
                          "messages": [{"role": "user", "content": "hi"}]});
        let started = Instant::now();
        let during_outage = outage.load(std::sync::atomic::Ordering::SeqCst);
        let response = match app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                seen.broken.push(error.to_string());
                continue;
            }
        };
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("x-tollgate-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                seen.broken.push(format!("{status}: {error}"));
                continue;
            }
        };
        seen.last_status = status;
        if during_outage {
            seen.slowest_in_outage = seen.slowest_in_outage.max(started.elapsed());
        }
        match (status, id) {
            (200, Some(id)) if !stream || text.contains("data: [DONE]") => seen.answered.push(id),
            (200, _) => seen.broken.push(format!("an incomplete answer: {text}")),
            (status, _) => {
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("not OpenAI-shaped: {text}"));
                seen.refused.push((status, message));
            }
        }
    }
    seen
}

fn outage_length() -> Duration {
    let seconds = std::env::var("TOLLGATE_OUTAGE_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_database_outage_under_load_loses_and_doubles_nothing() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let upstream = common::fake_upstream_base().await;
    let store = connect_store(&database.url).await;
    let free = create_key(&store, "globex", Some("gus")).await;
    let budgeted = create_key(&store, "acme", Some("alice")).await;
    let proxy = Proxy::start(postgres_address(&database.url)).await;
    let openai = format!("{upstream}/openai/v1");
    let spool = database.spool_dir().join("outage");
    let config = test_config(
        &database.url_through(proxy.address),
        &spool,
        &[
            ("providers.openai.base_url", openai.as_str()),
            ("providers.openai.api_key", "sk-test"),
            // As shipped: five-second acquire timeout, 30 s key cache,
            // budgets fail closed; budget claims last 5 s (30 s shipped) so
            // that this one runs out during the outage.
            ("database.acquire_timeout_ms", "5000"),
            ("budgets.lease_ttl_seconds", "5"),
            ("recorder.retry_interval_ms", "1000"),
        ],
    );
    let app = Arc::new(spawn_app(config).await);
    let (_, created) = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/budgets",
            Some(json!({"org_id": "acme", "budget_type": "daily",
                        "budget_amount_usd": "1000", "hard_limit": true})),
        )
        .await;
    assert!(created["id"].is_string(), "{created}");

    let stop = CancellationToken::new();
    let in_outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for key in [&free, &free, &free, &budgeted] {
        let run = client_loop(
            Arc::clone(&app),
            key.clone(),
            stop.clone(),
            Arc::clone(&in_outage),
        );
        let is_budgeted = key == &budgeted;
        clients.spawn(async move { (is_budgeted, run.await) });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let outage = outage_length();
    in_outage.store(true, std::sync::atomic::Ordering::SeqCst);
    proxy.take_down();
    tokio::time::sleep(outage / 2).await;
    proxy.blackhole();
    tokio::time::sleep(outage / 2).await;
    let spooled = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("segment-")
        })
        .count();
    proxy.bring_up();
    in_outage.store(false, std::sync::atomic::Ordering::SeqCst);
    // Load goes on while the spool drains.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let mut seen = Vec::new();
    let mut budgeted_seen = None;
    while let Some(result) = clients.join_next().await {
        match result.unwrap() {
            (true, client) => budgeted_seen = Some(client),
            (false, client) => seen.push(client),
        }
    }
    let budgeted_seen = budgeted_seen.unwrap();
    app.recorder.flush().await.unwrap();

    assert!(spooled > 0, "nothing was spooled during the outage");
    for client in seen.iter().chain([&budgeted_seen]) {
        assert!(client.broken.is_empty(), "{:?}", client.broken);
    }
    for client in &seen {
        assert!(
            client.refused.is_empty(),
            "an unbudgeted key was refused {} times: {:?}",
            client.refused.len(),
            client.refused.first()
        );
        eprintln!(
            "unbudgeted client: {} answers, slowest during the outage {:?}",
            client.answered.len(),
            client.slowest_in_outage
        );
        assert!(
            client.slowest_in_outage < Duration::from_secs(1),
            "answers stalled during the outage: {:?}",
            client.slowest_in_outage
        );
    }
    eprintln!(
        "budgeted client: {} answers, {} refusals",
        budgeted_seen.answered.len(),
        budgeted_seen.refused.len()
    );
    assert!(
        !budgeted_seen.refused.is_empty(),
        "a hard-budget key was never refused while budget state could not be read"
    );
    assert_eq!(
        budgeted_seen.last_status, 200,
        "the hard-budget key answers again after the outage"
    );
    for (status, message) in &budgeted_seen.refused {
        assert_eq!(*status, 503, "{message}");
        assert!(message.contains("budget state cannot be read"), "{message}");
    }

    // Every answer has exactly one record; nothing else was recorded.
    let answered: Vec<&String> = seen
        .iter()
        .chain([&budgeted_seen])
        .flat_map(|client| &client.answered)
        .collect();
    let expected: HashSet<String> = answered.iter().map(|id| (*id).clone()).collect();
    assert_eq!(expected.len(), answered.len());
    let all_written = eventually(Duration::from_secs(30), || async {
        common::all_records_in(&store).await.len() >= expected.len()
    })
    .await;
    assert!(all_written, "the spool did not drain");
    let records = common::all_records_in(&store).await;
    let stored: HashSet<String> = records
        .iter()
        .map(|record| record.request_id.to_string())
        .collect();
    assert_eq!(stored.len(), records.len());
    let missing: Vec<&String> = expected.difference(&stored).collect();
    let unexpected: Vec<&String> = stored.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{} answers without a record, {} records without an answer",
        missing.len(),
        unexpected.len()
    );
    assert_ledger_reconciles(&store).await;
    let app = Arc::try_unwrap(app).ok().expect("the clients are done");
    app.stop().await;
    store.close().await;
}
