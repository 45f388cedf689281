//! The command line: `serve`, `migrate`, `pricing`, `keys`, `budgets`,
//! `export`, `report` and `generate`. Commands write their
//! results to the writer they are given (standard output in the binary);
//! errors come back as [`CliError`] and `main` prints them on one line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod analytics;
mod budgets;
mod demo;
mod keys;
mod users;

use crate::app::{App, AppError, pricing_from_config};
use crate::config::{Config, ConfigError, Sources};
use crate::pricing::{CatalogError, ModelPrice, PriceSource, Pricing};
use crate::store::{MigrationReport, Store, StoreError};
use crate::telemetry;
use crate::usage::Provider;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Self-hosted AI usage monitor and OpenAI-compatible gateway"
)]
pub struct Cli {
    /// A TOML settings file (see config/default.toml for every setting).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB; overrides DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once from the command line"
)]
pub enum Command {
    /// Apply migrations, then serve the API.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080; overrides TOLLGATE_LISTEN.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// PEM certificate chain for HTTPS; overrides TOLLGATE_TLS_CERT.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<String>,
        /// PEM private key for HTTPS; overrides TOLLGATE_TLS_KEY.
        #[arg(long, value_name = "FILE")]
        tls_key: Option<String>,
    },
    /// Apply pending migrations and print what they created.
    Migrate,
    /// Inspect the pricing catalog.
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Manage gateway keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Check that the raw usage records, the rollups, the budget spend and
    /// the alert minutes agree to the nano-dollar; exits 1 if they do not.
    CheckLedger,
    /// Delete rows past their retention age now (the server also does this
    /// hourly).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Make and list organizations.
    Orgs {
        #[command(subcommand)]
        command: users::OrgsCommand,
    },
    /// Make and list users; export or erase a user's data (GDPR).
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Manage budgets.
    Budgets {
        #[command(subcommand)]
        command: budgets::BudgetsCommand,
    },
    /// Write every usage record matching the filters, oldest first, as CSV
    /// or NDJSON.
    Export {
        /// csv or json (newline-delimited).
        #[arg(long, default_value = "csv")]
        format: String,
        #[command(flatten)]
        filters: Filters,
        /// Write here instead of standard output (a progress bar shows on
        /// standard error).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a summary of usage: totals, providers, top models and users,
    /// open alerts and the 30-day projection.
    Report {
        /// How far back: 7d, 24h, 90m, 2w, or a date.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Only this organization.
        #[arg(long)]
        org: Option<String>,
        /// Only this provider.
        #[arg(long)]
        provider: Option<Provider>,
        /// Rows in the model and user tables.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Fill the database with synthetic usage (several orgs, users,
    /// providers and models; daily and weekly patterns; errors) through the
    /// recorder, for demos, tests and benchmarks. Deterministic per seed.
    Generate {
        /// How many records.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Over how many days, ending now.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        orgs: u32,
        #[arg(long, default_value_t = 12)]
        users_per_org: u32,
    },
    /// Run the whole server on a fresh database with 30 days of simulated
    /// history and live traffic through the gateway, and print the
    /// dashboard's address and a login key. No provider keys needed.
    Demo {
        /// Address to listen on; overrides TOLLGATE_LISTEN.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Records of history to write first.
        #[arg(long, default_value_t = 60_000)]
        records: u64,
        /// Days of history.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Milliseconds between live requests on average (0: none).
        #[arg(long, default_value_t = 1_500)]
        interval_ms: u64,
    },
    /// Serve a simulated OpenAI/OpenRouter upstream, for tests, demos and
    /// benchmarks.
    #[command(hide = true)]
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
    },
}

