//! What the alert rules read: per-minute request and error counts (kept by
//! the recorder), and a day's spend from the rollup.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use rust_decimal::Decimal;
use uuid::Uuid;

use super::scope::{self, Scope};
use super::{Store, StoreError};
use crate::alerts::minutes::{MinuteDelta, MinuteKey};
use crate::alerts::rules::{DailySpend, WindowCounts};
use crate::alerts::{Alert, AlertEventKind, AlertStatus, AlertType, Applied, Condition, Severity};
use crate::money::NanoUsd;
use crate::usage::Provider;

/// `ON CONFLICT` clause of the minute upserts.
macro_rules! minutes_conflict {
    () => {
        " ON CONFLICT (minute, provider, model) DO UPDATE SET \
         requests = ai_usage_minutes.requests + excluded.requests, \
         errors = ai_usage_minutes.errors + excluded.errors, \
         quota_errors = ai_usage_minutes.quota_errors + excluded.quota_errors"
    };
}

const ADD_MINUTES_POSTGRES: &str = concat!(
    "INSERT INTO ai_usage_minutes (minute, provider, model, requests, errors, quota_errors) \
     SELECT * FROM UNNEST($1::TIMESTAMPTZ[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[])",
    minutes_conflict!()
);

/// Adds rows of a batch's minute counts, inside the batch's transaction.
pub(super) async fn add_minutes_sqlite(
    transaction: &mut sqlx::Transaction<'static, Sqlite>,
    run: &[(MinuteKey, MinuteDelta)],
) -> Result<(), StoreError> {
    let mut upsert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO ai_usage_minutes (minute, provider, model, requests, errors, quota_errors) ",
    );
    upsert.push_values(run, |mut row, (key, delta)| {
        row.push_bind(key.minute)
            .push_bind(key.provider.as_str())
            .push_bind(key.model.clone())
            .push_bind(delta.requests)
            .push_bind(delta.errors)
            .push_bind(delta.quota_errors);
    });
    upsert.push(minutes_conflict!());
    upsert.build().execute(&mut **transaction).await?;
    Ok(())
}

