//! Assembling and running the server: `App::build` does everything `serve`
//! does before taking traffic (connect, migrate, price, start the recorder,
//! bind), so tests start exactly what production starts.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::alerts::evaluator::{Evaluator, EvaluatorSettings, error_thresholds, spend_thresholds};
use crate::alerts::rules::SpendThresholds;
use crate::auth::Authenticator;
use crate::budget::enforcer::{Budgets, EnforcerSettings};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::routing::Routing;
use crate::http::{self, AppState, Services};
use crate::money::{NANOS_PER_USD, NanoUsd};
use crate::pricing::{CatalogError, Pricing, configured_model_price};
use crate::providers::Providers;
use crate::recorder::{LedgerListeners, Recorder, RecorderSettings, RecorderTask, SpoolError};
use crate::store::{MigrationReport, Store, StoreError};
use crate::usage::Provider;
use crate::webhooks::delivery::{Deliverer, DeliverySettings};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] CatalogError),
    #[error("cannot open the recorder's spool: {0}")]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Client(#[from] crate::providers::ClientError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error(
        "refusing to listen on {0} without an admin credential: set TOLLGATE_ADMIN_TOKEN \
         (or make an admin key with `tollgate keys create --role admin`), or listen on 127.0.0.1"
    )]
    Unprotected(std::net::SocketAddr),
    #[error(transparent)]
    Tls(#[from] crate::listener::TlsError),
    #[error("cannot make a session secret: {0}")]
    Randomness(#[from] crate::keys::RandomnessError),
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    /// HTTPS, when a certificate and key are configured.
    tls: Option<crate::listener::Acceptor>,
    state: AppState,
    recorder_task: RecorderTask,
    migrations: MigrationReport,
    /// Told when records reach the ledger (wakes the alert evaluator).
    ledger_changed: Arc<tokio::sync::Notify>,
}

impl App {
    pub async fn build(config: Config) -> Result<App, AppError> {
        crate::providers::install_crypto_provider();
        let store = Store::connect(&config.database).await?;
        let migrations = store.migrate().await?;
        crate::analytics::after_migration(&store, &migrations, config.server.timezone).await?;
        let pricing = Arc::new(pricing_from_config(&config)?);
        // A certificate that cannot be used stops the start, not the first
        // client.
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(certificate), Some(key)) => Some(crate::listener::acceptor(certificate, key)?),
            _ => None,
        };
        // Bind before starting the recorder: a second instance on the same
        // address fails here, before it touches the spool.
        let address = config.server.listen;
        // Reachable from other machines, the API must have someone in charge.
        if !address.ip().is_loopback()
            && config.server.admin_token.is_none()
            && !store
                .list_keys(&crate::store::Scope::All, None)
                .await?
                .iter()
                .any(|key| key.role == crate::keys::Role::Admin && key.revoked_at.is_none())
        {
            return Err(AppError::Unprotected(address));
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Bind { address, source })?;
        let budgets = Budgets::new(store.clone(), enforcer_settings(&config));
        let ledger_changed = Arc::new(tokio::sync::Notify::new());
        if let Err(error) = budgets.refresh().await {
            tracing::warn!(%error, "cannot read budget definitions; retrying in the background");
        }
        let (recorder, recorder_task) = Recorder::start(
            store.clone(),
            pricing,
            &config.recorder.spool_dir,
            RecorderSettings::from_config(&config),
            LedgerListeners {
                budgets: Some(budgets.clone()),
                changed: Some(Arc::clone(&ledger_changed)),
            },
        )?;
        let gateway = Gateway::new(
            Providers::from_config(&config)?,
            Routing {
                aliases: config.gateway.aliases.clone(),
                fallbacks: config.gateway.fallbacks.clone(),
                max_attempts: config.gateway.max_attempts,
            },
            recorder.clone(),
            budgets.clone(),
            Duration::from_millis(config.gateway.stream_idle_timeout_ms),
            config.budgets.default_max_output_tokens,
        );
        let authenticator = Arc::new(Authenticator::new(
            store.clone(),
            Duration::from_secs(config.gateway.key_cache_seconds),
        ));
        let sessions = crate::session::Sessions::new(
            config.dashboard.session_secret.as_ref(),
            chrono::TimeDelta::hours(i64::from(config.dashboard.session_hours)),
        )?;
        let state = AppState::new(Services {
            store,
            recorder,
            config: Arc::new(config),
            metrics: metrics_handle(),
            gateway,
            authenticator,
            budgets,
            failed_logins: http::FailedLogins::default(),
            sessions,
            tasks: TaskTracker::new(),
        });
        Ok(App {
            listener,
            tls,
            state,
            recorder_task,
            migrations,
            ledger_changed,
        })
    }

    pub fn local_address(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.server.listen)
    }

    pub fn port(&self) -> u16 {
        self.local_address().port()
    }

    pub fn migrations(&self) -> &MigrationReport {
        &self.migrations
    }

    pub fn recorder(&self) -> Recorder {
        self.state.recorder.clone()
    }

    /// Serves until `shutdown` completes, then stops taking connections,
    /// lets in-flight requests finish, writes every queued record (or spools
    /// it) and closes the database.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> Result<(), AppError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let App {
            listener,
            tls,
            state,
            recorder_task,
            ledger_changed,
            ..
        } = self;
        let recorder = state.recorder.clone();
        let store = state.store.clone();
        let tasks = state.tasks.clone();
        // When the shutdown began: in-flight requests and exchanges get
        // `shutdown_grace_seconds` from then on, not forever.
        let grace = Duration::from_secs(state.config.server.shutdown_grace_seconds);
        let (began_tx, began_rx) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
        let shutdown = async move {
            shutdown.await;
            let _ = began_tx.send(tokio::time::Instant::now());
        };
        let budgets = state.budgets.clone();
        let (stop_budgets, budget_loop) = {
            let budgets = state.budgets.clone();
            start_periodic(
                Duration::from_millis(state.config.budgets.sync_interval_ms.max(10)),
                None,
                move || {
                    let budgets = budgets.clone();
                    async move { budgets.sync().await }
                },
            )
        };
        let alerts = state.config.alerts.enabled.then(|| {
            let evaluator = Evaluator::new(store.clone(), evaluator_settings(&state.config));
            // Records arriving wake it too, at most every two seconds, so that
            // spend and quota alerts need not wait for the next round.
            start_periodic(
                Duration::from_secs(state.config.alerts.evaluate_interval_seconds.max(1)),
                Some((ledger_changed, Duration::from_secs(2))),
                move || {
                    let evaluator = evaluator.clone();
                    async move {
                        if let Err(error) = evaluator.evaluate(chrono::Utc::now()).await {
                            tracing::warn!(%error, "cannot evaluate the alert rules");
                        }
                    }
                },
            )
        });
        let deliveries = {
            let deliverer = Deliverer::new(
                store.clone(),
                delivery_settings(&state.config),
                chrono::Utc::now(),
            )
            .map_err(|error| AppError::Serve(std::io::Error::other(error)))?;
            start_periodic(Duration::from_secs(1), None, move || {
                let deliverer = deliverer.clone();
                async move {
                    if let Err(error) = deliverer.run_once(chrono::Utc::now()).await {
                        tracing::warn!(%error, "cannot deliver webhooks");
                    }
                }
            })
        };
        let polling = {
            let poller = crate::credits::Poller::new(&state.config)
                .map_err(|error| AppError::Serve(std::io::Error::other(error)))?;
            let store = store.clone();
            start_periodic(
                Duration::from_secs(state.config.credits.poll_interval_seconds.max(1)),
                None,
                move || {
                    let (poller, store) = (poller.clone(), store.clone());
                    async move {
                        for provider in [Provider::OpenRouter, Provider::OpenAi] {
                            if let Err(error) =
                                crate::credits::refresh(&poller, &store, provider).await
                            {
                                tracing::warn!(%error, %provider, "cannot read provider credits");
                            }
                        }
                    }
                },
            )
        };
        // Retention: the first round runs at once.
        let retention = {
            let store = store.clone();
            let config = state.config.retention.clone();
            start_periodic(
                Duration::from_secs(config.interval_seconds.max(1)),
                None,
                move || {
                    let (store, config) = (store.clone(), config.clone());
                    async move {
                        if let Err(error) =
                            crate::retention::run(&store, &config, chrono::Utc::now()).await
                        {
                            tracing::warn!(%error, "cannot delete expired rows");
                        }
                    }
                },
            )
        };
        // Reports: the first round runs at once, so a period missed while
        // the server was down is delivered on start.
        let reporting = if state.config.reports.enabled {
            let scheduler =
                crate::reports::Scheduler::new(store.clone(), report_settings(&state.config))
                    .map_err(|error| AppError::Serve(std::io::Error::other(error)))?;
            Some(start_periodic(
                Duration::from_secs(state.config.reports.check_interval_seconds.max(1)),
                None,
                move || {
                    let scheduler = scheduler.clone();
                    async move {
                        if let Err(error) = scheduler.run_due(chrono::Utc::now()).await {
                            tracing::warn!(%error, "cannot run scheduled reports");
                        }
                    }
                },
            ))
        } else {
            None
        };
        let config_for_limits = Arc::clone(&state.config);
        let router = http::router(state);
        tracing::info!(
            address = %listener.local_addr().map_err(AppError::Serve)?,
            https = tls.is_some(),
            "serving"
        );
        let limits = http::server::EdgeLimits::from_config(&config_for_limits.server);
        let serving = async move {
            match tls {
                Some(acceptor) => {
                    http::server::serve(
                        crate::listener::TlsListener::new(listener, acceptor),
                        router,
                        limits,
                        shutdown,
                    )
                    .await;
                }
                None => {
                    http::server::serve(
                        crate::listener::PlainListener(listener),
                        router,
                        limits,
                        shutdown,
                    )
                    .await;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let mut began_rx = began_rx;
        let mut began = None;
        tokio::pin!(serving);
        // Serve until stopped; once the shutdown began, connections still
        // open get until the deadline, then are closed.
        let served = loop {
            tokio::select! {
                served = &mut serving => break served,
                at = &mut began_rx, if began.is_none() => match at {
                    Ok(at) => began = Some(at),
                    // Never sent (the shutdown future is gone): no deadline.
                    Err(_) => {
                        began = Some(tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
                    }
                },
                () = async {
                    match began {
                        Some(at) => tokio::time::sleep_until(at + grace).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::warn!(
                        grace_seconds = grace.as_secs(),
                        "requests still in flight when the shutdown grace period ended; closing them"
                    );
                    break Ok(());
                }
            }
        };
        // Exchanges whose clients hung up may still be running; they record
        // their usage before the recorder stops, within what is left of the
        // grace period.
        tasks.close();
        let deadline = began.unwrap_or_else(tokio::time::Instant::now) + grace;
        if tokio::time::timeout_at(deadline, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                exchanges = tasks.len(),
                "gateway exchanges still running when the shutdown grace period ended; their usage may not be recorded"
            );
        }
        let _ = stop_budgets.send(());
        if let Some((stop_reporting, reporting_loop)) = reporting {
            let _ = stop_reporting.send(());
            if let Err(error) = reporting_loop.await {
                tracing::error!(%error, "the report scheduling task failed");
            }
        }
        let (stop_retention, retention_loop) = retention;
        let _ = stop_retention.send(());
        if let Err(error) = retention_loop.await {
            tracing::error!(%error, "the retention task failed");
        }
        let (stop_polling, polling_loop) = polling;
        let _ = stop_polling.send(());
        if let Err(error) = polling_loop.await {
            tracing::error!(%error, "the credit polling task failed");
        }
        let (stop_deliveries, delivery_loop) = deliveries;
        let _ = stop_deliveries.send(());
        if let Err(error) = delivery_loop.await {
            tracing::error!(%error, "the webhook delivery task failed");
        }
        if let Some((stop_alerts, alert_loop)) = alerts {
            let _ = stop_alerts.send(());
            if let Err(error) = alert_loop.await {
                tracing::error!(%error, "the alert evaluation task failed");
            }
        }
        if let Err(error) = budget_loop.await {
            tracing::error!(%error, "the budget sync task failed");
        }
        recorder_task.shutdown(&recorder).await;
        // Claims go after the recorder: amounts held for records still
        // spooled must count until those records are in the ledger, and a
        // claim that cannot be given back expires on its own.
        budgets.release_all().await;
        store.close().await;
        served.map_err(AppError::Serve)
    }
}

/// Webhook delivery settings from the configuration.
pub fn delivery_settings(config: &Config) -> DeliverySettings {
    let webhooks = &config.webhooks;
    DeliverySettings {
        allow_private: webhooks.allow_private,
        max_attempts: webhooks.max_attempts.max(1),
        timeout: Duration::from_secs(webhooks.timeout_seconds.max(1)),
        first_backoff: Duration::from_secs(webhooks.first_backoff_seconds),
        max_backoff: Duration::from_secs(webhooks.max_backoff_seconds),
    }
}

/// Scheduled report settings from the configuration.
pub fn report_settings(config: &Config) -> crate::reports::SchedulerSettings {
    crate::reports::SchedulerSettings {
        root: config.reports.folder.clone(),
        timezone: config.server.timezone,
        allow_private: config.webhooks.allow_private,
        timeout: Duration::from_secs(config.webhooks.timeout_seconds.max(1)),
    }
}

/// Budget enforcement settings from the configuration.
fn enforcer_settings(config: &Config) -> EnforcerSettings {
    let budgets = &config.budgets;
    EnforcerSettings {
        lease_ttl: Duration::from_secs(budgets.lease_ttl_seconds.max(1)),
        sync_interval: Duration::from_millis(budgets.sync_interval_ms.max(10)),
        refresh_interval: Duration::from_millis(budgets.refresh_interval_ms),
        fail_closed: budgets.fail_closed,
        ..EnforcerSettings::default()
    }
}

/// Runs `work` every `interval` until told to stop (a missed tick waits
/// for the previous round to finish), and, when `nudge` is given, also when
/// it is notified, but no sooner than its floor after the previous round.
fn start_periodic<F, Fut>(
    interval: Duration,
    nudge: Option<(Arc<tokio::sync::Notify>, Duration)>,
    mut work: F,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (stop, mut stopped) = oneshot::channel::<()>();
    #[allow(
        clippy::disallowed_methods,
        reason = "started beside the recorder; run_until_stopped waits for it"
    )]
    let handle = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (notify, floor) = match nudge {
            Some((notify, floor)) => (Some(notify), floor),
            None => (None, Duration::ZERO),
        };
        let mut last = tokio::time::Instant::now();
        loop {
            let nudged = async {
                match &notify {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticker.tick() => {}
                () = nudged => {
                    tokio::select! {
                        _ = &mut stopped => break,
                        () = tokio::time::sleep_until(last + floor) => {}
                    }
                }
            }
            work().await;
            last = tokio::time::Instant::now();
        }
    });
    (stop, handle)
}

