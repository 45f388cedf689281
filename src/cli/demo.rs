//! `tollgate demo`: the whole server on a fresh SQLite database, with a
//! simulated upstream playing OpenAI, OpenRouter and a local server, 30 days
//! of history written through the recorder, and live traffic sent through
//! the real gateway so the dashboard moves. No provider keys needed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CliError;
use crate::app::App;
use crate::config::{Config, Secret};
use crate::generate::Random;
use crate::keys::Role;
use crate::store::{Scope, Store};

/// What the demo sets up.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Records of history to write before serving.
    pub records: u64,
    pub days: u32,
    /// Seconds between live requests, on average; 0 sends none.
    pub interval_ms: u64,
    /// Use this database instead of a fresh SQLite file.
    pub database_url: Option<String>,
}

/// The organizations and users of the demo's history (the generator's
/// first three organizations).
const ORGS: &[&str] = &["acme", "globex", "initech"];
const USERS_PER_ORG: u32 = 6;

/// The simulated upstream's OpenRouter key with a low balance ($1.85 left).
const LOW_BALANCE_KEY: &str = "sk-or-demo-low";

/// Live requests: a model, the gateway route, and how often (relative).
const LIVE_MODELS: &[(&str, &str, u64)] = &[
    ("gpt-4o-mini", "chat/completions", 40),
    ("gpt-4.1", "chat/completions", 8),
    ("o4-mini", "chat/completions", 6),
    ("text-embedding-3-small", "embeddings", 12),
    (
        "openrouter/anthropic/claude-sonnet-4",
        "chat/completions",
        12,
    ),
    (
        "openrouter/google/gemini-2.0-flash-001",
        "chat/completions",
        10,
    ),
    ("local/llama3.1:8b", "chat/completions", 12),
];

pub async fn run(
    mut config: Config,
    settings: DemoSettings,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let folder = std::env::temp_dir().join(format!("tollgate-demo-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&folder)?;
    let result = run_in(&mut config, settings, &folder, out).await;
    if let Err(error) = std::fs::remove_dir_all(&folder) {
        tracing::warn!(%error, folder = %folder.display(), "cannot remove the demo's folder");
    }
    result
}

async fn run_in(
    config: &mut Config,
    settings: DemoSettings,
    folder: &Path,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let upstream = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let upstream_address = upstream.local_addr()?;
    configure(
        config,
        folder,
        upstream_address,
        settings.database_url.clone(),
    );

    // History first, through the recorder, with the people it names.
    let store = super::open_store(config).await?;
    let people = match populate(&store).await {
        Ok(people) => people,
        Err(error) => {
            store.close().await;
            return Err(error);
        }
    };
    let history = crate::generate::Settings {
        records: settings.records,
        days: settings.days,
        end: Utc::now(),
        seed: 7,
        orgs: u32::try_from(ORGS.len()).unwrap_or(3),
        users_per_org: USERS_PER_ORG,
    };
    let generated = super::analytics::generate(config, store.clone(), history, out).await;
    store.close().await;
    generated?;

    let app = App::build(config.clone()).await?;
    let address = app.local_address();
    let base = format!("http://{address}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| CliError::Invalid(format!("cannot make an HTTP client: {error}")))?;
    let stop = CancellationToken::new();
    let upstream_stop = CancellationToken::new();
    let shutdown = {
        let stop = stop.clone();
        async move {
            super::shutdown_signal().await;
            stop.cancel();
        }
    };
    let serving = {
        let upstream_stop = upstream_stop.clone();
        async move {
            let result = app.run_until_stopped(shutdown).await;
            upstream_stop.cancel();
            result
        }
    };
    let upstream_serving = axum::serve(upstream, crate::fake_upstream::router())
        .with_graceful_shutdown(upstream_stop.cancelled_owned());
    let setup_and_traffic = async {
        if let Err(error) = configure_through_api(&client, &base, &people).await {
            tracing::warn!(%error, "the demo could not set up its budgets and balance alert");
        }
        let printed = print_welcome(out, &base, &people, folder, &settings);
        if printed.is_ok() && settings.interval_ms > 0 {
            live_traffic(&client, &base, &people, settings.interval_ms, &stop).await;
        }
        printed
    };
    let (served, upstream_served, printed) =
        tokio::join!(serving, upstream_serving.into_future(), setup_and_traffic);
    if let Err(error) = upstream_served {
        tracing::warn!(%error, "the simulated upstream stopped with an error");
    }
    printed?;
    served?;
    Ok(())
}

/// Points the server at the simulated upstream and the demo's folder.
fn configure(config: &mut Config, folder: &Path, upstream: SocketAddr, database: Option<String>) {
    let database = database.unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            folder.join("tollgate-demo.db").display()
        )
    });
    config.database.url = Secret::new(database);
    config.recorder.spool_dir = folder.join("spool");
    config.reports.folder = folder.join("reports");
    let providers = &mut config.providers;
    providers.openai.base_url = format!("http://{upstream}/openai/v1");
    providers.openai.api_key = Some(Secret::new("sk-demo"));
    providers.openai.admin_key = None;
    providers.openrouter.base_url = format!("http://{upstream}/openrouter/api/v1");
    providers.openrouter.api_key = Some(Secret::new(LOW_BALANCE_KEY));
    providers.openrouter.management_key = None;
    providers.local.base_url = format!("http://{upstream}/local/v1");
    config.alerts.enabled = true;
    config.alerts.evaluate_interval_seconds = 5;
    config.credits.poll_interval_seconds = 60;
    config.webhooks.allow_private = true;
}