/// Adds a batch's minute counts: one statement of column arrays, in key
/// order.
pub(super) async fn add_minutes_postgres(
    transaction: &mut sqlx::Transaction<'static, Postgres>,
    deltas: &[(MinuteKey, MinuteDelta)],
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut minutes = Vec::with_capacity(deltas.len());
    let mut providers = Vec::with_capacity(deltas.len());
    let mut models = Vec::with_capacity(deltas.len());
    let mut requests = Vec::with_capacity(deltas.len());
    let mut errors = Vec::with_capacity(deltas.len());
    let mut quota_errors = Vec::with_capacity(deltas.len());
    for (key, delta) in deltas {
        minutes.push(
            DateTime::from_timestamp_micros(key.minute)
                .ok_or_else(|| StoreError::Corrupt(format!("minute {}", key.minute)))?,
        );
        providers.push(key.provider.as_str());
        models.push(key.model.clone());
        requests.push(delta.requests);
        errors.push(delta.errors);
        quota_errors.push(delta.quota_errors);
    }
    sqlx::query(ADD_MINUTES_POSTGRES)
        .bind(minutes)
        .bind(providers)
        .bind(models)
        .bind(requests)
        .bind(errors)
        .bind(quota_errors)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

fn provider(text: &str) -> Result<Provider, StoreError> {
    Provider::from_str(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

impl Store {
    /// Requests, errors and quota errors since `since`, per provider × model
    /// and per provider (`model: None`).
    pub async fn window_counts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<WindowCounts>, StoreError> {
        const SELECT: &str = "SELECT provider, model, CAST(SUM(requests) AS BIGINT), \
             CAST(SUM(errors) AS BIGINT), CAST(SUM(quota_errors) AS BIGINT) \
             FROM ai_usage_minutes WHERE minute >= $1 GROUP BY provider, model ORDER BY provider, model";
        let rows: Vec<(String, String, i64, i64, i64)> = match self {
            Store::Sqlite(store) => {
                sqlx::query_as(SELECT)
                    .bind(since.timestamp_micros())
                    .fetch_all(&store.reader)
                    .await?
            }
            Store::Postgres(store) => {
                sqlx::query_as(SELECT)
                    .bind(since)
                    .fetch_all(&store.pool)
                    .await?
            }
        };
        let mut per_provider: BTreeMap<Provider, (i64, i64, i64)> = BTreeMap::new();
        let mut counts = Vec::with_capacity(rows.len());
        for (name, model, requests, errors, quota_errors) in rows {
            let provider = provider(&name)?;
            let total = per_provider.entry(provider).or_default();
            total.0 += requests;
            total.1 += errors;
            total.2 += quota_errors;
            counts.push(WindowCounts {
                provider,
                model: Some(model),
                requests,
                errors,
                quota_errors,
            });
        }
        counts.extend(per_provider.into_iter().map(
            |(provider, (requests, errors, quota_errors))| WindowCounts {
                provider,
                model: None,
                requests,
                errors,
                quota_errors,
            },
        ));
        Ok(counts)
    }

    /// A day's spend (in the rollup's time zone) per org × provider and
    /// per org.
    pub async fn daily_spend(&self, day: NaiveDate) -> Result<Vec<DailySpend>, StoreError> {
        let rows: Vec<(String, String, i64)> = match self {
            Store::Sqlite(store) => {
                sqlx::query_as(
                    "SELECT org_id, provider, CAST(SUM(cost_nano_usd) AS BIGINT) FROM ai_model_performance \
                     WHERE day = $1 GROUP BY org_id, provider ORDER BY org_id, provider",
                )
                .bind(day.to_string())
                .fetch_all(&store.reader)
                .await?
            }
            Store::Postgres(store) => {
                sqlx::query_as(
                    "SELECT org_id, provider, CAST(SUM(cost_nano_usd) AS BIGINT) FROM ai_model_performance \
                     WHERE day = $1 GROUP BY org_id, provider ORDER BY org_id, provider",
                )
                .bind(day)
                .fetch_all(&store.pool)
                .await?
            }
        };
        let mut per_org: BTreeMap<String, i64> = BTreeMap::new();
        let mut spends = Vec::with_capacity(rows.len());
        for (org_id, name, cost) in rows {
            *per_org.entry(org_id.clone()).or_default() += cost;
            spends.push(DailySpend {
                org_id,
                provider: Some(provider(&name)?),
                spent: NanoUsd::from_nanos(cost),
            });
        }
        spends.extend(per_org.into_iter().map(|(org_id, cost)| DailySpend {
            org_id,
            provider: None,
            spent: NanoUsd::from_nanos(cost),
        }));
        Ok(spends)
    }
}

/// The columns an alert is read from (a macro, so that statements can be
/// built with `concat!`).
macro_rules! alert_columns {
    () => {
        "id, alert_type, dedupe_key, org_id, provider, model, severity, title, message, \
         CAST(threshold_value AS TEXT) AS threshold_value, CAST(current_value AS TEXT) AS current_value, \
         status, created_at, updated_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, \
         condition_cleared"
    };
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub severity: Option<Severity>,
    pub alert_type: Option<AlertType>,
    pub provider: Option<Provider>,
    pub org_id: Option<String>,
    /// Active and acknowledged only.
    pub open_only: bool,
    pub limit: i64,
    /// Whose alerts: nothing unless set.
    pub scope: Scope,
}

#[derive(sqlx::FromRow)]
struct CommonAlertColumns {
    id: Uuid,
    alert_type: String,
    dedupe_key: Option<String>,
    org_id: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    severity: String,
    title: String,
    message: String,
    threshold_value: Option<String>,
    current_value: Option<String>,
    status: String,
    acknowledged_by: Option<String>,
    resolved_by: Option<String>,
    condition_cleared: bool,
}

#[derive(sqlx::FromRow)]
struct SqliteAlertRow {
    created_at: i64,
    updated_at: i64,
    acknowledged_at: Option<i64>,
    resolved_at: Option<i64>,
    #[sqlx(flatten)]
    common: CommonAlertColumns,
}

#[derive(sqlx::FromRow)]
struct PostgresAlertRow {
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    common: CommonAlertColumns,
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("alert {what}: {error}"))
}

fn micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt("time", value))
}

