//! The PostgreSQL backend, for several gateway instances sharing one
//! database. Times are TIMESTAMPTZ, ids UUID, metadata JSONB, the latency
//! histogram a BIGINT[] added element-wise inside the upsert, so concurrent
//! writers never lose each other's counts.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::budgets;
use super::rows::{self, UsageRow};
use super::scope::{self, Scope};
use super::{BatchOutcome, Cursor, MigrationReport, Order, RecordFilter, RecordPage, StoreError};
use crate::alerts;
use crate::analytics::rollups as analytics;
use crate::budget;
use crate::config::DatabaseConfig;
use crate::rollup::{self, RollupDelta, RollupKey};
use crate::usage::UsageRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const POSTGRES_TABLES: &str = "SELECT tablename::text FROM pg_tables \
     WHERE schemaname = current_schema() ORDER BY tablename";

/// Rows per INSERT statement (arrays this long are sent as one parameter each).
const ROWS_PER_STATEMENT: usize = 5_000;

/// The `work_mem` each connection asks for (per sort or hash, per query).
const ANALYTICS_WORK_MEM: &str = "32MB";

/// The role the server works as after migrating: it owns nothing and
/// cannot bypass row-level security (migration 0007 makes it).
const APP_ROLE_SQL: &str = "SET ROLE tollgate_app";

/// The server's own background work (recorder, evaluator, budgets): every
/// row, through the policies' `system` case.
const SYSTEM_SETUP_SQL: &str =
    "SET ROLE tollgate_app; SELECT set_config('tollgate.role', 'system', false)";

/// A caller's settings, for one transaction.
const CALLER_SETTINGS_SQL: &str = "SELECT set_config('tollgate.role', $1, true), \
     set_config('tollgate.org', $2, true), set_config('tollgate.user', $3, true)";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// The server's own work: `tollgate_app` with `tollgate.role = system`.
    pub(super) pool: PgPool,
    /// Callers' work: `tollgate_app` with no settings of its own, so a
    /// query sees nothing outside a [`PostgresStore::scoped`] transaction.
    tenant: PgPool,
    /// How to connect as the URL's own user, who owns the tables and runs
    /// migrations.
    owner: std::sync::Arc<PgConnectOptions>,
}

