//! Shared test harness: fresh databases (SQLite in a temporary folder, or a
//! new PostgreSQL database per test), and `spawn_app`, which starts exactly
//! what `tollgate serve` starts, on port 0.
#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(
    clippy::expect_used,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

pub mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::oneshot;
use tollgate::app::App;
use tollgate::config::{Config, Sources};
use tollgate::recorder::Recorder;
use tollgate::store::Store;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The PostgreSQL server tests create their databases on. Unset outside CI:
/// PostgreSQL tests are skipped with a note. Unset in CI: they fail.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but TOLLGATE_TEST_POSTGRES_URL is not: PostgreSQL tests must run in CI"
            )
        }
        _ => {
            eprintln!("TOLLGATE_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
            None
        }
    }
}

/// A database made for one test, removed afterwards.
pub struct TestDatabase {
    pub url: String,
    pub folder: TempDir,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let folder = TempDir::new().expect("a temporary folder");
        let url = format!("sqlite://{}", folder.path().join("tollgate.db").display());
        TestDatabase {
            url,
            folder,
            postgres: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` when PostgreSQL tests are skipped.
    pub async fn postgres() -> Option<TestDatabase> {
        let admin_url = postgres_admin_url()?;
        let name = format!("tollgate_test_{}", uuid::Uuid::now_v7().simple());
        let admin = admin_connection(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create a test database");
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Some(TestDatabase {
            url: format!("{base}/{name}"),
            folder: TempDir::new().expect("a temporary folder"),
            postgres: Some((admin_url, name)),
        })
    }

    /// The database's URL with its host and port replaced (to go through a proxy).
    pub fn url_through(&self, address: std::net::SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database name");
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{user}{address}/{path}")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.folder.path().join("spool")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot be async.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let admin = admin_connection(&admin_url).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                });
            }
        })
        .join();
    }
}

async fn admin_connection(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {url} is unreachable: {error}"))
}

/// Settings for a test server on `database_url`, port 0, fast batching.
pub fn test_config(
    database_url: &str,
    spool_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("database.url".into(), database_url.into()),
        ("server.listen".into(), "127.0.0.1:0".into()),
        ("server.admin_token".into(), ADMIN_TOKEN.into()),
        ("recorder.spool_dir".into(), spool_dir.display().to_string()),
        ("recorder.flush_interval_ms".into(), "20".into()),
        ("recorder.retry_interval_ms".into(), "200".into()),
        ("database.acquire_timeout_ms".into(), "1000".into()),
    ];
    overrides.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("a valid test configuration")
}

pub async fn connect_store(database_url: &str) -> Store {
    let config = test_config(database_url, std::path::Path::new("unused"), &[]);
    let store = Store::connect(&config.database)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    store
}

/// A running server.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub recorder: Recorder,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app(config: Config) -> TestApp {
    let app = App::build(config).await.expect("the app builds");
    let address = format!("http://{}", app.local_address());
    let recorder = app.recorder();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("the server runs");
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        recorder,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_usage(&self, body: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/usage"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("the server answers")
    }

    pub async fn get_records(&self, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/usage/records{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("the server answers")
    }

    /// Every record the API lists, following cursors.
    pub async fn all_records(&self) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        let mut query = "?limit=1000".to_owned();
        loop {
            let response = self.get_records(&query).await;
            assert_eq!(response.status(), 200);
            let page: serde_json::Value = response.json().await.expect("JSON");
            records.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("?limit=1000&cursor={cursor}"),
                None => return records,
            }
        }
    }

    /// An admin API call: the status and the JSON body (`null` if none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Stops the server the way SIGTERM does, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server stops cleanly");
        }
    }
}

/// Makes a gateway key for `org` (and `user`), creating them if new, and
/// returns its secret.
pub async fn create_key(store: &Store, org: &str, user: Option<&str>) -> String {
    store.ensure_org(org).await.expect("create the org");
    if let Some(user) = user {
        store.ensure_user(user, org).await.expect("create the user");
    }
    let new_key = tollgate::keys::generate().expect("a random key");
    let key = tollgate::keys::ApiKey {
        id: uuid::Uuid::now_v7(),
        org_id: org.to_owned(),
        user_id: user.map(str::to_owned),
        name: Some("test".to_owned()),
        role: tollgate::keys::Role::Member,
        key_prefix: new_key.key_prefix.clone(),
        created_at: chrono::Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    store
        .insert_key(
            &tollgate::store::Scope::All,
            tollgate::store::KeyRecord {
                key: &key,
                hash: &new_key.hash,
            },
        )
        .await
        .expect("store the key");
    new_key.secret.expose().to_owned()
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs each `async fn(Store)` named on SQLite and on PostgreSQL (the
/// PostgreSQL runs fail, not skip, under CI when it is unavailable).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let database = $crate::common::TestDatabase::sqlite();
                    super::$name($crate::common::connect_store(&database.url).await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(database) = $crate::common::TestDatabase::postgres().await else { return };
                    let store = $crate::common::connect_store(&database.url).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )+
        }
    };
}

/// Like [`both_backends!`] for tests that need the database itself (its
/// URL, to start a server on it): each test gets a `&TestDatabase`.
#[macro_export]
macro_rules! both_backends_with_database {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let database = $crate::common::TestDatabase::sqlite();
                    super::$name(&database).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(database) = $crate::common::TestDatabase::postgres().await else { return };
                    super::$name(&database).await;
                }
            )+
        }
    };
}

/// A `tollgate serve` process on a free port, killed when dropped.
pub struct ServeProcess {
    pub base: String,
    child: std::process::Child,
}

impl ServeProcess {
    /// Sends the process SIGTERM, as an orchestrator stopping it would.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL, as a crash or an OOM killer would,
    /// and waits for it to be gone.
    pub fn kill_now(&mut self) {
        self.child.kill().expect("SIGKILL the process");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tollgate serve` on `database`, with `settings` (TOML) after fast
/// recorder batching and the environment `env`; waits until it answers.
pub async fn serve_process(
    database: &TestDatabase,
    name: &str,
    settings: &str,
    env: &[(&str, &str)],
) -> ServeProcess {
    serve_process_with_recorder(database, name, "flush_interval_ms = 20", settings, env).await
}

/// The folder `serve_process` gives a process called `name` (its spool is
/// `spool` inside it).
pub fn process_folder(database: &TestDatabase, name: &str) -> PathBuf {
    database.spool_dir().join(name)
}

/// Like [`serve_process`], with `recorder` (TOML lines) as the `[recorder]`
/// settings. A process started again under the same `name` finds the same
/// spool folder.
pub async fn serve_process_with_recorder(
    database: &TestDatabase,
    name: &str,
    recorder: &str,
    settings: &str,
    env: &[(&str, &str)],
) -> ServeProcess {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    };
    let folder = process_folder(database, name);
    std::fs::create_dir_all(&folder).expect("a folder for the process");
    let config = folder.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\nspool_dir = \"{}\"\n{recorder}\n\n{settings}",
            folder.join("spool").display()
        ),
    )
    .expect("write its configuration");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &database.url)
        .env("TOLLGATE_CONFIG", &config)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tollgate serve starts");
    let process = ServeProcess {
        base: format!("http://127.0.0.1:{port}"),
        child,
    };
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(20), || async {
        client
            .get(format!("{}/healthz", process.base))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    assert!(up, "tollgate serve did not answer on port {port}");
    process
}

