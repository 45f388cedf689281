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

use super::rows::{self, UsageRow};
use super::{BatchOutcome, Cursor, MigrationReport, RecordFilter, RecordPage, StoreError};
use crate::config::DatabaseConfig;
use crate::rollup::{self, RollupDelta, RollupKey};
use crate::usage::UsageRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per INSERT statement: 25 columns × 1,000 stays under PostgreSQL's
/// 65,535-parameter limit.
const ROWS_PER_STATEMENT: usize = 1_000;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        let connect_error = |source| StoreError::Connect {
            url: super::redact_url(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect_error)?;
        // One direct connection first: a pool only says "timed out", while
        // this says why (refused, unknown host, bad password).
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        let probe = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_error(sqlx::Error::PoolTimedOut))?
            .map_err(connect_error)?;
        probe.close().await.map_err(connect_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(PostgresStore { pool })
    }

    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let tables_before = self.tables().await?;
        let applied_before = self.applied_versions(&tables_before).await?;
        MIGRATOR.run(&self.pool).await?;
        let tables_after = self.tables().await?;
        Ok(rows::migration_report(
            &MIGRATOR,
            &applied_before,
            &tables_before,
            tables_after,
        ))
    }

    async fn tables(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn applied_versions(&self, tables: &[String]) -> Result<HashSet<i64>, StoreError> {
        if !tables.iter().any(|table| table == "_sqlx_migrations") {
            return Ok(HashSet::new());
        }
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(versions.into_iter().collect())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
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
            let mut insert = QueryBuilder::<Postgres>::new(rows::INSERT_USAGE_PREFIX);
            insert.push_values(chunk, |mut row, record| {
                row.push_bind(record.request_id)
                    .push_bind(record.parent_request_id)
                    .push_bind(record.created_at)
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
                    .push_bind(record.status_code.map(i32::from))
                    .push_bind(record.success())
                    .push_bind(record.status.as_str())
                    .push_bind(record.error_type.as_deref())
                    .push_bind(record.stream)
                    .push_bind(record.provider_request_id.as_deref())
                    .push_bind(Json(&record.metadata));
            });
            insert.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
            let returned: Vec<Uuid> = insert
                .build_query_scalar()
                .fetch_all(&mut *transaction)
                .await?;
            inserted_ids.extend(returned);
        }
        let inserted: Vec<&UsageRecord> = unique
            .iter()
            .copied()
            .filter(|record| inserted_ids.contains(&record.request_id))
            .collect();
        let now = Utc::now();
        for (key, delta) in rollup::rollup(inserted.iter().copied(), timezone) {
            sqlx::query(UPSERT_ROLLUP)
                .bind(key.day)
                .bind(key.org_id)
                .bind(key.provider.as_str())
                .bind(key.model)
                .bind(key.task_type.as_str())
                .bind(delta.requests)
                .bind(delta.errors)
                .bind(delta.unpriced_requests)
                .bind(delta.input_tokens)
                .bind(delta.output_tokens)
                .bind(delta.cached_input_tokens)
                .bind(delta.reasoning_tokens)
                .bind(delta.cost_nano_usd)
                .bind(delta.latency_ms_sum)
                .bind(delta.ttft_ms_sum)
                .bind(delta.ttft_count)
                .bind(delta.latency_histogram.to_vec())
                .bind(now)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(BatchOutcome {
            inserted: inserted.len(),
            duplicates: records.len() - inserted.len(),
        })
    }

    pub async fn usage_records(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(rows::SELECT_USAGE);
        if let Some(start) = filter.start {
            query.push(" AND created_at >= ").push_bind(start);
        }
        if let Some(end) = filter.end {
            query.push(" AND created_at < ").push_bind(end);
        }
        rows::push_dimension_filter(&mut query, filter);
        if let Some(user_id) = &filter.user_id {
            query.push(" AND user_id = ").push_bind(user_id.clone());
        }
        if let Some(cursor) = cursor {
            query
                .push(" AND (created_at, request_id) < (")
                .push_bind(cursor.created_at)
                .push(", ")
                .push_bind(cursor.request_id)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, request_id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<PostgresUsageRow> = query.build_query_as().fetch_all(&self.pool).await?;
        let records = rows
            .into_iter()
            .map(|row| row.into_usage_row().into_record())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows::page(records, limit))
    }

    pub async fn rollups(
        &self,
        filter: &RecordFilter,
    ) -> Result<Vec<(RollupKey, RollupDelta)>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(rows::SELECT_ROLLUP);
        if let Some(start) = filter.start {
            query.push(" AND day >= ").push_bind(start.date_naive());
        }
        if let Some(end) = filter.end {
            query.push(" AND day < ").push_bind(end.date_naive());
        }
        rows::push_dimension_filter(&mut query, filter);
        query.push(" ORDER BY day, org_id, provider, model, task_type");
        let rows: Vec<PostgresRollupRow> = query.build_query_as().fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let histogram = rows::histogram_from_vec(row.latency_histogram)?;
                row.rollup.into_pair(row.day, histogram)
            })
            .collect()
    }
}

/// Adds a delta to a rollup row atomically; the histogram arrays are zipped
/// and summed in the statement itself.
const UPSERT_ROLLUP: &str = "INSERT INTO ai_model_performance (day, org_id, provider, model, task_type, \
     requests, errors, unpriced_requests, input_tokens, output_tokens, cached_input_tokens, \
     reasoning_tokens, cost_nano_usd, latency_ms_sum, ttft_ms_sum, ttft_count, latency_histogram, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     ON CONFLICT (day, org_id, provider, model, task_type) DO UPDATE SET \
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
