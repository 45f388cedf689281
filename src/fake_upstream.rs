//! A simulated upstream with OpenAI-, OpenRouter- and Ollama-shaped answers,
//! for tests, the demo and benchmarks. Nothing here is used when proxying.
//!
//! One server plays all three providers, told apart by the path prefix:
//! `/openai/v1/…`, `/openrouter/api/v1/…`, `/local/v1/…`. A request's
//! `"fake"` field (passed through by the gateway like any unknown field)
//! picks a behaviour, optionally for one provider only (`"quota@openai"`):
//! `rate_limit`, `quota`, `server_error`, `slow:<ms>`, `stall`, `no_usage`,
//! `split` (stream in 1–3 byte pieces), `stall_stream`, `break_stream`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Usage the fake reports for chat and completions.
pub const PROMPT_TOKENS: u64 = 20;
pub const CACHED_TOKENS: u64 = 5;
pub const COMPLETION_TOKENS: u64 = 10;
pub const REASONING_TOKENS: u64 = 4;
/// OpenRouter's reported cost for every answer.
pub const OPENROUTER_COST: &str = "0.00042";
/// The streamed answer's pieces.
pub const STREAM_PIECES: [&str; 3] = ["Hello", " from", " fake"];

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub provider: String,
    pub path: String,
    pub authorization: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

/// What the fake has received, for tests to inspect.
pub type ReceivedLog = Arc<Mutex<Vec<Received>>>;

/// The fake's routes, and the log of what they received (for tests).
pub fn router_with_log() -> (Router, ReceivedLog) {
    let log = ReceivedLog::default();
    let router = Router::new()
        .route("/{provider}/{*path}", post(answer).get(account))
        .with_state(Some(Arc::clone(&log)));
    (router, log)
}

/// The fake's routes, keeping no log (for the demo and benchmarks, where a
/// log would grow without bound).
pub fn router() -> Router {
    Router::new()
        .route("/{provider}/{*path}", post(answer).get(account))
        .with_state(None)
}

