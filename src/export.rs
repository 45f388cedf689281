//! Usage records out: one JSON shape (the API's record view, also one NDJSON
//! line per record) and one CSV layout, written page by page so an export of
//! any size holds two pages in memory. Used by `GET /api/v1/usage/export` and
//! `tollgate export`.

use std::fmt::Write as _;

use futures_util::StreamExt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::analytics::rollups::metadata_tags;
use crate::money::NanoUsd;
use crate::store::{Cursor, ExportBatch, ExportRow, RecordFilter, Store, StoreError};
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

/// The bytes for a page of records: CSV rows (after the header when
/// `header`; an empty page is then the header alone) or NDJSON lines.
pub fn encode(format: Format, header: bool, batch: &ExportBatch) -> Result<Vec<u8>, ExportError> {
    let rows = batch.rows()?;
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(rows.len() * 700);
            for row in &rows {
                serde_json::to_writer(&mut out, &RecordView::from(row))
                    .map_err(|error| ExportError::Encode(error.to_string()))?;
                out.push(b'\n');
            }
            Ok(out)
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 400));
            if header {
                writer.write_record(CSV_COLUMNS).map_err(csv_error)?;
            }
            let mut scratch = String::new();
            for row in &rows {
                write_csv_row(&mut writer, &mut scratch, row)?;
            }
            writer
                .into_inner()
                .map_err(|error| ExportError::Encode(error.to_string()))
        }
    }
}

fn csv_error(error: csv::Error) -> ExportError {
    ExportError::Encode(error.to_string())
}

/// Writes one record's fields in [`CSV_COLUMNS`] order. Numbers go through
/// `scratch`, so a row costs no allocation beyond its timestamp and tags.
fn write_csv_row(
    writer: &mut csv::Writer<Vec<u8>>,
    scratch: &mut String,
    row: &ExportRow<'_>,
) -> Result<(), ExportError> {
    fn text(writer: &mut csv::Writer<Vec<u8>>, value: Option<&str>) -> Result<(), ExportError> {
        writer
            .write_field(value.unwrap_or_default())
            .map_err(csv_error)
    }
    fn display(
        writer: &mut csv::Writer<Vec<u8>>,
        scratch: &mut String,
        value: Option<impl std::fmt::Display>,
    ) -> Result<(), ExportError> {
        scratch.clear();
        if let Some(value) = value {
            write!(scratch, "{value}").map_err(|error| ExportError::Encode(error.to_string()))?;
        }
        writer.write_field(scratch.as_bytes()).map_err(csv_error)
    }
    let cost = row.cost_nano_usd.map(NanoUsd::from_nanos);
    let estimated = row.estimated_cost_nano_usd.map(NanoUsd::from_nanos);
    display(writer, scratch, Some(row.request_id))?;
    display(writer, scratch, row.parent_request_id)?;
    text(
        writer,
        Some(&row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
    )?;
    text(writer, Some(&row.org_id))?;
    text(writer, row.user_id.as_deref())?;
    display(writer, scratch, row.api_key_id)?;
    text(writer, Some(&row.provider))?;
    text(writer, Some(&row.model))?;
    text(writer, Some(&row.task_type))?;
    display(writer, scratch, Some(row.input_tokens))?;
    display(writer, scratch, Some(row.output_tokens))?;
    display(writer, scratch, Some(row.cached_input_tokens))?;
    display(writer, scratch, Some(row.reasoning_tokens))?;
    display(writer, scratch, cost)?;
    display(writer, scratch, row.cost_nano_usd)?;
    display(writer, scratch, estimated)?;
    display(writer, scratch, row.estimated_cost_nano_usd)?;
    text(writer, Some(&row.cost_status))?;
    display(writer, scratch, Some(row.latency_ms))?;
    display(writer, scratch, row.time_to_first_token_ms)?;
    display(writer, scratch, row.status_code)?;
    display(writer, scratch, Some(row.success))?;
    text(writer, Some(&row.status))?;
    text(writer, row.error_type.as_deref())?;
    display(writer, scratch, Some(row.stream))?;
    text(writer, row.provider_request_id.as_deref())?;
    text(writer, Some(&tags(row.metadata)?.join(";")))?;
    text(writer, Some(row.metadata.get()))?;
    writer
        .write_record(std::iter::empty::<&[u8]>())
        .map_err(csv_error)
}

/// A record's tags from its metadata text, parsed only when it names tags.
fn tags(metadata: &RawValue) -> Result<Vec<String>, ExportError> {
    if !metadata.get().contains("\"tags\"") {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(metadata.get())
        .map_err(|error| ExportError::Encode(format!("metadata: {error}")))?;
    Ok(metadata_tags(&value)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode a record: {0}")]
    Encode(String),
    #[error("the export's encoding task failed: {0}")]
    Task(String),
}

/// A page of the export: the records after `after` up to `until`
/// (inclusive), which held [`PAGE_SIZE`] records when the page was planned;
/// the last page has no `until`.
#[derive(Debug, Clone, Copy)]
struct PageRange {
    after: Option<Cursor>,
    until: Option<Cursor>,
}

/// Plans the export's pages ahead of reading them: each page's last
/// position comes from a cheap query that skips [`PAGE_SIZE`] records
/// along the time index, so several pages can then be read at once.
#[derive(Debug)]
struct Planner {
    store: Store,
    filter: RecordFilter,
    cursor: Option<Cursor>,
    done: bool,
}

impl Planner {
    /// The next page's range, or `None` after the last. There is always a
    /// first page, even for an empty export.
    async fn next(&mut self) -> Result<Option<PageRange>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let until = self
            .store
            .usage_export_boundary(&self.filter, self.cursor, PAGE_SIZE)
            .await?;
        let range = PageRange {
            after: self.cursor,
            until,
        };
        match until {
            Some(until) => self.cursor = Some(until),
            None => self.done = true,
        }
        Ok(Some(range))
    }
}

/// Reads every record of a page's range. A planned range holds one page's
/// records; records written into it since it was planned make it longer,
/// so it is read in pages of at most twice the planned size until it ends.
async fn read_range(
    store: &Store,
    filter: &RecordFilter,
    range: PageRange,
) -> Result<Vec<ExportBatch>, StoreError> {
    let limit = PAGE_SIZE * 2;
    let mut batches = Vec::with_capacity(1);
    let mut after = range.after;
    loop {
        let batch = store
            .usage_export_page(filter, after, range.until, limit)
            .await?;
        let next = batch.next;
        batches.push(batch);
        match next {
            Some(position) => after = Some(position),
            None => return Ok(batches),
        }
    }
}

/// One encoded piece of an export: its bytes and how many records they hold.
#[derive(Debug)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub records: u32,
}

/// Pages read and encoded at once: each is read on its own connection and
/// encoded on the blocking pool, so the database (SQLite builds a page on
/// one core) and the encoders use every core (see "Export" in
/// docs/benchmarks.md). At most this many pages are in memory.
const PAGES_AT_ONCE: usize = 3;

/// The whole export as a stream of encoded chunks, in order: pages are
/// planned one after another and read and encoded [`PAGES_AT_ONCE`] at a
/// time.
pub fn chunks(
    store: Store,
    filter: RecordFilter,
    format: Format,
) -> impl futures_util::Stream<Item = Result<Chunk, ExportError>> + Send + 'static {
    let planner = Planner {
        store: store.clone(),
        filter: filter.clone(),
        cursor: None,
        done: false,
    };
    let ranges = futures_util::stream::try_unfold(planner, |mut planner| async {
        let range = planner.next().await?;
        Ok::<_, StoreError>(range.map(|range| (range, planner)))
    });
    ranges
        .enumerate()
        .map(move |(index, range)| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                let batches = read_range(&store, &filter, range?).await?;
                let encoding = tokio::task::spawn_blocking(move || {
                    let mut chunk = Chunk {
                        bytes: Vec::new(),
                        records: 0,
                    };
                    for (number, batch) in batches.iter().enumerate() {
                        let encoded = encode(format, index == 0 && number == 0, batch)?;
                        if chunk.bytes.is_empty() {
                            chunk.bytes = encoded;
                        } else {
                            chunk.bytes.extend(encoded);
                        }
                        chunk.records += batch.count;
                    }
                    Ok::<_, ExportError>(chunk)
                });
                encoding
                    .await
                    .map_err(|error| ExportError::Task(error.to_string()))?
            }
        })
        .buffered(PAGES_AT_ONCE)
}

