//! Budgets through real servers on port 0 and the fake upstream: the API,
//! enforcement under concurrency (one instance, and three sharing one
//! PostgreSQL database), scopes, soft thresholds, and what a database
//! outage does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate::fake_upstream::{self, ReceivedLog};
use tollgate::store::Store;

use common::ServeProcess;
use common::proxy::{Proxy, postgres_address};
use common::{
    ADMIN_TOKEN, TestApp, TestDatabase, connect_store, create_key, eventually, spawn_app,
    test_config,
};

/// gpt-4o-mini, as the fake upstream answers it: 20 prompt tokens (5 of
/// them cached) and 10 output tokens at $0.15 / $0.075 / $0.60 per million.
const ACTUAL_NANOS: i64 = 15 * 150 + 5 * 75 + 10 * 600;
/// The gateway's reservation for `request()`: the prompt "hi" (1 token)
/// plus 32 tokens of framing at the input price, and `max_tokens` (10) at
/// the output price.
const ESTIMATE_NANOS: i64 = 33 * 150 + 10 * 600;

struct Upstream {
    base: String,
    received: ReceivedLog,
}

async fn upstream() -> Upstream {
    let (router, received) = fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Upstream { base, received }
}

fn config(database: &TestDatabase, upstream: &Upstream, spool: &str) -> tollgate::config::Config {
    config_for(&database.url, database, upstream, spool, &[])
}

fn config_for(
    url: &str,
    database: &TestDatabase,
    upstream: &Upstream,
    spool: &str,
    extra: &[(&str, &str)],
) -> tollgate::config::Config {
    let openai = format!("{}/openai/v1", upstream.base);
    let openrouter = format!("{}/openrouter/api/v1", upstream.base);
    let spool = database.spool_dir().join(spool);
    let mut settings = vec![
        ("providers.openai.base_url", openai.as_str()),
        ("providers.openai.api_key", "sk-openai-test"),
        ("providers.openrouter.base_url", openrouter.as_str()),
        ("providers.openrouter.api_key", "sk-or-test"),
        ("budgets.sync_interval_ms", "100"),
        ("budgets.refresh_interval_ms", "200"),
    ];
    settings.extend_from_slice(extra);
    test_config(url, &spool, &settings)
}

fn request() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
}

async fn chat(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    chat_at(&app.client, &app.address, key, body).await
}

async fn chat_at(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    admin_at(&app.client, &app.address, method, path, body).await
}

