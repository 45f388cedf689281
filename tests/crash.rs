//! Crash safety of the real binary: under load through the gateway (whole
//! answers and streams), `tollgate serve` is killed with SIGKILL at
//! arbitrary moments, several times over, and started again on the same
//! database and spool folder. Every request whose answer the client got to
//! the end (a whole body, or a stream up to `data: [DONE]`) has its record
//! afterwards, once, and the rollups and budget spend still equal the raw
//! records. The writer batches only once a second here, so every kill finds
//! records that only the journal holds; without the journal, the control
//! test shows them lost.
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
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use common::{
    ServeProcess, TestDatabase, assert_ledger_reconciles, connect_store, create_key, eventually,
    fake_upstream_settings, process_folder, serve_process_with_recorder,
};

/// Records reach the database only once a second (or 500 at a time), so a
/// kill always finds some in memory.
const SLOW_WRITER: &str = "flush_interval_ms = 1000\nbatch_size = 500";
/// How long the load runs before each kill, round by round.
const KILL_AFTER_MS: [u64; 4] = [700, 1300, 450, 1000];
const CLIENTS: usize = 6;

/// One request; the gateway's request id if the client got the whole
/// answer (for a stream: up to `[DONE]`, read chunk by chunk as it comes).
async fn one_request(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    stream: bool,
) -> Option<String> {
    let body = json!({"model": "gpt-4o-mini", "stream": stream,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let mut response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let id = response
        .headers()
        .get("x-tollgate-request-id")?
        .to_str()
        .ok()?
        .to_owned();
    let mut received = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        received.extend_from_slice(&chunk);
        if stream && received.windows(12).any(|window| window == b"data: [DONE]") {
            return Some(id);
        }
    }
    if stream {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&received)
        .ok()
        .map(|_| id)
}

/// Clients sending requests back to back until `stop`; the ids of answers
/// they got to the end.
async fn load(base: String, key: String, stop: CancellationToken) -> Vec<String> {
    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..CLIENTS {
        let (base, key, stop, completed) = (
            base.clone(),
            key.clone(),
            stop.clone(),
            Arc::clone(&completed),
        );
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let mut stream = index % 2 == 0;
            while !stop.is_cancelled() {
                let done = tokio::select! {
                    () = stop.cancelled() => None,
                    done = one_request(&client, &base, &key, stream) => done,
                };
                if let Some(id) = done {
                    completed.lock().await.push(id);
                }
                stream = !stream;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    Arc::try_unwrap(completed).unwrap().into_inner()
}

async fn stored_ids(store: &tollgate::store::Store) -> HashSet<String> {
    common::all_records_in(store)
        .await
        .iter()
        .map(|record| record.request_id.to_string())
        .collect()
}

/// Runs load against a server killed `KILL_AFTER_MS.len()` times; returns
/// the ids of completed answers and how many of them were not in the
/// database when their server died.
async fn load_and_kill(
    database: &TestDatabase,
    settings: &str,
    durability: &str,
    rounds: &[u64],
) -> (Vec<String>, usize) {
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    let mut completed = Vec::new();
    let mut only_in_memory = 0;
    for (round, kill_after) in rounds.iter().enumerate() {
        let mut process = serve_process_with_recorder(
            database,
            "crash",
            SLOW_WRITER,
            settings,
            &[("TOLLGATE_DURABILITY", durability)],
        )
        .await;
        let stop = CancellationToken::new();
        let running = tokio::spawn(load(process.base.clone(), key.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(*kill_after)).await;
        process.kill_now();
        stop.cancel();
        let done = running.await.unwrap();
        let stored = stored_ids(&store).await;
        let missing = done.iter().filter(|id| !stored.contains(*id)).count();
        eprintln!(
            "round {round}: {} answers completed, {missing} of them not in the database at the kill",
            done.len()
        );
        only_in_memory += missing;
        completed.extend(done);
    }
    store.close().await;
    (completed, only_in_memory)
}

fn restart(database: &TestDatabase, settings: &str) -> impl Future<Output = ServeProcess> {
    serve_process_with_recorder(database, "crash", SLOW_WRITER, settings, &[])
}

async fn every_answer_survives_kill_9(database: &TestDatabase) {
    let settings = fake_upstream_settings().await;
    // Both promises are put through the same kills: the default on SQLite,
    // group-committed fsyncs (answers wait for them) on PostgreSQL.
    let durability = match database.url.starts_with("postgres") {
        true => "fsync",
        false => "process",
    };
    let (completed, only_in_memory) =
        load_and_kill(database, &settings, durability, &KILL_AFTER_MS).await;
    assert!(
        completed.len() >= 50,
        "the load completed only {} answers",
        completed.len()
    );
    assert!(
        only_in_memory > 0,
        "no kill found records outside the database, so the journal was not put to the test"
    );
    // The next start replays the journals left by every killed run.
    let mut process = restart(database, &settings).await;
    let store = connect_store(&database.url).await;
    let expected: HashSet<String> = completed.iter().cloned().collect();
    assert_eq!(expected.len(), completed.len(), "request ids are unique");
    let all_there = eventually(Duration::from_secs(30), || async {
        stored_ids(&store).await.is_superset(&expected)
    })
    .await;
    let stored = stored_ids(&store).await;
    let lost: Vec<&String> = expected.difference(&stored).collect();
    assert!(
        all_there,
        "{} of {} completed answers have no record after the restart: {lost:?}",
        lost.len(),
        expected.len()
    );
    let records = common::all_records_in(&store).await;
    assert_eq!(records.len(), stored.len(), "no request id is stored twice");
    assert_ledger_reconciles(&store).await;

    // A clean stop leaves neither journal nor spool behind.
    process.terminate();
    let status = process.wait_for_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    let spool = process_folder(database, "crash").join("spool");
    let left: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "LOCK")
        .collect();
    assert!(left.is_empty(), "files left in the spool folder: {left:?}");
    assert_ledger_reconciles(&store).await;
    store.close().await;
}

both_backends_with_database!(every_answer_survives_kill_9);

/// The control: the same load and kill without the journal loses the
/// records the writer still held, so the test above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_a_kill_loses_answered_requests() {
    let database = TestDatabase::sqlite();
    let settings = fake_upstream_settings().await;
    let (completed, _) = load_and_kill(&database, &settings, "off", &[800]).await;
    let process = restart(&database, &settings).await;
    let store = connect_store(&database.url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = stored_ids(&store).await;
    let lost = completed.iter().filter(|id| !stored.contains(*id)).count();
    eprintln!(
        "without the journal: {lost} of {} completed answers lost",
        completed.len()
    );
    assert!(lost > 0, "a kill without the journal lost nothing");
    process.terminate();
    store.close().await;
}
