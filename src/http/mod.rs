//! The HTTP surface: the only module that knows axum, headers and status
//! codes. Handlers extract, call one function, and map the result.

mod auth;
mod error;
mod health;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;

use crate::config::Config;
use crate::recorder::Recorder;
use crate::store::Store;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub recorder: Recorder,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
}

/// Builds the router. Layers run outside-in in the order written below:
/// the body limit applies to every route, then `/api/v1` routes check the
/// admin token before their handler runs.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/usage", axum::routing::post(usage::ingest))
        .route("/usage/records", get(usage::records))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .fallback(health::not_found)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .with_state(state)
}