impl PostgresStore {
    pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: super::redact_url(url),
            source,
        };
        let mut options = PgConnectOptions::from_str(url).map_err(connect_error)?;
        // Analytics group ~13,000 rollup rows of 40 columns into a few hundred;
        // at PostgreSQL's default 4 MB the planner expects the hash table not
        // to fit and sorts instead, in parallel workers: 77-89 ms against
        // 36-44 ms hashed (docs/benchmarks.md). A `work_mem` in the URL's
        // `options` wins.
        if !options
            .get_options()
            .is_some_and(|given| given.contains("work_mem"))
        {
            options = options.options([("work_mem", ANALYTICS_WORK_MEM)]);
        }
        // One direct connection first: a pool only says "timed out", while
        // this says why (refused, unknown host, bad password).
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        let probe = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_error(sqlx::Error::PoolTimedOut))?
            .map_err(connect_error)?;
        probe.close().await.map_err(connect_error)?;
        // Both pools connect lazily, after `migrate` has made the role.
        let pool_as = |setup: &'static str| {
            PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(timeout)
                .after_connect(move |connection, _| {
                    Box::pin(
                        async move { sqlx::raw_sql(setup).execute(connection).await.map(drop) },
                    )
                })
                .connect_lazy_with(options.clone())
        };
        let pool = pool_as(SYSTEM_SETUP_SQL);
        let tenant = pool_as(APP_ROLE_SQL);
        Ok(PostgresStore {
            pool,
            tenant,
            owner: std::sync::Arc::new(options),
        })
    }

    /// Migrates as the URL's own user (the tables' owner), on a connection
    /// of its own.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let owner = PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*self.owner).clone())
            .await?;
        let report = rows::migrate(&owner, &MIGRATOR, POSTGRES_TABLES).await;
        owner.close().await;
        report
    }

    /// Refreshes the planner's statistics (`ANALYZE`, as the tables' owner).
    /// Autovacuum does this in the background; a bulk fill on a server
    /// without it leaves plans made for an empty table (measured: 2.7 s
    /// instead of 4 ms for a member's first page of records at 10M).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let owner = PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*self.owner).clone())
            .await?;
        let result = sqlx::query("ANALYZE").execute(&owner).await;
        owner.close().await;
        result?;
        Ok(())
    }

    /// A transaction that runs as the caller: on the callers' pool with the
    /// settings PostgreSQL's policies read, or on the server's own pool for
    /// a scope that sees everything.
    pub(super) async fn scoped(
        &self,
        scope: &Scope,
    ) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        if *scope == Scope::All {
            return Ok(self.pool.begin().await?);
        }
        let mut transaction = self.tenant.begin().await?;
        let (role, org_id, user_id) = scope.settings();
        sqlx::query(CALLER_SETTINGS_SQL)
            .bind(role)
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        Ok(transaction)
    }

    pub async fn working_roles(&self) -> Result<(String, String), StoreError> {
        let system = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&self.pool)
            .await?;
        let tenant = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&self.tenant)
            .await?;
        Ok((system, tenant))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.tenant.close().await;
    }

    pub async fn insert_usage(
        &self,
        records: &[UsageRecord],
        timezone: Tz,
    ) -> Result<BatchOutcome, StoreError> {
        let unique = rows::unique_by_request_id(records);
        let mut transaction = self.pool.begin().await?;
        let mut inserted_ids: HashSet<Uuid> = HashSet::with_capacity(unique.len());
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            let columns = UsageColumns::from_records(chunk);
            let returned: Vec<Uuid> = sqlx::query_scalar(INSERT_USAGE_UNNEST)
                .bind(columns.request_id)
                .bind(columns.parent_request_id)
                .bind(columns.created_at)
                .bind(columns.org_id)
                .bind(columns.user_id)
                .bind(columns.api_key_id)
                .bind(columns.provider)
                .bind(columns.model)
                .bind(columns.task_type)
                .bind(columns.input_tokens)
                .bind(columns.output_tokens)
                .bind(columns.cached_input_tokens)
                .bind(columns.reasoning_tokens)
                .bind(columns.cost_nano_usd)
                .bind(columns.estimated_cost_nano_usd)
                .bind(columns.cost_status)
                .bind(columns.latency_ms)
                .bind(columns.time_to_first_token_ms)
                .bind(columns.status_code)
                .bind(columns.success)
                .bind(columns.status)
                .bind(columns.error_type)
                .bind(columns.stream)
                .bind(columns.provider_request_id)
                .bind(columns.metadata)
                .fetch_all(&mut *transaction)
                .await?;
            inserted_ids.extend(returned);
        }
        let inserted: Vec<&UsageRecord> = unique
            .iter()
            .copied()
            .filter(|record| inserted_ids.contains(&record.request_id))
            .collect();
        let spend = budget::spend::spend_deltas(inserted.iter().copied());
        budgets::add_spend_postgres(&mut transaction, &spend).await?;
        let minutes = alerts::minutes::minute_deltas(inserted.iter().copied());
        super::alerts::add_minutes_postgres(&mut transaction, &minutes).await?;
        let usage = analytics::usage_deltas(inserted.iter().copied(), timezone);
        super::analytics::add_usage_postgres(&mut transaction, &usage).await?;
        let deltas = rollup::rollup(inserted.iter().copied(), timezone);
        if !deltas.is_empty() {
            let now = Utc::now();
            let mut upsert = QueryBuilder::<Postgres>::new(rows::INSERT_ROLLUP_PREFIX);
            upsert.push_values(deltas, |mut row, (key, delta)| {
                row.push_bind(key.day)
                    .push_bind(key.org_id)
                    .push_bind(key.provider.as_str())
                    .push_bind(key.model)
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
                    .push_bind(delta.latency_histogram.to_vec())
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
        let mut query = QueryBuilder::<Postgres>::new(rows::SELECT_USAGE);
        push_record_filter(&mut query, filter);
        if let Some(cursor) = cursor {
            query
                .push(" AND (created_at, request_id)")
                .push(compare)
                .push_bind(cursor.created_at)
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
        let mut transaction = self.scoped(&filter.scope).await?;
        let rows: Vec<PostgresUsageRow> =
            query.build_query_as().fetch_all(&mut *transaction).await?;
        transaction.commit().await?;
        let records = rows
            .into_iter()
            .map(|row| row.into_usage_row().into_record())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows::page(records, limit))
    }

    pub async fn rollups(
        &self,
        filter: &RecordFilter,
        timezone: Tz,
    ) -> Result<Vec<(RollupKey, RollupDelta)>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(rows::SELECT_ROLLUP);
        let (first, end) = rollup::day_range(filter.start, filter.end, timezone);
        if let Some(first) = first {
            query.push(" AND day >= ").push_bind(first);
        }
        if let Some(end) = end {
            query.push(" AND day < ").push_bind(end);
        }
        rows::push_dimension_filter(&mut query, filter, scope::ORG_ROLLUP);
        query.push(" ORDER BY day, org_id, provider, model, task_type");
        let mut transaction = self.scoped(&filter.scope).await?;
        let rows: Vec<PostgresRollupRow> =
            query.build_query_as().fetch_all(&mut *transaction).await?;
        transaction.commit().await?;
        rows.into_iter()
            .map(|row| {
                let histogram = rows::histogram_from_vec(row.latency_histogram)?;
                row.rollup.into_pair(row.day, histogram)
            })
            .collect()
    }
}

