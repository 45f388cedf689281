//! What the alert rules read: per-minute request and error counts (kept by
//! the recorder), and a day's spend from the rollup.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::{Store, StoreError};
use crate::alerts::minutes::{MinuteDelta, MinuteKey};
use crate::alerts::rules::{DailySpend, WindowCounts};
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
