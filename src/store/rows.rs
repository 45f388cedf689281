//! What both backends share: column lists, row shapes for the columns whose
//! types agree, and conversions from stored rows to domain records.

use std::collections::HashSet;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use sqlx::QueryBuilder;

use super::{Cursor, MigrationReport, RecordFilter, RecordPage, StoreError};
use crate::money::NanoUsd;
use crate::rollup::{LATENCY_BUCKETS, RollupDelta, RollupKey};
use crate::usage::{TokenCounts, UsageRecord};

pub const INSERT_USAGE_PREFIX: &str = "INSERT INTO ai_provider_usage (request_id, parent_request_id, \
     created_at, org_id, user_id, api_key_id, provider, model, task_type, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, cost_nano_usd, estimated_cost_nano_usd, cost_status, \
     latency_ms, time_to_first_token_ms, status_code, success, status, error_type, stream, \
     provider_request_id, metadata) ";

pub const INSERT_ROLLUP_PREFIX: &str = "INSERT INTO ai_model_performance (day, org_id, provider, \
     model, task_type, requests, errors, unpriced_requests, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, cost_nano_usd, latency_ms_sum, ttft_ms_sum, ttft_count, \
     latency_histogram, updated_at) ";

/// Ends in a WHERE clause that filters append to with ` AND …`.
pub const SELECT_USAGE: &str = "SELECT request_id, parent_request_id, created_at, org_id, user_id, \
     api_key_id, provider, model, task_type, input_tokens, output_tokens, cached_input_tokens, \
     reasoning_tokens, cost_nano_usd, estimated_cost_nano_usd, cost_status, latency_ms, \
     time_to_first_token_ms, status_code, success, status, error_type, stream, provider_request_id, \
     metadata FROM ai_provider_usage WHERE TRUE";

pub const SELECT_ROLLUP: &str = "SELECT day, org_id, provider, model, task_type, requests, errors, \
     unpriced_requests, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, \
     cost_nano_usd, latency_ms_sum, ttft_ms_sum, ttft_count, latency_histogram \
     FROM ai_model_performance WHERE TRUE";

/// Usage columns that both backends store with the same types.
#[derive(sqlx::FromRow)]
pub struct CommonUsageColumns {
    pub org_id: String,
    pub user_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub task_type: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano_usd: Option<i64>,
    pub estimated_cost_nano_usd: Option<i64>,
    pub cost_status: String,
    pub latency_ms: i64,
    pub time_to_first_token_ms: Option<i64>,
    pub status_code: Option<i32>,
    pub status: String,
    pub error_type: Option<String>,
    pub stream: bool,
    pub provider_request_id: Option<String>,
}

/// A usage row with backend-specific columns already decoded.
pub struct UsageRow {
    pub request_id: Uuid,
    pub parent_request_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub api_key_id: Option<Uuid>,
    pub metadata: serde_json::Value,
    pub common: CommonUsageColumns,
}

impl UsageRow {
    pub fn into_record(self) -> Result<UsageRecord, StoreError> {
        let common = self.common;
        Ok(UsageRecord {
            request_id: self.request_id,
            parent_request_id: self.parent_request_id,
            created_at: self.created_at,
            org_id: common.org_id,
            user_id: common.user_id,
            api_key_id: self.api_key_id,
            provider: parse_name(&common.provider)?,
            model: common.model,
            task_type: parse_name(&common.task_type)?,
            tokens: TokenCounts {
                input: unsigned(common.input_tokens)?,
                output: unsigned(common.output_tokens)?,
                cached_input: unsigned(common.cached_input_tokens)?,
                reasoning: unsigned(common.reasoning_tokens)?,
            },
            cost: common.cost_nano_usd.map(NanoUsd::from_nanos),
            estimated_cost: common.estimated_cost_nano_usd.map(NanoUsd::from_nanos),
            cost_status: parse_name(&common.cost_status)?,
            latency_ms: unsigned(common.latency_ms)?,
            time_to_first_token_ms: common.time_to_first_token_ms.map(unsigned).transpose()?,
            status_code: common
                .status_code
                .map(|code| {
                    u16::try_from(code)
                        .map_err(|_| StoreError::Corrupt(format!("status code {code}")))
                })
                .transpose()?,
            status: parse_name(&common.status)?,
            error_type: common.error_type,
            stream: common.stream,
            provider_request_id: common.provider_request_id,
            metadata: self.metadata,
        })
    }
}

/// Rollup columns that both backends store with the same types.
#[derive(sqlx::FromRow)]
pub struct CommonRollupColumns {
    pub org_id: String,
    pub provider: String,
    pub model: String,
    pub task_type: String,
    pub requests: i64,
    pub errors: i64,
    pub unpriced_requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano_usd: i64,
    pub latency_ms_sum: i64,
    pub ttft_ms_sum: i64,
    pub ttft_count: i64,
}