/// Inserts a chunk from one array per column: 25 parameters whatever the
/// chunk's size, sent in PostgreSQL's binary format.
const INSERT_USAGE_UNNEST: &str = "INSERT INTO ai_provider_usage (request_id, parent_request_id, \
     created_at, org_id, user_id, api_key_id, provider, model, task_type, input_tokens, output_tokens, \
     cached_input_tokens, reasoning_tokens, cost_nano_usd, estimated_cost_nano_usd, cost_status, \
     latency_ms, time_to_first_token_ms, status_code, success, status, error_type, stream, \
     provider_request_id, metadata) \
     SELECT request_id, parent_request_id, created_at, org_id, user_id, api_key_id, provider, model, \
     task_type, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cost_nano_usd, \
     estimated_cost_nano_usd, cost_status, latency_ms, time_to_first_token_ms, status_code, success, \
     status, error_type, stream, provider_request_id, metadata::jsonb \
     FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::uuid[], \
     $7::text[], $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], \
     $14::int8[], $15::int8[], $16::text[], $17::int8[], $18::int8[], $19::int4[], $20::bool[], \
     $21::text[], $22::text[], $23::bool[], $24::text[], $25::text[]) \
     AS incoming (request_id, parent_request_id, created_at, org_id, user_id, api_key_id, provider, \
     model, task_type, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, \
     cost_nano_usd, estimated_cost_nano_usd, cost_status, latency_ms, time_to_first_token_ms, \
     status_code, success, status, error_type, stream, provider_request_id, metadata) \
     ON CONFLICT (request_id) DO NOTHING RETURNING request_id";

/// Adds each delta to its rollup row atomically; the histogram arrays are
/// zipped and summed in the statement itself.
const ROLLUP_CONFLICT: &str = " ON CONFLICT (day, org_id, provider, model, task_type) DO UPDATE SET \
     requests = ai_model_performance.requests + excluded.requests, \
     errors = ai_model_performance.errors + excluded.errors, \
     unpriced_requests = ai_model_performance.unpriced_requests + excluded.unpriced_requests, \
     input_tokens = ai_model_performance.input_tokens + excluded.input_tokens, \
     output_tokens = ai_model_performance.output_tokens + excluded.output_tokens, \
     cached_input_tokens = ai_model_performance.cached_input_tokens + excluded.cached_input_tokens, \
     reasoning_tokens = ai_model_performance.reasoning_tokens + excluded.reasoning_tokens, \
     cost_nano_usd = ai_model_performance.cost_nano_usd + excluded.cost_nano_usd, \
     latency_ms_sum = ai_model_performance.latency_ms_sum + excluded.latency_ms_sum, \
     ttft_ms_sum = ai_model_performance.ttft_ms_sum + excluded.ttft_ms_sum, \
     ttft_count = ai_model_performance.ttft_count + excluded.ttft_count, \
     latency_histogram = ARRAY(SELECT old + new FROM unnest(ai_model_performance.latency_histogram, \
         excluded.latency_histogram) WITH ORDINALITY AS bucket(old, new, position) ORDER BY position), \
     updated_at = excluded.updated_at";

