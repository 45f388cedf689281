//! The ingest wire format: usage reported by apps that call providers
//! directly, one record or `{"records": [...]}`.
//!
//! Parsing is strict (unknown fields are refused, so a typo never loses a
//! count) and every error names the record and the field. A batch is all or
//! nothing. Pure: bytes in, events out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::usage::{
    ExtraUsage, Provider, RecordStatus, TaskType, TokenCounts, UsageEvent, new_request_id,
};

/// The organization of records that name none.
pub const DEFAULT_ORG: &str = "default";

/// Why an ingest body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{message}")]
    Shape { message: String },
    #[error("{count} records in one call; the limit is {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("{param}: {message}")]
    Invalid { param: String, message: String },
}

/// One record on the wire. Counts are unsigned, so a negative count is a
/// type error that names its field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRecord<'a> {
    request_id: Option<Uuid>,
    parent_request_id: Option<Uuid>,
    #[serde(alias = "timestamp")]
    created_at: Option<String>,
    provider: Provider,
    model: String,
    task_type: TaskType,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cached_input_tokens: u64,
    #[serde(default)]
    reasoning_tokens: u64,
    #[serde(default)]
    usage_details: ExtraUsage,
    /// Kept as raw JSON text so a number like 0.0012 is read as the decimal
    /// written, never through a float.
    #[serde(borrow)]
    cost_usd: Option<&'a RawValue>,
    #[serde(default)]
    latency_ms: u64,
    time_to_first_token_ms: Option<u64>,
    success: Option<bool>,
    status: Option<RecordStatus>,
    status_code: Option<u16>,
    error_type: Option<String>,
    #[serde(default)]
    stream: bool,
    org_id: Option<String>,
    user_id: Option<String>,
    provider_request_id: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tags: Vec<String>,
}

/// A parsed body: its events, and whether it was a batch (errors about a
/// batch name `records[i]`).
#[derive(Debug)]
pub struct IngestBody {
    pub events: Vec<UsageEvent>,
    pub is_batch: bool,
}

/// Parses a body into events, or says precisely what is wrong with it.
pub fn parse_body(
    body: &[u8],
    max_records: usize,
    now: DateTime<Utc>,
) -> Result<IngestBody, IngestError> {
    let top: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => IngestError::Shape {
                message: "the body must be a JSON object: one record, or {\"records\": [...]}"
                    .to_owned(),
            },
            _ => IngestError::Malformed(error.to_string()),
        })?;
    let Some(records) = top.get("records") else {
        let event = parse_record(body, "", now)?;
        return Ok(IngestBody {
            events: vec![event],
            is_batch: false,
        });
    };
    if top.len() > 1 {
        return Err(IngestError::Shape {
            message: "a batch body has only the `records` field".to_owned(),
        });
    }
    let records: Vec<&RawValue> =
        serde_json::from_str(records.get()).map_err(|_| IngestError::Invalid {
            param: "records".to_owned(),
            message: "must be an array of records".to_owned(),
        })?;
    if records.len() > max_records {
        return Err(IngestError::TooMany {
            count: records.len(),
            limit: max_records,
        });
    }
    if records.is_empty() {
        return Err(IngestError::Invalid {
            param: "records".to_owned(),
            message: "must hold at least one record".to_owned(),
        });
    }
    let mut events = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for (index, raw) in records.into_iter().enumerate() {
        let prefix = format!("records[{index}].");
        let event = parse_record(raw.get().as_bytes(), &prefix, now)?;
        if !seen.insert(event.request_id) {
            return Err(IngestError::Invalid {
                param: format!("{prefix}request_id"),
                message: "repeats an earlier record's request_id in this batch".to_owned(),
            });
        }
        events.push(event);
    }
    Ok(IngestBody {
        events,
        is_batch: true,
    })
}

