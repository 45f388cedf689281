//! Reading usage out of provider responses: whole JSON bodies, stream
//! chunks and Responses API events, in OpenAI's, OpenRouter's and local
//! servers' shapes; and naming upstream errors. Pure.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::sse::Event;
use crate::money::{NANOS_PER_USD, NanoUsd};
use crate::usage::{ExtraUsage, MAX_COST_USD, MAX_NAME_LENGTH, MAX_TOKENS, TaskType, TokenCounts};

/// Usage as a provider reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedUsage {
    pub tokens: TokenCounts,
    pub extra: ExtraUsage,
    /// OpenRouter's `usage.cost`, read from its literal text.
    pub cost: Option<NanoUsd>,
}

/// The `usage` object in every shape we meet: chat/completions
/// (`prompt_tokens`…), Responses and images (`input_tokens`…).
#[derive(Deserialize, Default)]
struct WireUsage<'a> {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
    #[serde(borrow)]
    cost: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    audio_tokens: Option<u64>,
    image_tokens: Option<u64>,
}

impl WireUsage<'_> {
    fn into_usage(self) -> ReportedUsage {
        let input_details = self
            .prompt_tokens_details
            .or(self.input_tokens_details)
            .unwrap_or_default();
        let output_details = self
            .completion_tokens_details
            .or(self.output_tokens_details)
            .unwrap_or_default();
        // The record is made after the answer was served, and a record outside
        // the ledger's bounds (`UsageEvent::validate`) would be refused and
        // lost. Providers have been seen reporting subsets larger than their
        // totals, so counts are clamped: totals to `MAX_TOKENS`, and the parts
        // of each total (cached, image and audio input; image and audio
        // output) to what is left of it, in that order.
        let input = self
            .prompt_tokens
            .or(self.input_tokens)
            .unwrap_or(0)
            .min(MAX_TOKENS);
        let output = self
            .completion_tokens
            .or(self.output_tokens)
            .unwrap_or(0)
            .min(MAX_TOKENS);
        let mut input_left = input;
        let mut input_part = |value: Option<u64>| {
            let part = value.unwrap_or(0).min(input_left);
            input_left -= part;
            part
        };
        let cached_input = input_part(input_details.cached_tokens);
        let input_image_tokens = input_part(input_details.image_tokens);
        let input_audio_tokens = input_part(input_details.audio_tokens);
        let mut output_left = output;
        let mut output_part = |value: Option<u64>| {
            let part = value.unwrap_or(0).min(output_left);
            output_left -= part;
            part
        };
        let output_image_tokens = output_part(output_details.image_tokens);
        let output_audio_tokens = output_part(output_details.audio_tokens);
        ReportedUsage {
            tokens: TokenCounts {
                input,
                output,
                cached_input,
                reasoning: output_details.reasoning_tokens.unwrap_or(0).min(output),
            },
            extra: ExtraUsage {
                input_image_tokens,
                output_image_tokens,
                input_audio_tokens,
                output_audio_tokens,
                ..ExtraUsage::default()
            },
            cost: self.cost.and_then(parse_cost),
        }
    }
}

/// A reported cost, if it is one a record may carry: not negative and at
/// most `MAX_COST_USD` (past that it is not believed, and the catalog prices
/// the request instead).
fn parse_cost(raw: &RawValue) -> Option<NanoUsd> {
    let text = raw.get().trim().trim_matches('"');
    let usd = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    let limit = NanoUsd::from_nanos(MAX_COST_USD * NANOS_PER_USD);
    NanoUsd::from_usd(usd)
        .ok()
        .filter(|cost| !cost.is_negative() && *cost <= limit)
}

#[derive(Deserialize)]
struct Answer<'a> {
    id: Option<String>,
    #[serde(borrow)]
    usage: Option<WireUsage<'a>>,
}

/// Usage and the provider's response id from a whole (non-streamed)
/// answer, in one pass over the body.
pub fn read_answer(body: &[u8]) -> (Option<ReportedUsage>, Option<String>) {
    match serde_json::from_slice::<Answer<'_>>(body) {
        Ok(answer) => (
            answer.usage.map(WireUsage::into_usage),
            answer.id.and_then(storable_id),
        ),
        Err(_) => (None, None),
    }
}

/// A provider's response id, if a record can hold it. The record is made
/// after the answer was served, so an id the ledger refuses (over 256 bytes,
/// or with a NUL) would cost the whole record; the id is dropped instead.
fn storable_id(id: String) -> Option<String> {
    (id.len() <= MAX_NAME_LENGTH && !id.contains('\0')).then_some(id)
}

/// Usage from a whole (non-streamed) response body, if it has any.
pub fn usage_from_body(body: &[u8]) -> Option<ReportedUsage> {
    read_answer(body).0
}

/// What the stream meter decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forward,
    /// The usage-only chunk the gateway asked for; the client did not.
    Drop,
}

/// Follows a stream: the last usage seen (vLLM sends running totals), the
/// output text (for an estimate if usage never comes), whether output has
/// started, whether the stream finished properly, and mid-stream errors.
#[derive(Debug, Default)]
pub struct StreamMeter {
    pub usage: Option<ReportedUsage>,
    pub output_text: String,
    pub provider_id: Option<String>,
    pub finished: bool,
    pub error: Option<String>,
    /// Set by `observe` when this event carried the first output.
    pub first_output: bool,
    started_output: bool,
}

/// The most output text kept for estimating tokens (about 1 MiB).
const MAX_OUTPUT_TEXT: usize = 1 << 20;

