//! The proxy use case: route the model, try each target in turn, pass the
//! answer back unchanged, and record one usage record per attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use reqwest::header::HeaderMap;
use uuid::Uuid;

use super::attempt::{Attempt, Attribution, Outcome};
use super::body::{BodyError, RequestBody};
use super::estimate;
use super::meter;
use super::routing::{RouteError, Routing, Target};
use super::stream::MeteredStream;
use crate::budget::enforcer::{BudgetError, Budgets, Charge, Hold};
use crate::money::NanoUsd;
use crate::providers::{Providers, SendError};
use crate::recorder::Recorder;
use crate::usage::{ImageBatch, Provider, RecordStatus, TaskType, new_request_id};

/// The largest error body read from a provider (its status and body are
/// passed back to the client; a larger body is cut).
const MAX_ERROR_BODY: usize = 1 << 20;
/// The largest whole (not streamed) answer passed back. Above real answers
/// (ten base64 images are about 50 MB); a provider sending more gets the
/// client a 502 instead of growing the gateway's memory.
const MAX_ANSWER_BODY: usize = 128 << 20;

/// Why the gateway answered itself instead of passing a provider's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Route(#[from] RouteError),
    /// No provider answered; carries the last attempt's request id.
    #[error("{error}")]
    Unreachable { error: SendError, request_id: Uuid },
    #[error("the provider's answer broke off: {message}")]
    Broken {
        message: String,
        /// It went silent (504) rather than failing (502).
        timeout: bool,
        request_id: Uuid,
    },
    /// A hard budget has no room, or budget state cannot be read.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// What the client gets back.
#[derive(Debug)]
pub enum Reply {
    Whole {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        request_id: Uuid,
        cost: Option<NanoUsd>,
    },
    Stream {
        status: u16,
        headers: HeaderMap,
        body: Box<MeteredStream>,
        request_id: Uuid,
    },
}

/// A client request as the HTTP layer hands it over.
#[derive(Debug)]
pub struct ClientRequest {
    pub task: TaskType,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub attribution: Attribution,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    providers: Arc<Providers>,
    routing: Arc<Routing>,
    recorder: Recorder,
    budgets: Budgets,
    stream_idle_timeout: Duration,
    /// The output cap assumed when a request sets none, for budget
    /// reservations.
    default_max_output_tokens: u64,
}

impl Gateway {
    pub fn new(
        providers: Providers,
        routing: Routing,
        recorder: Recorder,
        budgets: Budgets,
        stream_idle_timeout: Duration,
        default_max_output_tokens: u64,
    ) -> Self {
        Gateway {
            providers: Arc::new(providers),
            routing: Arc::new(routing),
            recorder,
            budgets,
            stream_idle_timeout,
            default_max_output_tokens,
        }
    }

    /// Reserves the attempt's maximum cost on the hard budgets covering it;
    /// the estimate (a tokenizer pass over the prompt) is made only when one
    /// does. A refusal is final: no attempt, no fallback.
    async fn reserve(
        &self,
        request: &ClientRequest,
        parsed: &RequestBody<'_>,
        target: &Target,
        request_id: Uuid,
        images: Option<&ImageBatch>,
    ) -> Result<Option<Arc<Hold>>, BudgetError> {
        let attribution = &request.attribution;
        let user_id = attribution.user_id.as_deref();
        if !self.budgets.covered(
            &attribution.org_id,
            target.provider,
            user_id,
            attribution.api_key_id,
        ) {
            return Ok(None);
        }
        let estimate = estimate::max_cost(
            self.recorder.pricing(),
            request.task,
            target,
            &request.body,
            parsed
                .max_output_tokens
                .unwrap_or(self.default_max_output_tokens),
            images,
        );
        let charge = Charge {
            request_id,
            org_id: &attribution.org_id,
            provider: target.provider,
            user_id,
            api_key_id: attribution.api_key_id,
            estimate,
        };
        Ok(self.budgets.reserve(&charge).await?.map(Arc::new))
    }