/// Starts the fake upstream on a port of its own (for this test's
/// lifetime) and returns provider settings (TOML) that point all three
/// providers at it.
pub async fn fake_upstream_settings() -> String {
    let base = fake_upstream_base().await;
    format!(
        "[providers.openai]\nbase_url = \"{base}/openai/v1\"\napi_key = \"sk-test\"\n\n\
         [providers.openrouter]\nbase_url = \"{base}/openrouter/api/v1\"\napi_key = \"sk-or-test\"\n\n\
         [providers.local]\nbase_url = \"{base}/local/v1\"\n"
    )
}

/// Starts the fake upstream on a port of its own (for this test's
/// lifetime); its base URL (`…/openai/v1`, `…/openrouter/api/v1` and
/// `…/local/v1` below it).
pub async fn fake_upstream_base() -> String {
    tollgate::providers::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake upstream");
    let base = format!(
        "http://{}",
        listener.local_addr().expect("the fake upstream's address")
    );
    tokio::spawn(async move {
        axum::serve(listener, tollgate::fake_upstream::router())
            .await
            .expect("the fake upstream serves")
    });
    base
}

/// Asserts that the raw records, the rollups, the budget spend and the
/// alert minutes agree to the nano-dollar.
pub async fn assert_ledger_reconciles(store: &Store) {
    let totals = store.ledger_totals().await.expect("the ledger's totals");
    assert!(
        totals.disagreements().is_empty(),
        "the ledger does not reconcile: {totals:#?}"
    );
}

/// Alert rules at the guide's defaults ($10/$25/$50; 10%/25% over 15
/// minutes with at least 20 requests), resolving without a hold, in UTC.
pub fn evaluator_settings() -> tollgate::alerts::evaluator::EvaluatorSettings {
    let usd = |dollars: i64| tollgate::money::NanoUsd::from_nanos(dollars * 1_000_000_000);
    tollgate::alerts::evaluator::EvaluatorSettings {
        high_usage: tollgate::alerts::rules::SpendThresholds {
            medium: usd(10),
            high: usd(25),
            critical: usd(50),
        },
        high_usage_by_org: std::collections::HashMap::new(),
        errors: tollgate::alerts::evaluator::error_thresholds(10, 25, 20),
        error_window: Duration::from_secs(15 * 60),
        resolve_hold: Duration::ZERO,
        timezone: chrono_tz::UTC,
    }
}

/// Every record the store holds, read directly (no server needed).
pub async fn all_records_in(store: &Store) -> Vec<tollgate::usage::UsageRecord> {
    let filter = tollgate::store::RecordFilter {
        scope: tollgate::store::Scope::All,
        ..tollgate::store::RecordFilter::default()
    };
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .usage_records(&filter, cursor, 500)
            .await
            .expect("a page");
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return records,
        }
    }
}