async fn admin_at(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_budget(app: &TestApp, body: Value) -> Value {
    let (status, budget) = admin(app, reqwest::Method::POST, "/api/v1/budgets", Some(body)).await;
    assert_eq!(status, 201, "{budget}");
    budget
}

fn usd(nanos: i64) -> String {
    tollgate::money::NanoUsd::from_nanos(nanos).to_string()
}

async fn upstream_requests(upstream: &Upstream) -> usize {
    upstream.received.lock().await.len()
}

/// The ledger's spend for an org, in nano-USD, once every record is written.
async fn ledger_spend(store: &Store, org: &str) -> i64 {
    let filter = tollgate::store::RecordFilter {
        org_id: Some(org.to_owned()),
        scope: tollgate::store::Scope::All,
        ..Default::default()
    };
    let mut total = 0;
    let mut cursor = None;
    loop {
        let page = store.usage_records(&filter, cursor, 1000).await.unwrap();
        total += page
            .records
            .iter()
            .map(|record| record.cost.map_or(0, |cost| cost.nanos()))
            .sum::<i64>();
        match page.next {
            Some(next) => cursor = Some(next),
            None => return total,
        }
    }
}

#[tokio::test]
async fn invalid_budgets_are_refused_naming_the_field() {
    let upstream = upstream().await;
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    create_key(&store, "acme", None).await;
    let app = spawn_app(config(&database, &upstream, "a")).await;
    let valid = json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10"});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"budget_amount_usd": "-1"}), "budget_amount_usd"),
        (json!({"budget_amount_usd": "ten"}), "budget_amount_usd"),
        (json!({"budget_amount_usd": null}), "budget_amount_usd"),
        (json!({"budget_type": "hourly"}), "budget_type"),
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"org_id": "nobody"}), "org_id"),
        (json!({"provider": "anthropic"}), "provider"),
        (json!({"soft_limit_percent": 150}), "soft_limit_percent"),
        (json!({"soft_limit_percent": "80"}), "soft_limit_percent"),
        (
            json!({"rollover_policy": "carry_everything"}),
            "rollover_policy",
        ),
        (json!({"rollover_cap_usd": "5"}), "rollover_cap_usd"),
        (json!({"reset_date": "2026-02-30"}), "reset_date"),
        (json!({"api_key_id": "not-a-uuid"}), "api_key_id"),
        (
            json!({"api_key_id": "0195a1b2-0000-7000-8000-000000000000"}),
            "api_key_id",
        ),
        (json!({"hard_limit": "yes"}), "hard_limit"),
        (json!({"budget_amount": 5}), "budget_amount"),
    ];
    for (change, field) in cases {
        let mut body = valid.clone();
        for (name, value) in change.as_object().unwrap() {
            body[name] = value.clone();
        }
        let (status, answer) = admin(
            &app,
            reqwest::Method::POST,
            "/api/v1/budgets",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], field, "{body} -> {answer}");
    }
    for (missing, field) in [
        ("org_id", "org_id"),
        ("budget_type", "budget_type"),
        ("budget_amount_usd", "budget_amount_usd"),
    ] {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(missing);
        let (status, answer) =
            admin(&app, reqwest::Method::POST, "/api/v1/budgets", Some(body)).await;
        assert_eq!(
            (status, answer["error"]["param"].as_str()),
            (422, Some(field)),
            "{answer}"
        );
    }
    let response = app
        .client
        .post(app.url("/api/v1/budgets"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Without the admin token, nothing.
    let response = app
        .client
        .get(app.url("/api/v1/budgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, list) = admin(&app, reqwest::Method::GET, "/api/v1/budgets", None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing invalid was stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn budgets_are_created_read_changed_and_deleted() {
    let upstream = upstream().await;
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    create_key(&store, "acme", None).await;
    let app = spawn_app(config(&database, &upstream, "a")).await;
    let created = create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "monthly", "budget_amount_usd": 25.5,
               "soft_limit_percent": [90, 50], "timezone": "Europe/Paris",
               "rollover_policy": "carry_unused", "rollover_cap_usd": "5", "provider": "openai"}),
    )
    .await;
    assert_eq!(created["budget_amount_usd"], "25.5");
    assert_eq!(created["soft_limit_percent"], json!([50, 90]));
    assert_eq!(created["hard_limit"], false);
    assert_eq!(created["reset_date"], "2024-01-01");
    assert_eq!(created["provider"], "openai");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/budgets/{id}");
    let (status, read) = admin(&app, reqwest::Method::GET, &path, None).await;
    assert_eq!((status, &read), (200, &created));
    let (status, changed) = admin(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(json!({"hard_limit": true, "budget_amount_usd": "30", "provider": null})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["hard_limit"], true);
    assert_eq!(changed["budget_amount_usd"], "30");
    assert_eq!(changed["provider"], Value::Null);
    assert_eq!(
        changed["timezone"], "Europe/Paris",
        "fields not given keep their values"
    );
    let (status, answer) = admin(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(json!({"org_id": "globex"})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (422, Some("org_id"))
    );
    let (_, list) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v1/budgets?org_id=acme",
        None,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, list) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v1/budgets?org_id=globex",
        None,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (status, _) = admin(&app, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 200);
    let (status, answer) = admin(&app, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = admin(&app, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn status_counts_gateway_and_ingested_spend() {
    let Single {
        upstream: _upstream,
        database: _database,
        store: _,
        key,
        app,
    } = single().await;
    let budget = create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "0.001"}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, &request()).await.status(), 200);
    }
    let ingested = app
        .post_usage(r#"{"org_id":"acme","provider":"openai","model":"gpt-4o","task_type":"chat","input_tokens":100,"output_tokens":0,"cost_usd":"0.0002"}"#)
        .await;
    assert_eq!(ingested.status(), 202, "{}", ingested.text().await.unwrap());
    let path = format!("/api/v1/budgets/{}/status", budget["id"].as_str().unwrap());
    let expected = usd(3 * ACTUAL_NANOS + 200_000);
    let seen = eventually(Duration::from_secs(5), || async {
        admin(&app, reqwest::Method::GET, &path, None).await.1["spent_usd"] == expected.as_str()
    })
    .await;
    let status = admin(&app, reqwest::Method::GET, &path, None).await.1;
    assert!(
        seen,
        "spent {} != {expected}: {status}",
        status["spent_usd"]
    );
    assert_eq!(status["budget_amount_usd"], usd(1_000_000));
    assert_eq!(status["reserved_usd"], usd(0));
    assert_eq!(
        status["remaining_usd"],
        usd(1_000_000 - 3 * ACTUAL_NANOS - 200_000)
    );
    assert_eq!(status["state"], "ok");
    assert!(
        status["period_start"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z")
    );
    app.stop().await;
}

/// 200 concurrent requests against a hard budget worth about ten: the
/// ledger's spend stays within the budget plus one estimate, and refused
/// requests never reached the provider.
/// Where the gateways under test run: in this process, or as `tollgate
/// serve` processes.
enum Instances {
    InProcess(Vec<TestApp>),
    Processes(Vec<ServeProcess>),
}

impl Instances {
    fn bases(&self) -> Vec<String> {
        match self {
            Instances::InProcess(apps) => apps.iter().map(|app| app.address.clone()).collect(),
            Instances::Processes(processes) => processes
                .iter()
                .map(|process| process.base.clone())
                .collect(),
        }
    }

    async fn stop(self) {
        match self {
            Instances::InProcess(apps) => {
                for app in apps {
                    app.stop().await;
                }
            }
            Instances::Processes(processes) => drop(processes),
        }
    }
}

async fn serve_process(database: &TestDatabase, upstream: &Upstream, name: &str) -> ServeProcess {
    let openai = format!("{}/openai/v1", upstream.base);
    common::serve_process(
        database,
        name,
        "[budgets]\nsync_interval_ms = 100\nrefresh_interval_ms = 200\n",
        &[
            ("TOLLGATE_OPENAI_BASE_URL", &openai),
            ("OPENAI_API_KEY", "sk-openai-test"),
        ],
    )
    .await
}

async fn concurrent_requests_stay_within_the_hard_budget(
    database: TestDatabase,
    instances: usize,
    processes: bool,
) {
    tollgate::providers::install_crypto_provider();
    let upstream = upstream().await;
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    let gateways = if processes {
        let mut started = Vec::new();
        for index in 0..instances {
            started.push(serve_process(&database, &upstream, &format!("instance-{index}")).await);
        }
        Instances::Processes(started)
    } else {
        let mut apps = Vec::new();
        for index in 0..instances {
            apps.push(spawn_app(config(&database, &upstream, &format!("spool-{index}"))).await);
        }
        Instances::InProcess(apps)
    };
    let bases = gateways.bases();
    let client = reqwest::Client::new();
    // One request per instance first, so that the burst measures budgets,
    // not the cold key cache.
    for base in &bases {
        assert_eq!(chat_at(&client, base, &key, &request()).await.status(), 200);
    }
    let warm_up = instances as i64 * ACTUAL_NANOS;
    let limit_nanos = warm_up + 10 * ACTUAL_NANOS + ACTUAL_NANOS / 2;
    let amount = usd(limit_nanos);
    let (status, budget) = admin_at(
        &client,
        &bases[0],
        reqwest::Method::POST,
        "/api/v1/budgets",
        Some(json!({"org_id": "acme", "budget_type": "monthly", "budget_amount_usd": amount, "hard_limit": true})),
    )
    .await;
    assert_eq!(status, 201, "{budget}");
    // Every instance knows the budget before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = request();
    let answers = join_all((0..200).map(|index| {
        let base = &bases[index % instances];
        let (client, key, body) = (&client, &key, &body);
        async move {
            let response = chat_at(client, base, key, body).await;
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("x-should-retry")
                .map(|value| value.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry, body)
        }
    }))
    .await;
    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 429)
        .collect();
    assert_eq!(
        served + refused.len(),
        200,
        "only 200s and 429s: {answers:?}"
    );
    assert!(served >= 5, "the budget admits requests ({served} served)");
    for (_, retry, body) in &refused {
        assert_eq!(retry.as_deref(), Some("false"));
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(body["error"]["code"], "budget_exceeded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("resets at"),
            "{body}"
        );
    }
    assert_eq!(
        upstream_requests(&upstream).await,
        served + instances,
        "refused requests never reached the provider"
    );
    let expected = (served + instances) as i64 * ACTUAL_NANOS;
    let written = eventually(Duration::from_secs(10), || async {
        ledger_spend(&store, "acme").await == expected
    })
    .await;
    let spent = ledger_spend(&store, "acme").await;
    assert!(written, "ledger spend {spent} for {served} answers");
    assert!(
        spent <= limit_nanos + ESTIMATE_NANOS,
        "spent {spent} nano-USD against a limit of {limit_nanos} (+ one estimate {ESTIMATE_NANOS})"
    );
    gateways.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_hard_budget_holds_under_200_concurrent_requests_on_sqlite() {
    concurrent_requests_stay_within_the_hard_budget(TestDatabase::sqlite(), 1, false).await;
}

#[tokio::test]
async fn a_hard_budget_holds_under_200_concurrent_requests_on_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    concurrent_requests_stay_within_the_hard_budget(database, 1, false).await;
}

#[tokio::test]
async fn a_hard_budget_holds_across_three_serve_processes_sharing_postgres() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    concurrent_requests_stay_within_the_hard_budget(database, 3, true).await;
}

