//! Provider credits (`ai_provider_credits`), on both backends.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::credits::{Credits, KeyStatus, Observation};
use crate::money::NanoUsd;
use crate::usage::Provider;

type Row<T> = (
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<i64>,
    Option<T>,
    Option<i64>,
    Option<String>,
);

const SELECT: &str = "SELECT provider, balance_nano_usd, total_credits_nano_usd, total_usage_nano_usd, \
     key_limit_nano_usd, key_limit_remaining_nano_usd, key_status, low_balance_threshold_nano_usd, checked_at, \
     billed_nano_usd, CAST(billed_day AS TEXT) \
     FROM ai_provider_credits ORDER BY provider";

/// Writes a poll's findings. The balance is written only when the poll
/// could read one (`$11`), so a balance set by hand survives polls of a
/// provider without a balance API.
const OBSERVE: &str = "INSERT INTO ai_provider_credits (provider, key_status, balance_nano_usd, total_credits_nano_usd, \
     total_usage_nano_usd, key_limit_nano_usd, key_limit_remaining_nano_usd, checked_at, billed_nano_usd, billed_day) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (provider) DO UPDATE SET \
     billed_nano_usd = COALESCE(excluded.billed_nano_usd, ai_provider_credits.billed_nano_usd), \
     billed_day = COALESCE(excluded.billed_day, ai_provider_credits.billed_day), \
     key_status = excluded.key_status, \
     balance_nano_usd = CASE WHEN $11 THEN excluded.balance_nano_usd ELSE ai_provider_credits.balance_nano_usd END, \
     total_credits_nano_usd = COALESCE(excluded.total_credits_nano_usd, ai_provider_credits.total_credits_nano_usd), \
     total_usage_nano_usd = COALESCE(excluded.total_usage_nano_usd, ai_provider_credits.total_usage_nano_usd), \
     key_limit_nano_usd = CASE WHEN $12 THEN excluded.key_limit_nano_usd ELSE ai_provider_credits.key_limit_nano_usd END, \
     key_limit_remaining_nano_usd = CASE WHEN $12 THEN excluded.key_limit_remaining_nano_usd ELSE ai_provider_credits.key_limit_remaining_nano_usd END, \
     checked_at = excluded.checked_at";

/// Sets the threshold and, optionally, a balance by hand.
const MANUAL: &str = "INSERT INTO ai_provider_credits (provider, low_balance_threshold_nano_usd, balance_nano_usd) \
     VALUES ($1, $2, $3) ON CONFLICT (provider) DO UPDATE SET \
     low_balance_threshold_nano_usd = CASE WHEN $4 THEN excluded.low_balance_threshold_nano_usd ELSE ai_provider_credits.low_balance_threshold_nano_usd END, \
     balance_nano_usd = CASE WHEN $5 THEN excluded.balance_nano_usd ELSE ai_provider_credits.balance_nano_usd END";

fn credits_from<T>(
    row: Row<T>,
    at: impl Fn(T) -> Result<DateTime<Utc>, StoreError>,
) -> Result<Credits, StoreError> {
    let (
        provider,
        balance,
        credits,
        usage,
        limit,
        remaining,
        status,
        threshold,
        checked,
        billed,
        billed_day,
    ) = row;
    let billed = match (billed_day, billed) {
        (Some(day), Some(amount)) => Some((
            chrono::NaiveDate::from_str(&day)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            NanoUsd::from_nanos(amount),
        )),
        _ => None,
    };
    let nanos = |value: Option<i64>| value.map(NanoUsd::from_nanos);
    Ok(Credits {
        provider: Provider::from_str(&provider)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        balance: nanos(balance),
        total_credits: nanos(credits),
        total_usage: nanos(usage),
        key_limit: nanos(limit),
        key_limit_remaining: nanos(remaining),
        key_status: KeyStatus::from_str(&status)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        low_balance_threshold: nanos(threshold),
        checked_at: checked.map(at).transpose()?,
        billed,
    })
}