/// A usage record as the API shows it: the table's columns, cost both as a
/// decimal USD string and integer nano-USD. `M` is the metadata: a parsed
/// value from a stored record, raw JSON text in an export.
#[derive(Debug, Serialize)]
pub struct RecordView<'a, M: ?Sized + Serialize = Value> {
    pub request_id: uuid::Uuid,
    pub parent_request_id: Option<uuid::Uuid>,
    pub created_at: DateTime<Utc>,
    pub org_id: &'a str,
    pub user_id: Option<&'a str>,
    pub api_key_id: Option<uuid::Uuid>,
    pub provider: &'a str,
    pub model: &'a str,
    pub task_type: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Option<String>,
    pub cost_nano_usd: Option<i64>,
    pub estimated_cost_usd: Option<String>,
    pub estimated_cost_nano_usd: Option<i64>,
    pub cost_status: &'a str,
    pub latency_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    pub status_code: Option<u16>,
    pub success: bool,
    pub status: &'a str,
    pub error_type: Option<&'a str>,
    pub stream: bool,
    pub provider_request_id: Option<&'a str>,
    pub metadata: &'a M,
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

impl<'a> From<&'a ExportRow<'a>> for RecordView<'a, RawValue> {
    fn from(row: &'a ExportRow<'a>) -> Self {
        let usd = |nanos: Option<i64>| nanos.map(|nanos| NanoUsd::from_nanos(nanos).to_string());
        RecordView {
            request_id: row.request_id,
            parent_request_id: row.parent_request_id,
            created_at: row.created_at,
            org_id: &row.org_id,
            user_id: row.user_id.as_deref(),
            api_key_id: row.api_key_id,
            provider: &row.provider,
            model: &row.model,
            task_type: &row.task_type,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_input_tokens: row.cached_input_tokens,
            reasoning_tokens: row.reasoning_tokens,
            cost_usd: usd(row.cost_nano_usd),
            cost_nano_usd: row.cost_nano_usd,
            estimated_cost_usd: usd(row.estimated_cost_nano_usd),
            estimated_cost_nano_usd: row.estimated_cost_nano_usd,
            cost_status: &row.cost_status,
            latency_ms: row.latency_ms,
            time_to_first_token_ms: row.time_to_first_token_ms,
            status_code: row.status_code,
            success: row.success,
            status: &row.status,
            error_type: row.error_type.as_deref(),
            stream: row.stream,
            provider_request_id: row.provider_request_id.as_deref(),
            metadata: row.metadata,
        }
    }
}
