//! Alerts: the evaluator's lifecycle on both backends (fire once, escalate
//! in place, resolve when the condition clears, stay resolved after a
//! person resolves them, one alert across concurrent evaluators), and the
//! alerts API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tollgate::alerts::evaluator::{Evaluator, EvaluatorSettings};
use tollgate::alerts::{AlertEventKind, AlertStatus, AlertType, Severity};
use tollgate::money::NanoUsd;
use tollgate::store::{AlertFilter, Store};
use tollgate::usage::{
    CostStatus, Provider, RecordStatus, TaskType, TokenCounts, UsageRecord, new_request_id,
};

use common::{TestDatabase, spawn_app, test_config};

both_backends!(
    high_usage_fires_once_escalates_in_place_and_resolves_the_next_day,
    error_rate_fires_per_model_and_resolves_when_the_window_clears,
    an_alert_resolved_by_a_person_stays_resolved_until_its_condition_worsens,
    concurrent_evaluators_open_each_alert_once,
    budget_thresholds_become_one_alert_per_period_that_escalates,
);

fn usd(dollars: i64) -> NanoUsd {
    NanoUsd::from_nanos(dollars * 1_000_000_000)
}

fn settings() -> EvaluatorSettings {
    common::evaluator_settings()
}

fn record(
    at: DateTime<Utc>,
    org: &str,
    provider: Provider,
    model: &str,
    cost: NanoUsd,
    ok: bool,
) -> UsageRecord {
    UsageRecord {
        request_id: new_request_id(),
        parent_request_id: None,
        created_at: at,
        org_id: org.to_owned(),
        user_id: None,
        api_key_id: None,
        provider,
        model: model.to_owned(),
        task_type: TaskType::Chat,
        tokens: TokenCounts::default(),
        cost: Some(cost),
        estimated_cost: None,
        cost_status: CostStatus::Priced,
        latency_ms: 100,
        time_to_first_token_ms: None,
        status_code: Some(if ok { 200 } else { 500 }),
        status: if ok {
            RecordStatus::Ok
        } else {
            RecordStatus::Error
        },
        error_type: (!ok).then(|| "upstream_error".to_owned()),
        stream: false,
        provider_request_id: None,
        metadata: json!({}),
    }
}

async fn spend(store: &Store, at: DateTime<Utc>, org: &str, dollars: i64) {
    let entry = record(at, org, Provider::OpenAi, "gpt-4o", usd(dollars), true);
    store.insert_usage(&[entry], chrono_tz::UTC).await.unwrap();
}

async fn open_of(store: &Store, alert_type: AlertType) -> Vec<tollgate::alerts::Alert> {
    store.open_alerts(&[alert_type]).await.unwrap()
}

/// Noon today, so that "today" does not straddle midnight in the test.
fn noon() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