/// A chunk of records as one vector per column, for `INSERT_USAGE_UNNEST`.
struct UsageColumns {
    request_id: Vec<Uuid>,
    parent_request_id: Vec<Option<Uuid>>,
    created_at: Vec<DateTime<Utc>>,
    org_id: Vec<String>,
    user_id: Vec<Option<String>>,
    api_key_id: Vec<Option<Uuid>>,
    provider: Vec<&'static str>,
    model: Vec<String>,
    task_type: Vec<&'static str>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cached_input_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    cost_nano_usd: Vec<Option<i64>>,
    estimated_cost_nano_usd: Vec<Option<i64>>,
    cost_status: Vec<&'static str>,
    latency_ms: Vec<i64>,
    time_to_first_token_ms: Vec<Option<i64>>,
    status_code: Vec<Option<i32>>,
    success: Vec<bool>,
    status: Vec<&'static str>,
    error_type: Vec<Option<String>>,
    stream: Vec<bool>,
    provider_request_id: Vec<Option<String>>,
    metadata: Vec<String>,
}

impl UsageColumns {
    fn from_records(records: &[&UsageRecord]) -> Self {
        let column = |value: fn(&UsageRecord) -> i64| -> Vec<i64> {
            records.iter().map(|record| value(record)).collect()
        };
        UsageColumns {
            request_id: records.iter().map(|r| r.request_id).collect(),
            parent_request_id: records.iter().map(|r| r.parent_request_id).collect(),
            created_at: records.iter().map(|r| r.created_at).collect(),
            org_id: records.iter().map(|r| r.org_id.clone()).collect(),
            user_id: records.iter().map(|r| r.user_id.clone()).collect(),
            api_key_id: records.iter().map(|r| r.api_key_id).collect(),
            provider: records.iter().map(|r| r.provider.as_str()).collect(),
            model: records.iter().map(|r| r.model.clone()).collect(),
            task_type: records.iter().map(|r| r.task_type.as_str()).collect(),
            input_tokens: column(|r| rows::count(r.tokens.input)),
            output_tokens: column(|r| rows::count(r.tokens.output)),
            cached_input_tokens: column(|r| rows::count(r.tokens.cached_input)),
            reasoning_tokens: column(|r| rows::count(r.tokens.reasoning)),
            cost_nano_usd: records.iter().map(|r| r.cost.map(|c| c.nanos())).collect(),
            estimated_cost_nano_usd: records
                .iter()
                .map(|r| r.estimated_cost.map(|c| c.nanos()))
                .collect(),
            cost_status: records.iter().map(|r| r.cost_status.as_str()).collect(),
            latency_ms: column(|r| rows::count(r.latency_ms)),
            time_to_first_token_ms: records
                .iter()
                .map(|r| r.time_to_first_token_ms.map(rows::count))
                .collect(),
            status_code: records
                .iter()
                .map(|r| r.status_code.map(i32::from))
                .collect(),
            success: records.iter().map(|r| r.success()).collect(),
            status: records.iter().map(|r| r.status.as_str()).collect(),
            error_type: records.iter().map(|r| r.error_type.clone()).collect(),
            stream: records.iter().map(|r| r.stream).collect(),
            provider_request_id: records
                .iter()
                .map(|r| r.provider_request_id.clone())
                .collect(),
            metadata: records.iter().map(|r| r.metadata.to_string()).collect(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct PostgresUsageRow {
    request_id: Uuid,
    parent_request_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    api_key_id: Option<Uuid>,
    metadata: Json<serde_json::Value>,
    #[sqlx(flatten)]
    common: rows::CommonUsageColumns,
}

impl PostgresUsageRow {
    fn into_usage_row(self) -> UsageRow {
        UsageRow {
            request_id: self.request_id,
            parent_request_id: self.parent_request_id,
            created_at: self.created_at,
            api_key_id: self.api_key_id,
            metadata: self.metadata.0,
            common: self.common,
        }
    }
}

#[derive(sqlx::FromRow)]
struct PostgresRollupRow {
    day: NaiveDate,
    latency_histogram: Vec<i64>,
    #[sqlx(flatten)]
    rollup: rows::CommonRollupColumns,
}

/// The record listing's filters on `ai_provider_usage`.
pub(super) fn push_record_filter(query: &mut QueryBuilder<Postgres>, filter: &RecordFilter) {
    if let Some(start) = filter.start {
        query.push(" AND created_at >= ").push_bind(start);
    }
    if let Some(end) = filter.end {
        query.push(" AND created_at < ").push_bind(end);
    }
    rows::push_dimension_filter(query, filter, scope::USAGE);
    if let Some(user_id) = &filter.user_id {
        query.push(" AND user_id = ").push_bind(user_id.clone());
    }
    if let Some(tag) = &filter.tag {
        query
            .push(" AND metadata -> 'tags' ? ")
            .push_bind(tag.clone());
    }
}