#[tokio::test]
async fn budgets_apply_only_to_their_provider_user_and_key() {
    let upstream = upstream().await;
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    let alice = create_key(&store, "acme", Some("alice")).await;
    let bob = create_key(&store, "acme", Some("bob")).await;
    let app = spawn_app(config(&database, &upstream, "a")).await;
    let openrouter = json!({"model": "openrouter/openai/gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    // A zero hard budget on OpenRouter only.
    create_budget(
        &app,
        json!({"org_id": "acme", "provider": "openrouter", "budget_type": "daily", "budget_amount_usd": "0", "hard_limit": true}),
    )
    .await;
    assert_eq!(chat(&app, &alice, &openrouter).await.status(), 429);
    assert_eq!(
        chat(&app, &alice, &request()).await.status(),
        200,
        "OpenAI is not under it"
    );
    // A zero hard budget for bob.
    create_budget(
        &app,
        json!({"org_id": "acme", "user_id": "bob", "budget_type": "weekly", "budget_amount_usd": "0", "hard_limit": true}),
    )
    .await;
    assert_eq!(chat(&app, &bob, &request()).await.status(), 429);
    assert_eq!(chat(&app, &alice, &request()).await.status(), 200);
    // A soft budget never blocks.
    create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "0"}),
    )
    .await;
    assert_eq!(chat(&app, &alice, &request()).await.status(), 200);
    // A key budget, by the key's id.
    let keys = store
        .list_keys(&tollgate::store::Scope::All, Some("acme"))
        .await
        .unwrap();
    let alice_key = keys
        .iter()
        .find(|key| key.user_id.as_deref() == Some("alice"))
        .unwrap();
    create_budget(
        &app,
        json!({"org_id": "acme", "api_key_id": alice_key.id.to_string(), "budget_type": "monthly", "budget_amount_usd": "0", "hard_limit": true}),
    )
    .await;
    assert_eq!(chat(&app, &alice, &request()).await.status(), 429);
    // A different org is untouched.
    let globex = create_key(&store, "globex", None).await;
    assert_eq!(chat(&app, &globex, &openrouter).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn soft_thresholds_are_recorded_once_per_period() {
    let Single {
        upstream: _upstream,
        database: _database,
        store,
        key,
        app,
    } = single().await;
    // Two requests reach 50%, four pass 100% (of a soft budget).
    let amount = usd(4 * ACTUAL_NANOS - 1);
    let budget = create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": amount, "soft_limit_percent": [50, 100]}),
    )
    .await;
    let id = uuid::Uuid::parse_str(budget["id"].as_str().unwrap()).unwrap();
    for _ in 0..2 {
        assert_eq!(chat(&app, &key, &request()).await.status(), 200);
    }
    let reached = eventually(Duration::from_secs(5), || async {
        store.threshold_events(id).await.unwrap().len() == 1
    })
    .await;
    assert!(
        reached,
        "50% recorded: {:?}",
        store.threshold_events(id).await.unwrap()
    );
    for _ in 0..4 {
        assert_eq!(chat(&app, &key, &request()).await.status(), 200);
    }
    let reached = eventually(Duration::from_secs(5), || async {
        store.threshold_events(id).await.unwrap().len() == 2
    })
    .await;
    assert!(reached, "100% recorded");
    // More spending and more checks add nothing.
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, &request()).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = store.threshold_events(id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|(_, percent)| *percent)
            .collect::<Vec<_>>(),
        vec![50, 100]
    );
    let (_, status) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/budgets/{id}/status"),
        None,
    )
    .await;
    assert_eq!(status["state"], "exceeded");
    app.stop().await;
}

