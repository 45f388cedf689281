//! The SQLite backend: one writer connection (so no request ever meets
//! "database is locked"), WAL so readers never wait for it, a busy timeout,
//! and `BEGIN IMMEDIATE` for every write transaction.
//!
//! Times are INTEGER microseconds since the epoch, ids TEXT, JSON TEXT.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::budgets;
use super::rows::{self, UsageRow, statement_runs};
use super::scope;
use super::{BatchOutcome, Cursor, MigrationReport, Order, RecordFilter, RecordPage, StoreError};
use crate::alerts;
use crate::analytics::rollups as analytics;
use crate::budget;
use crate::config::DatabaseConfig;
use crate::rollup::{self, RollupDelta, RollupKey};
use crate::usage::UsageRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SQLITE_TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name";

/// Rows per INSERT statement: 25 columns × 1,000 stays under SQLite's
/// 32,766-variable limit.
const ROWS_PER_STATEMENT: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: url.to_owned(),
            source,
        };
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(timeout)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_with(options.clone())
            .await
            .map_err(connect_error)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(timeout)
                .connect_with(options.read_only(true))
                .await
                .map_err(connect_error)?
        };
        Ok(SqliteStore { writer, reader })
    }

    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        rows::migrate(&self.writer, &MIGRATOR, SQLITE_TABLES).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub async fn insert_usage(
        &self,
        records: &[UsageRecord],
        timezone: Tz,
    ) -> Result<BatchOutcome, StoreError> {
        let unique = rows::unique_by_request_id(records);
        let mut transaction = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut inserted: Vec<&UsageRecord> = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            // Usually every record is new and one INSERT is all it takes. When
            // some were stored before, undo the chunk, find which (nobody else
            // writes inside BEGIN IMMEDIATE), and insert only the others, so
            // the rollup below adds exactly the rows inserted.
            sqlx::query("SAVEPOINT usage_chunk")
                .execute(&mut *transaction)
                .await?;
            if insert_chunk(&mut transaction, chunk).await? == chunk.len() as u64 {
                sqlx::query("RELEASE usage_chunk")
                    .execute(&mut *transaction)
                    .await?;
                inserted.extend_from_slice(chunk);
                continue;
            }
            sqlx::query("ROLLBACK TO usage_chunk; RELEASE usage_chunk")
                .execute(&mut *transaction)
                .await?;
            let existing = existing_ids(&mut transaction, chunk).await?;
            let fresh: Vec<&UsageRecord> = chunk
                .iter()
                .copied()
                .filter(|record| !existing.contains(&record.request_id))
                .collect();
            if !fresh.is_empty() {
                let written = insert_chunk(&mut transaction, &fresh).await?;
                if written != fresh.len() as u64 {
                    return Err(StoreError::Inconsistent(format!(
                        "expected to insert {} usage rows, inserted {written}",
                        fresh.len()
                    )));
                }
            }
            inserted.extend(fresh);
        }
        let deltas: Vec<_> = rollup::rollup(inserted.iter().copied(), timezone)
            .into_iter()
            .collect();
        let spend = budget::spend::spend_deltas(inserted.iter().copied());
        for run in statement_runs(&spend) {
            budgets::add_spend_sqlite(&mut transaction, run).await?;
        }
        let minutes = alerts::minutes::minute_deltas(inserted.iter().copied());
        for run in statement_runs(&minutes) {
            super::alerts::add_minutes_sqlite(&mut transaction, run).await?;
        }
        let usage = analytics::usage_deltas(inserted.iter().copied(), timezone);
        super::analytics::add_usage_sqlite(&mut transaction, &usage).await?;
        let now = Utc::now().timestamp_micros();
        for run in statement_runs(&deltas) {
            let mut upsert = QueryBuilder::<Sqlite>::new(rows::INSERT_ROLLUP_PREFIX);
            upsert.push_values(run, |mut row, (key, delta)| {
                row.push_bind(key.day.to_string())
                    .push_bind(key.org_id.clone())
                    .push_bind(key.provider.as_str())
                    .push_bind(key.model.clone())
                    .push_bind(key.task_type.as_str())
                    .push_bind(delta.requests)
                    .push_bind(delta.errors)
                    .push_bind(delta.unpriced_requests)
                    .push_bind(delta.input_tokens)
                    .push_bind(delta.output_tokens)
                    .push_bind(delta.cached_input_tokens)
                    .push_bind(delta.reasoning_tokens)
                    .push_bind(delta.cost_nano_usd)
                    .push_bind(delta.latency_ms_sum)
                    .push_bind(delta.ttft_ms_sum)
                    .push_bind(delta.ttft_count)
                    .push_bind(rows::histogram_json(&delta.latency_histogram))
                    .push_bind(now);
            });
            upsert.push(ROLLUP_CONFLICT);
            upsert.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(BatchOutcome {
            inserted: inserted.len(),
            duplicates: records.len() - inserted.len(),
            inserted_ids: inserted.iter().map(|record| record.request_id).collect(),
        })
    }

    pub async fn usage_records(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        limit: u32,
        order: Order,
    ) -> Result<RecordPage, StoreError> {
        let (compare, direction) = match order {
            Order::NewestFirst => (" < (", " DESC"),
            Order::OldestFirst => (" > (", " ASC"),
        };
        let mut query = QueryBuilder::<Sqlite>::new(rows::SELECT_USAGE);
        push_record_filter(&mut query, &behind_cursor(filter, cursor, order));
        if let Some(cursor) = cursor {
            query
                .push(" AND (created_at, request_id)")
                .push(compare)
                .push_bind(cursor.created_at.timestamp_micros())
                .push(", ")
                .push_bind(cursor.request_id)
                .push(")");
        }
        query
            .push(" ORDER BY created_at")
            .push(direction)
            .push(", request_id")
            .push(direction)
            .push(" LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<SqliteUsageRow> = query.build_query_as().fetch_all(&self.reader).await?;
        let records = rows
            .into_iter()
            .map(|row| row.into_usage_row().and_then(UsageRow::into_record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows::page(records, limit))
    }

    pub async fn rollups(
        &self,
        filter: &RecordFilter,
        timezone: Tz,
    ) -> Result<Vec<(RollupKey, RollupDelta)>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(rows::SELECT_ROLLUP);
        let (first, end) = rollup::day_range(filter.start, filter.end, timezone);
        if let Some(first) = first {
            query.push(" AND day >= ").push_bind(first.to_string());
        }
        if let Some(end) = end {
            query.push(" AND day < ").push_bind(end.to_string());
        }
        rows::push_dimension_filter(&mut query, filter, scope::ORG_ROLLUP);
        query.push(" ORDER BY day, org_id, provider, model, task_type");
        let rows: Vec<SqliteRollupRow> = query.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|row| {
                let day = NaiveDate::from_str(&row.day)
                    .map_err(|error| StoreError::Corrupt(format!("rollup day: {error}")))?;
                let histogram = rows::parse_histogram_json(&row.latency_histogram)?;
                row.rollup.into_pair(day, histogram)
            })
            .collect()
    }
}