async fn high_usage_fires_once_escalates_in_place_and_resolves_the_next_day(store: Store) {
    let evaluator = Evaluator::new(store.clone(), settings());
    let now = noon();
    spend(&store, now, "acme", 9).await;
    assert_eq!(
        evaluator.evaluate(now).await.unwrap().created,
        0,
        "$9 is under $10"
    );
    spend(&store, now, "acme", 2).await;
    let first = evaluator.evaluate(now).await.unwrap();
    // The org and the org on OpenAI: two scopes, one alert each.
    assert_eq!((first.created, first.escalated), (2, 0));
    let again = evaluator.evaluate(now).await.unwrap();
    assert_eq!((again.created, again.escalated), (0, 0), "fires once");
    let open = open_of(&store, AlertType::HighUsage).await;
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|alert| alert.severity == Severity::Medium));
    let org_alert = open
        .iter()
        .find(|alert| alert.provider.is_none())
        .unwrap()
        .clone();
    assert_eq!(org_alert.current_value.unwrap().to_string(), "11");
    // Acknowledged, then worse: the same alert escalates and is active again.
    store
        .change_alert_status(
            &tollgate::store::Scope::All,
            org_alert.id,
            AlertStatus::Acknowledged,
            Some("ops"),
            now,
        )
        .await
        .unwrap();
    spend(&store, now, "acme", 20).await;
    let worse = evaluator.evaluate(now).await.unwrap();
    assert_eq!((worse.created, worse.escalated), (0, 2));
    let escalated = store
        .alert(&tollgate::store::Scope::All, org_alert.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(escalated.severity, Severity::High);
    assert_eq!(escalated.status, AlertStatus::Active);
    assert_eq!(escalated.acknowledged_by.as_deref(), Some("ops"));
    spend(&store, now, "acme", 20).await;
    evaluator.evaluate(now).await.unwrap();
    assert_eq!(
        store
            .alert(&tollgate::store::Scope::All, org_alert.id)
            .await
            .unwrap()
            .unwrap()
            .severity,
        Severity::Critical
    );
    let history: Vec<(AlertEventKind, Severity)> = store
        .alert_events(org_alert.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(event, severity, _, _)| (event, severity))
        .collect();
    assert_eq!(
        history,
        vec![
            (AlertEventKind::Created, Severity::Medium),
            (AlertEventKind::Acknowledged, Severity::Medium),
            (AlertEventKind::Escalated, Severity::High),
            (AlertEventKind::Escalated, Severity::Critical),
        ]
    );
    // A new day: yesterday's spend no longer holds, the alerts resolve.
    let tomorrow = now + chrono::Duration::days(1);
    let next_day = evaluator.evaluate(tomorrow).await.unwrap();
    assert_eq!(next_day.resolved, 2);
    assert!(open_of(&store, AlertType::HighUsage).await.is_empty());
    let resolved = store
        .alert(&tollgate::store::Scope::All, org_alert.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resolved.status, resolved.resolved_by),
        (AlertStatus::Resolved, None)
    );
}

async fn error_rate_fires_per_model_and_resolves_when_the_window_clears(store: Store) {
    let evaluator = Evaluator::new(store.clone(), settings());
    let now = Utc::now();
    let mut records = Vec::new();
    // OpenRouter gpt-4o: 30 requests, 9 failing (30%: critical).
    for index in 0..30 {
        records.push(record(
            now,
            "acme",
            Provider::OpenRouter,
            "openai/gpt-4o",
            usd(0),
            index % 10 >= 3,
        ));
    }
    // OpenAI: 40 requests, 2 failing (5%): nothing.
    for index in 0..40 {
        records.push(record(
            now,
            "acme",
            Provider::OpenAi,
            "gpt-4o",
            usd(0),
            index >= 2,
        ));
    }
    // Local: 10 requests all failing, but under the 20-request minimum.
    for _ in 0..10 {
        records.push(record(
            now,
            "acme",
            Provider::Local,
            "llama3",
            usd(0),
            false,
        ));
    }
    store.insert_usage(&records, chrono_tz::UTC).await.unwrap();
    let evaluation = evaluator.evaluate(now).await.unwrap();
    let open = open_of(&store, AlertType::ErrorRate).await;
    let mut keys: Vec<(&str, Severity)> = open
        .iter()
        .map(|alert| (alert.dedupe_key.as_deref().unwrap(), alert.severity))
        .collect();
    keys.sort();
    // The model and its provider as a whole (30 requests, 9 failing).
    assert_eq!(
        keys,
        vec![
            ("error_rate:openrouter:*", Severity::Critical),
            ("error_rate:openrouter:openai/gpt-4o", Severity::Critical),
        ],
        "{evaluation:?}"
    );
    assert_eq!(open[0].current_value.unwrap().to_string(), "30");
    // Twenty minutes on, the window holds none of it: resolved.
    let later = now + chrono::Duration::minutes(20);
    assert_eq!(evaluator.evaluate(later).await.unwrap().resolved, 2);
    assert!(open_of(&store, AlertType::ErrorRate).await.is_empty());
}

