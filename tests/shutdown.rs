//! Graceful shutdown of the real binary: on SIGTERM it stops taking
//! connections, lets requests in flight finish, writes their records and
//! exits 0; requests that outlast `server.shutdown_grace_seconds` are cut
//! off at the deadline and the process still exits 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own fake upstream"
)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{TestDatabase, connect_store, create_key, serve_process};

fn chat(behaviour: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
           "fake": behaviour})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_and_records_them() {
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let settings = format!(
        "{}\n[server]\nshutdown_grace_seconds = 20\n",
        common::fake_upstream_settings().await
    );
    let mut process = serve_process(&database, "graceful", &settings, &[]).await;
    let client = reqwest::Client::new();
    // A slow answer (1.5 s upstream) and a slow stream are in flight...
    let slow = {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v1/chat/completions", process.base),
            key.clone(),
        );
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&chat("slow:1500"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let id = response.headers()["x-tollgate-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value = response.json().await.unwrap();
            (status, id, body)
        })
    };
    let streamed = {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v1/chat/completions", process.base),
            key.clone(),
        );
        tokio::spawn(async move {
            let mut body = chat("slow:1000");
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            (status, text)
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    // ...when the orchestrator stops the server.
    process.terminate();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connection is served once the shutdown began.
    let late = client
        .get(format!("{}/healthz", process.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        late.is_err(),
        "a request after SIGTERM was served: {late:?}"
    );

    let (status, request_id, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"]["content"].is_string());
    let (status, text) = streamed.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream ended early: {text}"
    );

    let exit = process
        .wait_for_exit(Duration::from_secs(15))
        .expect("the server exits after its requests finished");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(10));

    // Both requests' records reached the database before the exit.
    let store = connect_store(&database.url).await;
    let records = common::all_records_in(&store).await;
    store.close().await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .any(|record| record.request_id.to_string() == request_id)
    );
    assert!(
        records
            .iter()
            .all(|record| record.status == tollgate::usage::RecordStatus::Ok)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlasts_the_grace_period_is_cut_off_at_its_end() {
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let settings = format!(
        "{}\n[server]\nshutdown_grace_seconds = 1\n\n[gateway]\nfirst_byte_timeout_ms = 60000\n",
        common::fake_upstream_settings().await
    );
    let mut process = serve_process(&database, "bounded", &settings, &[]).await;
    let client = reqwest::Client::new();
    let stalled = {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/chat/completions", process.base),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&chat("stall"))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.terminate();
    let stopped_at = Instant::now();
    let exit = process
        .wait_for_exit(Duration::from_secs(15))
        .expect("the server exits once the grace period is over");
    let took = stopped_at.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "stopped {took:?} after SIGTERM with a 1 s grace period"
    );
    // The stalled request was cut off, not answered.
    let answered = stalled.await.unwrap();
    assert!(
        answered.is_err() || !answered.unwrap().status().is_success(),
        "the stalled request got an answer"
    );
}
