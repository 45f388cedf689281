//! `POST /api/v1/usage` (ingest) and `GET /api/v1/usage/records`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::error::record_error;
use super::{ApiError, AppState};
use crate::ingest;
use crate::query::{self, RecordQuery};
use crate::recorder::RecordError;
use crate::store::Cursor;
use crate::usage::UsageRecord;

/// Takes one record or a batch; answers 202 once every record is validated,
/// priced and queued (the write itself happens in the background).
pub async fn ingest(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the body exceeds {} bytes",
                state.config.server.max_body_bytes
            ))
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    // A full queue refuses the call before the work of parsing it.
    if state.recorder.is_full() {
        return Err(record_error(
            RecordError::Overloaded {
                queued: state.recorder.queued(),
            },
            false,
        ));
    }
    let parsed = ingest::parse_body(&body, state.config.ingest.max_batch_records, Utc::now())?;
    let ids = state
        .recorder
        .record(parsed.events)
        .map_err(|error| record_error(error, parsed.is_batch))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": ids.len(), "request_ids": ids })),
    ))
}

/// Records, newest first, with filters and cursor pagination.
pub async fn records(
    State(state): State<AppState>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let request = RecordQuery::parse(&parameters, state.config.server.timezone)
        .map_err(|error| ApiError::invalid(error.param, error.message))?;
    let page = state
        .store
        .usage_records(&request.filter, request.cursor, request.limit)
        .await?;
    let data: Vec<RecordView> = page.records.iter().map(RecordView::from).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "has_more": page.next.is_some(),
        "next_cursor": page.next.map(|cursor: Cursor| query::encode_cursor(&cursor)),
    })))
}

/// A usage record as the API shows it: the table's columns, cost both as a
/// decimal USD string and integer nano-USD.
#[derive(Serialize)]
struct RecordView<'a> {
    request_id: uuid::Uuid,
    parent_request_id: Option<uuid::Uuid>,
    created_at: DateTime<Utc>,
    org_id: &'a str,
    user_id: Option<&'a str>,
    api_key_id: Option<uuid::Uuid>,
    provider: &'static str,
    model: &'a str,
    task_type: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    reasoning_tokens: u64,
    cost_usd: Option<String>,
    cost_nano_usd: Option<i64>,
    estimated_cost_usd: Option<String>,
    estimated_cost_nano_usd: Option<i64>,
    cost_status: &'static str,
    latency_ms: u64,
    time_to_first_token_ms: Option<u64>,
    status_code: Option<u16>,
    success: bool,
    status: &'static str,
    error_type: Option<&'a str>,
    stream: bool,
    provider_request_id: Option<&'a str>,
    metadata: &'a Value,
}

impl<'a> From<&'a UsageRecord> for RecordView<'a> {
    fn from(record: &'a UsageRecord) -> Self {
        RecordView {
            request_id: record.request_id,
            parent_request_id: record.parent_request_id,
            created_at: record.created_at,
            org_id: &record.org_id,
            user_id: record.user_id.as_deref(),
            api_key_id: record.api_key_id,
            provider: record.provider.as_str(),
            model: &record.model,
            task_type: record.task_type.as_str(),
            input_tokens: record.tokens.input,
            output_tokens: record.tokens.output,
            cached_input_tokens: record.tokens.cached_input,
            reasoning_tokens: record.tokens.reasoning,
            cost_usd: record.cost.map(|cost| cost.to_string()),
            cost_nano_usd: record.cost.map(|cost| cost.nanos()),
            estimated_cost_usd: record.estimated_cost.map(|cost| cost.to_string()),
            estimated_cost_nano_usd: record.estimated_cost.map(|cost| cost.nanos()),
            cost_status: record.cost_status.as_str(),
            latency_ms: record.latency_ms,
            time_to_first_token_ms: record.time_to_first_token_ms,
            status_code: record.status_code,
            success: record.success(),
            status: record.status.as_str(),
            error_type: record.error_type.as_deref(),
            stream: record.stream,
            provider_request_id: record.provider_request_id.as_deref(),
            metadata: &record.metadata,
        }
    }
}