/// `prefix` is `records[i].` in a batch and empty for a single record.
fn parse_record(text: &[u8], prefix: &str, now: DateTime<Utc>) -> Result<UsageEvent, IngestError> {
    let invalid = |field: &str, message: String| IngestError::Invalid {
        param: format!("{prefix}{field}"),
        message,
    };
    // The plain parse is the fast path; only a record that fails it is parsed
    // again, slowly, to find the path of the field at fault.
    let wire: WireRecord<'_> = match serde_json::from_slice(text) {
        Ok(wire) => wire,
        Err(_) => return Err(locate_error(text, prefix)),
    };
    let created_at = match &wire.created_at {
        None => now,
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                invalid(
                    "created_at",
                    format!("`{text}` is not an RFC 3339 time such as 2026-11-28T09:30:00Z"),
                )
            })?,
    };
    let reported_cost = wire
        .cost_usd
        .map(|raw| {
            crate::money::parse_usd_json(raw).map_err(|message| invalid("cost_usd", message))
        })
        .transpose()?
        .flatten();
    let status = record_status(&wire).map_err(|message| invalid("status", message))?;
    let mut metadata = wire.metadata;
    if !wire.tags.is_empty() {
        metadata.insert("tags".to_owned(), wire.tags.into());
    }
    let event = UsageEvent {
        request_id: wire.request_id.unwrap_or_else(new_request_id),
        parent_request_id: wire.parent_request_id,
        created_at,
        org_id: wire.org_id.unwrap_or_else(|| DEFAULT_ORG.to_owned()),
        user_id: wire.user_id,
        api_key_id: None,
        provider: wire.provider,
        model: wire.model,
        task_type: wire.task_type,
        tokens: TokenCounts {
            input: wire.input_tokens,
            output: wire.output_tokens,
            cached_input: wire.cached_input_tokens,
            reasoning: wire.reasoning_tokens,
        },
        extra: wire.usage_details,
        reported_cost,
        latency_ms: wire.latency_ms,
        time_to_first_token_ms: wire.time_to_first_token_ms,
        status_code: wire.status_code,
        status,
        error_type: wire.error_type,
        stream: wire.stream,
        provider_request_id: wire.provider_request_id,
        metadata,
    };
    Ok(event)
}

/// Parses a record that failed to parse, to name the field at fault.
fn locate_error(text: &[u8], prefix: &str) -> IngestError {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let error = match serde_path_to_error::deserialize::<_, WireRecord<'_>>(&mut deserializer) {
        Ok(_) => {
            return IngestError::Invalid {
                param: prefix.trim_end_matches('.').to_owned(),
                message: "cannot be read".to_owned(),
            };
        }
        Err(error) => error,
    };
    let path = error.path().to_string();
    let message = error.inner().to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let param = match (path.as_str(), missing_field(&message)) {
        (".", Some(field)) => format!("{prefix}{field}"),
        (".", None) => prefix.trim_end_matches('.').to_owned(),
        _ => format!("{prefix}{path}"),
    };
    IngestError::Invalid { param, message }
}

/// The field a serde "missing field `x`" message names (serde reports it at
/// the enclosing object, not at the field).
pub(crate) fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
}

/// `status` wins; otherwise `success: false` or an HTTP error status means
/// an error. A `status` that contradicts `success` is refused.
fn record_status(wire: &WireRecord<'_>) -> Result<RecordStatus, String> {
    let failed_code = wire.status_code.is_some_and(|code| code >= 400);
    match (wire.status, wire.success) {
        (Some(RecordStatus::Ok), Some(false)) => {
            Err("`ok` contradicts `success: false`".to_owned())
        }
        (Some(status), Some(true)) if status != RecordStatus::Ok => {
            Err(format!("`{status}` contradicts `success: true`"))
        }
        (Some(status), _) => Ok(status),
        (None, Some(false)) => Ok(RecordStatus::Error),
        (None, Some(true)) => Ok(RecordStatus::Ok),
        (None, None) if failed_code => Ok(RecordStatus::Error),
        (None, None) => Ok(RecordStatus::Ok),
    }
}

#[cfg(test)]
mod tests;