/// While the database is down, keys under a hard budget get 503 once their
/// instance's claim runs out; other keys keep working. A restarted instance
/// reads spend from the ledger, not from anything it remembered.
#[tokio::test]
async fn a_database_outage_fails_budgeted_keys_closed_and_others_open() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let upstream = upstream().await;
    let store = connect_store(&database.url).await;
    let budgeted = create_key(&store, "acme", None).await;
    let free = create_key(&store, "globex", None).await;
    let proxy = Proxy::start(postgres_address(&database.url)).await;
    let url = database.url_through(proxy.address);
    let settings = [("budgets.lease_ttl_seconds", "1")];
    let app = spawn_app(config_for(&url, &database, &upstream, "a", &settings)).await;
    let limit = 3 * ACTUAL_NANOS + ACTUAL_NANOS / 2;
    create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": usd(limit), "hard_limit": true}),
    )
    .await;
    // Keys are checked (and cached) before the outage.
    assert_eq!(chat(&app, &budgeted, &request()).await.status(), 200);
    assert_eq!(chat(&app, &free, &request()).await.status(), 200);
    app.recorder.flush().await.unwrap();
    proxy.take_down();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refused = chat(&app, &budgeted, &request()).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget state cannot be read"),
        "{body}"
    );
    assert_eq!(
        upstream_requests(&upstream).await,
        2,
        "nothing unbudgeted was sent"
    );
    assert_eq!(
        chat(&app, &free, &request()).await.status(),
        200,
        "unbudgeted keys keep working"
    );
    proxy.bring_up();
    let back = eventually(Duration::from_secs(10), || async {
        chat(&app, &budgeted, &request()).await.status() == 200
    })
    .await;
    assert!(back, "budgeted keys work again once the database is back");
    app.stop().await;
    // A new instance knows what was spent (2 answers for acme) from the
    // ledger, and the stopped one gave its claim back: one more answer fits
    // (2 + 1 estimate <= 3.5 answers), the next does not (3 + 1 > 3.5).
    let restarted = spawn_app(config(&database, &upstream, "b")).await;
    assert_eq!(chat(&restarted, &budgeted, &request()).await.status(), 200);
    restarted.recorder.flush().await.unwrap();
    assert_eq!(chat(&restarted, &budgeted, &request()).await.status(), 429);
    restarted.stop().await;
    store.close().await;
}

