//! Secret hygiene: unique secrets (provider keys, the admin token, a
//! gateway key, a webhook secret) are used for real — gateway calls that
//! reach the provider, API calls, failed logins — by a server logging at
//! trace level; afterwards none of them is in its logs, in any answer
//! (other than the one that reveals a new secret once), or in the database
//! (the webhook secret excepted: signing needs it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tollgate::fake_upstream;

use common::{TestDatabase, eventually};

both_backends_with_database!(no_secret_reaches_logs_answers_or_the_database);

/// Every row of every table as text (the owner's view).
async fn dump(database: &TestDatabase) -> String {
    let mut text = String::new();
    if database.url.starts_with("sqlite:") {
        let path = database.url.trim_start_matches("sqlite://");
        for suffix in ["", "-wal"] {
            if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    } else {
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT row::text FROM {table} AS row"
            )))
            .fetch_all(&pool)
            .await
            .unwrap();
            text.push_str(&rows.join("\n"));
        }
        pool.close().await;
    }
    text
}

async fn no_secret_reaches_logs_answers_or_the_database(database: &TestDatabase) {
    tollgate::providers::install_crypto_provider();
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let openai_key = format!("sk-proj-openai{unique}");
    let openrouter_key = format!("sk-or-v1-openrouter{unique}");
    let admin_token = format!("admin{unique}");

    let (router, received) = fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let folder = database.spool_dir().join("secrets");
    std::fs::create_dir_all(&folder).unwrap();
    let log_path = folder.join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(&folder)
        .env("DATABASE_URL", &database.url)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_ADMIN_TOKEN", &admin_token)
        .env("OPENAI_API_KEY", &openai_key)
        .env("OPENROUTER_API_KEY", &openrouter_key)
        .env("TOLLGATE_OPENAI_BASE_URL", format!("{upstream}/openai/v1"))
        .env(
            "TOLLGATE_OPENROUTER_BASE_URL",
            format!("{upstream}/openrouter/api/v1"),
        )
        .env("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("TOLLGATE_LOG", "trace")
        .stdout(std::fs::File::create(folder.join("serve.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(20), || async {
            client.get(format!("{base}/healthz")).send().await.is_ok()
        })
        .await,
        "the server starts"
    );
    let mut answers = String::new();
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let headers = format!("{:?}", response.headers());
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, format!("{headers}\n{text}"), text)
        }
    };
    // Secrets revealed once, on purpose: kept out of the scanned answers.
    let (status, _, text) = send(
        reqwest::Method::POST,
        "/api/v1/keys",
        &admin_token,
        Some(json!({"org_id": "default", "role": "admin"})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let gateway_key = serde_json::from_str::<Value>(&text).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, text) = send(
        reqwest::Method::POST,
        "/api/v1/webhooks",
        &admin_token,
        Some(json!({"url": "http://127.0.0.1:9/hook"})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let webhook_secret = serde_json::from_str::<Value>(&text).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let chat = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let wrong_key = format!("{}0", &gateway_key[..gateway_key.len() - 1]);
    let calls: Vec<(reqwest::Method, &str, &str, Option<Value>)> = vec![
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            &gateway_key,
            Some(chat("gpt-4o-mini", false)),
        ),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            &gateway_key,
            Some(chat("gpt-4o-mini", true)),
        ),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            &gateway_key,
            Some(chat("openrouter/openai/gpt-4o", false)),
        ),
        (reqwest::Method::GET, "/v1/models", &gateway_key, None),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            &wrong_key,
            Some(chat("gpt-4o-mini", false)),
        ),
        (
            reqwest::Method::POST,
            "/v1/chat/completions",
            &admin_token,
            Some(chat("gpt-4o-mini", false)),
        ),
        (reqwest::Method::GET, "/api/v1/keys", &gateway_key, None),
        (reqwest::Method::GET, "/api/v1/webhooks", &admin_token, None),
        (
            reqwest::Method::GET,
            "/api/v1/providers",
            &admin_token,
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/providers/openrouter/refresh",
            &admin_token,
            None,
        ),
        (
            reqwest::Method::GET,
            "/api/v1/usage/records",
            &admin_token,
            None,
        ),
        (
            reqwest::Method::GET,
            "/api/v1/usage/export?format=json",
            &admin_token,
            None,
        ),
        (reqwest::Method::GET, "/api/v1/audit", &admin_token, None),
        (
            reqwest::Method::GET,
            "/api/v1/usage/stats",
            &wrong_key,
            None,
        ),
        (
            reqwest::Method::GET,
            "/api/v1/usage/stats",
            "not-a-token",
            None,
        ),
        (reqwest::Method::GET, "/metrics", "", None),
        (reqwest::Method::GET, "/readyz", "", None),
    ];
    for (method, path, token, body) in calls {
        let (_, answer, _) = send(method, path, token, body).await;
        answers.push_str(&answer);
    }
    // The secrets were really used: the provider got its keys.
    let authorizations: Vec<String> = received
        .lock()
        .await
        .iter()
        .filter_map(|request| request.authorization.clone())
        .collect();
    assert!(
        authorizations
            .iter()
            .any(|value| value.contains(&openai_key))
    );
    assert!(
        authorizations
            .iter()
            .any(|value| value.contains(&openrouter_key))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 50,
        "trace logging was on: {} lines",
        logs.lines().count()
    );
    let stored = dump(database).await;
    assert!(stored.contains("gpt-4o-mini"), "the dump holds the records");
    for (name, secret, may_be_stored) in [
        ("OpenAI key", &openai_key, false),
        ("OpenRouter key", &openrouter_key, false),
        ("admin token", &admin_token, false),
        ("gateway key", &gateway_key, false),
        ("webhook secret", &webhook_secret, true),
    ] {
        assert!(!logs.contains(secret.as_str()), "the {name} is in the logs");
        assert!(
            !answers.contains(secret.as_str()),
            "the {name} is in an answer"
        );
        if !may_be_stored {
            assert!(
                !stored.contains(secret.as_str()),
                "the {name} is in the database"
            );
        }
    }
}