/// The account endpoints a credit poller reads: OpenRouter's `/key` and
/// `/credits`, OpenAI's `/models` (to check a key). The bearer key picks the
/// case: `sk-or-bad` / `sk-bad` are refused (401), `sk-or-unlimited` has no
/// limits, `sk-or-spent` has used its limit, `sk-or-demo-low` has $1.85 left, `sk-or-mgmt` is a management
/// key, `sk-limited` is rate limited; any other key is a normal one.
async fn account(Path((provider, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let error = |status: StatusCode, message: &str| {
        (
            status,
            axum::Json(json!({"error": {"code": status.as_u16(), "message": message}})),
        )
            .into_response()
    };
    if key.is_empty() || key.ends_with("-bad") {
        return error(StatusCode::UNAUTHORIZED, "No auth credentials found");
    }
    if key == "sk-limited" {
        return error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached");
    }
    match (provider.as_str(), path.trim_end_matches('/')) {
        ("openrouter", "api/v1/key") => {
            let (limit, remaining, usage) = match key.as_str() {
                "sk-or-unlimited" => (Value::Null, Value::Null, json!(3.5)),
                "sk-or-spent" => (json!(10), json!(0), json!(10)),
                "sk-or-demo-low" => (json!(20), json!(1.85), json!(18.15)),
                _ => (json!(100), json!(74.5), json!(25.5)),
            };
            axum::Json(json!({"data": {"label": "sk-or-v1-fak...e", "limit": limit,
                "limit_remaining": remaining, "limit_reset": null, "usage": usage,
                "is_free_tier": false, "is_management_key": key == "sk-or-mgmt"}}))
            .into_response()
        }
        ("openrouter", "api/v1/credits") if key == "sk-or-mgmt" => {
            axum::Json(json!({"data": {"total_credits": 100.5, "total_usage": 25.75}}))
                .into_response()
        }
        ("openrouter", "api/v1/credits") => error(
            StatusCode::FORBIDDEN,
            "Only management keys can perform this operation",
        ),
        ("openai", "v1/organization/costs") if key.starts_with("sk-admin") => axum::Json(json!({
            "object": "page", "has_more": false, "next_page": null,
            "data": [{"object": "bucket", "start_time": 0, "end_time": 86400, "results": [
                {"object": "organization.costs.result", "amount": {"value": 1.25, "currency": "usd"}, "line_item": null},
                {"object": "organization.costs.result", "amount": {"value": "0.5", "currency": "usd"}, "line_item": null}
            ]}]
        }))
        .into_response(),
        ("openai", "v1/organization/costs") => {
            error(StatusCode::FORBIDDEN, "an admin key is required")
        }
        ("openai", "v1/models") | ("local", "v1/models") => axum::Json(
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}),
        )
        .into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn answer(
    State(log): State<Option<ReceivedLog>>,
    Path((provider, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(log) = log {
        log.lock().await.push(Received {
            provider: provider.clone(),
            path: path.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            headers: headers.clone(),
            body: request.clone(),
        });
    }
    let behaviour = behaviour(&request, &provider);
    if let Some(delay) = behaviour
        .strip_prefix("slow:")
        .and_then(|ms| ms.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match behaviour.as_str() {
        "stall" => {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        "rate_limit" => {
            return error(
                429,
                "Rate limit reached for requests",
                "requests",
                "rate_limit_exceeded",
            );
        }
        "quota" if provider == "openrouter" => {
            return (
                StatusCode::PAYMENT_REQUIRED,
                axum::Json(json!({"error": {"code": 402, "message": "Insufficient credits"}})),
            )
                .into_response();
        }
        "quota" => {
            return error(
                429,
                "You exceeded your current quota",
                "insufficient_quota",
                "insufficient_quota",
            );
        }
        "server_error" => {
            return error(
                500,
                "The server had an error",
                "server_error",
                "server_error",
            );
        }
        _ => {}
    }
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    let usage = behaviour != "no_usage";
    let stream = request["stream"].as_bool() == Some(true);
    let task = path.rsplit('/').take(2).collect::<Vec<_>>();
    let route = match task.as_slice() {
        ["completions", "chat", ..] => "chat",
        ["completions", ..] => "completions",
        ["embeddings", ..] => "embeddings",
        ["generations", "images", ..] => "images",
        ["responses", ..] => "responses",
        _ => return error(404, "Unknown route", "invalid_request_error", "not_found"),
    };
    if stream {
        let include_usage = usage
            && (provider == "openrouter"
                || request["stream_options"]["include_usage"].as_bool() == Some(true));
        let events = stream_events(route, &provider, &model, include_usage);
        return event_stream(events, &behaviour);
    }
    let body = match route {
        "chat" => {
            json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": STREAM_PIECES.concat()}, "finish_reason": "stop"}]})
        }
        "completions" => {
            json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": STREAM_PIECES.concat(), "finish_reason": "stop"}]})
        }
        "embeddings" => json!({"object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]}),
        "images" => {
            let count = request["n"].as_u64().unwrap_or(1);
            json!({"created": 1, "data": (0..count).map(|_| json!({"url": "https://example.invalid/image.png"})).collect::<Vec<_>>()})
        }
        _ => json!({"id": "resp_fake", "object": "response", "status": "completed", "model": model,
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": STREAM_PIECES.concat()}]}]}),
    };
    let mut body = body;
    if usage && let Some(usage) = usage_for(route, &provider, &model) {
        body["usage"] = usage;
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn behaviour(request: &Value, provider: &str) -> String {
    let Some(fake) = request["fake"].as_str() else {
        return String::new();
    };
    match fake.split_once('@') {
        Some((behaviour, only)) if only == provider => behaviour.to_owned(),
        Some(_) => String::new(),
        None => fake.to_owned(),
    }
}

fn error(status: u16, message: &str, kind: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

/// The usage object each provider and route reports.
pub fn usage_for(route: &str, provider: &str, model: &str) -> Option<Value> {
    let mut usage = match route {
        "embeddings" => json!({"prompt_tokens": 8, "total_tokens": 8}),
        "images" if model.starts_with("dall-e") => return None,
        "images" => {
            json!({"input_tokens": 50, "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
            "output_tokens": 4160, "output_tokens_details": {"text_tokens": 0, "image_tokens": 4160}, "total_tokens": 4210})
        }
        "responses" => {
            json!({"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
            "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
        }
        // Ollama reports bare counts, without details.
        _ if provider == "local" => {
            json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
        }
        _ => json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS, "audio_tokens": 0}}),
    };
    if provider == "openrouter" {
        // Written as the literal OpenRouter sends: a JSON number.
        usage["cost"] = serde_json::from_str(OPENROUTER_COST).unwrap_or(Value::Null);
    }
    Some(usage)
}

/// The SSE events of a streamed answer, as text.
fn stream_events(route: &str, provider: &str, model: &str, include_usage: bool) -> Vec<String> {
    let mut events = Vec::new();
    if provider == "openrouter" {
        events.push(": OPENROUTER PROCESSING\n\n".to_owned());
    }
    if route == "responses" {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        events.push(event("response.created", json!({"type": "response.created", "response": {"id": "resp_fake", "status": "in_progress", "usage": null}})));
        for piece in STREAM_PIECES {
            events.push(event(
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "delta": piece}),
            ));
        }
        let mut response =
            json!({"id": "resp_fake", "object": "response", "status": "completed", "model": model});
        if include_usage || provider != "local" {
            response["usage"] = usage_for("responses", provider, model).unwrap_or(Value::Null);
        }
        events.push(event(
            "response.completed",
            json!({"type": "response.completed", "response": response}),
        ));
        return events;
    }
    let chat = route == "chat";
    let chunk = |choices: Value, usage: Value| {
        let mut body = json!({"id": "chatcmpl-fake", "object": if chat { "chat.completion.chunk" } else { "text_completion" }, "created": 1, "model": model, "choices": choices});
        if include_usage {
            body["usage"] = usage;
        }
        format!(
            "data: {}\n\n",
            serde_json::to_string(&body).unwrap_or_default()
        )
    };
    let piece = |text: &str| {
        if chat {
            json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}])
        } else {
            json!([{"index": 0, "text": text, "finish_reason": null}])
        }
    };
    if chat {
        events.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), Value::Null));
    }
    for text in STREAM_PIECES {
        events.push(chunk(piece(text), Value::Null));
    }
    let last = if chat {
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    } else {
        json!([{"index": 0, "text": "", "finish_reason": "stop"}])
    };
    events.push(chunk(last, Value::Null));
    if include_usage {
        events.push(chunk(
            json!([]),
            usage_for("chat", provider, model).unwrap_or(Value::Null),
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn event_stream(events: Vec<String>, behaviour: &str) -> Response {
    let bytes: Vec<u8> = events.concat().into_bytes();
    let pieces: Vec<Result<Bytes, std::io::Error>> = match behaviour {
        // Awkward boundaries: 1, 2 or 3 bytes at a time.
        "split" => {
            let mut pieces = Vec::new();
            let mut start = 0;
            let mut size = 1;
            while start < bytes.len() {
                let end = (start + size).min(bytes.len());
                pieces.push(Ok(Bytes::copy_from_slice(&bytes[start..end])));
                start = end;
                size = size % 3 + 1;
            }
            pieces
        }
        _ => events
            .into_iter()
            .map(|event| Ok(Bytes::from(event)))
            .collect(),
    };
    let stall = behaviour == "stall_stream";
    let broken = behaviour == "break_stream";
    let keep = if stall || broken { 2 } else { pieces.len() };
    let head = stream::iter(pieces.into_iter().take(keep));
    let tail = stream::unfold((stall, broken), |(stall, broken)| async move {
        if stall {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            None
        } else if broken {
            // Let the first events reach the client before the cut.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Err(std::io::Error::other(
                    "connection reset by the fake upstream",
                )),
                (false, false),
            ))
        } else {
            None
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, tail));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