/// The demo's keys: one admin, and members and org admins who send the
/// live traffic.
#[derive(Debug)]
struct People {
    admin: Secret,
    /// A member of `acme`, who sees only their own usage.
    member: (String, Secret),
    org_admin: (String, Secret),
    /// Everyone who sends live requests.
    senders: Vec<Secret>,
}

async fn populate(store: &Store) -> Result<People, CliError> {
    for org in ORGS {
        store.ensure_org(org).await?;
        for user in 1..=USERS_PER_ORG {
            store
                .ensure_user(&format!("{org}-user-{user}"), org)
                .await?;
        }
    }
    let admin = make_key(store, "acme", None, Role::Admin, "demo admin").await?;
    let member_user = "acme-user-2".to_owned();
    let member = make_key(
        store,
        "acme",
        Some(&member_user),
        Role::Member,
        "demo member",
    )
    .await?;
    let org_admin_user = "acme-user-1".to_owned();
    // A key's role is capped at its user's: make the user an org admin first.
    if let Some(user) = store.user(&Scope::All, &org_admin_user).await? {
        let promoted = crate::tenancy::User {
            role: Role::OrgAdmin,
            ..user
        };
        store.update_user(&Scope::All, &promoted).await?;
    }
    let org_admin = make_key(
        store,
        "acme",
        Some(&org_admin_user),
        Role::OrgAdmin,
        "demo org admin",
    )
    .await?;
    let mut senders = vec![member.clone(), org_admin.clone()];
    for (org, user) in [
        ("acme", "acme-user-3"),
        ("globex", "globex-user-1"),
        ("globex", "globex-user-2"),
        ("initech", "initech-user-1"),
    ] {
        senders.push(make_key(store, org, Some(user), Role::Member, "demo traffic").await?);
    }
    Ok(People {
        admin,
        member: (member_user, member),
        org_admin: (org_admin_user, org_admin),
        senders,
    })
}

async fn make_key(
    store: &Store,
    org: &str,
    user: Option<&str>,
    role: Role,
    name: &str,
) -> Result<Secret, CliError> {
    let (_, secret) = super::keys::create(store, org, user, role, Some(name.to_owned())).await?;
    Ok(secret)
}