    /// Whether a bare model name is one of OpenAI's (priced in the catalog).
    fn is_openai_model(&self, name: &str) -> bool {
        self.recorder
            .pricing()
            .lookup(Provider::OpenAi, name)
            .is_some()
    }

    /// The models this gateway can route to by name: every priced model of
    /// each provider and every alias.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .recorder
            .pricing()
            .models()
            .iter()
            .map(|model| format!("{}/{}", model.provider, model.id))
            .chain(self.routing.aliases.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub async fn forward(&self, request: ClientRequest) -> Result<Reply, GatewayError> {
        let parsed = RequestBody::parse(&request.body)?;
        let plan = self
            .routing
            .plan(&parsed.model, |name| self.is_openai_model(name))?;
        let mut attribution = request.attribution.clone();
        attribution
            .metadata
            .insert("requested_model".to_owned(), parsed.model.clone().into());
        if let Some(user) = &parsed.user {
            attribution
                .metadata
                .insert("end_user".to_owned(), user.clone().into());
        }
        let streaming = parsed.stream;
        let add_usage = streaming
            && matches!(request.task, TaskType::Chat | TaskType::Completion)
            && !parsed.include_usage;
        let images = (request.task == TaskType::ImageGeneration).then(|| {
            let (count, size, quality) = parsed.images.clone();
            ImageBatch {
                count,
                size: size.unwrap_or_else(|| "1024x1024".to_owned()),
                quality: match quality.as_deref() {
                    Some("hd" | "high") => "hd".to_owned(),
                    _ => "standard".to_owned(),
                },
            }
        });
        let mut first_attempt: Option<Uuid> = None;
        for (index, target) in plan.iter().enumerate() {
            let last = index + 1 == plan.len();
            let request_id = new_request_id();
            let hold = self
                .reserve(&request, &parsed, target, request_id, images.as_ref())
                .await?;
            let attempt = Attempt {
                request_id,
                parent_request_id: first_attempt,
                created_at: Utc::now(),
                started: Instant::now(),
                target: target.clone(),
                task: request.task,
                stream: streaming,
                attribution: attribution.clone(),
                images: images.clone(),
                hold,
            };
            first_attempt.get_or_insert(attempt.request_id);
            let upstream_body = parsed.rewrite(&target.model, add_usage);
            let sent = self
                .providers
                .post(
                    target.provider,
                    path_for(request.task),
                    upstream_body,
                    &request.headers,
                )
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    let error_type = match error {
                        SendError::Timeout { .. } => "timeout",
                        SendError::Connect { .. } => "upstream_error",
                    };
                    tracing::warn!(%error, target = %target.label(), "upstream attempt failed");
                    attempt
                        .record_durably(&self.recorder, failed(None, error_type))
                        .await;
                    if last {
                        return Err(GatewayError::Unreachable {
                            error,
                            request_id: attempt.request_id,
                        });
                    }
                    continue;
                }
            };
            let status = response.status().as_u16();
            let headers = passed_headers(response.headers());
            if !response.status().is_success() {
                let body = read_limited(response, MAX_ERROR_BODY).await;
                let failure = meter::classify(status, &body);
                attempt
                    .record_durably(&self.recorder, failed(Some(status), failure.error_type()))
                    .await;
                if failure.falls_back() && !last {
                    tracing::info!(status, target = %target.label(), "falling back to the next target");
                    continue;
                }
                return Ok(Reply::Whole {
                    status,
                    headers,
                    body,
                    request_id: attempt.request_id,
                    cost: None,
                });
            }
            let is_event_stream = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("text/event-stream"));
            if streaming && is_event_stream {
                let request_id = attempt.request_id;
                let body = Box::new(MeteredStream::new(
                    response,
                    attempt,
                    self.recorder.clone(),
                    add_usage,
                    request.body.clone(),
                    self.stream_idle_timeout,
                ));
                return Ok(Reply::Stream {
                    status,
                    headers,
                    body,
                    request_id,
                });
            }
            return self
                .whole_answer(response, attempt, status, headers, &request)
                .await;
        }
        // `plan` is never empty, so the loop always returns.
        Err(GatewayError::Route(RouteError::Empty(parsed.model)))
    }

    /// Reads a whole answer, records it, and passes it back.
    async fn whole_answer(
        &self,
        response: reqwest::Response,
        attempt: Attempt,
        status: u16,
        headers: HeaderMap,
        request: &ClientRequest,
    ) -> Result<Reply, GatewayError> {
        let body = match read_answer(response, self.stream_idle_timeout, MAX_ANSWER_BODY).await {
            Ok(body) => body,
            Err(failure) => {
                let (error_type, timeout, message) = match failure {
                    AnswerFailure::Broken(message) => ("upstream_error", false, message),
                    AnswerFailure::Silent => (
                        "timeout",
                        true,
                        format!(
                            "the provider sent nothing for {} s",
                            self.stream_idle_timeout.as_secs()
                        ),
                    ),
                    AnswerFailure::TooLarge => (
                        "upstream_error",
                        false,
                        format!("the provider's answer is over {MAX_ANSWER_BODY} bytes"),
                    ),
                };
                attempt
                    .record_durably(&self.recorder, failed(Some(status), error_type))
                    .await;
                return Err(GatewayError::Broken {
                    message,
                    timeout,
                    request_id: attempt.request_id,
                });
            }
        };
        let (usage, provider_request_id) = meter::read_answer(&body);
        let needs_estimate = usage.is_none() && request.task != TaskType::ImageGeneration;
        let outcome = Outcome {
            status_code: Some(status),
            status: Some(RecordStatus::Ok),
            error_type: None,
            prompt_text: needs_estimate.then(|| estimate::prompt_text(&request.body)),
            output_text: needs_estimate.then(|| output_text(&body)),
            usage,
            time_to_first_token_ms: None,
            provider_request_id,
        };
        let cost = attempt.record_durably(&self.recorder, outcome).await;
        Ok(Reply::Whole {
            status,
            headers,
            body,
            request_id: attempt.request_id,
            cost,
        })
    }
}

