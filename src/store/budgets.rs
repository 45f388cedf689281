//! Budgets, the spend aggregate they are measured against, the leases
//! through which gateway instances share them, and their threshold events,
//! on both backends.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::scope::{self, Scope as CallerScope};
use super::{Store, StoreError};
use crate::budget::period::Period;
use crate::budget::spend::{SpendDelta, SpendKey};
use crate::budget::{Budget, BudgetType, RolloverPolicy, Scope};
use crate::money::NanoUsd;
use crate::usage::Provider;

const BUDGET_COLUMNS: &str = "id, org_id, provider, user_id, api_key_id, budget_type, \
     budget_amount_nano_usd, soft_limit_percents, hard_limit, rollover_policy, \
     rollover_cap_nano_usd, reset_date, timezone, created_at, updated_at";

/// `ON CONFLICT` clause of the spend upserts.
macro_rules! spend_conflict {
    () => {
        " ON CONFLICT (org_id, bucket_start, provider, user_id, api_key_id) \
         DO UPDATE SET requests = ai_budget_spend.requests + excluded.requests, \
         cost_nano_usd = ai_budget_spend.cost_nano_usd + excluded.cost_nano_usd"
    };
}

const ADD_SPEND_POSTGRES: &str = concat!(
    "INSERT INTO ai_budget_spend (org_id, bucket_start, provider, user_id, api_key_id, requests, cost_nano_usd) \
     SELECT * FROM UNNEST($1::TEXT[], $2::TIMESTAMPTZ[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[], $7::BIGINT[])",
    spend_conflict!()
);

/// Budget writes; the two backends' texts differ only in the JSON cast.
macro_rules! budget_insert {
    ($thresholds:literal) => {
        concat!(
            "INSERT INTO ai_usage_budgets (org_id, provider, user_id, api_key_id, budget_type, \
             budget_amount_nano_usd, soft_limit_percent, soft_limit_percents, hard_limit, \
             rollover_policy, rollover_cap_nano_usd, reset_date, timezone, created_at, updated_at, id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, ",
            $thresholds,
            ", $9, $10, $11, $12, $13, $14, $15, $16)"
        )
    };
}
macro_rules! budget_update {
    ($thresholds:literal) => {
        concat!(
            "UPDATE ai_usage_budgets SET org_id = $1, provider = $2, user_id = $3, api_key_id = $4, \
             budget_type = $5, budget_amount_nano_usd = $6, soft_limit_percent = $7, \
             soft_limit_percents = ",
            $thresholds,
            ", hard_limit = $9, rollover_policy = $10, rollover_cap_nano_usd = $11, \
             reset_date = $12, timezone = $13, created_at = $14, updated_at = $15 WHERE id = $16"
        )
    };
}
const INSERT_BUDGET_SQLITE: &str = budget_insert!("$8");
const INSERT_BUDGET_POSTGRES: &str = budget_insert!("$8::JSONB");
const UPDATE_BUDGET_SQLITE: &str = budget_update!("$8");
const UPDATE_BUDGET_POSTGRES: &str = budget_update!("$8::JSONB");

/// Columns both backends read the same way.
#[derive(sqlx::FromRow)]
struct CommonBudgetColumns {
    org_id: String,
    provider: Option<String>,
    user_id: Option<String>,
    budget_type: String,
    budget_amount_nano_usd: i64,
    hard_limit: bool,
    rollover_policy: String,
    rollover_cap_nano_usd: Option<i64>,
    timezone: String,
}

#[derive(sqlx::FromRow)]
struct SqliteBudgetRow {
    id: Uuid,
    api_key_id: Option<Uuid>,
    soft_limit_percents: String,
    reset_date: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[sqlx(flatten)]
    common: CommonBudgetColumns,
}

#[derive(sqlx::FromRow)]
struct PostgresBudgetRow {
    id: Uuid,
    api_key_id: Option<Uuid>,
    soft_limit_percents: sqlx::types::Json<Vec<u32>>,
    reset_date: Option<NaiveDate>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[sqlx(flatten)]
    common: CommonBudgetColumns,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("budget {what}: {error}"))
}