#[derive(Deserialize)]
struct Chunk<'a> {
    id: Option<String>,
    #[serde(borrow)]
    usage: Option<WireUsage<'a>>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    error: Option<&'a RawValue>,
    /// Responses API: the event's own object.
    response: Option<ResponseObject<'a>>,
    /// Responses API: text deltas.
    delta: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Option<Delta>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct ResponseObject<'a> {
    id: Option<String>,
    #[serde(borrow)]
    usage: Option<WireUsage<'a>>,
}

impl StreamMeter {
    pub fn new() -> Self {
        StreamMeter::default()
    }

    /// Looks at one event. `injected_usage` says the gateway asked for the
    /// usage chunk, so that chunk is dropped rather than forwarded.
    pub fn observe(&mut self, event: &Event, task: TaskType, injected_usage: bool) -> Disposition {
        self.first_output = false;
        if event.is_comment() {
            return Disposition::Forward;
        }
        if event.data == "[DONE]" {
            self.finished = true;
            return Disposition::Forward;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(&event.data) else {
            return Disposition::Forward;
        };
        if let Some(error) = chunk.error {
            self.error = Some(error.get().to_owned());
        }
        if self.provider_id.is_none() {
            self.provider_id = chunk
                .id
                .clone()
                .or_else(|| {
                    chunk
                        .response
                        .as_ref()
                        .and_then(|response| response.id.clone())
                })
                .and_then(storable_id);
        }
        let mut text = String::new();
        if let Some(choices) = &chunk.choices {
            for choice in choices {
                if let Some(delta) = &choice.delta {
                    for part in [&delta.content, &delta.reasoning, &delta.refusal]
                        .into_iter()
                        .flatten()
                    {
                        text.push_str(part);
                    }
                }
                if let Some(part) = &choice.text {
                    text.push_str(part);
                }
            }
        }
        if task == TaskType::Responses {
            if let Some(delta) = &chunk.delta {
                text.push_str(delta);
            }
            let terminal = matches!(
                event.name.as_deref(),
                Some("response.completed" | "response.incomplete" | "response.failed")
            );
            if terminal {
                self.finished = true;
            }
            if let Some(usage) = chunk.response.and_then(|response| response.usage) {
                self.usage = Some(usage.into_usage());
            }
        }
        if !text.is_empty() {
            self.first_output = !self.started_output;
            self.started_output = true;
            let room = MAX_OUTPUT_TEXT.saturating_sub(self.output_text.len());
            let cut = floor_char_boundary(&text, room);
            self.output_text.push_str(&text[..cut]);
        }
        let usage_only = chunk.choices.as_ref().is_some_and(Vec::is_empty);
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into_usage());
            if injected_usage && usage_only {
                return Disposition::Drop;
            }
        }
        Disposition::Forward
    }
}

fn floor_char_boundary(text: &str, limit: usize) -> usize {
    if limit >= text.len() {
        return text.len();
    }
    (0..=limit)
        .rev()
        .find(|index| text.is_char_boundary(*index))
        .unwrap_or(0)
}

/// The event bytes a client gets when the gateway added `include_usage`:
/// every chunk then carries `"usage":null`, which the client did not ask for.
pub fn without_null_usage(raw: &[u8]) -> Option<Vec<u8>> {
    const NULL_USAGE: &[u8] = b",\"usage\":null";
    let position = raw
        .windows(NULL_USAGE.len())
        .position(|window| window == NULL_USAGE)?;
    let mut out = Vec::with_capacity(raw.len() - NULL_USAGE.len());
    out.extend_from_slice(&raw[..position]);
    out.extend_from_slice(&raw[position + NULL_USAGE.len()..]);
    Some(out)
}

/// How an upstream error is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    QuotaExceeded,
    RateLimited,
    ServerError,
    Timeout,
    InvalidRequest,
    AuthenticationFailed,
}

impl UpstreamFailure {
    /// The `error_type` stored on the record.
    pub fn error_type(self) -> &'static str {
        match self {
            UpstreamFailure::QuotaExceeded => "quota_exceeded",
            UpstreamFailure::RateLimited => "rate_limited",
            UpstreamFailure::ServerError | UpstreamFailure::AuthenticationFailed => {
                "upstream_error"
            }
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::InvalidRequest => "invalid_request",
        }
    }

    /// Whether the next target in a fallback chain should be tried.
    pub fn falls_back(self) -> bool {
        matches!(
            self,
            UpstreamFailure::QuotaExceeded
                | UpstreamFailure::RateLimited
                | UpstreamFailure::ServerError
                | UpstreamFailure::Timeout
        )
    }
}

/// Names an upstream error from its status and body. OpenAI's two kinds of
/// 429 differ only in the body: `insufficient_quota` is permanent until
/// billing changes; OpenRouter says 402 for the same thing.
pub fn classify(status: u16, body: &[u8]) -> UpstreamFailure {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<ErrorFields>,
    }
    #[derive(Deserialize)]
    struct ErrorFields {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    }
    let fields = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|body| body.error);
    let says_quota = fields.as_ref().is_some_and(|fields| {
        fields.kind.as_deref() == Some("insufficient_quota")
            || fields.code.as_ref().and_then(|code| code.as_str()) == Some("insufficient_quota")
    });
    match status {
        402 => UpstreamFailure::QuotaExceeded,
        429 if says_quota => UpstreamFailure::QuotaExceeded,
        429 => UpstreamFailure::RateLimited,
        408 | 504 => UpstreamFailure::Timeout,
        401 | 403 => UpstreamFailure::AuthenticationFailed,
        500..=599 => UpstreamFailure::ServerError,
        _ => UpstreamFailure::InvalidRequest,
    }
}

#[cfg(test)]
mod tests;
