//! Ingest throughput, run by hand (`bench/ingest.sh`), never in the test suite.
//!
//! `store` mode: priced records go straight into `Store::insert_usage` in
//! writer-sized batches: the floor the recorder cannot beat.
//! `recorder` mode: records go straight into `Recorder::record` in batches of
//! 1,000 and the clock stops when the writer has committed them all.
//! `http` mode: a `tollgate serve` child process takes batches of 1,000 over
//! HTTP from `--connections` concurrent clients; the clock stops when its
//! queue is empty (every record committed). Peak RSS is the process's VmHWM.
//! The server is then stopped with SIGTERM and must exit 0.
//!
//! After each run the database is reconciled (issue 9): it must hold every
//! record sent, and the raw records must agree with the rollups, the budget
//! spend aggregate and the alert minutes to the nano-dollar
//! (`Store::ledger_totals`, as `tollgate check-ledger` does); if not, the
//! bench exits 1 after printing the totals.
//!
//! Usage: ingest --mode store|recorder|http --database sqlite|postgres://… [--records N]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::float_arithmetic,
    reason = "a benchmark binary run by hand"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate::app::pricing_from_config;
use tollgate::config::{Config, Sources};
use tollgate::recorder::{RecordError, Recorder, RecorderSettings};
use tollgate::store::Store;
use tollgate::usage::{Provider, RecordStatus, TaskType, TokenCounts, UsageEvent, new_request_id};

const BATCH: usize = 1_000;
const MODELS: [(&str, Provider); 4] = [
    ("gpt-4o", Provider::OpenAi),
    ("gpt-4o-mini", Provider::OpenAi),
    ("openai/gpt-4o", Provider::OpenRouter),
    ("llama3.1:8b", Provider::Local),
];

struct Options {
    mode: String,
    database: String,
    records: usize,
    connections: usize,
    writer_batch: String,
}

fn options() -> Options {
    let mut options = Options {
        mode: "recorder".to_owned(),
        database: "sqlite".to_owned(),
        records: 200_000,
        connections: 4,
        writer_batch: "5000".to_owned(),
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments.next().unwrap_or_default();
        match flag.as_str() {
            "--mode" => options.mode = value,
            "--database" => options.database = value,
            "--records" => options.records = value.parse().expect("--records N"),
            "--connections" => options.connections = value.parse().expect("--connections N"),
            "--writer-batch" => options.writer_batch = value,
            // `cargo bench` passes --bench; ignore anything else.
            _ => {}
        }
    }
    options
}

fn database_url(database: &str, folder: &std::path::Path) -> String {
    if database == "sqlite" {
        format!("sqlite://{}", folder.join("bench.db").display())
    } else {
        database.to_owned()
    }
}

fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn event(index: usize) -> UsageEvent {
    let (model, provider) = MODELS[index % MODELS.len()];
    let mut metadata = serde_json::Map::new();
    metadata.insert("tags".to_owned(), json!(["bench"]));
    UsageEvent {
        request_id: new_request_id(),
        parent_request_id: None,
        created_at: chrono::Utc::now(),
        org_id: format!("org-{}", index % 5),
        user_id: Some(format!("user-{}", index % 50)),
        api_key_id: None,
        provider,
        model: model.to_owned(),
        task_type: TaskType::Chat,
        tokens: TokenCounts {
            input: 1_000 + (index % 500) as u64,
            output: 200 + (index % 300) as u64,
            cached_input: (index % 100) as u64,
            reasoning: 0,
        },
        extra: Default::default(),
        reported_cost: None,
        latency_ms: 100 + (index % 2_000) as u64,
        time_to_first_token_ms: Some(50),
        status_code: Some(200),
        status: RecordStatus::Ok,
        error_type: None,
        stream: index.is_multiple_of(2),
        provider_request_id: None,
        metadata,
    }
}

fn wire_record(index: usize) -> Value {
    let (model, provider) = MODELS[index % MODELS.len()];
    json!({
        "provider": provider.as_str(), "model": model, "task_type": "chat",
        "input_tokens": 1_000 + index % 500, "output_tokens": 200 + index % 300,
        "cached_input_tokens": index % 100, "latency_ms": 100 + index % 2_000,
        "time_to_first_token_ms": 50, "status_code": 200, "stream": index.is_multiple_of(2),
        "org_id": format!("org-{}", index % 5), "user_id": format!("user-{}", index % 50),
        "tags": ["bench"],
    })
}

