//! `tollgate demo` end to end, then the dashboard in headless Chromium
//! against it (tests/browser/dashboard.mjs, driven by playwright-core):
//! login, every tab with data matching the API, acknowledging an alert,
//! creating a budget, a member seeing only their own data. Screenshots go
//! to target/dashboard-screenshots/.
//!
//! Chromium and playwright-core come from scripts/setup-browser-tests.sh,
//! which CI runs first; without them this test fails under CI and is
//! skipped (with a note) elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `tollgate demo` process, killed when dropped.
struct Demo {
    child: Child,
    base: String,
    admin_key: String,
    member_key: String,
    org_admin_key: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The value after `label` on the line that starts with it.
fn field(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// Starts `tollgate demo` and waits for its welcome (it prints the
/// dashboard's address and keys once it serves).
fn start_demo(folder: &Path) -> Demo {
    let port = free_port();
    let stdout_path = folder.join("demo.out");
    let stderr_path = folder.join("demo.err");
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--records",
            "20000",
            "--interval-ms",
            "400",
        ])
        .env("TOLLGATE_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("tollgate demo starts");
    // Killed on any failure below, when `demo` drops.
    let mut demo = Demo {
        child,
        base: format!("http://127.0.0.1:{port}"),
        admin_key: String::new(),
        member_key: String::new(),
        org_admin_key: String::new(),
    };
    let started = Instant::now();
    loop {
        let output = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        if output.contains("Press Ctrl-C to stop.") {
            demo.admin_key = field(&output, "Admin key:").expect("an admin key");
            demo.member_key = field(&output, "Member key:").expect("a member key");
            demo.org_admin_key = field(&output, "Org admin:").expect("an org admin key");
            assert_eq!(
                field(&output, "Dashboard:").as_deref(),
                Some(format!("{}/admin/ai-usage", demo.base).as_str()),
                "{output}"
            );
            return demo;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the demo did not start: {output}\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn get(client: &reqwest::Client, demo: &Demo, key: &str, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("{}{path}", demo.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What the demo promises: 30 days of history for several orgs, users,
/// providers and models; live traffic through the gateway; budgets; a low
/// OpenRouter balance alert; a member who sees only their own usage.
async fn check_the_demo(demo: &Demo) {
    tollgate::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let (status, stats) = get(&client, demo, &demo.admin_key, "/api/v1/usage/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert!(
        stats["total_requests"].as_u64().unwrap() >= 20_000,
        "{stats}"
    );
    let providers: Vec<&str> = stats["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["provider"].as_str().unwrap())
        .collect();
    for provider in ["openai", "openrouter", "local"] {
        assert!(providers.contains(&provider), "{providers:?}");
    }
    let (_, daily) = get(&client, demo, &demo.admin_key, "/api/v1/usage/daily").await;
    let days: std::collections::BTreeSet<&str> = daily["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["requests"].as_u64().unwrap_or(0) > 0)
        .filter_map(|row| row["date"].as_str())
        .collect();
    assert!(days.len() >= 28, "history covers {} days", days.len());
    let (_, budgets) = get(&client, demo, &demo.admin_key, "/api/v1/budgets").await;
    assert_eq!(budgets["data"].as_array().unwrap().len(), 3, "{budgets}");

    // Live traffic moves the totals and the low balance shows as an alert.
    let before = stats["total_requests"].as_u64().unwrap();
    let mut moved = false;
    let mut low_balance = false;
    for _ in 0..150 {
        let (_, now) = get(&client, demo, &demo.admin_key, "/api/v1/usage/stats").await;
        moved = now["total_requests"].as_u64().unwrap() > before + 3;
        let (_, alerts) = get(
            &client,
            demo,
            &demo.admin_key,
            "/api/v1/alerts?status=active",
        )
        .await;
        low_balance =
            alerts["data"].as_array().unwrap().iter().any(|alert| {
                alert["alert_type"] == "low_balance" && alert["provider"] == "openrouter"
            });
        if moved && low_balance {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(moved, "live traffic did not reach the ledger");
    assert!(low_balance, "no low OpenRouter balance alert");

    // Each key logs in with the role it is printed with.
    for (key, role) in [
        (&demo.admin_key, "admin"),
        (&demo.org_admin_key, "org_admin"),
        (&demo.member_key, "member"),
    ] {
        let session: Value = client
            .post(format!("{}/admin/ai-usage/session", demo.base))
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(session["role"], role, "{session}");
    }

    // The member sees only their own rows; the org admin their org's.
    let (_, records) = get(
        &client,
        demo,
        &demo.member_key,
        "/api/v1/usage/records?limit=200",
    )
    .await;
    let rows = records["data"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row["user_id"] == "acme-user-2"));
    let (_, records) = get(
        &client,
        demo,
        &demo.org_admin_key,
        "/api/v1/usage/records?limit=200",
    )
    .await;
    assert!(
        records["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["org_id"] == "acme")
    );
}

/// Where the browser tooling is, if it is installed.
fn browser_tooling(root: &Path) -> Option<PathBuf> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let node = Command::new("node").arg("--version").output();
    let installed = chromium.exists()
        && node.is_ok_and(|output| output.status.success())
        && root
            .join("tests/browser/node_modules/playwright-core")
            .exists();
    installed.then_some(chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_and_the_dashboard_in_a_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let folder = tempfile::tempdir().unwrap();
    let demo = start_demo(folder.path());
    check_the_demo(&demo).await;

    let Some(chromium) = browser_tooling(&root) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium or playwright-core is missing: run scripts/setup-browser-tests.sh"
        );
        eprintln!(
            "note: browser checks skipped (run scripts/setup-browser-tests.sh to install Chromium)"
        );
        return;
    };
    let screenshots = root.join("target/dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = tokio::task::spawn_blocking({
        let root = root.clone();
        let base = demo.base.clone();
        let admin = demo.admin_key.clone();
        let member = demo.member_key.clone();
        let org_admin = demo.org_admin_key.clone();
        move || {
            Command::new("node")
                .arg(root.join("tests/browser/dashboard.mjs"))
                .current_dir(root.join("tests/browser"))
                .env("CHROMIUM", chromium)
                .env("TOLLGATE_URL", base)
                .env("TOLLGATE_ADMIN_KEY", admin)
                .env("TOLLGATE_MEMBER_KEY", member)
                .env("TOLLGATE_ORG_ADMIN_KEY", org_admin)
                .env("TOLLGATE_MEMBER_USER", "acme-user-2")
                .env("TOLLGATE_OTHER_USER", "acme-user-3")
                .env("SCREENSHOT_DIR", &screenshots)
                .stdin(Stdio::null())
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    for tab in [
        "overview",
        "providers",
        "alerts",
        "projections",
        "budgets",
        "usage",
    ] {
        let shot = root.join(format!("target/dashboard-screenshots/{tab}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|meta| meta.len() > 10_000),
            "no screenshot of {tab}"
        );
    }
}