/// Budgets and the low-balance threshold, set through the REST API as a
/// user would. Each budget is sized from what its period has spent so far
/// (so the dashboard shows them part-used): acme's month at 87% (past its
/// 80% threshold), acme's daily OpenAI budget a hard one that today's live
/// traffic runs into, globex's week at about 60%.
async fn configure_through_api(
    client: &reqwest::Client,
    base: &str,
    people: &People,
) -> Result<(), String> {
    let api = Api {
        client,
        base,
        key: &people.admin,
    };
    api.call(
        reqwest::Method::PUT,
        "/api/v1/providers/openrouter",
        json!({"low_balance_threshold_usd": "5"}),
    )
    .await?;
    let budgets = [
        (
            json!({"org_id": "acme", "budget_type": "monthly", "soft_limit_percent": [50, 80]}),
            Decimal::new(115, 2),
        ),
        (
            json!({"org_id": "acme", "budget_type": "daily", "provider": "openai",
                   "hard_limit": true, "soft_limit_percent": [80]}),
            Decimal::new(13, 1),
        ),
        (
            json!({"org_id": "globex", "budget_type": "weekly", "soft_limit_percent": [75]}),
            Decimal::new(165, 2),
        ),
    ];
    for (mut budget, headroom) in budgets {
        budget["budget_amount_usd"] = json!("1000000");
        let created = api
            .call(reqwest::Method::POST, "/api/v1/budgets", budget)
            .await?;
        let id = created["id"].as_str().unwrap_or_default();
        let status = api
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/budgets/{id}/status"),
                Value::Null,
            )
            .await?;
        let spent = status["spent_usd"]
            .as_str()
            .and_then(|spent| spent.parse::<Decimal>().ok())
            .unwrap_or_default();
        let amount = (spent * headroom).ceil().max(Decimal::ONE);
        api.call(
            reqwest::Method::PUT,
            &format!("/api/v1/budgets/{id}"),
            json!({ "budget_amount_usd": amount.to_string() }),
        )
        .await?;
    }
    api.call(
        reqwest::Method::POST,
        "/api/v1/providers/openrouter/refresh",
        json!({}),
    )
    .await?;
    Ok(())
}

/// REST API calls as one key.
struct Api<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    key: &'a Secret,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.key.expose());
        if !body.is_null() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("{path}: {error}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{path}: {status} {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn print_welcome(
    out: &mut dyn Write,
    base: &str,
    people: &People,
    folder: &Path,
    settings: &DemoSettings,
) -> Result<(), CliError> {
    let database = match &settings.database_url {
        Some(_) => "the database given with --database-url".to_owned(),
        None => format!(
            "{} (deleted on exit)",
            folder.join("tollgate-demo.db").display()
        ),
    };
    writeln!(out)?;
    writeln!(out, "Tollgate demo is running.")?;
    writeln!(out, "Dashboard:   {base}{}", crate::http::dashboard::PATH)?;
    writeln!(
        out,
        "Admin key:   {}   (log in with this: every organization)",
        people.admin.expose()
    )?;
    writeln!(
        out,
        "Org admin:   {}   ({}, organization acme)",
        people.org_admin.1.expose(),
        people.org_admin.0
    )?;
    writeln!(
        out,
        "Member key:  {}   ({}: only their own usage)",
        people.member.1.expose(),
        people.member.0
    )?;
    writeln!(
        out,
        "Gateway:     {base}/v1   (base_url for an OpenAI SDK, with any key above)"
    )?;
    writeln!(out, "Database:    {database}")?;
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    Ok(())
}

/// Sends requests through the gateway until `stop`: a mix of models and
/// providers, realistic latencies, and now and then an error or a quota
/// failure, as the simulated upstream is told per request.
async fn live_traffic(
    client: &reqwest::Client,
    base: &str,
    people: &People,
    interval_ms: u64,
    stop: &CancellationToken,
) {
    let mut random = Random::seeded(u64::from(Utc::now().timestamp_subsec_nanos()) | 1);
    let weights: Vec<u64> = LIVE_MODELS.iter().map(|(_, _, weight)| *weight).collect();
    let mut sent = 0_u64;
    loop {
        let pause = Duration::from_millis(random.between(interval_ms / 2, interval_ms * 3 / 2));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        sent += 1;
        let (model, route, _) = LIVE_MODELS[random.pick(&weights) % LIVE_MODELS.len()];
        let behaviour = if sent % 97 == 5 {
            "quota".to_owned()
        } else if random.chance(30) {
            "server_error".to_owned()
        } else if random.chance(15) {
            "rate_limit".to_owned()
        } else {
            format!("slow:{}", random.between(150, 1_800))
        };
        let sender = &people.senders[random.pick(&[3, 2, 2, 2, 1, 1]) % people.senders.len()];
        let body = request_body(model, route, &behaviour, random.between(0, 3) == 0);
        let request = client
            .post(format!("{base}/v1/{route}"))
            .bearer_auth(sender.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send();
        let answered = tokio::select! {
            () = stop.cancelled() => return,
            answered = request => answered,
        };
        if let Ok(response) = answered {
            // Read the answer to its end, as a client would.
            let _ = response.bytes().await;
        }
    }
}

fn request_body(model: &str, route: &str, behaviour: &str, stream: bool) -> Value {
    if route == "embeddings" {
        return json!({"model": model, "input": "quarterly revenue by region", "fake": behaviour});
    }
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Summarise today's support tickets."}],
        "fake": behaviour,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}