/// The usage filters `export` takes.
#[derive(Debug, clap::Args)]
pub struct Filters {
    /// From this date (YYYY-MM-DD, in the server's time zone) or RFC 3339 time.
    #[arg(long)]
    start_date: Option<String>,
    /// Up to this date (inclusive) or RFC 3339 time (exclusive).
    #[arg(long)]
    end_date: Option<String>,
    #[arg(long)]
    provider: Option<Provider>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    org: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    tag: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// List priced models.
    List {
        /// Only this provider: openai, openrouter or local.
        #[arg(long)]
        provider: Option<Provider>,
    },
    /// Show one model's prices, their source and date.
    Show {
        /// A model name, e.g. gpt-4o, openrouter/anthropic/claude-sonnet-4.5 or local/llama3.
        model: String,
        /// Look only at this provider.
        #[arg(long)]
        provider: Option<Provider>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Delete every row past its configured age, in batches.
    Run,
}

/// A command that failed, with a message fit for one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Pricing(#[from] CatalogError),
    #[error("no price for model `{0}`; add one under [pricing.models] in your config")]
    UnknownModel(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl clap::ValueEnum for Provider {
    fn value_variants<'a>() -> &'a [Self] {
        Provider::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Appends a change made from the command line to the audit log, as
/// `cli:<operating-system user>`. A failure to write it is reported; the
/// change itself has been made.
pub(crate) async fn audit(
    store: &Store,
    action: &str,
    target: Option<String>,
    org_id: Option<String>,
) {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    let entry = crate::audit::AuditEntry {
        id: 0,
        created_at: chrono::Utc::now(),
        actor: format!("cli:{user}"),
        org_id,
        action: action.to_owned(),
        target,
        result: crate::audit::AuditResult::Ok,
        client_addr: None,
        details: serde_json::json!({ "via": "cli" }),
    };
    if let Err(error) = store.insert_audit(&entry).await {
        tracing::error!(%error, action, "cannot write the audit log");
    }
}

/// Loads settings from the file, the environment and the flags.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut sources = Sources::from_process_environment(cli.config.clone());
    if let Some(url) = &cli.database_url {
        sources
            .overrides
            .push(("database.url".to_owned(), url.clone()));
    }
    if let Command::Serve {
        listen,
        tls_cert,
        tls_key,
    } = &cli.command
    {
        for (key, value) in [
            ("server.listen", listen),
            ("server.tls_cert", tls_cert),
            ("server.tls_key", tls_key),
        ] {
            if let Some(value) = value {
                sources.overrides.push((key.to_owned(), value.clone()));
            }
        }
    }
    if let Command::Demo {
        listen: Some(listen),
        ..
    } = &cli.command
    {
        sources
            .overrides
            .push(("server.listen".to_owned(), listen.clone()));
    }
    Config::load(&sources)
}

pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    telemetry::init(&config.log);
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => migrate(config, out).await,
        Command::CheckLedger => {
            let store = open_store(&config).await?;
            let totals = store.ledger_totals().await;
            store.close().await;
            check_ledger(&totals?, out)
        }
        Command::Keys { command } => {
            let store = open_store(&config).await?;
            let result = keys::run(&store, command, out).await;
            store.close().await;
            result
        }
        Command::Retention {
            command: RetentionCommand::Run,
        } => {
            let store = open_store(&config).await?;
            let result = crate::retention::run(&store, &config.retention, chrono::Utc::now()).await;
            store.close().await;
            for (what, deleted) in result?.deleted {
                writeln!(out, "Deleted {deleted} {} past retention.", what.as_str())?;
            }
            Ok(())
        }
        Command::Orgs { command } => {
            let store = open_store(&config).await?;
            let result = users::run_orgs(&store, command, out).await;
            store.close().await;
            result
        }
        Command::Users { command } => {
            let store = open_store(&config).await?;
            let result = users::run(&store, command, out).await;
            store.close().await;
            result
        }
        Command::Budgets { command } => {
            let store = open_store(&config).await?;
            let result = budgets::run(&store, command, out).await;
            store.close().await;
            result
        }
        Command::Export {
            format,
            filters,
            output,
        } => {
            let format = crate::export::Format::parse(&format).ok_or_else(|| {
                CliError::Invalid(format!("--format `{format}`: expected csv or json"))
            })?;
            let timezone = config.server.timezone;
            let filter = analytics::FilterFlags {
                start_date: filters.start_date,
                end_date: filters.end_date,
                provider: filters.provider,
                model: filters.model,
                org: filters.org,
                user: filters.user,
                tag: filters.tag,
            }
            .into_filter(timezone)?;
            let store = open_store(&config).await?;
            let result = analytics::export(&store, format, filter, timezone, output, out).await;
            store.close().await;
            result
        }
        Command::Report {
            since,
            org,
            provider,
            top,
        } => {
            let timezone = config.server.timezone;
            let mut filter = analytics::FilterFlags {
                start_date: None,
                end_date: None,
                provider,
                model: None,
                org,
                user: None,
                tag: None,
            }
            .into_filter(timezone)?;
            filter.start = Some(analytics::parse_since(
                &since,
                chrono::Utc::now(),
                timezone,
            )?);
            let store = open_store(&config).await?;
            let result = analytics::report(&store, filter, timezone, top, out).await;
            store.close().await;
            result
        }
        Command::Generate {
            records,
            days,
            seed,
            orgs,
            users_per_org,
        } => {
            if days == 0 || orgs == 0 || users_per_org == 0 {
                return Err(CliError::Invalid(
                    "--days, --orgs and --users-per-org must be at least 1".to_owned(),
                ));
            }
            let settings = crate::generate::Settings {
                records,
                days,
                end: chrono::Utc::now(),
                seed,
                orgs,
                users_per_org,
            };
            let store = open_store(&config).await?;
            let result = analytics::generate(&config, store.clone(), settings, out).await;
            store.close().await;
            result
        }
        Command::Demo {
            records,
            days,
            interval_ms,
            ..
        } => {
            if days == 0 {
                return Err(CliError::Invalid("--days must be at least 1".to_owned()));
            }
            let settings = demo::DemoSettings {
                records,
                days,
                interval_ms,
                database_url: cli.database_url.clone(),
            };
            demo::run(config, settings, out).await
        }
        Command::FakeUpstream { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!(%listen, "serving a fake upstream");
            axum::serve(listener, crate::fake_upstream::router())
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            Ok(())
        }
        Command::Pricing { command } => {
            let pricing = pricing_from_config(&config)?;
            match command {
                PricingCommand::List { provider } => list_prices(&pricing, provider, out),
                PricingCommand::Show { model, provider } => {
                    show_price(&pricing, &model, provider, out)
                }
            }
        }
    }
}

/// Connects and applies pending migrations (closing again on failure).
async fn open_store(config: &Config) -> Result<Store, CliError> {
    let store = Store::connect(&config.database).await?;
    let migrated = match store.migrate().await {
        Ok(report) => {
            crate::analytics::after_migration(&store, &report, config.server.timezone).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = migrated {
        store.close().await;
        return Err(error.into());
    }
    Ok(store)
}

async fn serve(config: Config) -> Result<(), CliError> {
    let app = App::build(config).await?;
    report_migrations_to_log(app.migrations());
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

fn check_ledger(totals: &crate::store::LedgerTotals, out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<22} {:>14} {:>22}",
        "table", "requests", "cost (USD)"
    )?;
    for (name, row) in [
        ("ai_provider_usage", totals.records),
        ("ai_model_performance", totals.model_performance),
        ("ai_usage_daily", totals.daily),
        ("ai_usage_hourly", totals.hourly),
        ("ai_budget_spend", totals.budget_spend),
    ] {
        writeln!(
            out,
            "{name:<22} {:>14} {:>22}",
            row.requests,
            row.cost.to_usd().to_string()
        )?;
    }
    writeln!(
        out,
        "{:<22} {:>14} {:>22}",
        "ai_usage_minutes", totals.alert_minutes_requests, "-"
    )?;
    let wrong = totals.disagreements();
    if wrong.is_empty() {
        writeln!(out, "The ledger and everything derived from it agree.")?;
        return Ok(());
    }
    Err(CliError::Invalid(format!(
        "the ledger disagrees with {} (retention prunes raw records before rollups, so run this only on data retention has not touched)",
        wrong.join(", ")
    )))
}

async fn migrate(config: Config, out: &mut dyn Write) -> Result<(), CliError> {
    let store = Store::connect(&config.database).await?;
    let report = match store.migrate().await {
        Ok(report) => crate::analytics::after_migration(&store, &report, config.server.timezone)
            .await
            .map(|()| report),
        Err(error) => Err(error),
    };
    store.close().await;
    let report = report?;
    if report.applied.is_empty() {
        let plural = if report.already_applied == 1 { "" } else { "s" };
        writeln!(
            out,
            "Database is up to date ({} migration{plural} applied earlier); nothing to do.",
            report.already_applied
        )?;
        return Ok(());
    }
    for (version, description) in &report.applied {
        writeln!(out, "Applied migration {version:04} {description}")?;
    }
    if !report.created_tables.is_empty() {
        writeln!(out, "Created tables: {}", report.created_tables.join(", "))?;
    }
    Ok(())
}

fn report_migrations_to_log(report: &MigrationReport) {
    for (version, description) in &report.applied {
        tracing::info!(version, %description, "applied migration");
    }
}

fn list_prices(
    pricing: &Pricing,
    provider: Option<Provider>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<11} {:<52} {:>10} {:>10} {:>10}",
        "PROVIDER", "MODEL", "INPUT/1M", "CACHED/1M", "OUTPUT/1M"
    )?;
    let mut models: Vec<&ModelPrice> = pricing
        .models()
        .iter()
        .filter(|model| provider.is_none_or(|wanted| model.provider == wanted))
        .collect();
    models.sort_by(|left, right| (left.provider, &left.id).cmp(&(right.provider, &right.id)));
    let cell = |price: Option<rust_decimal::Decimal>| {
        price.map_or_else(|| "-".to_owned(), |price| price.to_string())
    };
    for model in models {
        let prices = &model.prices;
        writeln!(
            out,
            "{:<11} {:<52} {:>10} {:>10} {:>10}",
            model.provider.as_str(),
            model.id,
            cell(prices.input_mtok),
            cell(prices.cache_read_mtok),
            cell(prices.output_mtok)
        )?;
    }
    Ok(())
}