fn decimal(text: Option<String>) -> Result<Option<Decimal>, StoreError> {
    text.map(|text| Decimal::from_str(&text).map_err(|error| corrupt("value", error)))
        .transpose()
}

impl CommonAlertColumns {
    /// The alert, and whether its condition cleared after a person
    /// resolved it.
    fn into_alert(
        self,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        acknowledged_at: Option<DateTime<Utc>>,
        resolved_at: Option<DateTime<Utc>>,
    ) -> Result<(Alert, bool), StoreError> {
        let alert = Alert {
            id: self.id,
            alert_type: AlertType::from_str(&self.alert_type)
                .map_err(|error| corrupt("type", error))?,
            dedupe_key: self.dedupe_key,
            org_id: self.org_id,
            provider: self.provider.as_deref().map(provider).transpose()?,
            model: self.model,
            severity: Severity::from_str(&self.severity)
                .map_err(|error| corrupt("severity", error))?,
            title: self.title,
            message: self.message,
            threshold_value: decimal(self.threshold_value)?,
            current_value: decimal(self.current_value)?,
            status: AlertStatus::from_str(&self.status)
                .map_err(|error| corrupt("status", error))?,
            created_at,
            updated_at,
            acknowledged_at,
            acknowledged_by: self.acknowledged_by,
            resolved_at,
            resolved_by: self.resolved_by,
        };
        Ok((alert, self.condition_cleared))
    }
}

impl SqliteAlertRow {
    fn into_alert(self) -> Result<(Alert, bool), StoreError> {
        let acknowledged_at = self.acknowledged_at.map(micros).transpose()?;
        let resolved_at = self.resolved_at.map(micros).transpose()?;
        self.common.into_alert(
            micros(self.created_at)?,
            micros(self.updated_at)?,
            acknowledged_at,
            resolved_at,
        )
    }
}

impl PostgresAlertRow {
    fn into_alert(self) -> Result<(Alert, bool), StoreError> {
        self.common.into_alert(
            self.created_at,
            self.updated_at,
            self.acknowledged_at,
            self.resolved_at,
        )
    }
}

fn value_text(value: Option<Decimal>) -> Option<String> {
    value.map(|value| value.normalize().to_string())
}

/// The SQL of the lifecycle, one text per backend where they differ (time
/// and number types).
struct AlertSql {
    latest: &'static str,
    insert: &'static str,
    escalate: &'static str,
    touch: &'static str,
    event: &'static str,
}

const SQLITE_SQL: AlertSql = AlertSql {
    latest: concat!(
        "SELECT ",
        alert_columns!(),
        " FROM ai_usage_alerts WHERE dedupe_key = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
    ),
    insert: "INSERT INTO ai_usage_alerts (id, alert_type, dedupe_key, org_id, provider, model, severity, title, \
         message, threshold_value, current_value, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, $12) \
         ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING",
    escalate: "UPDATE ai_usage_alerts SET severity = $1, status = 'active', title = $2, message = $3, \
         threshold_value = $4, current_value = $5, updated_at = $6 \
         WHERE id = $7 AND status <> 'resolved' AND \
         (CASE severity WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END) < $8",
    touch: "UPDATE ai_usage_alerts SET current_value = $1, message = $2, updated_at = $3 \
         WHERE id = $4 AND status <> 'resolved'",
    event: "INSERT INTO ai_alert_events (id, alert_id, event, severity, actor, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
};

const POSTGRES_SQL: AlertSql = AlertSql {
    latest: SQLITE_SQL.latest,
    insert: "INSERT INTO ai_usage_alerts (id, alert_type, dedupe_key, org_id, provider, model, severity, title, \
         message, threshold_value, current_value, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CAST($10 AS NUMERIC), CAST($11 AS NUMERIC), 'active', $12, $12) \
         ON CONFLICT (dedupe_key) WHERE status <> 'resolved' DO NOTHING",
    escalate: "UPDATE ai_usage_alerts SET severity = $1, status = 'active', title = $2, message = $3, \
         threshold_value = CAST($4 AS NUMERIC), current_value = CAST($5 AS NUMERIC), updated_at = $6 \
         WHERE id = $7 AND status <> 'resolved' AND \
         (CASE severity WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END) < $8",
    touch: "UPDATE ai_usage_alerts SET current_value = CAST($1 AS NUMERIC), message = $2, updated_at = $3 \
         WHERE id = $4 AND status <> 'resolved'",
    event: SQLITE_SQL.event,
};