impl Store {
    /// What the ledger recorded for a provider in `[start, end)`, summed
    /// from the quarter-hour spend aggregate.
    pub async fn provider_spend(
        &self,
        provider: Provider,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<NanoUsd, StoreError> {
        const SUM: &str = "SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_budget_spend \
             WHERE provider = $1 AND bucket_start >= $2 AND bucket_start < $3";
        let nanos: i64 = match self {
            Store::Sqlite(store) => {
                sqlx::query_scalar(SUM)
                    .bind(provider.as_str())
                    .bind(start.timestamp_micros())
                    .bind(end.timestamp_micros())
                    .fetch_one(&store.reader)
                    .await?
            }
            Store::Postgres(store) => {
                sqlx::query_scalar(SUM)
                    .bind(provider.as_str())
                    .bind(start)
                    .bind(end)
                    .fetch_one(&store.pool)
                    .await?
            }
        };
        Ok(NanoUsd::from_nanos(nanos))
    }

    /// Every provider's credits (providers never polled or set are absent).
    pub async fn credits(&self) -> Result<Vec<Credits>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<Row<i64>> = sqlx::query_as(SELECT).fetch_all(&store.reader).await?;
                rows.into_iter()
                    .map(|row| {
                        credits_from(row, |micros| {
                            DateTime::from_timestamp_micros(micros)
                                .ok_or_else(|| StoreError::Corrupt(format!("time {micros}")))
                        })
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let rows: Vec<Row<DateTime<Utc>>> =
                    sqlx::query_as(SELECT).fetch_all(&store.pool).await?;
                rows.into_iter().map(|row| credits_from(row, Ok)).collect()
            }
        }
    }

    pub async fn record_observation(
        &self,
        provider: Provider,
        observation: &Observation,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let nanos = |value: Option<NanoUsd>| value.map(NanoUsd::nanos);
        let limits = observation.key_limit.is_some();
        let limit = observation.key_limit.flatten();
        let remaining = observation.key_limit_remaining.flatten();
        let balance_read = observation.balance.is_some();
        let balance = observation.balance.flatten();
        match self {
            Store::Sqlite(store) => {
                sqlx::query(OBSERVE)
                    .bind(provider.as_str())
                    .bind(observation.key_status.as_str())
                    .bind(nanos(balance))
                    .bind(nanos(observation.total_credits))
                    .bind(nanos(observation.total_usage))
                    .bind(nanos(limit))
                    .bind(nanos(remaining))
                    .bind(now.timestamp_micros())
                    .bind(observation.billed_today.map(|(_, amount)| amount.nanos()))
                    .bind(observation.billed_today.map(|(day, _)| day.to_string()))
                    .bind(balance_read)
                    .bind(limits)
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(OBSERVE)
                    .bind(provider.as_str())
                    .bind(observation.key_status.as_str())
                    .bind(nanos(balance))
                    .bind(nanos(observation.total_credits))
                    .bind(nanos(observation.total_usage))
                    .bind(nanos(limit))
                    .bind(nanos(remaining))
                    .bind(now)
                    .bind(observation.billed_today.map(|(_, amount)| amount.nanos()))
                    .bind(observation.billed_today.map(|(day, _)| day))
                    .bind(balance_read)
                    .bind(limits)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sets a provider's low-balance threshold and/or balance by hand;
    /// `Some(None)` clears one, `None` leaves it.
    pub async fn set_credits(
        &self,
        provider: Provider,
        threshold: Option<Option<NanoUsd>>,
        balance: Option<Option<NanoUsd>>,
    ) -> Result<(), StoreError> {
        let value = |setting: Option<Option<NanoUsd>>| setting.flatten().map(NanoUsd::nanos);
        match self {
            Store::Sqlite(store) => {
                sqlx::query(MANUAL)
                    .bind(provider.as_str())
                    .bind(value(threshold))
                    .bind(value(balance))
                    .bind(threshold.is_some())
                    .bind(balance.is_some())
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(MANUAL)
                    .bind(provider.as_str())
                    .bind(value(threshold))
                    .bind(value(balance))
                    .bind(threshold.is_some())
                    .bind(balance.is_some())
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }
}
