//! The one place where errors become HTTP statuses and OpenAI-style bodies:
//! `{"error": {"message", "type", "param", "code"}}`. Internal causes are
//! logged here, once, and never sent to clients.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use uuid::Uuid;

use crate::auth::AuthError;
use crate::budget::enforcer::BudgetError;
use crate::export::ExportError;
use crate::gateway::GatewayError;
use crate::gateway::body::BodyError;
use crate::ingest::IngestError;

/// The usage record of the attempt whose answer the client got.
pub const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";
use crate::recorder::RecordError;
use crate::store::StoreError;
use crate::tenancy::Denied;

/// Everything an API handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but the caller's role or organization does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The change contradicts what is stored.
    #[error("{0}")]
    Conflict(String),
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
    #[error("{message}")]
    BadRequest {
        param: Option<&'static str>,
        message: String,
    },
    #[error("{0}")]
    ModelNotFound(String),
    /// A provider could not be reached or its answer broke off.
    #[error("{message}")]
    BadGateway {
        message: String,
        timeout: bool,
        request_id: Uuid,
    },
    #[error("{0}")]
    Unavailable(String),
    /// A hard budget stopped the request: 429 that clients must not retry.
    #[error("{0}")]
    BudgetExceeded(String),
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
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
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
            ApiError::BadRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            ApiError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ApiError::BadGateway { timeout: true, .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "upstream_timeout",
            ),
            ApiError::BadGateway { .. } => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                "upstream_unreachable",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
            ),
            ApiError::BudgetExceeded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "budget_exceeded",
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
            ApiError::BadRequest { param, .. } => param.map(str::to_owned),
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
        if let ApiError::BadGateway { request_id, .. } = &self
            && let Ok(value) = axum::http::HeaderValue::from_str(&request_id.to_string())
        {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        if matches!(self, ApiError::BudgetExceeded(_)) {
            // OpenAI's SDKs retry 429s unless told not to.
            response.headers_mut().insert(
                "x-should-retry",
                axum::http::HeaderValue::from_static("false"),
            );
        }
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

impl From<ExportError> for ApiError {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::Store(error) => error.into(),
            other => {
                tracing::error!(error = %other, "export failed");
                ApiError::Internal
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if let StoreError::OutOfScope = error {
            return ApiError::Forbidden(error.to_string());
        }
        if let StoreError::Conflict(message) = error {
            return ApiError::Conflict(message);
        }
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

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Body(error) => {
                let param = match &error {
                    BodyError::NotJson(_) => None,
                    BodyError::MissingModel(field) => Some(*field),
                    BodyError::WrongType { field, .. } => Some(*field),
                };
                ApiError::BadRequest {
                    param,
                    message: error.to_string(),
                }
            }
            GatewayError::Route(error) => ApiError::ModelNotFound(error.to_string()),
            GatewayError::Unreachable { error, request_id } => ApiError::BadGateway {
                timeout: matches!(error, crate::providers::SendError::Timeout { .. }),
                message: error.to_string(),
                request_id,
            },
            GatewayError::Broken {
                message,
                timeout,
                request_id,
            } => ApiError::BadGateway {
                message,
                timeout,
                request_id,
            },
            GatewayError::Budget(error) => error.into(),
        }
    }
}

/// Parses a JSON body into `T`, naming the field at fault: 400 for broken
/// JSON, 422 (with `param`) for a field of the wrong type or unknown.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::MalformedJson(message)
        } else if path == "." {
            ApiError::Unprocessable {
                param: crate::ingest::missing_field(&message).map(str::to_owned),
                message,
            }
        } else {
            ApiError::invalid(path, message)
        }
    })
}

impl From<BudgetError> for ApiError {
    fn from(error: BudgetError) -> Self {
        match error {
            BudgetError::Exceeded { .. } => ApiError::BudgetExceeded(error.to_string()),
            BudgetError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::Forbidden(denied.0)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing => ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <tollgate key>`",
            ),
            AuthError::Invalid => ApiError::Unauthorized("invalid API key"),
            AuthError::Revoked => ApiError::Unauthorized("this API key has been revoked"),
            AuthError::Unavailable(error) => {
                tracing::warn!(%error, "cannot check an API key");
                ApiError::Unavailable(
                    "cannot check the API key right now; try again shortly".to_owned(),
                )
            }
        }
    }
}

/// Refuses a query parameter the route does not know (a typo must not
/// silently widen an answer).
pub fn only_params(
    parameters: &std::collections::HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match parameters
        .keys()
        .find(|name| !known.contains(&name.as_str()))
    {
        Some(unknown) => Err(ApiError::invalid(
            unknown.clone(),
            format!("unknown parameter (expected one of: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}
