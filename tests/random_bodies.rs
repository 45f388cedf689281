//! Every route that takes a body gets `TOLLGATE_RANDOM_BODIES` (10,000 by
//! default) random and mutated bodies: random JSON, a valid body with a
//! field changed, removed or added, its text with bytes flipped, inserted,
//! deleted or cut off, raw bytes, and pathological JSON (deep nesting, huge
//! numbers, long strings). None may get a 5xx or break the connection (a
//! panic would; a panic hook counts them too), and the server must still
//! answer afterwards. Routes that take no body get a hundredth as many
//! random query strings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own fake upstream"
)]

mod common;

use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tollgate::generate::Random;

use common::{ADMIN_TOKEN, TestDatabase, connect_store, create_key, spawn_app, test_config};

/// A route, the credential it is called with, and a valid body to mutate.
struct Target {
    method: Method,
    path: String,
    bearer: Option<String>,
    seed: Value,
}

fn random_string(random: &mut Random) -> String {
    const PIECES: &[&str] = &[
        "",
        "a",
        "gpt-4o",
        "acme",
        "openai",
        "null",
        "-1",
        "1e309",
        "\u{0}",
        "é",
        "🦀",
        "\"",
        "\\",
        "'",
        "%",
        "../",
        "<script>",
        "2026-02-30",
        "9999-12-31T23:59:59Z",
        " ",
        "\n",
    ];
    let count = random.between(0, 4);
    (0..count)
        .map(|_| PIECES[random.pick(&[1; 21]) % PIECES.len()])
        .collect()
}

fn random_number(random: &mut Random) -> Value {
    match random.between(0, 6) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MAX),
        3 => json!(u64::MAX),
        4 => json!(random.between(0, 1_000_000)),
        5 => json!(0.142_857_142_857_142_85),
        _ => json!(-1e300),
    }
}

/// A random JSON value, at most `depth` levels deep.
fn random_value(random: &mut Random, depth: u32) -> Value {
    let kinds = if depth == 0 { 4 } else { 6 };
    match random.between(0, kinds) {
        0 => Value::Null,
        1 => Value::Bool(random.chance(500)),
        2 => random_number(random),
        3 | 4 => Value::String(random_string(random)),
        5 => Value::Array(
            (0..random.between(0, 3))
                .map(|_| random_value(random, depth - 1))
                .collect(),
        ),
        _ => {
            let mut object = Map::new();
            for _ in 0..random.between(0, 4) {
                object.insert(random_string(random), random_value(random, depth - 1));
            }
            Value::Object(object)
        }
    }
}

/// The seed with one field (at any depth) replaced, removed, or joined by
/// an unknown one.
fn mutate_value(random: &mut Random, value: &Value) -> Value {
    let mut value = value.clone();
    mutate_in(random, &mut value);
    value
}

fn mutate_in(random: &mut Random, node: &mut Value) {
    let descend = random.chance(400);
    match node {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[random.pick(&vec![1; keys.len()]) % keys.len()].clone();
            let nested = map[&key].is_object() || map[&key].is_array();
            if descend && nested {
                if let Some(inner) = map.get_mut(&key) {
                    mutate_in(random, inner);
                }
                return;
            }
            match random.between(0, 2) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_value(random, 2));
                }
                _ => {
                    map.insert(random_string(random), random_value(random, 2));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let index = random.pick(&vec![1; items.len()]) % items.len();
            if descend {
                mutate_in(random, &mut items[index]);
            } else {
                items[index] = random_value(random, 2);
            }
        }
        _ => *node = random_value(random, 2),
    }
}