/// One gateway on SQLite and a key of `acme`.
struct Single {
    upstream: Upstream,
    database: TestDatabase,
    store: Store,
    key: String,
    app: TestApp,
}

async fn single() -> Single {
    let upstream = upstream().await;
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", None).await;
    let app = spawn_app(config(&database, &upstream, "a")).await;
    Single {
        upstream,
        database,
        store,
        key,
        app,
    }
}

/// Spend recorded at `at` through the ingest API.
async fn ingest_spend(app: &TestApp, org: &str, at: &str, usd: &str) {
    let record = json!({"org_id": org, "provider": "openai", "model": "gpt-4o", "task_type": "chat",
        "input_tokens": 100, "output_tokens": 0, "cost_usd": usd, "created_at": at});
    let response = app.post_usage(&record.to_string()).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

async fn status_of(app: &TestApp, budget: &Value) -> Value {
    let path = format!("/api/v1/budgets/{}/status", budget["id"].as_str().unwrap());
    let (status, body) = admin(app, reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A budget's status, checked for its rollover and limit (USD).
async fn rollover_and_limit(app: &TestApp, budget: &Value, rollover: &str, limit: &str) -> Value {
    let status = status_of(app, budget).await;
    assert_eq!(
        (
            status["rollover_usd"].as_str(),
            status["limit_usd"].as_str()
        ),
        (Some(rollover), Some(limit)),
        "{status}"
    );
    status
}

/// A budget made before the previous period rolls its unused part (or its
/// overspend) into the current one; periods follow the budget's time zone.
#[tokio::test]
async fn rollover_and_time_zones_follow_the_ledger_across_period_boundaries() {
    let upstream = upstream().await;
    let database = TestDatabase::sqlite();
    let store = connect_store(&database.url).await;
    create_key(&store, "acme", None).await;
    create_key(&store, "globex", None).await;
    let app = spawn_app(config(&database, &upstream, "a")).await;
    let now = chrono::Utc::now();
    let yesterday = (now - chrono::Duration::days(1)).to_rfc3339();
    // acme spent $3 yesterday and $1 today; globex $12 yesterday.
    ingest_spend(&app, "acme", &yesterday, "3").await;
    ingest_spend(&app, "acme", &now.to_rfc3339(), "1").await;
    ingest_spend(&app, "globex", &yesterday, "12").await;
    app.recorder.flush().await.unwrap();
    // Budgets made two days ago (as if), so yesterday was one of their periods.
    let created = |body: Value| {
        let app = &app;
        async move { create_budget(app, body).await }
    };
    let unused = created(
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10",
        "rollover_policy": "carry_unused", "rollover_cap_usd": "5"}),
    )
    .await;
    let uncapped = created(
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10",
        "rollover_policy": "carry_unused"}),
    )
    .await;
    let overage = created(
        json!({"org_id": "globex", "budget_type": "daily", "budget_amount_usd": "10",
        "rollover_policy": "carry_overage", "hard_limit": true}),
    )
    .await;
    let plain =
        created(json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10"})).await;
    let two_days_ago = (now - chrono::Duration::days(2)).timestamp_micros();
    let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
    sqlx::query("UPDATE ai_usage_budgets SET created_at = ?")
        .bind(two_days_ago)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let status = rollover_and_limit(&app, &unused, "5", "15").await;
    assert_eq!(status["spent_usd"], "1");
    rollover_and_limit(&app, &uncapped, "7", "17").await;
    rollover_and_limit(&app, &plain, "0", "10").await;
    let status = rollover_and_limit(&app, &overage, "-2", "8").await;
    assert_eq!(status["spent_usd"], "0");
    // A budget that did not exist yesterday carries nothing over.
    let fresh = created(
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10",
        "rollover_policy": "carry_unused"}),
    )
    .await;
    assert_eq!(status_of(&app, &fresh).await["rollover_usd"], "0");
    // Time zones: 23:30 UTC is already tomorrow in Tokyo (UTC+9) and still
    // today in Los Angeles, so a record then counts in different days.
    let tokyo = created(json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10", "timezone": "Asia/Tokyo"})).await;
    let status = status_of(&app, &tokyo).await;
    let start =
        chrono::DateTime::parse_from_rfc3339(status["period_start"].as_str().unwrap()).unwrap();
    assert_eq!(
        start
            .with_timezone(&chrono_tz::Asia::Tokyo)
            .format("%H:%M")
            .to_string(),
        "00:00",
        "{status}"
    );
    let end = chrono::DateTime::parse_from_rfc3339(status["period_end"].as_str().unwrap()).unwrap();
    assert_eq!((end - start).num_hours(), 24);
    // Spend just before Tokyo's midnight is yesterday's there, just after is today's.
    let before = (start - chrono::Duration::seconds(1)).to_rfc3339();
    let after = (start + chrono::Duration::seconds(1)).to_rfc3339();
    ingest_spend(&app, "acme", &before, "0.5").await;
    ingest_spend(&app, "acme", &after, "0.25").await;
    app.recorder.flush().await.unwrap();
    let spent_in_tokyo_today = status_of(&app, &tokyo).await["spent_usd"]
        .as_str()
        .unwrap()
        .to_owned();
    // Today's $1 (ingested at `now`) and the 0.25 after midnight.
    assert_eq!(spent_in_tokyo_today, "1.25");
    app.stop().await;
}