async fn an_alert_resolved_by_a_person_stays_resolved_until_its_condition_worsens(store: Store) {
    let evaluator = Evaluator::new(store.clone(), settings());
    let now = noon();
    spend(&store, now, "globex", 12).await;
    evaluator.evaluate(now).await.unwrap();
    let open = open_of(&store, AlertType::HighUsage).await;
    assert_eq!(open.len(), 2);
    for alert in &open {
        store
            .change_alert_status(
                &tollgate::store::Scope::All,
                alert.id,
                AlertStatus::Resolved,
                Some("ops"),
                now,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        evaluator.evaluate(now).await.unwrap().created,
        0,
        "not reopened at the same severity"
    );
    assert!(open_of(&store, AlertType::HighUsage).await.is_empty());
    spend(&store, now, "globex", 20).await;
    assert_eq!(
        evaluator.evaluate(now).await.unwrap().created,
        2,
        "reopened when worse"
    );
    let reopened = open_of(&store, AlertType::HighUsage).await;
    assert!(
        reopened
            .iter()
            .all(|alert| alert.severity == Severity::High)
    );
    let listed = store
        .alerts(&AlertFilter {
            org_id: Some("globex".to_owned()),
            limit: 100,
            scope: tollgate::store::Scope::All,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 4, "two resolved, two open");
}

async fn concurrent_evaluators_open_each_alert_once(store: Store) {
    let now = noon();
    spend(&store, now, "initech", 60).await;
    let evaluators: Vec<Evaluator> = (0..4)
        .map(|_| Evaluator::new(store.clone(), settings()))
        .collect();
    let results =
        futures_util::future::join_all(evaluators.iter().map(|evaluator| evaluator.evaluate(now)))
            .await;
    let created: usize = results
        .into_iter()
        .map(|result| result.unwrap().created)
        .sum();
    assert_eq!(created, 2, "one alert per scope across four evaluators");
    let open = open_of(&store, AlertType::HighUsage).await;
    assert_eq!(open.len(), 2);
    for alert in &open {
        let events = store.alert_events(alert.id).await.unwrap();
        assert_eq!(events.len(), 1, "one `created` event: {events:?}");
    }
}

async fn admin(
    app: &common::TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.admin(method, path, body).await
}

#[tokio::test]
async fn the_alerts_api_creates_lists_acknowledges_and_resolves() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let post = reqwest::Method::POST;
    let (status, created) = admin(
        &app,
        post.clone(),
        "/api/v1/alerts",
        Some(json!({"severity": "medium", "title": "Disk filling", "message": "80% used",
                    "threshold_value": "80", "current_value": 81.5, "dedupe_key": "disk:db1", "provider": "local"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["alert_type"], "custom");
    assert_eq!(created["status"], "active");
    assert_eq!(created["current_value"], "81.5");
    let id = created["id"].as_str().unwrap().to_owned();
    // The same key, worse: the same alert escalates.
    let (status, escalated) = admin(
        &app,
        post.clone(),
        "/api/v1/alerts",
        Some(json!({"severity": "critical", "title": "Disk filling", "message": "95% used", "dedupe_key": "disk:db1"})),
    )
    .await;
    assert_eq!((status, escalated["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(escalated["severity"], "critical");
    let (status, acknowledged) = admin(
        &app,
        post.clone(),
        &format!("/api/v1/alerts/{id}/acknowledge"),
        Some(json!({"by": "dana"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            acknowledged["status"].as_str(),
            acknowledged["acknowledged_by"].as_str()
        ),
        (Some("acknowledged"), Some("admin-token (dana)"))
    );
    let (_, listed) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v1/alerts?status=acknowledged&severity=critical&provider=local",
        None,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (_, none) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v1/alerts?status=active",
        None,
    )
    .await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let (status, resolved) = admin(
        &app,
        post.clone(),
        &format!("/api/v1/alerts/{id}/resolve"),
        None,
    )
    .await;
    assert_eq!(
        (
            status,
            resolved["status"].as_str(),
            resolved["resolved_by"].as_str()
        ),
        (200, Some("resolved"), Some("admin-token"))
    );
    // Resolving again changes nothing and is not an error.
    let (status, _) = admin(
        &app,
        post.clone(),
        &format!("/api/v1/alerts/{id}/resolve"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for (path, body, param) in [
        (
            "/api/v1/alerts",
            json!({"severity": "urgent", "title": "t", "message": "m"}),
            "severity",
        ),
        (
            "/api/v1/alerts",
            json!({"severity": "low", "title": "", "message": "m"}),
            "title",
        ),
        (
            "/api/v1/alerts",
            json!({"severity": "low", "title": "t", "message": "m", "alert_type": "panic"}),
            "alert_type",
        ),
        (
            "/api/v1/alerts",
            json!({"severity": "low", "title": "t", "message": "m", "colour": "red"}),
            "colour",
        ),
        (
            "/api/v1/alerts",
            json!({"severity": "low", "message": "m"}),
            "",
        ),
    ] {
        let (status, answer) = admin(&app, post.clone(), path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {answer}");
        if !param.is_empty() {
            assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
        }
    }
    let (status, _) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v1/alerts?status=sleeping",
        None,
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = admin(&app, post.clone(), "/api/v1/alerts/not-an-id/resolve", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        post,
        &format!("/api/v1/alerts/{}/acknowledge", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn budget_thresholds_become_one_alert_per_period_that_escalates(store: Store) {
    let evaluator = Evaluator::new(store.clone(), settings());
    store.ensure_org("acme").await.unwrap();
    let now = noon();
    let input: tollgate::budget::BudgetInput<'_> = serde_json::from_str(
        r#"{"org_id": "acme", "budget_type": "daily", "budget_amount_usd": "10", "hard_limit": true, "soft_limit_percent": [50, 80]}"#,
    )
    .unwrap();
    let budget = input
        .create(uuid::Uuid::now_v7(), now - chrono::Duration::days(3))
        .unwrap();
    store
        .insert_budget(&tollgate::store::Scope::All, &budget)
        .await
        .unwrap();
    let period = tollgate::budget::status::current_period(&budget, now);
    let reach = |percent: u32, at: DateTime<Utc>| {
        let store = store.clone();
        let id = budget.id;
        let start = tollgate::budget::status::current_period(&budget, at).start;
        async move {
            store
                .record_threshold_event(
                    id,
                    start,
                    percent,
                    usd(10),
                    usd(i64::from(percent) / 10),
                    at,
                )
                .await
                .unwrap()
        }
    };
    assert!(reach(50, now).await);
    assert_eq!(evaluator.evaluate(now).await.unwrap().created, 1);
    let open = open_of(&store, AlertType::Budget).await;
    assert_eq!((open.len(), open[0].severity), (1, Severity::Medium));
    assert_eq!(
        open[0].dedupe_key.as_deref(),
        Some(format!("budget:{}:{}", budget.id, period.start.timestamp()).as_str())
    );
    assert!(reach(80, now).await);
    assert!(
        !reach(80, now).await,
        "a threshold is recorded once per period"
    );
    assert_eq!(
        evaluator.evaluate(now).await.unwrap().escalated,
        0,
        "80% is still medium"
    );
    assert!(reach(100, now).await);
    let exhausted = evaluator.evaluate(now).await.unwrap();
    assert_eq!((exhausted.created, exhausted.escalated), (0, 1));
    let alert = store
        .alert(&tollgate::store::Scope::All, open[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        alert.severity,
        Severity::Critical,
        "a hard budget exhausted"
    );
    // The next period: the alert resolves; nothing new until thresholds are
    // reached again.
    let tomorrow = now + chrono::Duration::days(1);
    let next = evaluator.evaluate(tomorrow).await.unwrap();
    assert_eq!((next.created, next.resolved), (0, 1));
}

/// Records arriving wake the evaluator: a provider's quota error becomes an
/// alert within seconds, not at the next 30-second round.
#[tokio::test]
async fn a_quota_error_through_the_gateway_raises_an_alert_within_seconds() {
    let (router, _received) = tollgate::fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/openai/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let database = TestDatabase::sqlite();
    let store = common::connect_store(&database.url).await;
    let key = common::create_key(&store, "acme", None).await;
    let app = spawn_app(test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("providers.openai.base_url", &upstream),
            ("providers.openai.api_key", "sk-test"),
            ("alerts.evaluate_interval_seconds", "30"),
        ],
    ))
    .await;
    // The first round runs at start; wait it out so the next is 30 s away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "fake": "quota"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let raised = common::eventually(Duration::from_secs(6), || async {
        let (_, alerts) = app
            .admin(
                reqwest::Method::GET,
                "/api/v1/alerts?alert_type=quota_exceeded",
                None,
            )
            .await;
        alerts["data"]
            .as_array()
            .is_some_and(|data| data.len() == 1)
    })
    .await;
    assert!(raised, "no quota alert within 6 s");
    let (_, alerts) = app
        .admin(
            reqwest::Method::GET,
            "/api/v1/alerts?alert_type=quota_exceeded",
            None,
        )
        .await;
    assert_eq!(alerts["data"][0]["provider"], "openai");
    assert_eq!(alerts["data"][0]["severity"], "high");
    app.stop().await;
    store.close().await;
}

/// Two `tollgate serve` processes on one PostgreSQL database, both
/// evaluating every second while spend arrives through both: each alert is
/// opened once and escalated once.
#[tokio::test]
async fn two_serve_processes_on_postgres_open_and_escalate_each_alert_once() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    tollgate::providers::install_crypto_provider();
    let settings = "[alerts]\nevaluate_interval_seconds = 1\n";
    let first = common::serve_process(&database, "first", settings, &[]).await;
    let second = common::serve_process(&database, "second", settings, &[]).await;
    let client = reqwest::Client::new();
    let ingest = |base: String, dollars: u32| {
        let client = client.clone();
        async move {
            let record = json!({"org_id": "acme", "provider": "openai", "model": "gpt-4o",
                "task_type": "chat", "cost_usd": dollars.to_string()});
            let response = client
                .post(format!("{base}/api/v1/usage"))
                .bearer_auth(common::ADMIN_TOKEN)
                .json(&record)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    };
    // $12 through both (medium), then $20 more (high).
    ingest(first.base.clone(), 6).await;
    ingest(second.base.clone(), 6).await;
    let store = common::connect_store(&database.url).await;
    let opened = common::eventually(Duration::from_secs(10), || async {
        open_of(&store, AlertType::HighUsage).await.len() == 2
    })
    .await;
    assert!(opened, "{:?}", open_of(&store, AlertType::HighUsage).await);
    ingest(first.base.clone(), 10).await;
    ingest(second.base.clone(), 10).await;
    let escalated = common::eventually(Duration::from_secs(10), || async {
        open_of(&store, AlertType::HighUsage)
            .await
            .iter()
            .all(|alert| alert.severity == Severity::High)
    })
    .await;
    assert!(escalated);
    // Both processes keep evaluating; nothing more happens.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = store
        .alerts(&AlertFilter {
            alert_type: Some(AlertType::HighUsage),
            limit: 100,
            scope: tollgate::store::Scope::All,
            ..AlertFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "one alert per scope: {all:?}");
    for alert in &all {
        let events: Vec<AlertEventKind> = store
            .alert_events(alert.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(event, ..)| event)
            .collect();
        assert_eq!(
            events,
            vec![AlertEventKind::Created, AlertEventKind::Escalated]
        );
    }
    drop((first, second));
    store.close().await;
}
