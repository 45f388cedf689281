//! `POST /api/v1/usage` (ingest) and `GET /api/v1/usage/records`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::auth::scoped;
use super::error::record_error;
use super::{ApiError, AppState};
use crate::export::{self, Format, RecordView};
use crate::ingest;
use crate::query::{self, RecordQuery};
use crate::recorder::RecordError;
use crate::store::Cursor;
use crate::tenancy::Caller;

/// Takes one record or a batch; answers 202 once every record is validated,
/// priced and queued (the write itself happens in the background).
pub async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    // Records are ingested for the caller's own organization only.
    if !caller.is_admin()
        && let Some((index, event)) = parsed
            .events
            .iter()
            .enumerate()
            .find(|(_, event)| event.org_id != caller.org_id)
    {
        let field = if parsed.is_batch {
            format!("records[{index}].org_id")
        } else {
            "org_id".to_owned()
        };
        return Err(ApiError::Forbidden(format!(
            "{field}: `{}` is not your organization (`{}`)",
            event.org_id, caller.org_id
        )));
    }
    let accepted = state
        .recorder
        .record(parsed.events)
        .map_err(|error| record_error(error, parsed.is_batch))?;
    state.recorder.durable(accepted.ticket).await;
    let ids = accepted.request_ids;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": ids.len(), "request_ids": ids })),
    ))
}

/// Records, newest first, with filters and cursor pagination.
pub async fn records(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let request = RecordQuery::parse(&parameters, state.config.server.timezone)
        .map_err(|error| ApiError::invalid(error.param, error.message))?;
    let filter = scoped(&caller, request.filter)?;
    let page = state
        .store
        .usage_records(&filter, request.cursor, request.limit)
        .await?;
    let data: Vec<RecordView> = page.records.iter().map(RecordView::from).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "has_more": page.next.is_some(),
        "next_cursor": page.next.map(|cursor: Cursor| query::encode_cursor(&cursor)),
    })))
}

/// `GET /api/v1/usage/export?format=csv|json`: every matching record,
/// oldest first, streamed page by page (one page in memory at a time).
pub async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(mut parameters): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let format = match parameters.remove("format") {
        None => Format::Csv,
        Some(text) => Format::parse(&text)
            .ok_or_else(|| ApiError::invalid("format", "must be csv or json"))?,
    };
    if let Some(unknown) = parameters
        .keys()
        .find(|name| !EXPORT_FILTERS.contains(&name.as_str()))
    {
        return Err(ApiError::invalid(
            unknown.clone(),
            format!(
                "unknown parameter (expected format or one of: {})",
                EXPORT_FILTERS.join(", ")
            ),
        ));
    }
    let filter = query::parse_filter(&parameters, state.config.server.timezone)
        .map_err(|error| ApiError::invalid(error.param, error.message))?;
    let filter = scoped(&caller, filter)?;
    let mut chunks = Box::pin(export::chunks(state.store.clone(), filter, format));
    // The first page is read before answering, so a database that is down
    // gets a proper error status rather than a truncated 200.
    let first = match chunks.next().await {
        Some(first) => first?,
        // `chunks` always yields the first page, even empty.
        None => return Err(ApiError::Internal),
    };
    let body = futures_util::stream::once(async move { Ok(first) })
        .chain(chunks)
        .map(|chunk| {
            chunk
                .map(|chunk| Bytes::from(chunk.bytes))
                .inspect_err(|error| {
                    tracing::error!(%error, "export stopped");
                })
        });
    let filename = format!("tollgate-usage.{}", format.extension());
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, format.content_type())
        .header(
            axum::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        )
        .body(axum::body::Body::from_stream(body))
        .map_err(|_| ApiError::Internal)
}

const EXPORT_FILTERS: &[&str] = &[
    "start_date",
    "end_date",
    "provider",
    "model",
    "task_type",
    "org_id",
    "user_id",
    "tag",
];