/// A request in flight holds its estimate (visible as `reserved_usd`), and
/// settles to its actual cost when it ends — streamed, failed upstream, or
/// abandoned by its client.
#[tokio::test]
async fn reservations_are_held_in_flight_and_settled_when_requests_end() {
    let Single {
        upstream: _upstream,
        database: _database,
        store: _,
        key,
        app,
    } = single().await;
    let budget = create_budget(
        &app,
        json!({"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "1", "hard_limit": true}),
    )
    .await;
    let mut slow = request();
    slow["fake"] = json!("slow:1500");
    let in_flight = {
        let client = app.client.clone();
        let url = app.url("/v1/chat/completions");
        let key = key.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&slow)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let held = eventually(Duration::from_secs(2), || async {
        status_of(&app, &budget).await["reserved_usd"] == usd(ESTIMATE_NANOS).as_str()
    })
    .await;
    assert!(held, "{}", status_of(&app, &budget).await);
    assert_eq!(in_flight.await.unwrap(), 200);
    let settled = eventually(Duration::from_secs(3), || async {
        let status = status_of(&app, &budget).await;
        status["reserved_usd"] == "0" && status["spent_usd"] == usd(ACTUAL_NANOS).as_str()
    })
    .await;
    assert!(settled, "{}", status_of(&app, &budget).await);
    // A failed attempt releases everything; a stream settles like an answer.
    let mut failing = request();
    failing["fake"] = json!("server_error");
    assert_eq!(chat(&app, &key, &failing).await.status(), 500);
    let mut streamed = request();
    streamed["stream"] = json!(true);
    let response = chat(&app, &key, &streamed).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    // A client that hangs up mid-stream: the attempt is still recorded and
    // its reservation settled.
    let mut stalled = request();
    stalled["stream"] = json!(true);
    stalled["fake"] = json!("stall_stream");
    let response = chat(&app, &key, &stalled).await;
    drop(response);
    let settled = eventually(Duration::from_secs(5), || async {
        let status = status_of(&app, &budget).await;
        status["reserved_usd"] == "0" && status["spent_usd"] != usd(ACTUAL_NANOS).as_str()
    })
    .await;
    let status = status_of(&app, &budget).await;
    assert!(settled, "{status}");
    let records = app.all_records().await;
    assert_eq!(records.len(), 4, "{records:?}");
    let spent: i64 = records
        .iter()
        .map(|record| record["cost_nano_usd"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(status["spent_usd"], usd(spent));
    app.stop().await;
}
