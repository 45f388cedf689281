//! Records out in bulk: one page of the ledger, oldest first, in the form
//! each backend hands over fastest, read as [`ExportRow`]s that borrow their
//! text from the page.
//!
//! - SQLite builds the page as one JSON array of arrays. Read as 5,000 rows
//!   of 25 columns, sqlx's SQLite driver costs more than anything else (it
//!   copies every value of every row, then hands each row across threads);
//!   one value per page costs it nothing, and SQLite's JSON is cheap.
//! - PostgreSQL sends plain rows: its binary rows are cheap to decode, while
//!   building JSON costs its server ~9 µs a record, more than the rest of the
//!   export together.
//!
//! See "Export" in docs/benchmarks.md.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{Cursor, Order, RecordFilter, StoreError, postgres, sqlite};

/// One page of records as the database sent them.
#[derive(Debug)]
pub struct ExportBatch {
    body: Body,
    /// How many records it holds.
    pub count: u32,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<Cursor>,
}

#[derive(Debug)]
enum Body {
    /// A JSON array with one [`ExportRow`] array per record, oldest first.
    Json(String),
    /// The records' rows, oldest first, columns as in [`POSTGRES_COLUMNS`].
    Rows(Vec<PgRow>),
}

impl ExportBatch {
    /// The records, borrowing their text from the batch.
    pub fn rows(&self) -> Result<Vec<ExportRow<'_>>, StoreError> {
        match &self.body {
            Body::Json(json) => {
                let mut rows: Vec<ExportRow<'_>> = serde_json::from_str(json)
                    .map_err(|error| StoreError::Corrupt(format!("export page: {error}")))?;
                let position = |row: &ExportRow<'_>| (row.created_at, row.request_id);
                if !rows.is_sorted_by_key(position) {
                    rows.sort_unstable_by_key(position);
                }
                Ok(rows)
            }
            Body::Rows(rows) => rows.iter().map(export_row).collect(),
        }
    }
}

/// Reads a PostgreSQL row of [`POSTGRES_COLUMNS`]. Unchecked reads skip
/// sqlx's per-value type lookup (a tenth of the export's time); the
/// columns' types are the migration's and the export tests read every one.
fn export_row(row: &PgRow) -> Result<ExportRow<'_>, StoreError> {
    fn count(value: i64, column: &str) -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value}")))
    }
    fn text(value: Option<&str>) -> Option<Cow<'_, str>> {
        value.map(Cow::Borrowed)
    }
    let status_code: Option<i32> = row.try_get_unchecked(18)?;
    let ttft: Option<i64> = row.try_get_unchecked(17)?;
    let metadata: Json<&RawValue> = row.try_get_unchecked(24)?;
    Ok(ExportRow {
        request_id: row.try_get_unchecked(0)?,
        parent_request_id: row.try_get_unchecked(1)?,
        created_at: row.try_get_unchecked(2)?,
        org_id: Cow::Borrowed(row.try_get_unchecked(3)?),
        user_id: text(row.try_get_unchecked(4)?),
        api_key_id: row.try_get_unchecked(5)?,
        provider: Cow::Borrowed(row.try_get_unchecked(6)?),
        model: Cow::Borrowed(row.try_get_unchecked(7)?),
        task_type: Cow::Borrowed(row.try_get_unchecked(8)?),
        input_tokens: count(row.try_get_unchecked(9)?, "input_tokens")?,
        output_tokens: count(row.try_get_unchecked(10)?, "output_tokens")?,
        cached_input_tokens: count(row.try_get_unchecked(11)?, "cached_input_tokens")?,
        reasoning_tokens: count(row.try_get_unchecked(12)?, "reasoning_tokens")?,
        cost_nano_usd: row.try_get_unchecked(13)?,
        estimated_cost_nano_usd: row.try_get_unchecked(14)?,
        cost_status: Cow::Borrowed(row.try_get_unchecked(15)?),
        latency_ms: count(row.try_get_unchecked(16)?, "latency_ms")?,
        time_to_first_token_ms: ttft
            .map(|value| count(value, "time_to_first_token_ms"))
            .transpose()?,
        status_code: status_code
            .map(|code| {
                u16::try_from(code).map_err(|_| StoreError::Corrupt(format!("status_code: {code}")))
            })
            .transpose()?,
        success: row.try_get_unchecked(19)?,
        status: Cow::Borrowed(row.try_get_unchecked(20)?),
        error_type: text(row.try_get_unchecked(21)?),
        stream: row.try_get_unchecked(22)?,
        provider_request_id: text(row.try_get_unchecked(23)?),
        metadata: metadata.0,
    })
}