fn rank(severity: Severity) -> i64 {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

impl Store {
    /// The newest alert with this dedupe key, and whether its condition
    /// cleared after a person resolved it.
    async fn latest_alert(&self, dedupe_key: &str) -> Result<Option<(Alert, bool)>, StoreError> {
        match self {
            Store::Sqlite(store) => sqlx::query_as::<_, SqliteAlertRow>(SQLITE_SQL.latest)
                .bind(dedupe_key)
                .fetch_optional(&store.reader)
                .await?
                .map(SqliteAlertRow::into_alert)
                .transpose(),
            Store::Postgres(store) => sqlx::query_as::<_, PostgresAlertRow>(POSTGRES_SQL.latest)
                .bind(dedupe_key)
                .fetch_optional(&store.pool)
                .await?
                .map(PostgresAlertRow::into_alert)
                .transpose(),
        }
    }

    /// Records a change to an alert (its history; the webhook source).
    pub async fn record_alert_event(
        &self,
        alert_id: Uuid,
        event: AlertEventKind,
        severity: Severity,
        actor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => {
                sqlx::query(SQLITE_SQL.event)
                    .bind(Uuid::now_v7())
                    .bind(alert_id)
                    .bind(event.as_str())
                    .bind(severity.as_str())
                    .bind(actor)
                    .bind(now.timestamp_micros())
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(POSTGRES_SQL.event)
                    .bind(Uuid::now_v7())
                    .bind(alert_id)
                    .bind(event.as_str())
                    .bind(severity.as_str())
                    .bind(actor)
                    .bind(now)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Opens the condition's alert, escalates the open one, or updates its
    /// current value. Safe against other instances applying the same
    /// condition: the database lets one insert and one escalation win.
    pub async fn apply_condition(
        &self,
        condition: &Condition,
        now: DateTime<Utc>,
    ) -> Result<Applied, StoreError> {
        for _ in 0..3 {
            match self.latest_alert(&condition.dedupe_key).await? {
                Some((open, _)) if open.status != AlertStatus::Resolved => {
                    return self.escalate_or_touch(&open, condition, now).await;
                }
                Some((resolved, cleared))
                    if resolved.resolved_by.is_some()
                        && !cleared
                        && condition.severity <= resolved.severity =>
                {
                    return Ok(Applied::Suppressed);
                }
                _ => {}
            }
            let id = Uuid::now_v7();
            if self.insert_alert(id, condition, now).await? {
                self.record_alert_event(id, AlertEventKind::Created, condition.severity, None, now)
                    .await?;
                return Ok(Applied::Created(id));
            }
            // Another instance opened it meanwhile: look again.
        }
        Err(StoreError::Inconsistent(format!(
            "alert `{}` neither inserted nor found",
            condition.dedupe_key
        )))
    }

    async fn insert_alert(
        &self,
        id: Uuid,
        condition: &Condition,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let provider = condition.provider.map(Provider::as_str);
        let affected = match self {
            Store::Sqlite(store) => sqlx::query(SQLITE_SQL.insert)
                .bind(id)
                .bind(condition.alert_type.as_str())
                .bind(&condition.dedupe_key)
                .bind(condition.org_id.as_deref())
                .bind(provider)
                .bind(condition.model.as_deref())
                .bind(condition.severity.as_str())
                .bind(&condition.title)
                .bind(&condition.message)
                .bind(value_text(condition.threshold_value))
                .bind(value_text(condition.current_value))
                .bind(now.timestamp_micros())
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => sqlx::query(POSTGRES_SQL.insert)
                .bind(id)
                .bind(condition.alert_type.as_str())
                .bind(&condition.dedupe_key)
                .bind(condition.org_id.as_deref())
                .bind(provider)
                .bind(condition.model.as_deref())
                .bind(condition.severity.as_str())
                .bind(&condition.title)
                .bind(&condition.message)
                .bind(value_text(condition.threshold_value))
                .bind(value_text(condition.current_value))
                .bind(now)
                .execute(&store.pool)
                .await?
                .rows_affected(),
        };
        Ok(affected == 1)
    }

    async fn escalate_or_touch(
        &self,
        open: &Alert,
        condition: &Condition,
        now: DateTime<Utc>,
    ) -> Result<Applied, StoreError> {
        if condition.severity > open.severity {
            let escalated = match self {
                Store::Sqlite(store) => sqlx::query(SQLITE_SQL.escalate)
                    .bind(condition.severity.as_str())
                    .bind(&condition.title)
                    .bind(&condition.message)
                    .bind(value_text(condition.threshold_value))
                    .bind(value_text(condition.current_value))
                    .bind(now.timestamp_micros())
                    .bind(open.id)
                    .bind(rank(condition.severity))
                    .execute(&store.writer)
                    .await?
                    .rows_affected(),
                Store::Postgres(store) => sqlx::query(POSTGRES_SQL.escalate)
                    .bind(condition.severity.as_str())
                    .bind(&condition.title)
                    .bind(&condition.message)
                    .bind(value_text(condition.threshold_value))
                    .bind(value_text(condition.current_value))
                    .bind(now)
                    .bind(open.id)
                    .bind(rank(condition.severity))
                    .execute(&store.pool)
                    .await?
                    .rows_affected(),
            };
            if escalated == 1 {
                self.record_alert_event(
                    open.id,
                    AlertEventKind::Escalated,
                    condition.severity,
                    None,
                    now,
                )
                .await?;
                return Ok(Applied::Escalated(open.id));
            }
            return Ok(Applied::Unchanged(open.id));
        }
        match self {
            Store::Sqlite(store) => {
                sqlx::query(SQLITE_SQL.touch)
                    .bind(value_text(condition.current_value))
                    .bind(&condition.message)
                    .bind(now.timestamp_micros())
                    .bind(open.id)
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(POSTGRES_SQL.touch)
                    .bind(value_text(condition.current_value))
                    .bind(&condition.message)
                    .bind(now)
                    .bind(open.id)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(Applied::Unchanged(open.id))
    }

    /// Moves an alert to acknowledged (from active) or resolved (from
    /// either); `None` when there is no such alert. Changing nothing (an
    /// alert already there) is not an error and records no event.
    pub async fn change_alert_status(
        &self,
        scope: &Scope,
        id: Uuid,
        to: AlertStatus,
        actor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StoreError> {
        let (sql_sqlite, sql_postgres) = match to {
            AlertStatus::Acknowledged => (
                "UPDATE ai_usage_alerts SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, updated_at = $1 \
                 WHERE id = $3 AND status = 'active'",
                "UPDATE ai_usage_alerts SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, updated_at = $1 \
                 WHERE id = $3 AND status = 'active'",
            ),
            AlertStatus::Resolved => (
                "UPDATE ai_usage_alerts SET status = 'resolved', resolved_at = $1, resolved_by = $2, updated_at = $1 \
                 WHERE id = $3 AND status <> 'resolved'",
                "UPDATE ai_usage_alerts SET status = 'resolved', resolved_at = $1, resolved_by = $2, updated_at = $1 \
                 WHERE id = $3 AND status <> 'resolved'",
            ),
            AlertStatus::Active => return self.alert(scope, id).await,
        };
        // An alert's organization never changes, so finding it in scope
        // first scopes the update.
        if self.alert(scope, id).await?.is_none() {
            return Ok(None);
        }
        let changed = match self {
            Store::Sqlite(store) => sqlx::query(sql_sqlite)
                .bind(now.timestamp_micros())
                .bind(actor)
                .bind(id)
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => {
                let mut transaction = store.scoped(scope).await?;
                let value = sqlx::query(sql_postgres)
                    .bind(now)
                    .bind(actor)
                    .bind(id)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                transaction.commit().await?;
                value
            }
        };
        let alert = self.alert(scope, id).await?;
        if changed == 1
            && let Some(alert) = &alert
        {
            let event = match to {
                AlertStatus::Acknowledged => AlertEventKind::Acknowledged,
                _ => AlertEventKind::Resolved,
            };
            self.record_alert_event(id, event, alert.severity, actor, now)
                .await?;
        }
        Ok(alert)
    }

    /// Dedupe keys of alerts a person resolved whose conditions have not
    /// cleared since.
    pub async fn uncleared_manual_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(match self {
            Store::Sqlite(store) => sqlx::query_scalar(concat!(
                "SELECT DISTINCT dedupe_key FROM ai_usage_alerts WHERE status = 'resolved' ",
                "AND resolved_by IS NOT NULL AND dedupe_key IS NOT NULL AND condition_cleared = 0"
            ))
            .fetch_all(&store.reader)
            .await?,
            Store::Postgres(store) => sqlx::query_scalar(concat!(
                "SELECT DISTINCT dedupe_key FROM ai_usage_alerts WHERE status = 'resolved' ",
                "AND resolved_by IS NOT NULL AND dedupe_key IS NOT NULL AND NOT condition_cleared"
            ))
            .fetch_all(&store.pool)
            .await?,
        })
    }

    /// The highest threshold each budget period has reached, for periods
    /// that began after `since`: `(budget, period start, percent)`.
    pub async fn budget_thresholds_reached(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>, u32)>, StoreError> {
        let rows: Vec<(Uuid, DateTime<Utc>, i64)> = match self {
            Store::Sqlite(store) => {
                let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
                    "SELECT budget_id, period_start, CAST(MAX(threshold_percent) AS BIGINT) FROM ai_budget_events \
                     WHERE period_start >= $1 GROUP BY budget_id, period_start",
                )
                .bind(since.timestamp_micros())
                .fetch_all(&store.reader)
                .await?;
                rows.into_iter()
                    .map(|(id, start, percent)| micros(start).map(|start| (id, start, percent)))
                    .collect::<Result<_, _>>()?
            }
            Store::Postgres(store) => {
                sqlx::query_as(
                    "SELECT budget_id, period_start, CAST(MAX(threshold_percent) AS BIGINT) FROM ai_budget_events \
                     WHERE period_start >= $1 GROUP BY budget_id, period_start",
                )
                .bind(since)
                .fetch_all(&store.pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(id, start, percent)| (id, start, u32::try_from(percent).unwrap_or(0)))
            .collect())
    }

    /// Notes that the conditions behind these (resolved by a person) have
    /// cleared, so they may be raised again.
    pub async fn mark_conditions_cleared(&self, dedupe_keys: &[String]) -> Result<(), StoreError> {
        for key in dedupe_keys {
            match self {
                Store::Sqlite(store) => {
                    sqlx::query(
                        "UPDATE ai_usage_alerts SET condition_cleared = 1 WHERE dedupe_key = $1 AND status = 'resolved' AND resolved_by IS NOT NULL AND condition_cleared = 0",
                    )
                    .bind(key)
                    .execute(&store.writer)
                    .await?;
                }
                Store::Postgres(store) => {
                    sqlx::query(
                        "UPDATE ai_usage_alerts SET condition_cleared = TRUE WHERE dedupe_key = $1 AND status = 'resolved' AND resolved_by IS NOT NULL AND NOT condition_cleared",
                    )
                    .bind(key)
                    .execute(&store.pool)
                    .await?;
                }
            }
        }
        Ok(())
    }

    pub async fn alert(&self, scope: &Scope, id: Uuid) -> Result<Option<Alert>, StoreError> {
        let mut found = self
            .select_alerts(
                Some(id),
                &AlertFilter {
                    limit: 1,
                    scope: scope.clone(),
                    ..AlertFilter::default()
                },
            )
            .await?;
        Ok(found.pop())
    }

    /// Alerts matching the filter, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        self.select_alerts(None, filter).await
    }

    /// Open (active or acknowledged) alerts of these types, and the keys of
    /// alerts a person resolved whose conditions have not cleared.
    pub async fn open_alerts(&self, types: &[AlertType]) -> Result<Vec<Alert>, StoreError> {
        let mut open = Vec::new();
        for alert_type in types {
            open.extend(
                self.alerts(&AlertFilter {
                    open_only: true,
                    alert_type: Some(*alert_type),
                    limit: 100_000,
                    scope: Scope::All,
                    ..AlertFilter::default()
                })
                .await?,
            );
        }
        Ok(open)
    }

    async fn select_alerts(
        &self,
        id: Option<Uuid>,
        filter: &AlertFilter,
    ) -> Result<Vec<Alert>, StoreError> {
        fn build<DB>(id: Option<Uuid>, filter: &AlertFilter) -> QueryBuilder<DB>
        where
            DB: sqlx::Database,
            for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
            for<'value> Uuid: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
            for<'value> i64: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
        {
            let mut query = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                alert_columns!(),
                " FROM ai_usage_alerts WHERE 1 = 1"
            ));
            if let Some(id) = id {
                query.push(" AND id = ").push_bind(id);
            }
            if filter.open_only {
                query.push(" AND status <> 'resolved'");
            }
            let text = |value: Option<&str>| value.map(str::to_owned);
            for (column, value) in [
                ("status", text(filter.status.map(AlertStatus::as_str))),
                ("severity", text(filter.severity.map(Severity::as_str))),
                ("alert_type", text(filter.alert_type.map(AlertType::as_str))),
                ("provider", text(filter.provider.map(Provider::as_str))),
                ("org_id", filter.org_id.clone()),
            ] {
                if let Some(value) = value {
                    query.push(format!(" AND {column} = ")).push_bind(value);
                }
            }
            scope::push(&mut query, &filter.scope, scope::ALERTS);
            query
                .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .push_bind(filter.limit.max(1));
            query
        }
        let rows = match self {
            Store::Sqlite(store) => build::<Sqlite>(id, filter)
                .build_query_as::<SqliteAlertRow>()
                .fetch_all(&store.reader)
                .await?
                .into_iter()
                .map(SqliteAlertRow::into_alert)
                .collect::<Result<Vec<_>, _>>()?,
            Store::Postgres(store) => {
                let mut transaction = store.scoped(&filter.scope).await?;
                let value = build::<Postgres>(id, filter)
                    .build_query_as::<PostgresAlertRow>()
                    .fetch_all(&mut *transaction)
                    .await?
                    .into_iter()
                    .map(PostgresAlertRow::into_alert)
                    .collect::<Result<Vec<_>, _>>()?;
                transaction.commit().await?;
                value
            }
        };
        Ok(rows.into_iter().map(|(alert, _)| alert).collect())
    }

    /// An alert's history: `(event, severity, actor, when)`, oldest first.
    pub async fn alert_events(
        &self,
        alert_id: Uuid,
    ) -> Result<Vec<(AlertEventKind, Severity, Option<String>, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(String, String, Option<String>, DateTime<Utc>)> = match self {
            Store::Sqlite(store) => {
                let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT event, severity, actor, created_at FROM ai_alert_events WHERE alert_id = $1 ORDER BY created_at, id",
                )
                .bind(alert_id)
                .fetch_all(&store.reader)
                .await?;
                rows.into_iter()
                    .map(|(event, severity, actor, at)| micros(at).map(|at| (event, severity, actor, at)))
                    .collect::<Result<_, _>>()?
            }
            Store::Postgres(store) => {
                sqlx::query_as(
                    "SELECT event, severity, actor, created_at FROM ai_alert_events WHERE alert_id = $1 ORDER BY created_at, id",
                )
                .bind(alert_id)
                .fetch_all(&store.pool)
                .await?
            }
        };
        rows.into_iter()
            .map(|(event, severity, actor, at)| {
                Ok((
                    AlertEventKind::from_str(&event).map_err(|error| corrupt("event", error))?,
                    Severity::from_str(&severity).map_err(|error| corrupt("severity", error))?,
                    actor,
                    at,
                ))
            })
            .collect()
    }
}
