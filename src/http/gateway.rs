//! The OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/images/generations`, `/v1/responses` and
//! `/v1/models`, behind gateway-key authentication.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::REQUEST_ID_HEADER;
use super::{ApiError, AppState};
use crate::gateway::{Attribution, ClientRequest, Reply};
use crate::keys::ApiKey;
use crate::usage::TaskType;

/// The most tags one request may carry, and the longest tag.
const MAX_TAGS: usize = 32;
const MAX_TAG_LENGTH: usize = 64;

/// Checks the gateway key before the body is read; the key rides along in
/// the request's extensions.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let key = state.authenticator.gateway_key(token).await?;
    request.extensions_mut().insert(key);
    Ok(next.run(request).await)
}

macro_rules! route_handler {
    ($name:ident, $task:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            axum::Extension(key): axum::Extension<ApiKey>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> Result<Response, ApiError> {
            forward(state, key, $task, headers, body).await
        }
    };
}

route_handler!(chat_completions, TaskType::Chat);
route_handler!(completions, TaskType::Completion);
route_handler!(embeddings, TaskType::Embedding);
route_handler!(image_generations, TaskType::ImageGeneration);
route_handler!(responses, TaskType::Responses);

async fn forward(
    state: AppState,
    key: ApiKey,
    task: TaskType,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the request body exceeds {} bytes",
                state.config.gateway.max_body_bytes
            ))
        } else {
            ApiError::BadRequest {
                param: None,
                message: rejection.body_text(),
            }
        }
    })?;
    let attribution = attribution(&key, &headers)?;
    let request = ClientRequest {
        task,
        body,
        headers,
        attribution,
    };
    // The exchange runs in its own task, so a client that hangs up mid-way
    // does not cancel it: the provider bills the answer and it is recorded.
    let gateway = state.gateway.clone();
    let exchange = state
        .tasks
        .spawn(async move { gateway.forward(request).await });
    let reply = exchange.await.map_err(|error| {
        tracing::error!(%error, "a gateway exchange failed");
        ApiError::Internal
    })??;
    Ok(respond(reply))
}

fn respond(reply: Reply) -> Response {
    let (status, headers, request_id, cost, body) = match reply {
        Reply::Whole {
            status,
            headers,
            body,
            request_id,
            cost,
        } => (status, headers, request_id, cost, Body::from(body)),
        Reply::Stream {
            status,
            headers,
            body,
            request_id,
        } => (status, headers, request_id, None, Body::from_stream(*body)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    *response.headers_mut() = headers;
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(cost) = cost
        && let Ok(value) = HeaderValue::from_str(&cost.to_string())
    {
        response.headers_mut().insert("x-tollgate-cost-usd", value);
    }
    response
}

/// The key's org and user, and the `x-tollgate-*` headers as metadata.
fn attribution(key: &ApiKey, headers: &HeaderMap) -> Result<Attribution, ApiError> {
    let header = |name: &'static str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|value| {
                value.to_str().map_err(|_| ApiError::BadRequest {
                    param: Some(name),
                    message: format!("the `{name}` header is not text"),
                })
            })
            .transpose()
    };
    let mut metadata = match header("x-tollgate-metadata")? {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(ApiError::BadRequest {
                    param: Some("x-tollgate-metadata"),
                    message: "the `x-tollgate-metadata` header must be a JSON object".to_owned(),
                });
            }
        },
    };
    if let Some(tags) = header("x-tollgate-tags")? {
        let tags: Vec<&str> = tags
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .collect();
        if tags.len() > MAX_TAGS || tags.iter().any(|tag| tag.len() > MAX_TAG_LENGTH) {
            return Err(ApiError::BadRequest {
                param: Some("x-tollgate-tags"),
                message: format!("at most {MAX_TAGS} tags of at most {MAX_TAG_LENGTH} characters"),
            });
        }
        metadata.insert("tags".to_owned(), json!(tags));
    }
    if let Some(user) = header("x-tollgate-user")? {
        metadata.insert("user".to_owned(), user.into());
    }
    Ok(Attribution {
        org_id: key.org_id.clone(),
        user_id: key.user_id.clone(),
        api_key_id: Some(key.id),
        metadata,
    })
}

/// `GET /v1/models`: what this gateway can route to by name.
pub async fn models(State(state): State<AppState>) -> impl IntoResponse {
    let data: Vec<Value> = state
        .gateway
        .model_names()
        .into_iter()
        .map(|id| {
            let owner = id.split('/').next().unwrap_or("tollgate").to_owned();
            json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}