/// One record as exported: the ledger's columns as stored. Deserialized
/// from SQLite's JSON array in column order; read from PostgreSQL's row.
#[derive(Debug, Deserialize)]
pub struct ExportRow<'a> {
    pub request_id: Uuid,
    pub parent_request_id: Option<Uuid>,
    #[serde(deserialize_with = "micros")]
    pub created_at: DateTime<Utc>,
    #[serde(borrow)]
    pub org_id: Cow<'a, str>,
    #[serde(borrow)]
    pub user_id: Option<Cow<'a, str>>,
    pub api_key_id: Option<Uuid>,
    #[serde(borrow)]
    pub provider: Cow<'a, str>,
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub task_type: Cow<'a, str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nano_usd: Option<i64>,
    pub estimated_cost_nano_usd: Option<i64>,
    #[serde(borrow)]
    pub cost_status: Cow<'a, str>,
    pub latency_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    pub status_code: Option<u16>,
    #[serde(deserialize_with = "flag")]
    pub success: bool,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow)]
    pub error_type: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "flag")]
    pub stream: bool,
    #[serde(borrow)]
    pub provider_request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub metadata: &'a RawValue,
}

/// `created_at` travels as microseconds since the epoch.
fn micros<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let micros = i64::deserialize(deserializer)?;
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| serde::de::Error::custom(format!("created_at out of range: {micros}")))
}

/// SQLite's booleans are 0 or 1.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match i64::deserialize(deserializer)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(serde::de::Error::custom(format!(
            "expected 0 or 1, found {other}"
        ))),
    }
}

/// The page's records in column order as one JSON array, how many, and the
/// last one's position as `created_at` (20 digits) and `request_id` (hex):
/// one pass, no sort. Binary ids travel as hex (SQLite's `hex(NULL)` is the
/// empty string). The aggregate's order is not guaranteed, so the reader
/// sorts the page (it comes in order in practice, and checking costs
/// nothing); records are never older than the year 2000, so the digits
/// order as the numbers do.
const SQLITE_ROWS: &str = "SELECT json_group_array(json_array(hex(request_id), \
     nullif(hex(parent_request_id), ''), created_at, org_id, user_id, \
     nullif(hex(api_key_id), ''), provider, model, \
     task_type, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, \
     cost_nano_usd, estimated_cost_nano_usd, cost_status, latency_ms, time_to_first_token_ms, \
     status_code, success, status, error_type, stream, provider_request_id, json(metadata))), \
     count(*), max(printf('%020d', created_at) || hex(request_id)) FROM (";

/// The columns [`export_row`] reads, by position.
const POSTGRES_COLUMNS: &str = "SELECT request_id, parent_request_id, created_at, org_id, \
     user_id, api_key_id, provider, model, task_type, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, cost_nano_usd, estimated_cost_nano_usd, cost_status, \
     latency_ms, time_to_first_token_ms, status_code, success, status, error_type, stream, \
     provider_request_id, metadata FROM ai_provider_usage WHERE TRUE";

/// [`SQLITE_ROWS`] over the records after `cursor` (and up to `until`,
/// inclusive) that match `filter`.
fn sqlite_query(
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    until: Option<Cursor>,
    limit: u32,
) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(SQLITE_ROWS);
    query.push("SELECT * FROM ai_provider_usage WHERE TRUE");
    push_sqlite_bounds(&mut query, filter, cursor, until);
    query
        .push(" ORDER BY created_at, request_id LIMIT ")
        .push_bind(i64::from(limit))
        .push(")");
    query
}

/// The filter and the position bounds. A bound on the position makes the
/// filter's bound on that side redundant, and SQLite enters the index by
/// whichever it is given first, so those are left out (with the start
/// bound in, every page scanned from the start: quadratic in the range).
fn push_sqlite_bounds(
    query: &mut QueryBuilder<Sqlite>,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    until: Option<Cursor>,
) {
    let mut filter = sqlite::behind_cursor(filter, cursor, Order::OldestFirst);
    if until.is_some() {
        filter.end = None;
    }
    sqlite::push_record_filter(query, &filter);
    if let Some(cursor) = cursor {
        query
            .push(" AND (created_at, request_id) > (")
            .push_bind(cursor.created_at.timestamp_micros())
            .push(", ")
            .push_bind(cursor.request_id)
            .push(")");
    }
    if let Some(until) = until {
        query
            .push(" AND (created_at, request_id) <= (")
            .push_bind(until.created_at.timestamp_micros())
            .push(", ")
            .push_bind(until.request_id)
            .push(")");
    }
}