fn micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt("time", value))
}

impl CommonBudgetColumns {
    #[allow(
        clippy::too_many_arguments,
        reason = "one row's backend-specific columns"
    )]
    fn into_budget(
        self,
        id: Uuid,
        api_key_id: Option<Uuid>,
        soft_limit_percents: Vec<u32>,
        reset_date: Option<NaiveDate>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Result<Budget, StoreError> {
        let provider = self
            .provider
            .map(|text| Provider::from_str(&text).map_err(|error| corrupt("provider", error)))
            .transpose()?;
        Ok(Budget {
            id,
            org_id: self.org_id,
            scope: Scope {
                provider,
                user_id: self.user_id,
                api_key_id,
            },
            budget_type: BudgetType::from_str(&self.budget_type)
                .map_err(|error| corrupt("type", error))?,
            amount: NanoUsd::from_nanos(self.budget_amount_nano_usd),
            soft_limit_percents,
            hard_limit: self.hard_limit,
            rollover_policy: RolloverPolicy::from_str(&self.rollover_policy)
                .map_err(|error| corrupt("rollover policy", error))?,
            rollover_cap: self.rollover_cap_nano_usd.map(NanoUsd::from_nanos),
            reset_date: reset_date.unwrap_or(crate::budget::DEFAULT_RESET_DATE),
            timezone: Tz::from_str(&self.timezone).map_err(|error| corrupt("time zone", error))?,
            created_at,
            updated_at,
        })
    }
}

impl SqliteBudgetRow {
    fn into_budget(self) -> Result<Budget, StoreError> {
        let thresholds: Vec<u32> = serde_json::from_str(&self.soft_limit_percents)
            .map_err(|error| corrupt("soft limits", error))?;
        let reset_date = self
            .reset_date
            .map(|text| NaiveDate::from_str(&text).map_err(|error| corrupt("reset date", error)))
            .transpose()?;
        let (created_at, updated_at) = (micros(self.created_at)?, micros(self.updated_at)?);
        self.common.into_budget(
            self.id,
            self.api_key_id,
            thresholds,
            reset_date,
            created_at,
            updated_at,
        )
    }
}

impl PostgresBudgetRow {
    fn into_budget(self) -> Result<Budget, StoreError> {
        self.common.into_budget(
            self.id,
            self.api_key_id,
            self.soft_limit_percents.0,
            self.reset_date,
            self.created_at,
            self.updated_at,
        )
    }
}

fn thresholds_json(budget: &Budget) -> String {
    serde_json::Value::from(budget.soft_limit_percents.clone()).to_string()
}

/// The lowest threshold, for the guide's single-valued column.
fn first_threshold(budget: &Budget) -> i64 {
    budget
        .soft_limit_percents
        .first()
        .copied()
        .map_or(100, i64::from)
}

/// A lease this instance holds on a budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    pub budget_id: Uuid,
    pub period_start: DateTime<Utc>,
    /// The whole amount this instance claims after the call: what it holds
    /// plus what it has been granted but not used.
    pub claim: NanoUsd,
    pub held: NanoUsd,
    pub expires_at: DateTime<Utc>,
    /// Whether [`Store::renew_leases`] writes `claim` (or only `held` and
    /// the expiry).
    pub set_claim: bool,
}

/// What a lease extension saw and granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The period's ledger spend within the budget's scope.
    pub spent: NanoUsd,
    /// Other instances' live claims.
    pub others: NanoUsd,
    /// The amount granted on top of the current claim (zero if none fits).
    pub granted: NanoUsd,
}

