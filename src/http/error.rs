//! The one place where errors become HTTP statuses and OpenAI-style bodies:
//! `{"error": {"message", "type", "param", "code"}}`. Internal causes are
//! logged here, once, and never sent to clients.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ingest::IngestError;
use crate::recorder::RecordError;
use crate::store::StoreError;

/// Everything an API handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    MalformedJson(String),
    #[error("{message}")]
    Unprocessable {
        param: Option<String>,
        message: String,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// Temporarily over capacity: 503 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            ApiError::MalformedJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
            ),
            ApiError::Unprocessable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "invalid_value",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "payload_too_large",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
            ),
            ApiError::Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let param = match &self {
            ApiError::Unprocessable { param, .. } => param.clone(),
            _ => None,
        };
        let body = json!({
            "error": {
                "message": self.to_string(),
                "type": kind,
                "param": param,
                "code": code,
            }
        });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Busy(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Malformed(message) => ApiError::MalformedJson(message),
            IngestError::Shape { message } => ApiError::Unprocessable {
                param: None,
                message,
            },
            IngestError::TooMany { .. } => ApiError::PayloadTooLarge(error.to_string()),
            IngestError::Invalid { param, message } => ApiError::Unprocessable {
                param: Some(param),
                message,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(%error, "database unavailable while answering a request");
            ApiError::Unavailable("the database is unavailable; try again shortly".to_owned())
        } else {
            tracing::error!(%error, "storage error while answering a request");
            ApiError::Internal
        }
    }
}

/// Maps recorder errors for the ingest API, where record `index` of a
/// batch (or the single record) is named.
pub fn record_error(error: RecordError, batch: bool) -> ApiError {
    let param = |index: usize, field: &str| {
        if batch {
            format!("records[{index}].{field}")
        } else {
            field.to_owned()
        }
    };
    match error {
        RecordError::Invalid { index, error } => {
            ApiError::invalid(param(index, error.field), error.reason)
        }
        RecordError::Unpriced { index, reason } => ApiError::invalid(
            param(index, "model"),
            format!("{reason}; this server refuses unpriced models"),
        ),
        RecordError::Overloaded { .. } => ApiError::Busy(error.to_string()),
        RecordError::Stopped => ApiError::Unavailable("the server is shutting down".to_owned()),
    }
}
