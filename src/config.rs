//! Settings: built-in defaults (`config/default.toml`), then a TOML file, then
//! environment variables, then command-line flags.
//!
//! Every layer is merged as TOML tables and deserialized once, so an unknown
//! key is an error that names it wherever it came from. Secrets are wrapped in
//! [`Secret`], whose `Debug` never shows them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pricing::{PriceSheet, UnpricedPolicy};

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The most `ingest.max_future_skew_seconds` may be: a year.
const MAX_FUTURE_SKEW_SECONDS: i64 = 365 * 24 * 3_600;

/// Environment variables and the setting each one overrides.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("TOLLGATE_LISTEN", "server.listen"),
    ("TOLLGATE_ADMIN_TOKEN", "server.admin_token"),
    ("TOLLGATE_TLS_CERT", "server.tls_cert"),
    ("TOLLGATE_TLS_KEY", "server.tls_key"),
    ("TOLLGATE_TIMEZONE", "server.timezone"),
    ("TOLLGATE_LOG", "log.filter"),
    ("TOLLGATE_BUDGETS_FAIL_CLOSED", "budgets.fail_closed"),
    ("TOLLGATE_DURABILITY", "recorder.durability"),
    ("TOLLGATE_ALERTS_ENABLED", "alerts.enabled"),
    ("TOLLGATE_WEBHOOK_ALLOW_PRIVATE", "webhooks.allow_private"),
    ("TOLLGATE_REPORTS_FOLDER", "reports.folder"),
    ("TOLLGATE_SESSION_SECRET", "dashboard.session_secret"),
    ("TOLLGATE_DASHBOARD_DIR", "dashboard.assets_dir"),
    (
        "OPENROUTER_MANAGEMENT_KEY",
        "providers.openrouter.management_key",
    ),
    ("OPENAI_API_KEY", "providers.openai.api_key"),
    ("TOLLGATE_OPENAI_BASE_URL", "providers.openai.base_url"),
    ("OPENROUTER_API_KEY", "providers.openrouter.api_key"),
    (
        "TOLLGATE_OPENROUTER_BASE_URL",
        "providers.openrouter.base_url",
    ),
    ("TOLLGATE_LOCAL_API_KEY", "providers.local.api_key"),
    ("TOLLGATE_LOCAL_BASE_URL", "providers.local.base_url"),
];

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid setting {0}")]
    Invalid(String),
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(redacted)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub gateway: GatewayConfig,
    pub providers: ProvidersConfig,
    pub recorder: RecorderConfig,
    pub ingest: IngestConfig,
    pub pricing: PricingConfig,
    pub budgets: BudgetsConfig,
    pub alerts: AlertsConfig,
    pub webhooks: WebhooksConfig,
    pub credits: CreditsConfig,
    pub reports: ReportsConfig,
    pub retention: RetentionConfig,
    pub dashboard: DashboardConfig,
}

/// The dashboard at `/admin/ai-usage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    pub session_hours: u32,
    pub session_secret: Option<Secret>,
    /// Serve the files from here instead of the built-in copies.
    pub assets_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Whether this instance runs scheduled reports.
    pub enabled: bool,
    /// Scheduled reports write their files in folders under this one.
    pub folder: PathBuf,
    pub check_interval_seconds: u64,
}