impl Store {
    /// Whether an organization exists.
    pub async fn org_exists(&self, org_id: &str) -> Result<bool, StoreError> {
        let found: Option<String> = match self {
            Store::Sqlite(store) => {
                sqlx::query_scalar("SELECT id FROM organizations WHERE id = ?")
                    .bind(org_id)
                    .fetch_optional(&store.reader)
                    .await?
            }
            Store::Postgres(store) => {
                sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
                    .bind(org_id)
                    .fetch_optional(&store.pool)
                    .await?
            }
        };
        Ok(found.is_some())
    }

    /// The organization a gateway key belongs to, if the key exists.
    pub async fn key_org(&self, key_id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Store::Sqlite(store) => {
                sqlx::query_scalar("SELECT org_id FROM api_keys WHERE id = ?")
                    .bind(key_id.to_string())
                    .fetch_optional(&store.reader)
                    .await?
            }
            Store::Postgres(store) => {
                sqlx::query_scalar("SELECT org_id FROM api_keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(&store.pool)
                    .await?
            }
        })
    }

    pub async fn insert_budget(
        &self,
        scope: &CallerScope,
        budget: &Budget,
    ) -> Result<(), StoreError> {
        if !scope.may_manage(&budget.org_id) {
            return Err(StoreError::OutOfScope);
        }
        self.write_budget(scope, budget, true).await.map(|_| ())
    }

    /// Replaces a stored budget's settings; false when there is none.
    pub async fn update_budget(
        &self,
        scope: &CallerScope,
        budget: &Budget,
    ) -> Result<bool, StoreError> {
        match self.budget(scope, budget.id).await? {
            None => return Ok(false),
            Some(stored) if !scope.may_manage(&stored.org_id) => return Ok(false),
            Some(_) => {}
        }
        if !scope.may_manage(&budget.org_id) {
            return Err(StoreError::OutOfScope);
        }
        self.write_budget(scope, budget, false).await
    }

    async fn write_budget(
        &self,
        scope: &CallerScope,
        budget: &Budget,
        insert: bool,
    ) -> Result<bool, StoreError> {
        let (sqlite_sql, postgres_sql) = if insert {
            (INSERT_BUDGET_SQLITE, INSERT_BUDGET_POSTGRES)
        } else {
            (UPDATE_BUDGET_SQLITE, UPDATE_BUDGET_POSTGRES)
        };
        let provider = budget.scope.provider.map(Provider::as_str);
        let affected = match self {
            Store::Sqlite(store) => sqlx::query(sqlite_sql)
                .bind(&budget.org_id)
                .bind(provider)
                .bind(budget.scope.user_id.as_deref())
                .bind(budget.scope.api_key_id)
                .bind(budget.budget_type.as_str())
                .bind(budget.amount.nanos())
                .bind(first_threshold(budget))
                .bind(thresholds_json(budget))
                .bind(budget.hard_limit)
                .bind(budget.rollover_policy.as_str())
                .bind(budget.rollover_cap.map(NanoUsd::nanos))
                .bind(budget.reset_date.to_string())
                .bind(budget.timezone.name())
                .bind(budget.created_at.timestamp_micros())
                .bind(budget.updated_at.timestamp_micros())
                .bind(budget.id)
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(postgres_sql)
                    .bind(&budget.org_id)
                    .bind(provider)
                    .bind(budget.scope.user_id.as_deref())
                    .bind(budget.scope.api_key_id)
                    .bind(budget.budget_type.as_str())
                    .bind(budget.amount.nanos())
                    .bind(first_threshold(budget))
                    .bind(thresholds_json(budget))
                    .bind(budget.hard_limit)
                    .bind(budget.rollover_policy.as_str())
                    .bind(budget.rollover_cap.map(NanoUsd::nanos))
                    .bind(budget.reset_date)
                    .bind(budget.timezone.name())
                    .bind(budget.created_at)
                    .bind(budget.updated_at)
                    .bind(budget.id)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        Ok(affected == 1)
    }

    /// Deletes a budget (and its leases and events); false when there is none.
    pub async fn delete_budget(&self, scope: &CallerScope, id: Uuid) -> Result<bool, StoreError> {
        match self.budget(scope, id).await? {
            Some(stored) if scope.may_manage(&stored.org_id) => {}
            _ => return Ok(false),
        }
        let affected = match self {
            Store::Sqlite(store) => sqlx::query("DELETE FROM ai_usage_budgets WHERE id = ?")
                .bind(id)
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query("DELETE FROM ai_usage_budgets WHERE id = $1")
                    .bind(id)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        Ok(affected == 1)
    }

    pub async fn budget(
        &self,
        scope: &CallerScope,
        id: Uuid,
    ) -> Result<Option<Budget>, StoreError> {
        let mut budgets = self.select_budgets(scope, Some(id), None).await?;
        Ok(budgets.pop())
    }

    /// The scope's budgets, or an organization's among them, oldest first.
    pub async fn budgets(
        &self,
        scope: &CallerScope,
        org_id: Option<&str>,
    ) -> Result<Vec<Budget>, StoreError> {
        self.select_budgets(scope, None, org_id).await
    }

    async fn select_budgets(
        &self,
        scope: &CallerScope,
        id: Option<Uuid>,
        org_id: Option<&str>,
    ) -> Result<Vec<Budget>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                let mut query = select_budgets_query::<Sqlite>(scope, id, org_id);
                let rows: Vec<SqliteBudgetRow> =
                    query.build_query_as().fetch_all(&store.reader).await?;
                rows.into_iter().map(SqliteBudgetRow::into_budget).collect()
            }
            Store::Postgres(store) => {
                let mut query = select_budgets_query::<Postgres>(scope, id, org_id);
                let mut transaction = store.scoped(scope).await?;
                let rows: Vec<PostgresBudgetRow> =
                    query.build_query_as().fetch_all(&mut *transaction).await?;
                transaction.commit().await?;
                rows.into_iter()
                    .map(PostgresBudgetRow::into_budget)
                    .collect()
            }
        }
    }

    /// What the ledger says `budget`'s scope spent in `period`.
    pub async fn budget_spend(
        &self,
        budget: &Budget,
        period: Period,
    ) -> Result<NanoUsd, StoreError> {
        let nanos: i64 = match self {
            Store::Sqlite(store) => {
                let mut query = spend_query::<Sqlite, _>(
                    "SELECT COALESCE(SUM(cost_nano_usd), 0)",
                    budget,
                    sqlite_time(period.start),
                    sqlite_time(period.end),
                );
                query.build_query_scalar().fetch_one(&store.reader).await?
            }
            Store::Postgres(store) => {
                let mut query = spend_query::<Postgres, _>(
                    "SELECT COALESCE(SUM(cost_nano_usd), 0)::BIGINT",
                    budget,
                    period.start,
                    period.end,
                );
                query.build_query_scalar().fetch_one(&store.pool).await?
            }
        };
        Ok(NanoUsd::from_nanos(nanos))
    }

    /// What `budget`'s scope spent in each quarter-hour of `[start, end)`
    /// that had any spend, oldest first: the history its projection reads.
    pub async fn budget_spend_by_bucket(
        &self,
        budget: &Budget,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                let mut query = spend_query::<Sqlite, _>(
                    "SELECT bucket_start, COALESCE(SUM(cost_nano_usd), 0)",
                    budget,
                    sqlite_time(start),
                    sqlite_time(end),
                );
                query.push(" GROUP BY bucket_start ORDER BY bucket_start");
                let rows: Vec<(i64, i64)> = query.build_query_as().fetch_all(&store.reader).await?;
                rows.into_iter()
                    .map(|(micros, nanos)| {
                        DateTime::from_timestamp_micros(micros)
                            .map(|at| (at, nanos))
                            .ok_or_else(|| StoreError::Corrupt(format!("spend bucket {micros}")))
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let mut query = spend_query::<Postgres, _>(
                    "SELECT bucket_start, COALESCE(SUM(cost_nano_usd), 0)::BIGINT",
                    budget,
                    start,
                    end,
                );
                query.push(" GROUP BY bucket_start ORDER BY bucket_start");
                Ok(query.build_query_as().fetch_all(&store.pool).await?)
            }
        }
    }

    /// What other instances' live leases on a budget period hold (as of their
    /// last renewal).
    pub async fn budget_held(
        &self,
        budget_id: Uuid,
        period_start: DateTime<Utc>,
        now: DateTime<Utc>,
        except_instance: &str,
    ) -> Result<NanoUsd, StoreError> {
        let nanos: i64 = match self {
            Store::Sqlite(store) => sqlx::query_scalar(
                "SELECT COALESCE(SUM(held_nano_usd), 0) FROM ai_budget_leases \
                 WHERE budget_id = ? AND period_start = ? AND expires_at > ? AND instance_id <> ?",
            )
            .bind(budget_id)
            .bind(period_start.timestamp_micros())
            .bind(now.timestamp_micros())
            .bind(except_instance)
            .fetch_one(&store.writer)
            .await?,
            Store::Postgres(store) => sqlx::query_scalar(
                "SELECT COALESCE(SUM(held_nano_usd), 0)::BIGINT FROM ai_budget_leases \
                 WHERE budget_id = $1 AND period_start = $2 AND expires_at > $3 AND instance_id <> $4",
            )
            .bind(budget_id)
            .bind(period_start)
            .bind(now)
            .bind(except_instance)
            .fetch_one(&store.pool)
            .await?,
        };
        Ok(NanoUsd::from_nanos(nanos))
    }
}