impl CommonRollupColumns {
    pub fn into_pair(
        self,
        day: NaiveDate,
        latency_histogram: [i64; LATENCY_BUCKETS],
    ) -> Result<(RollupKey, RollupDelta), StoreError> {
        let key = RollupKey {
            day,
            org_id: self.org_id,
            provider: parse_name(&self.provider)?,
            model: self.model,
            task_type: parse_name(&self.task_type)?,
        };
        let delta = RollupDelta {
            requests: self.requests,
            errors: self.errors,
            unpriced_requests: self.unpriced_requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost_nano_usd: self.cost_nano_usd,
            latency_ms_sum: self.latency_ms_sum,
            ttft_ms_sum: self.ttft_ms_sum,
            ttft_count: self.ttft_count,
            latency_histogram,
        };
        Ok((key, delta))
    }
}

/// Provider, model, task type, org and scope filters, the same on both
/// backends and on every table of usage.
pub fn push_dimension_filter<DB>(
    query: &mut QueryBuilder<DB>,
    filter: &RecordFilter,
    tenancy: super::scope::Tenancy,
) where
    DB: sqlx::Database,
    for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
{
    if let Some(provider) = filter.provider {
        query
            .push(" AND provider = ")
            .push_bind(provider.as_str().to_owned());
    }
    if let Some(model) = &filter.model {
        query.push(" AND model = ").push_bind(model.clone());
    }
    if let Some(task_type) = filter.task_type {
        query
            .push(" AND task_type = ")
            .push_bind(task_type.as_str().to_owned());
    }
    if let Some(org_id) = &filter.org_id {
        query.push(" AND org_id = ").push_bind(org_id.clone());
    }
    super::scope::push(query, &filter.scope, tenancy);
}

/// The first record for each `request_id`, in batch order.
pub fn unique_by_request_id(records: &[UsageRecord]) -> Vec<&UsageRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    records
        .iter()
        .filter(|record| seen.insert(record.request_id))
        .collect()
}

/// A page from `limit + 1` rows: the extra row only says there is more.
pub fn page(mut records: Vec<UsageRecord>, limit: u32) -> RecordPage {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if records.len() > limit {
        records.truncate(limit);
        records.last().map(|last| Cursor {
            created_at: last.created_at,
            request_id: last.request_id,
        })
    } else {
        None
    };
    RecordPage { records, next }
}

/// Counts are checked to fit `i64` on the way in; this only converts.
pub fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn histogram_json(histogram: &[i64; LATENCY_BUCKETS]) -> String {
    serde_json::Value::from(histogram.to_vec()).to_string()
}

pub fn parse_histogram_json(text: &str) -> Result<[i64; LATENCY_BUCKETS], StoreError> {
    let values: Vec<i64> = serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("latency histogram: {error}")))?;
    histogram_from_vec(values)
}

pub fn histogram_from_vec(values: Vec<i64>) -> Result<[i64; LATENCY_BUCKETS], StoreError> {
    <[i64; LATENCY_BUCKETS]>::try_from(values).map_err(|values| {
        StoreError::Corrupt(format!(
            "latency histogram has {} buckets, expected {LATENCY_BUCKETS}",
            values.len()
        ))
    })
}

pub fn parse_name<T: FromStr>(text: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| StoreError::Corrupt(error.to_string()))
}

fn unsigned(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative count {value}")))
}

/// Applies pending migrations and compares the tables and applied versions
/// before and after. `list_tables` is the backend's catalog query.
pub async fn migrate<DB>(
    pool: &sqlx::Pool<DB>,
    migrator: &sqlx::migrate::Migrator,
    list_tables: &'static str,
) -> Result<MigrationReport, StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'a> DB::Arguments: sqlx::IntoArguments<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let tables_before: Vec<String> = sqlx::query_scalar(list_tables).fetch_all(pool).await?;
    let applied_before: HashSet<i64> = if tables_before
        .iter()
        .any(|table| table == "_sqlx_migrations")
    {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    migrator.run(pool).await?;
    let tables_after: Vec<String> = sqlx::query_scalar(list_tables).fetch_all(pool).await?;
    let applied = migrator
        .iter()
        .filter(|migration| !applied_before.contains(&migration.version))
        .map(|migration| (migration.version, migration.description.to_string()))
        .collect();
    let created_tables = tables_after
        .into_iter()
        .filter(|table| !tables_before.contains(table) && table != "_sqlx_migrations")
        .collect();
    Ok(MigrationReport {
        applied,
        created_tables,
        already_applied: applied_before.len(),
    })
}

/// Multi-row statements are sent in these row counts only (on SQLite, and
/// for the analytics rollups on both backends), so that sqlx's
/// prepared-statement cache holds a dozen statements rather than one per
/// batch size seen (a 1,000-row INSERT prepares to about 1 MB; caching one
/// per distinct size held 68 MB under gateway traffic).
const STATEMENT_SIZES: [usize; 11] = [1_000, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `rows` into consecutive runs whose lengths are in
/// [`STATEMENT_SIZES`], largest first: at most ten statements for a
/// remainder under 1,000.
pub fn statement_runs<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = STATEMENT_SIZES
            .into_iter()
            .find(|size| *size <= rows.len())?;
        let (run, rest) = rows.split_at(size);
        rows = rest;
        Some(run)
    })
}