fn show_price(
    pricing: &Pricing,
    model: &str,
    provider: Option<Provider>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let providers: Vec<Provider> = match provider {
        Some(provider) => vec![provider],
        None => match model.split_once('/') {
            Some((prefix, _)) => prefix
                .parse::<Provider>()
                .map(|provider| vec![provider])
                .unwrap_or_else(|_| vec![Provider::OpenRouter, Provider::OpenAi]),
            None => vec![Provider::OpenAi, Provider::OpenRouter, Provider::Local],
        },
    };
    let found = providers
        .iter()
        .find_map(|provider| pricing.lookup(*provider, model))
        .ok_or_else(|| CliError::UnknownModel(model.to_owned()))?;
    writeln!(out, "{} ({})", found.id, found.provider)?;
    if !found.exact.is_empty() {
        writeln!(out, "  matches:        {}", found.exact.join(", "))?;
    }
    if !found.prefixes.is_empty() {
        writeln!(
            out,
            "  and names starting with: {}",
            found.prefixes.join(", ")
        )?;
    }
    let source = match &found.source {
        PriceSource::Catalog { dataset, as_of } => format!("{dataset}, as of {as_of}"),
        PriceSource::Supplement { note, as_of } => {
            format!("{note} (Tollgate supplement), as of {as_of}")
        }
        PriceSource::Config => "your configuration".to_owned(),
    };
    writeln!(out, "  source:         {source}")?;
    if let Some(from) = found.effective_from {
        writeln!(out, "  effective from: {from}")?;
    }
    if let Some(window) = found.context_window {
        writeln!(out, "  context window: {window} tokens")?;
    }
    writeln!(out, "  prices in USD:")?;
    for (name, price) in found.prices.entries() {
        writeln!(out, "    {name:<22} {price:>12}  {}", unit(name))?;
    }
    for tier in &found.tiers {
        writeln!(out, "  above {} input tokens:", tier.above_input_tokens)?;
        for (name, price) in tier.prices.entries() {
            writeln!(out, "    {name:<22} {price:>12}  {}", unit(name))?;
        }
    }
    for image in &found.per_image {
        writeln!(
            out,
            "    image {:<9} {:<8} {:>12}  per image",
            image.size, image.quality, image.usd
        )?;
    }
    Ok(())
}

fn unit(name: &str) -> &'static str {
    match name {
        "requests_kcount" => "per 1,000 requests",
        "input_audio_hour" => "per hour of audio",
        "input_mchars" => "per 1M characters",
        _ => "per 1M tokens",
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