/// How long rows are kept (days; unset keeps them forever), and how the
/// background job deletes the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub usage_records_days: Option<u32>,
    pub resolved_alerts_days: Option<u32>,
    pub webhook_deliveries_days: Option<u32>,
    pub audit_entries_days: Option<u32>,
    pub interval_seconds: u64,
    /// Rows per delete statement.
    pub batch_size: u32,
    /// Pause between batches, so requests are never queued behind a long
    /// run of deletes.
    pub pause_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsConfig {
    pub poll_interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub allow_private: bool,
    pub max_attempts: u32,
    pub timeout_seconds: u64,
    pub first_backoff_seconds: u64,
    pub max_backoff_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate the alert rules at all (existing alerts stay listable).
    pub enabled: bool,
    pub evaluate_interval_seconds: u64,
    pub high_usage_usd: Vec<String>,
    pub error_rate_window_minutes: u64,
    pub error_rate_min_requests: u32,
    pub error_rate_high_percent: u32,
    pub error_rate_critical_percent: u32,
    pub resolve_hold_minutes: u64,
    #[serde(default)]
    pub orgs: BTreeMap<String, OrgAlertsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgAlertsConfig {
    pub high_usage_usd: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    pub lease_ttl_seconds: u64,
    pub sync_interval_ms: u64,
    pub refresh_interval_ms: u64,
    pub fail_closed: bool,
    pub default_max_output_tokens: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
    /// PEM certificate chain and private key: with both, the server speaks
    /// HTTPS only.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub max_body_bytes: usize,
    pub timezone: chrono_tz::Tz,
    /// On SIGTERM or Ctrl-C: how long in-flight requests, streams and
    /// gateway exchanges may take to finish before they are cut off.
    pub shutdown_grace_seconds: u64,
    /// A client must send a request's headers within this long (slow-loris).
    pub header_read_timeout_seconds: u64,
    /// Headers in one request at most; more get 431.
    pub max_headers: usize,
    /// Connections open at once at most; past it new ones get 503.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub max_body_bytes: usize,
    pub max_attempts: usize,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub stream_idle_timeout_ms: u64,
    pub key_cache_seconds: u64,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub openai: ProviderConfig,
    pub openrouter: ProviderConfig,
    pub local: ProviderConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub api_key: Option<Secret>,
    pub base_url: String,
    /// OpenRouter app attribution, sent when the client sends none.
    pub http_referer: Option<String>,
    pub app_title: Option<String>,
    /// OpenRouter: a management key, to read the account's credits.
    #[serde(default)]
    pub management_key: Option<Secret>,
    /// OpenAI: an admin key (`sk-admin-…`), to read what OpenAI billed.
    #[serde(default)]
    pub admin_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub spool_dir: PathBuf,
    pub retry_interval_ms: u64,
    pub max_queued_records: u64,
    /// When an accepted record is safe from a crash: `off`, `process`, `fsync`.
    pub durability: crate::recorder::Durability,
    pub journal_sync_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_batch_records: usize,
    pub max_future_skew_seconds: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    pub local_models_free: bool,
    pub unpriced: UnpricedPolicy,
    #[serde(default)]
    pub models: BTreeMap<String, PriceSheet>,
}

/// Where each layer comes from; the binary fills it from the process, tests
/// fill it by hand.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub environment: Vec<(String, String)>,
    /// `setting.path = value` pairs from command-line flags; they win.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The variables in [`ENVIRONMENT`] that are set in this process.
    pub fn from_process_environment(file: Option<PathBuf>) -> Self {
        let environment = ENVIRONMENT
            .iter()
            .filter_map(|(name, _)| {
                std::env::var(name)
                    .ok()
                    .map(|value| ((*name).to_owned(), value))
            })
            .collect();
        Sources {
            file,
            environment,
            overrides: Vec::new(),
        }
    }
}