/// The position of the `offset`-th record after `cursor` (1 is the next
/// one), if there are that many.
pub async fn boundary_sqlite(
    reader: &SqlitePool,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    offset: u32,
) -> Result<Option<Cursor>, StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT created_at, request_id FROM ai_provider_usage WHERE TRUE",
    );
    push_sqlite_bounds(&mut query, filter, cursor, None);
    query
        .push(" ORDER BY created_at, request_id LIMIT 1 OFFSET ")
        .push_bind(i64::from(offset.saturating_sub(1)));
    let row: Option<(i64, Uuid)> = query.build_query_as().fetch_optional(reader).await?;
    row.map(|(micros, request_id)| {
        DateTime::from_timestamp_micros(micros)
            .map(|created_at| Cursor {
                created_at,
                request_id,
            })
            .ok_or_else(|| StoreError::Corrupt(format!("created_at out of range: {micros}")))
    })
    .transpose()
}

/// The same on PostgreSQL, in the caller's scoped transaction.
pub async fn boundary_postgres(
    connection: &mut sqlx::PgConnection,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    offset: u32,
) -> Result<Option<Cursor>, StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT created_at, request_id FROM ai_provider_usage WHERE TRUE",
    );
    push_postgres_bounds(&mut query, filter, cursor, None);
    query
        .push(" ORDER BY created_at, request_id LIMIT 1 OFFSET ")
        .push_bind(i64::from(offset.saturating_sub(1)));
    let row: Option<(DateTime<Utc>, Uuid)> =
        query.build_query_as().fetch_optional(connection).await?;
    Ok(row.map(|(created_at, request_id)| Cursor {
        created_at,
        request_id,
    }))
}

fn push_postgres_bounds(
    query: &mut QueryBuilder<Postgres>,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    until: Option<Cursor>,
) {
    postgres::push_record_filter(query, filter);
    if let Some(cursor) = cursor {
        query
            .push(" AND (created_at, request_id) > (")
            .push_bind(cursor.created_at)
            .push(", ")
            .push_bind(cursor.request_id)
            .push(")");
    }
    if let Some(until) = until {
        query
            .push(" AND (created_at, request_id) <= (")
            .push_bind(until.created_at)
            .push(", ")
            .push_bind(until.request_id)
            .push(")");
    }
}

/// Reads [`SQLITE_ROWS`]'s position of the last record.
fn sqlite_position(key: &str) -> Option<Cursor> {
    let (micros, id) = (key.get(..20)?, key.get(20..)?);
    Some(Cursor {
        created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        request_id: Uuid::try_parse(id).ok()?,
    })
}

pub async fn page_sqlite(
    reader: &SqlitePool,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    until: Option<Cursor>,
    limit: u32,
) -> Result<ExportBatch, StoreError> {
    let (json, count, last): (Option<String>, i64, Option<String>) =
        sqlite_query(filter, cursor, until, limit)
            .build_query_as()
            .fetch_one(reader)
            .await?;
    let count = u32::try_from(count)
        .map_err(|_| StoreError::Corrupt(format!("export page of {count} records")))?;
    let last = match last {
        Some(key) => Some(
            sqlite_position(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("export position {key:?}")))?,
        ),
        None => None,
    };
    Ok(ExportBatch {
        body: Body::Json(json.unwrap_or_else(|| "[]".to_owned())),
        count,
        next: if count == limit { last } else { None },
    })
}

pub async fn page_postgres(
    connection: &mut sqlx::PgConnection,
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    until: Option<Cursor>,
    limit: u32,
) -> Result<ExportBatch, StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(POSTGRES_COLUMNS);
    push_postgres_bounds(&mut query, filter, cursor, until);
    query
        .push(" ORDER BY created_at, request_id LIMIT ")
        .push_bind(i64::from(limit));
    let rows = query.build().fetch_all(connection).await?;
    let count = u32::try_from(rows.len())
        .map_err(|_| StoreError::Corrupt(format!("export page of {} records", rows.len())))?;
    let next = match rows.last() {
        Some(last) if count == limit => Some(Cursor {
            created_at: last.try_get(2)?,
            request_id: last.try_get(0)?,
        }),
        _ => None,
    };
    Ok(ExportBatch {
        body: Body::Rows(rows),
        count,
        next,
    })
}