/// `SELECT {BUDGET_COLUMNS}`, by id and organization when given.
fn select_budgets_query<DB>(
    scope: &CallerScope,
    id: Option<Uuid>,
    org_id: Option<&str>,
) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
    for<'value> Uuid: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {BUDGET_COLUMNS} FROM ai_usage_budgets WHERE 1 = 1"
    ));
    if let Some(id) = id {
        query.push(" AND id = ").push_bind(id);
    }
    if let Some(org_id) = org_id {
        query.push(" AND org_id = ").push_bind(org_id.to_owned());
    }
    scope::push(&mut query, scope, scope::BUDGETS);
    query.push(" ORDER BY created_at, id");
    query
}

/// `select` over the spend aggregate rows of a budget's scope in
/// `[start, end)`.
fn spend_query<DB, T>(select: &str, budget: &Budget, start: T, end: T) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
    for<'value> T: sqlx::Encode<'value, DB> + sqlx::Type<DB> + 'static,
{
    let mut query = QueryBuilder::<DB>::new(select);
    query
        .push(" FROM ai_budget_spend WHERE org_id = ")
        .push_bind(budget.org_id.clone())
        .push(" AND bucket_start >= ")
        .push_bind(start)
        .push(" AND bucket_start < ")
        .push_bind(end);
    push_scope(&mut query, &budget.scope);
    query
}