/// The filter for the records past `cursor` in `order`: without the time
/// bound the cursor already implies (the cursor is a record that matched).
/// With both `created_at >= start` and `(created_at, request_id) > cursor`,
/// SQLite walks the index from `start` and filters up to the cursor, so each
/// page of a long listing or export cost more than the one before.
pub(super) fn behind_cursor(
    filter: &RecordFilter,
    cursor: Option<Cursor>,
    order: Order,
) -> RecordFilter {
    let mut filter = filter.clone();
    if cursor.is_some() {
        match order {
            Order::OldestFirst => filter.start = None,
            Order::NewestFirst => filter.end = None,
        }
    }
    filter
}

/// The record listing's filters on `ai_provider_usage`.
pub(super) fn push_record_filter(query: &mut QueryBuilder<Sqlite>, filter: &RecordFilter) {
    if let Some(start) = filter.start {
        query
            .push(" AND created_at >= ")
            .push_bind(start.timestamp_micros());
    }
    if let Some(end) = filter.end {
        query
            .push(" AND created_at < ")
            .push_bind(end.timestamp_micros());
    }
    rows::push_dimension_filter(query, filter, scope::USAGE);
    if let Some(user_id) = &filter.user_id {
        query.push(" AND user_id = ").push_bind(user_id.clone());
    }
    if let Some(tag) = &filter.tag {
        query
            .push(" AND EXISTS (SELECT 1 FROM json_each(metadata, '$.tags') WHERE value = ")
            .push_bind(tag.clone())
            .push(")");
    }
}

type Transaction = sqlx::Transaction<'static, Sqlite>;