fn failed(status_code: Option<u16>, error_type: &'static str) -> Outcome {
    Outcome {
        status_code,
        status: Some(RecordStatus::Error),
        error_type: Some(error_type),
        ..Outcome::default()
    }
}

/// The provider path for a task (base URLs end in `/v1`).
fn path_for(task: TaskType) -> &'static str {
    match task {
        TaskType::Chat => "/chat/completions",
        TaskType::Completion => "/completions",
        TaskType::Embedding => "/embeddings",
        TaskType::ImageGeneration => "/images/generations",
        TaskType::Responses => "/responses",
    }
}

/// Response headers passed to the client: all but hop-by-hop ones and those
/// the server sets itself.
fn passed_headers(upstream: &HeaderMap) -> HeaderMap {
    const DROPPED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
    ];
    upstream
        .iter()
        .filter(|(name, _)| !DROPPED.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Why a whole answer could not be read.
enum AnswerFailure {
    Broken(String),
    /// Nothing came for the idle timeout.
    Silent,
    TooLarge,
}

/// Reads a whole answer of at most `limit` bytes, waiting at most `idle`
/// for each piece. A body that comes in one piece is not copied.
async fn read_answer(
    mut response: reqwest::Response,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, AnswerFailure> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => return Err(AnswerFailure::Silent),
            Ok(Err(error)) => return Err(AnswerFailure::Broken(error.to_string())),
            Ok(Ok(None)) => {
                return Ok(match first {
                    Some(only) if joined.is_empty() => only,
                    _ => Bytes::from(joined),
                });
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if held + chunk.len() > limit {
            return Err(AnswerFailure::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Bytes::from(body)
}

/// The output text of a whole answer without usage (for an estimate).
fn output_text(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let mut text = String::new();
    if let Some(choices) = value.get("choices").and_then(|choices| choices.as_array()) {
        for choice in choices {
            for pointer in ["/message/content", "/text"] {
                if let Some(part) = choice.pointer(pointer).and_then(|part| part.as_str()) {
                    text.push_str(part);
                }
            }
        }
    }
    if let Some(part) = value.get("output_text").and_then(|part| part.as_str()) {
        text.push_str(part);
    }
    text
}