fn push_scope<DB>(query: &mut QueryBuilder<DB>, scope: &Scope)
where
    DB: sqlx::Database,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if let Some(provider) = scope.provider {
        query
            .push(" AND provider = ")
            .push_bind(provider.as_str().to_owned());
    }
    if let Some(user_id) = &scope.user_id {
        query.push(" AND user_id = ").push_bind(user_id.clone());
    }
    if let Some(key) = scope.api_key_id {
        query.push(" AND api_key_id = ").push_bind(key.to_string());
    }
}

/// Adds rows of a batch's spend to the aggregate, inside the batch's
/// transaction.
pub(super) async fn add_spend_sqlite(
    transaction: &mut sqlx::Transaction<'static, Sqlite>,
    run: &[(SpendKey, SpendDelta)],
) -> Result<(), StoreError> {
    {
        let mut upsert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO ai_budget_spend (org_id, bucket_start, provider, user_id, api_key_id, requests, cost_nano_usd) ",
        );
        upsert.push_values(run, |mut row, (key, delta)| {
            row.push_bind(key.org_id.clone())
                .push_bind(key.bucket_start)
                .push_bind(key.provider.as_str())
                .push_bind(key.user_id.clone())
                .push_bind(key.api_key_id.clone())
                .push_bind(delta.requests)
                .push_bind(delta.cost_nano_usd);
        });
        upsert.push(spend_conflict!());
        upsert.build().execute(&mut **transaction).await?;
    }
    Ok(())
}