/// The alert rules' settings from the configuration (validated when it
/// was loaded).
pub fn evaluator_settings(config: &Config) -> EvaluatorSettings {
    let alerts = &config.alerts;
    let fallback = SpendThresholds {
        medium: NanoUsd::from_nanos(10 * NANOS_PER_USD),
        high: NanoUsd::from_nanos(25 * NANOS_PER_USD),
        critical: NanoUsd::from_nanos(50 * NANOS_PER_USD),
    };
    EvaluatorSettings {
        high_usage: spend_thresholds(&alerts.high_usage_usd).unwrap_or(fallback),
        high_usage_by_org: alerts
            .orgs
            .iter()
            .map(|(org, settings)| {
                (
                    org.clone(),
                    spend_thresholds(&settings.high_usage_usd).unwrap_or(fallback),
                )
            })
            .collect(),
        errors: error_thresholds(
            alerts.error_rate_high_percent,
            alerts.error_rate_critical_percent,
            alerts.error_rate_min_requests,
        ),
        error_window: Duration::from_secs(alerts.error_rate_window_minutes.max(1) * 60),
        resolve_hold: Duration::from_secs(alerts.resolve_hold_minutes * 60),
        timezone: config.server.timezone,
    }
}

/// The built-in catalog with the configured prices laid over it.
pub fn pricing_from_config(config: &Config) -> Result<Pricing, CatalogError> {
    let overrides = config
        .pricing
        .models
        .iter()
        .map(|(key, prices)| configured_model_price(key, prices.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Pricing::new(
        overrides,
        config.pricing.local_models_free,
        config.pricing.unpriced,
    )
}

/// The process-wide Prometheus recorder, installed on first use (tests build
/// many apps in one process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}