fn config_for(url: &str, folder: &std::path::Path, listen: &str, writer_batch: &str) -> Config {
    Config::load(&Sources {
        overrides: vec![
            ("database.url".into(), url.into()),
            ("server.listen".into(), listen.into()),
            ("server.admin_token".into(), "bench".into()),
            (
                "recorder.spool_dir".into(),
                folder.join("spool").display().to_string(),
            ),
            ("log.filter".into(), "warn".into()),
            ("recorder.batch_size".into(), writer_batch.into()),
        ],
        ..Sources::default()
    })
    .expect("bench configuration")
}

async fn bench_store(options: &Options, url: &str, folder: &std::path::Path) -> f64 {
    let config = config_for(url, folder, "127.0.0.1:0", &options.writer_batch);
    let store = Store::connect(&config.database).await.expect("database");
    store.migrate().await.expect("migrate");
    let pricing = pricing_from_config(&config).expect("pricing");
    let records: Vec<_> = (0..options.records)
        .map(|index| tollgate::recorder::price_event(&pricing, event(index)))
        .collect();
    let started = Instant::now();
    for batch in records.chunks(config.recorder.batch_size) {
        store
            .insert_usage(batch, config.server.timezone)
            .await
            .expect("insert");
    }
    let elapsed = started.elapsed().as_secs_f64();
    store.close().await;
    elapsed
}

