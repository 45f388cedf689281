//! The command line: `serve`, `migrate` and `pricing`. Commands write their
//! results to the writer they are given (standard output in the binary);
//! errors come back as [`CliError`] and `main` prints them on one line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod budgets;
mod keys;

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
    /// Manage budgets.
    Budgets {
        #[command(subcommand)]
        command: budgets::BudgetsCommand,
    },
    /// Serve a simulated OpenAI/OpenRouter upstream, for tests, demos and
    /// benchmarks.
    #[command(hide = true)]
    FakeUpstream {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
    },
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

/// A command that failed, with a message fit for one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Loads settings from the file, the environment and the flags.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut sources = Sources::from_process_environment(cli.config.clone());
    if let Some(url) = &cli.database_url {
        sources
            .overrides
            .push(("database.url".to_owned(), url.clone()));
    }
    if let Command::Serve {
        listen: Some(listen),
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
        Command::Keys { command } => {
            let store = open_store(&config).await?;
            let result = keys::run(&store, command, out).await;
            store.close().await;
            result
        }
        Command::Budgets { command } => {
            let store = open_store(&config).await?;
            let result = budgets::run(&store, command, out).await;
            store.close().await;
            result
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
    if let Err(error) = store.migrate().await {
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

async fn migrate(config: Config, out: &mut dyn Write) -> Result<(), CliError> {
    let store = Store::connect(&config.database).await?;
    let report = store.migrate().await;
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
