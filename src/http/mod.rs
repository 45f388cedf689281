//! The HTTP surface: the only module that knows axum, headers and status
//! codes. Handlers extract, call one function, and map the result.

mod alerts;
mod analytics;
mod auth;
mod budgets;
mod error;
mod gateway;
mod health;
mod providers;
mod reports;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

use crate::auth::Authenticator;
use crate::budget::enforcer::Budgets;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::recorder::Recorder;
use crate::store::Store;

/// What every handler can reach: a handle, cloned per request by axum, so
/// one reference count rather than a copy of every service.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub store: Store,
    pub recorder: Recorder,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    pub gateway: Gateway,
    pub authenticator: Arc<Authenticator>,
    pub budgets: Budgets,
    /// Gateway exchanges, which outlive a client that hangs up; shutdown
    /// waits for them.
    pub tasks: TaskTracker,
}

/// Builds the router. Layers run outside-in in the order written: each
/// group has its own body limit (413 before a larger body is read whole),
/// then its authentication, then the handler.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/usage", post(usage::ingest))
        .route("/usage/records", get(usage::records))
        .route("/usage/export", get(usage::export))
        .route("/usage/stats", get(analytics::stats))
        .route("/usage/daily", get(analytics::daily))
        .route("/usage/hourly", get(analytics::hourly))
        .route("/models/performance", get(analytics::performance))
        .route("/projections", get(analytics::projections))
        .route("/budgets", get(budgets::list).post(budgets::create))
        .route(
            "/budgets/{id}",
            get(budgets::read)
                .put(budgets::update)
                .delete(budgets::delete),
        )
        .route("/budgets/{id}/status", get(budgets::status))
        .route("/alerts", get(alerts::list).post(alerts::create))
        .route("/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/alerts/{id}/resolve", post(alerts::resolve))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/providers", get(providers::list))
        .route(
            "/providers/{provider}",
            axum::routing::put(providers::update),
        )
        .route("/providers/{provider}/refresh", post(providers::refresh))
        .route("/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/reports", get(reports::list).post(reports::create))
        .route("/reports/{id}", axum::routing::delete(reports::delete))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes));
    let openai = Router::new()
        .route("/chat/completions", post(gateway::chat_completions))
        .route("/completions", post(gateway::completions))
        .route("/embeddings", post(gateway::embeddings))
        .route("/images/generations", post(gateway::image_generations))
        .route("/responses", post(gateway::responses))
        .route("/models", get(gateway::models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            gateway::require_key,
        ))
        .layer(DefaultBodyLimit::max(state.config.gateway.max_body_bytes));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .nest("/v1", openai)
        .fallback(health::not_found)
        .with_state(state)
}