async fn bench_recorder(options: &Options, url: &str, folder: &std::path::Path) -> f64 {
    let config = config_for(url, folder, "127.0.0.1:0", &options.writer_batch);
    let store = Store::connect(&config.database).await.expect("database");
    store.migrate().await.expect("migrate");
    let pricing = Arc::new(pricing_from_config(&config).expect("pricing"));
    let (recorder, task) = Recorder::start(
        store.clone(),
        pricing,
        &config.recorder.spool_dir,
        RecorderSettings::from_config(&config),
        tollgate::recorder::LedgerListeners::default(),
    )
    .expect("recorder");
    // Events are made batch by batch inside the timed loop, as a gateway
    // would make them, so peak RSS is the recorder's and not a 200k-event
    // array's; making them costs about 1 µs each.
    let started = Instant::now();
    for start in (0..options.records).step_by(BATCH) {
        let end = (start + BATCH).min(options.records);
        let mut batch: Vec<UsageEvent> = (start..end).map(event).collect();
        // A full queue refuses the batch whole; wait for the writer like a
        // client that honours Retry-After would.
        loop {
            match recorder.record(batch.clone()) {
                Ok(_) => break,
                Err(RecordError::Overloaded { .. }) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    batch = batch.clone();
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    recorder.flush().await.expect("flush");
    let elapsed = started.elapsed().as_secs_f64();
    task.shutdown(&recorder).await;
    store.close().await;
    elapsed
}

async fn bench_http(options: &Options, url: &str, folder: &std::path::Path) -> (f64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    // bench/ingest.sh sets TOLLGATE_BIN; otherwise cargo's release binary.
    let binary = std::env::var("TOLLGATE_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
        let path = std::path::Path::new(&target).join("release/tollgate");
        std::fs::canonicalize(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    });
    std::fs::write(
        folder.join("none.toml"),
        format!(
            "[recorder]\nspool_dir = \"{}\"\nbatch_size = {}\n",
            folder.join("spool").display(),
            options.writer_batch
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(&binary)
        .args([
            "--database-url",
            url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("TOLLGATE_ADMIN_TOKEN", "bench")
        .env("TOLLGATE_LOG", "warn")
        .env("TOLLGATE_CONFIG", folder.join("none.toml"))
        .current_dir(folder)
        .spawn()
        .unwrap_or_else(|error| panic!("start {binary}: {error}"));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies: Vec<String> = (0..options.records)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            json!({"records": chunk.iter().map(|i| wire_record(*i)).collect::<Vec<_>>()})
                .to_string()
        })
        .collect();
    let bodies = Arc::new(tokio::sync::Mutex::new(bodies));
    let started = Instant::now();
    let senders: Vec<_> = (0..options.connections)
        .map(|_| {
            let bodies = Arc::clone(&bodies);
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                loop {
                    let Some(body) = bodies.lock().await.pop() else {
                        return;
                    };
                    loop {
                        let response = client
                            .post(format!("{base}/api/v1/usage"))
                            .bearer_auth("bench")
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("post");
                        match response.status().as_u16() {
                            202 => break,
                            // The queue is full: retry, as Retry-After asks.
                            503 => tokio::time::sleep(Duration::from_millis(5)).await,
                            status => {
                                panic!("{status}: {}", response.text().await.unwrap_or_default())
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    loop {
        let ready: Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if ready["queued_records"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib(&child.id().to_string());
    // Stopped as an operator would stop it: SIGTERM, then a clean exit
    // after the recorder has flushed (already empty here).
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(terminated.success(), "kill -TERM {}", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the server did not stop within 60 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the server exited with {status} after SIGTERM"
    );
    (elapsed, rss)
}

/// The reconciliation check on the database a run wrote: prints the totals
/// between the marker lines `bench/suite.sh` collects, and whether they
/// agree; false if they do not or if records are missing.
async fn reconcile(name: &str, url: &str, folder: &std::path::Path, expected: usize) -> bool {
    let config = config_for(url, folder, "127.0.0.1:0", "5000");
    let store = Store::connect(&config.database).await.expect("database");
    let started = Instant::now();
    let totals = store.ledger_totals().await.expect("ledger totals");
    let took = started.elapsed().as_secs_f64();
    store.close().await;
    let backend = url.split(':').next().unwrap_or_default();
    println!("--- reconciliation: {name} ({backend})");
    println!("{:<22} {:>14} {:>22}", "table", "requests", "cost (USD)");
    for (table, row) in [
        ("ai_provider_usage", totals.records),
        ("ai_model_performance", totals.model_performance),
        ("ai_usage_daily", totals.daily),
        ("ai_usage_hourly", totals.hourly),
        ("ai_budget_spend", totals.budget_spend),
    ] {
        println!(
            "{table:<22} {:>14} {:>22}",
            row.requests,
            row.cost.to_usd().to_string()
        );
    }
    println!(
        "{:<22} {:>14} {:>22}",
        "ai_usage_minutes", totals.alert_minutes_requests, "-"
    );
    let mut wrong: Vec<String> = totals
        .disagreements()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if usize::try_from(totals.records.requests).ok() != Some(expected) {
        wrong.push(format!(
            "ai_provider_usage holds {} of the {expected} records sent",
            totals.records.requests
        ));
    }
    if wrong.is_empty() {
        println!("The ledger and everything derived from it agree; every record sent is in it.");
    } else {
        println!("DISAGREE: {}", wrong.join(", "));
    }
    println!(
        "--- reconciliation: {name}: {} (ledger_totals took {took:.2} s)",
        if wrong.is_empty() {
            "agree"
        } else {
            "DISAGREE"
        }
    );
    wrong.is_empty()
}

#[tokio::main]
async fn main() {
    tollgate::providers::install_crypto_provider();
    let options = options();
    let folder = tempfile::TempDir::new().expect("a temporary folder");
    let url = database_url(&options.database, folder.path());
    let backend = if options.database == "sqlite" {
        "sqlite"
    } else {
        "postgres"
    };
    let (elapsed, rss) = match options.mode.as_str() {
        "store" => {
            let elapsed = bench_store(&options, &url, folder.path()).await;
            (elapsed, peak_rss_mib("self"))
        }
        "recorder" => {
            let elapsed = bench_recorder(&options, &url, folder.path()).await;
            (elapsed, peak_rss_mib("self"))
        }
        "http" => bench_http(&options, &url, folder.path()).await,
        other => panic!("unknown mode {other}"),
    };
    println!(
        "{backend:<8} {:<8} {:>9} records in {:>6.2} s = {:>9.0} records/s, peak RSS {:.0} MiB",
        options.mode,
        options.records,
        elapsed,
        options.records as f64 / elapsed,
        rss
    );
    let name = format!("ingest {backend} {}", options.mode);
    if !reconcile(&name, &url, folder.path(), options.records).await {
        drop(folder);
        std::process::exit(1);
    }
}
