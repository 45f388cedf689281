//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;

use super::{ApiError, AppState};
use crate::usage_metrics::{self, USAGE_METRICS};

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database answers. Records waiting in the queue are reported; the
/// spool keeps working while the database is down, so this is a signal for
/// operators rather than a reason to stop taking traffic.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let queued = state.recorder.queued();
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "database": state.store.backend(),
                "queued_records": queued,
            })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "database": state.store.backend(),
                    "queued_records": queued,
                })),
            )
        }
    }
}

/// Prometheus: the `metrics` crate's series (recorder, budgets), the
/// usage counters and histograms, and gauges read from the database.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state.metrics.render();
    body.push_str(&USAGE_METRICS.render().await);
    body.push_str(&usage_metrics::state_gauges(&state.store, &state.budgets).await);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