/// Adds a batch's spend to the aggregate, inside the batch's transaction:
/// one statement of column arrays, rows in key order (so concurrent
/// writers lock them in the same order).
pub(super) async fn add_spend_postgres(
    transaction: &mut sqlx::Transaction<'static, Postgres>,
    deltas: &[(SpendKey, SpendDelta)],
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut org_ids = Vec::with_capacity(deltas.len());
    let mut buckets = Vec::with_capacity(deltas.len());
    let mut providers = Vec::with_capacity(deltas.len());
    let mut users = Vec::with_capacity(deltas.len());
    let mut keys = Vec::with_capacity(deltas.len());
    let mut requests = Vec::with_capacity(deltas.len());
    let mut costs = Vec::with_capacity(deltas.len());
    for (key, delta) in deltas {
        org_ids.push(key.org_id.clone());
        buckets.push(micros(key.bucket_start)?);
        providers.push(key.provider.as_str());
        users.push(key.user_id.clone());
        keys.push(key.api_key_id.clone());
        requests.push(delta.requests);
        costs.push(delta.cost_nano_usd);
    }
    sqlx::query(ADD_SPEND_POSTGRES)
        .bind(org_ids)
        .bind(buckets)
        .bind(providers)
        .bind(users)
        .bind(keys)
        .bind(requests)
        .bind(costs)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Instants as SQLite stores them.
fn sqlite_time(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

impl Store {
    /// Extends this instance's lease on a budget period, atomically with
    /// every other instance: with the budget row locked (PostgreSQL) or the
    /// database's one writer (SQLite), reads the period's ledger spend and
    /// the other instances' live claims, grants what fits of `wanted` (at
    /// least `needed`, or nothing), and writes this instance's claim.
    /// `claim` and `held` are what this instance has before the grant.
    #[allow(clippy::too_many_arguments, reason = "one lease's figures")]
    pub async fn extend_lease(
        &self,
        budget: &Budget,
        period: Period,
        limit: NanoUsd,
        instance_id: &str,
        current: LeaseRequest,
        needed: NanoUsd,
        wanted: NanoUsd,
        now: DateTime<Utc>,
    ) -> Result<LeaseGrant, StoreError> {
        let decide = |spent: i64, others: i64| {
            let available = limit
                .nanos()
                .saturating_sub(spent)
                .saturating_sub(others)
                .saturating_sub(current.claim.nanos());
            let granted = if available >= needed.nanos() {
                wanted
                    .nanos()
                    .clamp(needed.nanos(), available.max(needed.nanos()))
            } else {
                0
            };
            LeaseGrant {
                spent: NanoUsd::from_nanos(spent),
                others: NanoUsd::from_nanos(others),
                granted: NanoUsd::from_nanos(granted),
            }
        };
        match self {
            Store::Sqlite(store) => {
                let mut transaction = store.writer.begin_with("BEGIN IMMEDIATE").await?;
                let mut query = spend_query::<Sqlite, _>(
                    "SELECT COALESCE(SUM(cost_nano_usd), 0)",
                    budget,
                    sqlite_time(period.start),
                    sqlite_time(period.end),
                );
                let spent: i64 = query
                    .build_query_scalar()
                    .fetch_one(&mut *transaction)
                    .await?;
                let others: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(leased_nano_usd), 0) FROM ai_budget_leases \
                     WHERE budget_id = ? AND period_start = ? AND instance_id <> ? AND expires_at > ?",
                )
                .bind(budget.id)
                .bind(sqlite_time(period.start))
                .bind(instance_id)
                .bind(sqlite_time(now))
                .fetch_one(&mut *transaction)
                .await?;
                let grant = decide(spent, others);
                sqlx::query(
                    "INSERT INTO ai_budget_leases (budget_id, period_start, instance_id, leased_nano_usd, held_nano_usd, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (budget_id, period_start, instance_id) DO UPDATE SET \
                     leased_nano_usd = excluded.leased_nano_usd, held_nano_usd = excluded.held_nano_usd, expires_at = excluded.expires_at",
                )
                .bind(budget.id)
                .bind(sqlite_time(period.start))
                .bind(instance_id)
                .bind(current.claim.nanos().saturating_add(grant.granted.nanos()))
                .bind(current.held.nanos())
                .bind(sqlite_time(current.expires_at))
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                Ok(grant)
            }
            Store::Postgres(store) => {
                let mut transaction = store.pool.begin().await?;
                let locked: Option<Uuid> =
                    sqlx::query_scalar("SELECT id FROM ai_usage_budgets WHERE id = $1 FOR UPDATE")
                        .bind(budget.id)
                        .fetch_optional(&mut *transaction)
                        .await?;
                if locked.is_none() {
                    // Deleted meanwhile: nothing to grant.
                    return Ok(decide(limit.nanos(), 0));
                }
                let mut query = spend_query::<Postgres, _>(
                    "SELECT COALESCE(SUM(cost_nano_usd), 0)::BIGINT",
                    budget,
                    period.start,
                    period.end,
                );
                let spent: i64 = query
                    .build_query_scalar()
                    .fetch_one(&mut *transaction)
                    .await?;
                let others: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(SUM(leased_nano_usd), 0)::BIGINT FROM ai_budget_leases \
                     WHERE budget_id = $1 AND period_start = $2 AND instance_id <> $3 AND expires_at > $4",
                )
                .bind(budget.id)
                .bind(period.start)
                .bind(instance_id)
                .bind(now)
                .fetch_one(&mut *transaction)
                .await?;
                let grant = decide(spent, others);
                sqlx::query(
                    "INSERT INTO ai_budget_leases (budget_id, period_start, instance_id, leased_nano_usd, held_nano_usd, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (budget_id, period_start, instance_id) DO UPDATE SET \
                     leased_nano_usd = excluded.leased_nano_usd, held_nano_usd = excluded.held_nano_usd, expires_at = excluded.expires_at",
                )
                .bind(budget.id)
                .bind(period.start)
                .bind(instance_id)
                .bind(current.claim.nanos().saturating_add(grant.granted.nanos()))
                .bind(current.held.nanos())
                .bind(current.expires_at)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                Ok(grant)
            }
        }
    }

    /// Rewrites this instance's claims (shrinking them to what it still
    /// holds or uses, and renewing their expiry) and drops claims of
    /// nothing. Lowering a claim never needs the budget lock: it only makes
    /// room for others.
    pub async fn renew_leases(
        &self,
        instance_id: &str,
        leases: &[LeaseRequest],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Claims of crashed instances stop counting when they expire; their
        // rows are removed a day later.
        let forgotten = now - chrono::Duration::days(1);
        match self {
            Store::Sqlite(store) => {
                let mut transaction = store.writer.begin_with("BEGIN IMMEDIATE").await?;
                for lease in leases {
                    sqlx::query(
                        "UPDATE ai_budget_leases SET leased_nano_usd = COALESCE(?, leased_nano_usd), \
                         held_nano_usd = ?, expires_at = ? \
                         WHERE budget_id = ? AND period_start = ? AND instance_id = ?",
                    )
                    .bind(lease.set_claim.then_some(lease.claim.nanos()))
                    .bind(lease.held.nanos())
                    .bind(sqlite_time(lease.expires_at))
                    .bind(lease.budget_id)
                    .bind(sqlite_time(lease.period_start))
                    .bind(instance_id)
                    .execute(&mut *transaction)
                    .await?;
                }
                sqlx::query(
                    "DELETE FROM ai_budget_leases WHERE (instance_id = ? AND leased_nano_usd = 0 AND held_nano_usd = 0) \
                     OR expires_at < ?",
                )
                .bind(instance_id)
                .bind(sqlite_time(forgotten))
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
            }
            Store::Postgres(store) => {
                let mut transaction = store.pool.begin().await?;
                for lease in leases {
                    sqlx::query(
                        "UPDATE ai_budget_leases SET leased_nano_usd = COALESCE($1, leased_nano_usd), \
                         held_nano_usd = $2, expires_at = $3 \
                         WHERE budget_id = $4 AND period_start = $5 AND instance_id = $6",
                    )
                    .bind(lease.set_claim.then_some(lease.claim.nanos()))
                    .bind(lease.held.nanos())
                    .bind(lease.expires_at)
                    .bind(lease.budget_id)
                    .bind(lease.period_start)
                    .bind(instance_id)
                    .execute(&mut *transaction)
                    .await?;
                }
                sqlx::query(
                    "DELETE FROM ai_budget_leases WHERE (instance_id = $1 AND leased_nano_usd = 0 AND held_nano_usd = 0) \
                     OR expires_at < $2",
                )
                .bind(instance_id)
                .bind(forgotten)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// Deletes every claim of an instance.
    pub async fn release_leases(&self, instance_id: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => {
                sqlx::query("DELETE FROM ai_budget_leases WHERE instance_id = ?")
                    .bind(instance_id)
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query("DELETE FROM ai_budget_leases WHERE instance_id = $1")
                    .bind(instance_id)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records that a budget period reached a soft threshold; true the
    /// first time (over every instance), false after.
    pub async fn record_threshold_event(
        &self,
        budget_id: Uuid,
        period_start: DateTime<Utc>,
        threshold_percent: u32,
        limit: NanoUsd,
        spent: NanoUsd,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = match self {
            Store::Sqlite(store) => sqlx::query(
                "INSERT INTO ai_budget_events (budget_id, period_start, threshold_percent, limit_nano_usd, spent_nano_usd, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(budget_id)
            .bind(sqlite_time(period_start))
            .bind(i64::from(threshold_percent))
            .bind(limit.nanos())
            .bind(spent.nanos())
            .bind(sqlite_time(now))
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => sqlx::query(
                "INSERT INTO ai_budget_events (budget_id, period_start, threshold_percent, limit_nano_usd, spent_nano_usd, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(budget_id)
            .bind(period_start)
            .bind(i64::from(threshold_percent))
            .bind(limit.nanos())
            .bind(spent.nanos())
            .bind(now)
            .execute(&store.pool)
            .await?
            .rows_affected(),
        };
        Ok(inserted == 1)
    }

    /// Threshold events of a budget, `(period_start, threshold_percent)`,
    /// oldest first.
    pub async fn threshold_events(
        &self,
        budget_id: Uuid,
    ) -> Result<Vec<(DateTime<Utc>, u32)>, StoreError> {
        let rows: Vec<(DateTime<Utc>, i64)> = match self {
            Store::Sqlite(store) => {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT period_start, threshold_percent FROM ai_budget_events WHERE budget_id = ? \
                     ORDER BY period_start, threshold_percent",
                )
                .bind(budget_id)
                .fetch_all(&store.reader)
                .await?;
                rows.into_iter()
                    .map(|(start, percent)| micros(start).map(|start| (start, percent)))
                    .collect::<Result<_, _>>()?
            }
            Store::Postgres(store) => {
                sqlx::query_as(
                    "SELECT period_start, threshold_percent::BIGINT FROM ai_budget_events WHERE budget_id = $1 \
                     ORDER BY period_start, threshold_percent",
                )
                .bind(budget_id)
                .fetch_all(&store.pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(start, percent)| (start, u32::try_from(percent).unwrap_or(0)))
            .collect())
    }
}
