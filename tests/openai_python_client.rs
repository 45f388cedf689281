//! The official `openai` Python package against a real server on port 0 and
//! the fake upstream: tests/python/test_openai_client.py runs with pytest
//! from `target/python-venv`, which `scripts/setup-python-tests.sh` makes.
//! Without that virtualenv the test is skipped with a note, except in CI,
//! where it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::print_stderr,
    reason = "tests fail loudly, print what they skip and run their own tasks"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tollgate::fake_upstream;

use common::{TestDatabase, connect_store, create_key, spawn_app, test_config};

const SETUP_SCRIPT: &str = "scripts/setup-python-tests.sh";

/// The virtualenv's Python, or `None` when the test is skipped.
fn venv_python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/python-venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {} does not exist: {SETUP_SCRIPT} must run first",
            python.display()
        );
    }
    eprintln!(
        "{} does not exist; skipping the openai Python client test (run {SETUP_SCRIPT} first)",
        python.display()
    );
    None
}

#[tokio::test]
async fn the_official_openai_python_client_works_through_the_gateway_and_is_recorded() {
    let Some(python) = venv_python() else {
        return;
    };

    let (router, _received) = fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let database = TestDatabase::sqlite();
    let openai = format!("{upstream}/openai/v1");
    let openrouter = format!("{upstream}/openrouter/api/v1");
    let local = format!("{upstream}/local/v1");
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("providers.openai.base_url", &openai),
            ("providers.openai.api_key", "sk-openai-test"),
            ("providers.openrouter.base_url", &openrouter),
            ("providers.openrouter.api_key", "sk-or-test"),
            ("providers.local.base_url", &local),
            ("gateway.first_byte_timeout_ms", "2000"),
            ("gateway.stream_idle_timeout_ms", "1000"),
        ],
    );
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let app = spawn_app(config).await;

    // pytest blocks, so it runs on the blocking pool while the runtime keeps
    // serving the gateway and the fake upstream.
    let base_url = app.url("/v1");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/python",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("TOLLGATE_BASE_URL", base_url)
            .env("TOLLGATE_API_KEY", key)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
            .unwrap_or_else(|error| panic!("{} does not run: {error}", python.display()))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pytest failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !stdout.contains("skipped"),
        "every Python test runs here:\n{stdout}"
    );
    eprintln!("{}", stdout.trim_end());

    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    for task in ["chat", "embedding", "image_generation", "responses"] {
        assert!(
            records
                .iter()
                .any(|record| record["task_type"] == task && record["status"] != "error"),
            "no successful {task} record in {records:#?}"
        );
    }
    let rate_limited: Vec<&Value> = records
        .iter()
        .filter(|record| record["error_type"] == "rate_limited")
        .collect();
    assert_eq!(
        rate_limited.len(),
        1,
        "the rate-limited call, not retried by the client, left one record: {records:#?}"
    );
    assert_eq!(rate_limited[0]["status_code"], 429);
    assert_eq!(rate_limited[0]["task_type"], "chat");
    assert!(
        records
            .iter()
            .all(|record| record["org_id"] == "acme" && record["user_id"] == "alice"),
        "every record is attributed to the key's org and user: {records:#?}"
    );
    app.stop().await;
}