/// Inserts rows, skipping ids already stored; returns how many it inserted.
async fn insert_chunk(
    transaction: &mut Transaction,
    chunk: &[&UsageRecord],
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for run in statement_runs(chunk) {
        let mut insert = QueryBuilder::<Sqlite>::new(rows::INSERT_USAGE_PREFIX);
        insert.push_values(run, |mut row, record| {
            row.push_bind(record.request_id)
                .push_bind(record.parent_request_id)
                .push_bind(record.created_at.timestamp_micros())
                .push_bind(record.org_id.as_str())
                .push_bind(record.user_id.as_deref())
                .push_bind(record.api_key_id)
                .push_bind(record.provider.as_str())
                .push_bind(record.model.as_str())
                .push_bind(record.task_type.as_str())
                .push_bind(rows::count(record.tokens.input))
                .push_bind(rows::count(record.tokens.output))
                .push_bind(rows::count(record.tokens.cached_input))
                .push_bind(rows::count(record.tokens.reasoning))
                .push_bind(record.cost.map(|cost| cost.nanos()))
                .push_bind(record.estimated_cost.map(|cost| cost.nanos()))
                .push_bind(record.cost_status.as_str())
                .push_bind(rows::count(record.latency_ms))
                .push_bind(record.time_to_first_token_ms.map(rows::count))
                .push_bind(record.status_code.map(i64::from))
                .push_bind(record.success())
                .push_bind(record.status.as_str())
                .push_bind(record.error_type.as_deref())
                .push_bind(record.stream)
                .push_bind(record.provider_request_id.as_deref())
                .push_bind(record.metadata.to_string());
        });
        insert.push(" ON CONFLICT (request_id) DO NOTHING");
        inserted += insert
            .build()
            .execute(&mut **transaction)
            .await?
            .rows_affected();
    }
    Ok(inserted)
}

/// Which of these records' ids are already stored.
async fn existing_ids(
    transaction: &mut Transaction,
    chunk: &[&UsageRecord],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut lookup = QueryBuilder::<Sqlite>::new(
        "SELECT request_id FROM ai_provider_usage WHERE request_id IN (",
    );
    let mut ids = lookup.separated(", ");
    for record in chunk {
        ids.push_bind(record.request_id);
    }
    lookup.push(")");
    let found: Vec<Uuid> = lookup
        .build_query_scalar()
        .fetch_all(&mut **transaction)
        .await?;
    Ok(found.into_iter().collect())
}

/// Adds each delta to its rollup row. The histogram is a JSON array added
/// element-wise, in key order.
const ROLLUP_CONFLICT: &str = " ON CONFLICT (day, org_id, provider, model, task_type) DO UPDATE SET \
     requests = requests + excluded.requests, \
     errors = errors + excluded.errors, \
     unpriced_requests = unpriced_requests + excluded.unpriced_requests, \
     input_tokens = input_tokens + excluded.input_tokens, \
     output_tokens = output_tokens + excluded.output_tokens, \
     cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens, \
     reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
     cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd, \
     latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
     ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, \
     ttft_count = ttft_count + excluded.ttft_count, \
     latency_histogram = (SELECT json_group_array(CAST(old.value AS INTEGER) + CAST(new.value AS INTEGER) ORDER BY old.key) \
         FROM json_each(ai_model_performance.latency_histogram) AS old \
         JOIN json_each(excluded.latency_histogram) AS new ON old.key = new.key), \
     updated_at = excluded.updated_at";

/// A usage row as SQLite stores it.
#[derive(sqlx::FromRow)]
struct SqliteUsageRow {
    request_id: Uuid,
    parent_request_id: Option<Uuid>,
    created_at: i64,
    api_key_id: Option<Uuid>,
    metadata: String,
    #[sqlx(flatten)]
    common: rows::CommonUsageColumns,
}

impl SqliteUsageRow {
    fn into_usage_row(self) -> Result<UsageRow, StoreError> {
        Ok(UsageRow {
            request_id: self.request_id,
            parent_request_id: self.parent_request_id,
            created_at: DateTime::<Utc>::from_timestamp_micros(self.created_at)
                .ok_or_else(|| StoreError::Corrupt(format!("timestamp {}", self.created_at)))?,
            api_key_id: self.api_key_id,
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|error| StoreError::Corrupt(format!("metadata: {error}")))?,
            common: self.common,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SqliteRollupRow {
    day: String,
    latency_histogram: String,
    #[sqlx(flatten)]
    rollup: rows::CommonRollupColumns,
}