/// The text with bytes flipped, inserted, deleted, or cut off.
fn mutate_bytes(random: &mut Random, text: &[u8]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    for _ in 0..random.between(1, 4) {
        let at = usize::try_from(random.between(0, bytes.len() as u64)).unwrap();
        match random.between(0, 3) {
            0 if at < bytes.len() => bytes[at] ^= 1 << random.between(0, 7),
            1 => bytes.insert(
                at.min(bytes.len()),
                b"{}[]\",:0e-\\\x00\xff"[usize::try_from(random.between(0, 12)).unwrap()],
            ),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn pathological(random: &mut Random) -> Vec<u8> {
    match random.between(0, 5) {
        0 => "[".repeat(100_000).into_bytes(),
        1 => format!("{{\"a\":{}}}", "9".repeat(5_000)).into_bytes(),
        2 => format!("{{\"model\":\"{}\"}}", "x".repeat(200_000)).into_bytes(),
        3 => b"{\"model\":\"gpt-4o\",\"model\":\"other\"}".to_vec(),
        4 => "\u{feff}{}".as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// The `index`-th body for a seed.
fn body(random: &mut Random, seed: &Value) -> Vec<u8> {
    let text = seed.to_string().into_bytes();
    match random.between(0, 19) {
        0..=5 => random_value(random, 4).to_string().into_bytes(),
        6..=11 => mutate_value(random, seed).to_string().into_bytes(),
        12..=16 => mutate_bytes(random, &text),
        17 => (0..random.between(0, 64))
            .map(|_| u8::try_from(random.between(0, 255)).unwrap())
            .collect(),
        _ => pathological(random),
    }
}

/// A query string of random parameters for a route without a body.
fn query(random: &mut Random) -> String {
    const NAMES: &[&str] = &[
        "start_date",
        "end_date",
        "provider",
        "model",
        "task_type",
        "org_id",
        "user_id",
        "tag",
        "limit",
        "cursor",
        "status",
        "severity",
        "format",
        "days",
        "before_id",
        "x",
    ];
    let pairs: Vec<String> = (0..random.between(0, 4))
        .map(|_| {
            let name = NAMES[random.pick(&[1; 16]) % NAMES.len()];
            let value = random_string(random);
            let encoded: String = value.bytes().map(|byte| format!("%{byte:02X}")).collect();
            format!("{name}={encoded}")
        })
        .collect();
    pairs.join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_bodies_never_get_a_5xx() {
    // Every panic anywhere in the process (handlers included) is counted.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        default_hook(info);
    }));
    let per_route: usize = std::env::var("TOLLGATE_RANDOM_BODIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000);
    let (router, _received) = tollgate::fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let database = TestDatabase::sqlite();
    let reports = database.spool_dir().join("reports");
    let (openai, openrouter, local) = (
        format!("{upstream}/openai/v1"),
        format!("{upstream}/openrouter/api/v1"),
        format!("{upstream}/local/v1"),
    );
    let reports_folder = reports.display().to_string();
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("providers.openai.base_url", &openai),
            ("providers.openai.api_key", "sk-openai-test"),
            ("providers.openrouter.base_url", &openrouter),
            ("providers.openrouter.api_key", "sk-or-test"),
            ("providers.local.base_url", &local),
            ("reports.folder", &reports_folder),
            ("alerts.enabled", "false"),
        ],
    );
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let app = spawn_app(config).await;
    let admin = Some(ADMIN_TOKEN.to_owned());

    // A real id for the routes on one thing, besides random ones.
    let (status, budget) = app
        .admin(
            Method::POST,
            "/api/v1/budgets",
            Some(json!({"org_id": "acme", "budget_type": "monthly", "budget_amount_usd": "100"})),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    let budget_id = budget["id"].as_str().unwrap().to_owned();
    let (status, alert) = app
        .admin(
            Method::POST,
            "/api/v1/alerts",
            Some(json!({"severity": "low", "title": "t", "message": "m"})),
        )
        .await;
    assert_eq!(status, 201, "{alert}");
    let alert_id = alert["id"].as_str().unwrap().to_owned();
    let (status, webhook) = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://93.184.216.34/hook"})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    // A route's path with real ids for its parameters.
    let concrete = |path: &str| {
        let id = if path.starts_with("/budgets") {
            budget_id.as_str()
        } else if path.starts_with("/webhooks") {
            webhook_id.as_str()
        } else if path.starts_with("/alerts") {
            alert_id.as_str()
        } else {
            "alice"
        };
        format!(
            "/api/v1{}",
            path.replace("{id}", id).replace("{provider}", "openai")
        )
    };

    let record = json!({"provider": "openai", "model": "gpt-4o", "task_type": "chat",
        "org_id": "acme", "user_id": "alice", "input_tokens": 10, "output_tokens": 5,
        "latency_ms": 100, "success": true, "metadata": {"tags": ["a"]}});
    let mut targets = vec![
        (
            Method::POST,
            "/api/v1/usage".to_owned(),
            json!({"records": [record.clone(), record]}),
        ),
        (
            Method::POST,
            "/api/v1/budgets".to_owned(),
            json!({"org_id": "acme", "budget_type": "weekly", "budget_amount_usd": "250",
                   "hard_limit": true, "soft_limit_percent": [50, 80], "provider": "openai",
                   "rollover_policy": "carry_unused", "rollover_cap_usd": "50",
                   "reset_date": "2026-01-15", "timezone": "Europe/Paris"}),
        ),
        (
            Method::PUT,
            format!("/api/v1/budgets/{budget_id}"),
            json!({"budget_amount_usd": "50", "hard_limit": false}),
        ),
        (
            Method::POST,
            "/api/v1/alerts".to_owned(),
            json!({"severity": "low", "title": "t", "message": "m", "alert_type": "custom",
                   "provider": "openai", "org_id": "acme", "threshold_value": "1",
                   "current_value": "2", "dedupe_key": "k"}),
        ),
        (
            Method::POST,
            format!("/api/v1/alerts/{alert_id}/acknowledge"),
            json!({"by": "x"}),
        ),
        (
            Method::POST,
            "/api/v1/webhooks".to_owned(),
            json!({"url": "https://93.184.216.34/hook", "secret": "0123456789abcdef0123",
                   "events": ["created", "resolved"], "min_severity": "medium", "format": "slack"}),
        ),
        (
            Method::PUT,
            "/api/v1/providers/openrouter".to_owned(),
            json!({"low_balance_threshold_usd": "5", "balance_usd": null}),
        ),
        (
            Method::POST,
            "/api/v1/reports".to_owned(),
            json!({"name": "weekly", "frequency": "weekly", "org_id": "acme", "folder": "r"}),
        ),
        (
            Method::POST,
            "/api/v1/orgs".to_owned(),
            json!({"id": "neworg", "name": "New"}),
        ),
        (
            Method::POST,
            "/api/v1/users".to_owned(),
            json!({"id": "bob", "org_id": "acme", "email": "b@x", "name": "Bob", "role": "member"}),
        ),
        (
            Method::PATCH,
            "/api/v1/users/alice".to_owned(),
            json!({"name": "Alice", "role": "member"}),
        ),
        (
            Method::POST,
            "/api/v1/keys".to_owned(),
            json!({"org_id": "acme", "user_id": "alice", "role": "member", "name": "k"}),
        ),
        (
            Method::POST,
            "/admin/ai-usage/session".to_owned(),
            json!({"key": key}),
        ),
    ]
    .into_iter()
    .map(|(method, path, seed)| Target {
        method,
        path,
        bearer: admin.clone(),
        seed,
    })
    .collect::<Vec<_>>();
    for (path, seed) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": false}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "openrouter/anthropic/claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 5}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ),
        (
            "/v1/images/generations",
            json!({"model": "dall-e-3", "prompt": "a cat", "size": "1024x1024", "quality": "standard", "n": 1}),
        ),
        (
            "/v1/responses",
            json!({"model": "local/llama3", "input": "hi", "max_output_tokens": 5}),
        ),
    ] {
        targets.push(Target {
            method: Method::POST,
            path: path.to_owned(),
            bearer: Some(key.clone()),
            seed,
        });
    }
    // Routes without a body: random query strings.
    let readers: Vec<Target> = tollgate::http::api_rules()
        .into_iter()
        .filter(|rule| rule.method == Method::GET)
        .map(|rule| Target {
            method: Method::GET,
            path: concrete(rule.path),
            bearer: admin.clone(),
            seed: Value::Null,
        })
        .collect();
    targets.extend(readers);

    let client = reqwest::Client::new();
    // A connection the server closes after refusing an oversized body can
    // fail the next request sent on it before the client learns it closed;
    // such a request is sent again on a connection of its own, and only a
    // second failure counts (a panic shows through the hook below anyway).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let base = Arc::new(app.address.clone());
    // Each seed itself is accepted, so mutations start from a valid body.
    for target in targets.iter().filter(|target| !target.seed.is_null()) {
        let mut request = client
            .request(target.method.clone(), format!("{base}{}", target.path))
            .header("content-type", "application/json")
            .body(target.seed.to_string());
        if let Some(bearer) = &target.bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{} {}: {status} {text}",
            target.method,
            target.path
        );
    }
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for (number, target) in targets.iter().enumerate() {
        let mut random = Random::seeded(0x5EED + number as u64);
        // Query strings need fewer to cover their parsing, and some of these
        // routes answer with everything (a user's whole export).
        let count = if target.seed.is_null() {
            per_route / 100
        } else {
            per_route
        };
        let requests: Vec<(Vec<u8>, String, bool)> = (0..count)
            .map(|_| {
                if target.seed.is_null() {
                    (
                        Vec::new(),
                        format!("{}?{}", target.path, query(&mut random)),
                        true,
                    )
                } else {
                    let json_type = !random.chance(50);
                    (
                        body(&mut random, &target.seed),
                        target.path.clone(),
                        json_type,
                    )
                }
            })
            .collect();
        let results: Vec<(u16, Option<String>)> = futures_util::stream::iter(requests)
            .map(|(body, path, json_type)| {
                let (client, fresh) = (client.clone(), fresh.clone());
                let base = Arc::clone(&base);
                let method = target.method.clone();
                let bearer = target.bearer.clone();
                async move {
                    let build = |client: &reqwest::Client| {
                        let mut request = client.request(method.clone(), format!("{base}{path}"));
                        if let Some(bearer) = &bearer {
                            request = request.bearer_auth(bearer);
                        }
                        if json_type {
                            request = request.header("content-type", "application/json");
                        }
                        request.body(body.clone())
                    };
                    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    let sent = match build(&client).send().await {
                        Err(error) if error.is_request() || error.is_connect() => {
                            build(&fresh).send().await
                        }
                        sent => sent,
                    };
                    match sent {
                        Ok(response) if response.status().is_server_error() => {
                            let status = response.status();
                            let text = response.text().await.unwrap_or_default();
                            let failure = format!("{method} {path} {status}: {text} <- {shown}");
                            (status.as_u16(), Some(failure))
                        }
                        Ok(response) => {
                            let status = response.status().as_u16();
                            // Read the answer to its end (streams included).
                            match response.bytes().await {
                                Ok(_) => (status, None),
                                Err(error) => {
                                    let failure =
                                        format!("{method} {path}: body broke: {error} <- {shown}");
                                    (status, Some(failure))
                                }
                            }
                        }
                        Err(error) => (0, Some(format!("{method} {path}: {error} <- {shown}"))),
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let accepted = results
            .iter()
            .filter(|(status, _)| (200..300).contains(status))
            .count();
        println!(
            "{} {}: {accepted} of {count} accepted",
            target.method, target.path
        );
        failures.extend(results.into_iter().filter_map(|(_, failure)| failure));
    }
    let elapsed = started.elapsed();
    println!(
        "{} routes x {per_route} requests in {:.1} s",
        targets.len(),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        PANICS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "something panicked (see above)"
    );
    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server still answers");
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    app.stop().await;
}