impl Config {
    /// The built-in defaults alone.
    pub fn defaults() -> Result<Config, ConfigError> {
        Config::load(&Sources::default())
    }

    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut merged: toml::Table = toml::from_str(DEFAULTS)
            .map_err(|error| syntax_error(Path::new("<built-in defaults>"), &error))?;
        if let Some(path) = &sources.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file: toml::Table =
                toml::from_str(&text).map_err(|error| syntax_error_in(path, &text, &error))?;
            merge(&mut merged, file);
        }
        for (name, value) in &sources.environment {
            let Some((_, setting)) = ENVIRONMENT.iter().find(|(known, _)| known == name) else {
                continue;
            };
            set_path(&mut merged, setting, value.clone());
        }
        for (setting, value) in &sources.overrides {
            set_path(&mut merged, setting, value.clone());
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(merged))
            .map_err(|error| ConfigError::Invalid(describe_path_error(&error)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.recorder.batch_size == 0 {
            return invalid("recorder.batch_size: must be at least 1");
        }
        if self.ingest.max_batch_records == 0 {
            return invalid("ingest.max_batch_records: must be at least 1");
        }
        // Negative, every record would be in the future and refused; past
        // chrono's range, building the recorder's settings or checking a
        // record's time would panic.
        if !(0..=MAX_FUTURE_SKEW_SECONDS).contains(&self.ingest.max_future_skew_seconds) {
            return invalid(
                "ingest.max_future_skew_seconds: must be between 0 and 31536000 (a year)",
            );
        }
        if self.gateway.max_attempts == 0 {
            return invalid("gateway.max_attempts: must be at least 1");
        }
        // Timers past this overflow `Instant + Duration` in tokio's intervals
        // and sleeps (a panic in a background task); nothing needs a year.
        const YEAR_SECONDS: u64 = 365 * 24 * 3_600;
        for (name, value, millis) in [
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace_seconds,
                false,
            ),
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
                false,
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
                true,
            ),
            (
                "gateway.connect_timeout_ms",
                self.gateway.connect_timeout_ms,
                true,
            ),
            (
                "gateway.first_byte_timeout_ms",
                self.gateway.first_byte_timeout_ms,
                true,
            ),
            (
                "gateway.stream_idle_timeout_ms",
                self.gateway.stream_idle_timeout_ms,
                true,
            ),
            (
                "gateway.key_cache_seconds",
                self.gateway.key_cache_seconds,
                false,
            ),
            (
                "recorder.flush_interval_ms",
                self.recorder.flush_interval_ms,
                true,
            ),
            (
                "recorder.retry_interval_ms",
                self.recorder.retry_interval_ms,
                true,
            ),
            (
                "recorder.journal_sync_interval_ms",
                self.recorder.journal_sync_interval_ms,
                true,
            ),
            (
                "budgets.lease_ttl_seconds",
                self.budgets.lease_ttl_seconds,
                false,
            ),
            (
                "budgets.sync_interval_ms",
                self.budgets.sync_interval_ms,
                true,
            ),
            (
                "budgets.refresh_interval_ms",
                self.budgets.refresh_interval_ms,
                true,
            ),
            (
                "alerts.evaluate_interval_seconds",
                self.alerts.evaluate_interval_seconds,
                false,
            ),
            (
                "webhooks.timeout_seconds",
                self.webhooks.timeout_seconds,
                false,
            ),
            (
                "webhooks.first_backoff_seconds",
                self.webhooks.first_backoff_seconds,
                false,
            ),
            (
                "webhooks.max_backoff_seconds",
                self.webhooks.max_backoff_seconds,
                false,
            ),
            (
                "credits.poll_interval_seconds",
                self.credits.poll_interval_seconds,
                false,
            ),
            (
                "reports.check_interval_seconds",
                self.reports.check_interval_seconds,
                false,
            ),
            (
                "retention.interval_seconds",
                self.retention.interval_seconds,
                false,
            ),
            ("retention.pause_ms", self.retention.pause_ms, true),
        ] {
            let limit = if millis {
                YEAR_SECONDS * 1_000
            } else {
                YEAR_SECONDS
            };
            if value > limit {
                return Err(ConfigError::Invalid(format!(
                    "{name}: must be at most {limit} (a year)"
                )));
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections: must be at least 1");
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid("server.tls_cert and server.tls_key: give both, or neither");
        }
        if !(1..=720).contains(&self.dashboard.session_hours) {
            return invalid("dashboard.session_hours: must be between 1 and 720 (30 days)");
        }
        if self
            .dashboard
            .session_secret
            .as_ref()
            .is_some_and(|secret| secret.expose().len() < 32)
        {
            return invalid(
                "dashboard.session_secret: must be at least 32 characters (e.g. `openssl rand -hex 32`)",
            );
        }
        if self.retention.batch_size == 0 {
            return invalid("retention.batch_size: must be at least 1");
        }
        for (name, days) in [
            ("usage_records_days", self.retention.usage_records_days),
            ("resolved_alerts_days", self.retention.resolved_alerts_days),
            (
                "webhook_deliveries_days",
                self.retention.webhook_deliveries_days,
            ),
            ("audit_entries_days", self.retention.audit_entries_days),
        ] {
            if days == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "retention.{name}: must be at least 1 (leave it out to keep rows forever)"
                )));
            }
        }
        let usage = std::iter::once((
            "alerts.high_usage_usd".to_owned(),
            &self.alerts.high_usage_usd,
        ))
        .chain(self.alerts.orgs.iter().map(|(org, settings)| {
            (
                format!("alerts.orgs.{org}.high_usage_usd"),
                &settings.high_usage_usd,
            )
        }));
        for (name, values) in usage {
            if let Err(message) = crate::alerts::evaluator::spend_thresholds(values) {
                return Err(ConfigError::Invalid(format!("{name}: {message}")));
            }
        }
        if self.alerts.error_rate_high_percent > self.alerts.error_rate_critical_percent
            || self.alerts.error_rate_critical_percent > 100
        {
            return invalid(
                "alerts.error_rate_high_percent and error_rate_critical_percent: need high <= critical <= 100",
            );
        }
        if self.alerts.evaluate_interval_seconds == 0 {
            return invalid("alerts.evaluate_interval_seconds: must be at least 1");
        }
        for (name, provider) in [
            ("openai", &self.providers.openai),
            ("openrouter", &self.providers.openrouter),
            ("local", &self.providers.local),
        ] {
            let url = provider.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "providers.{name}.base_url: `{url}` is not an http(s) URL"
                )));
            }
        }
        Ok(())
    }
}

fn syntax_error(path: &Path, error: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax {
        path: path.to_owned(),
        message: error.message().trim().to_owned(),
    }
}

/// A one-line syntax error with the line it is on.
fn syntax_error_in(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim();
    let message = match error.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(1, |before| before.matches('\n').count() + 1);
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        message,
    }
}

fn describe_path_error(error: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = error.path().to_string();
    let message = error.inner().message().trim().to_owned();
    if path == "." {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets a dotted setting path to a value given as text (from the environment
/// or a flag); the value is typed like the default it replaces.
fn set_path(table: &mut toml::Table, path: &str, value: String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(leaf) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            return;
        };
        current = next;
    }
    let typed = match current.get(leaf) {
        Some(toml::Value::Integer(_)) => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or(toml::Value::String(value)),
        Some(toml::Value::Boolean(_)) => match value.as_str() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => toml::Value::String(value),
        },
        _ => toml::Value::String(value),
    };
    current.insert(leaf.to_owned(), typed);
}

#[cfg(test)]
mod tests;
