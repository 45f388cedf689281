//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;

use super::{ApiError, AppState};

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

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
