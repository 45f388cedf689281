//! Usage records out: one JSON shape (the API's record view, also one NDJSON
//! line per record) and one CSV layout, written page by page so an export of
//! any size holds one page in memory. Used by `GET /api/v1/usage/export` and
//! `tollgate export`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::analytics::rollups::record_tags;
use crate::store::{Cursor, RecordFilter, Store, StoreError};
use crate::usage::UsageRecord;

/// Records read per page.
pub const PAGE_SIZE: u32 = 5_000;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// Newline-delimited JSON: one record view per line.
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" | "ndjson" | "jsonl" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "ndjson",
        }
    }
}

/// The CSV columns, in order. `tags` is the record's tags joined by `;`,
/// `metadata` its whole metadata as JSON.
pub const CSV_COLUMNS: [&str; 28] = [
    "request_id",
    "parent_request_id",
    "created_at",
    "org_id",
    "user_id",
    "api_key_id",
    "provider",
    "model",
    "task_type",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_nano_usd",
    "estimated_cost_usd",
    "estimated_cost_nano_usd",
    "cost_status",
    "latency_ms",
    "time_to_first_token_ms",
    "status_code",
    "success",
    "status",
    "error_type",
    "stream",
    "provider_request_id",
    "tags",
    "metadata",
];

/// Encodes pages of records into bytes.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    header_written: bool,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Encoder {
            format,
            header_written: false,
        }
    }

    /// The bytes for these records (after the CSV header, the first time).
    pub fn encode(&mut self, records: &[UsageRecord]) -> Result<Vec<u8>, ExportError> {
        match self.format {
            Format::Json => {
                let mut out = Vec::with_capacity(records.len() * 700);
                for record in records {
                    serde_json::to_writer(&mut out, &RecordView::from(record))
                        .map_err(|error| ExportError::Encode(error.to_string()))?;
                    out.push(b'\n');
                }
                Ok(out)
            }
            Format::Csv => {
                let mut writer = csv::Writer::from_writer(Vec::with_capacity(records.len() * 400));
                if !self.header_written {
                    writer.write_record(CSV_COLUMNS).map_err(csv_error)?;
                    self.header_written = true;
                }
                for record in records {
                    writer.write_record(csv_row(record)).map_err(csv_error)?;
                }
                writer
                    .into_inner()
                    .map_err(|error| ExportError::Encode(error.to_string()))
            }
        }
    }

    /// What an export of no records still contains: the CSV header.
    pub fn finish(&mut self) -> Result<Vec<u8>, ExportError> {
        self.encode(&[])
    }
}

fn csv_error(error: csv::Error) -> ExportError {
    ExportError::Encode(error.to_string())
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map(|value| value.to_string()).unwrap_or_default()
}

fn csv_row(record: &UsageRecord) -> [String; 28] {
    [
        record.request_id.to_string(),
        optional(record.parent_request_id),
        record
            .created_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        record.org_id.clone(),
        record.user_id.clone().unwrap_or_default(),
        optional(record.api_key_id),
        record.provider.as_str().to_owned(),
        record.model.clone(),
        record.task_type.as_str().to_owned(),
        record.tokens.input.to_string(),
        record.tokens.output.to_string(),
        record.tokens.cached_input.to_string(),
        record.tokens.reasoning.to_string(),
        optional(record.cost),
        optional(record.cost.map(|cost| cost.nanos())),
        optional(record.estimated_cost),
        optional(record.estimated_cost.map(|cost| cost.nanos())),
        record.cost_status.as_str().to_owned(),
        record.latency_ms.to_string(),
        optional(record.time_to_first_token_ms),
        optional(record.status_code),
        record.success().to_string(),
        record.status.as_str().to_owned(),
        record.error_type.clone().unwrap_or_default(),
        record.stream.to_string(),
        record.provider_request_id.clone().unwrap_or_default(),
        record_tags(record).join(";"),
        record.metadata.to_string(),
    ]
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode a record: {0}")]
    Encode(String),
}

/// Reads the records matching a filter page by page, oldest first.
#[derive(Debug)]
pub struct Pages {
    store: Store,
    filter: RecordFilter,
    cursor: Option<Cursor>,
    done: bool,
}

impl Pages {
    pub fn new(store: Store, filter: RecordFilter) -> Self {
        Pages {
            store,
            filter,
            cursor: None,
            done: false,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<UsageRecord>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .usage_records_oldest_first(&self.filter, self.cursor, PAGE_SIZE)
            .await?;
        self.cursor = page.next;
        self.done = page.next.is_none();
        Ok(Some(page.records))
    }
}

/// A usage record as the API shows it: the table's columns, cost both as a
/// decimal USD string and integer nano-USD.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    pub request_id: uuid::Uuid,
    pub parent_request_id: Option<uuid::Uuid>,
    pub created_at: DateTime<Utc>,
    pub org_id: &'a str,
    pub user_id: Option<&'a str>,
    pub api_key_id: Option<uuid::Uuid>,
    pub provider: &'static str,
    pub model: &'a str,
    pub task_type: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Option<String>,
    pub cost_nano_usd: Option<i64>,
    pub estimated_cost_usd: Option<String>,
    pub estimated_cost_nano_usd: Option<i64>,
    pub cost_status: &'static str,
    pub latency_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    pub status_code: Option<u16>,
    pub success: bool,
    pub status: &'static str,
    pub error_type: Option<&'a str>,
    pub stream: bool,
    pub provider_request_id: Option<&'a str>,
    pub metadata: &'a Value,
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
