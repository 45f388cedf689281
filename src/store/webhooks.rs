//! Webhooks and their persisted delivery queue, on both backends.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::alerts::{AlertEventKind, Severity};
use crate::config::Secret;
use crate::webhooks::{Webhook, WebhookFormat};

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("webhook {what}: {error}"))
}

fn micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt("time", value))
}

type WebhookColumns = (Uuid, String, String, String, String, String);

/// A webhook row with its creation time as the backend stores it.
type WebhookRow<T> = (Uuid, String, String, String, String, String, T);

fn webhook_from(columns: WebhookColumns, created_at: DateTime<Utc>) -> Result<Webhook, StoreError> {
    let (id, url, secret, events, min_severity, format) = columns;
    let events: Vec<String> =
        serde_json::from_str(&events).map_err(|error| corrupt("events", error))?;
    Ok(Webhook {
        id,
        url,
        secret: Secret::new(secret),
        events: events
            .iter()
            .map(|event| AlertEventKind::from_str(event).map_err(|error| corrupt("event", error)))
            .collect::<Result<_, _>>()?,
        min_severity: Severity::from_str(&min_severity)
            .map_err(|error| corrupt("severity", error))?,
        format: WebhookFormat::from_str(&format).map_err(|error| corrupt("format", error))?,
        created_at,
    })
}

/// A delivery taken from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub attempts: i64,
}

/// A delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An alert event with what a webhook body needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventForDelivery {
    pub event_id: Uuid,
    pub event: AlertEventKind,
    pub severity: Severity,
    pub created_at: DateTime<Utc>,
    pub alert: crate::alerts::Alert,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// Delivered (2xx), retry at this time, or give up.
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

impl Store {
    pub async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let events: Vec<&str> = webhook.events.iter().map(|event| event.as_str()).collect();
        let events = serde_json::Value::from(events).to_string();
        match self {
            Store::Sqlite(store) => {
                sqlx::query("INSERT INTO webhooks (id, url, secret, events, min_severity, format, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(webhook.id)
                    .bind(&webhook.url)
                    .bind(webhook.secret.expose())
                    .bind(events)
                    .bind(webhook.min_severity.as_str())
                    .bind(webhook.format.as_str())
                    .bind(webhook.created_at.timestamp_micros())
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query("INSERT INTO webhooks (id, url, secret, events, min_severity, format, created_at) VALUES ($1, $2, $3, CAST($4 AS JSONB), $5, $6, $7)")
                    .bind(webhook.id)
                    .bind(&webhook.url)
                    .bind(webhook.secret.expose())
                    .bind(events)
                    .bind(webhook.min_severity.as_str())
                    .bind(webhook.format.as_str())
                    .bind(webhook.created_at)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<WebhookRow<i64>> = sqlx::query_as(
                    "SELECT id, url, secret, events, min_severity, format, created_at FROM webhooks ORDER BY created_at, id",
                )
                .fetch_all(&store.reader)
                .await?;
                rows.into_iter()
                    .map(|(id, url, secret, events, severity, format, at)| {
                        webhook_from((id, url, secret, events, severity, format), micros(at)?)
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let rows: Vec<WebhookRow<DateTime<Utc>>> =
                    sqlx::query_as(
                        "SELECT id, url, secret, CAST(events AS TEXT), min_severity, format, created_at FROM webhooks ORDER BY created_at, id",
                    )
                    .fetch_all(&store.pool)
                    .await?;
                rows.into_iter()
                    .map(|(id, url, secret, events, severity, format, at)| {
                        webhook_from((id, url, secret, events, severity, format), at)
                    })
                    .collect()
            }
        }
    }

    pub async fn delete_webhook(&self, id: Uuid) -> Result<bool, StoreError> {
        let affected = match self {
            Store::Sqlite(store) => sqlx::query("DELETE FROM webhooks WHERE id = $1")
                .bind(id)
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => sqlx::query("DELETE FROM webhooks WHERE id = $1")
                .bind(id)
                .execute(&store.pool)
                .await?
                .rows_affected(),
        };
        Ok(affected == 1)
    }

    /// Ids and times of the alert events recorded at or after `since`,
    /// oldest first.
    pub async fn alert_event_ids_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        const SELECT: &str = "SELECT id, created_at FROM ai_alert_events WHERE created_at >= $1 ORDER BY created_at, id";
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<(Uuid, i64)> = sqlx::query_as(SELECT)
                    .bind(since.timestamp_micros())
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter()
                    .map(|(id, at)| micros(at).map(|at| (id, at)))
                    .collect()
            }
            Store::Postgres(store) => Ok(sqlx::query_as(SELECT)
                .bind(since)
                .fetch_all(&store.pool)
                .await?),
        }
    }

    /// One alert event, with its alert.
    pub async fn event_for_delivery(
        &self,
        event_id: Uuid,
    ) -> Result<Option<EventForDelivery>, StoreError> {
        let row: Option<(Uuid, String, String, DateTime<Utc>)> = match self {
            Store::Sqlite(store) => {
                let row: Option<(Uuid, String, String, i64)> = sqlx::query_as(
                    "SELECT alert_id, event, severity, created_at FROM ai_alert_events WHERE id = $1",
                )
                .bind(event_id)
                .fetch_optional(&store.reader)
                .await?;
                row.map(|(alert, event, severity, at)| {
                    micros(at).map(|at| (alert, event, severity, at))
                })
                .transpose()?
            }
            Store::Postgres(store) => sqlx::query_as(
                "SELECT alert_id, event, severity, created_at FROM ai_alert_events WHERE id = $1",
            )
            .bind(event_id)
            .fetch_optional(&store.pool)
            .await?,
        };
        let Some((alert_id, event, severity, created_at)) = row else {
            return Ok(None);
        };
        let Some(alert) = self.alert(&super::Scope::All, alert_id).await? else {
            return Ok(None);
        };
        Ok(Some(EventForDelivery {
            event_id,
            event: AlertEventKind::from_str(&event).map_err(|error| corrupt("event", error))?,
            severity: Severity::from_str(&severity).map_err(|error| corrupt("severity", error))?,
            created_at,
            alert,
        }))
    }

    /// Queues an event for a webhook, once (over every instance).
    pub async fn enqueue_delivery(
        &self,
        webhook_id: Uuid,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO webhook_deliveries (id, webhook_id, event_id, status, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (webhook_id, event_id) DO NOTHING";
        let affected = match self {
            Store::Sqlite(store) => sqlx::query(SQL)
                .bind(Uuid::now_v7())
                .bind(webhook_id)
                .bind(event_id)
                .bind(now.timestamp_micros())
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => sqlx::query(SQL)
                .bind(Uuid::now_v7())
                .bind(webhook_id)
                .bind(event_id)
                .bind(now)
                .execute(&store.pool)
                .await?
                .rows_affected(),
        };
        Ok(affected == 1)
    }

    /// Takes up to `limit` due deliveries for `lease` (no other instance
    /// takes them meanwhile).
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows: Vec<(Uuid, Uuid, Uuid, i64)> = match self {
            Store::Sqlite(store) => sqlx::query_as(
                "UPDATE webhook_deliveries SET locked_until = $1 WHERE id IN (\
                 SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $2 \
                 AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT $3) \
                 RETURNING id, webhook_id, event_id, CAST(attempts AS BIGINT)",
            )
            .bind((now + lease).timestamp_micros())
            .bind(now.timestamp_micros())
            .bind(limit)
            .fetch_all(&store.writer)
            .await?,
            Store::Postgres(store) => sqlx::query_as(
                "UPDATE webhook_deliveries SET locked_until = $1 WHERE id IN (\
                 SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $2 \
                 AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at LIMIT $3 \
                 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, webhook_id, event_id, CAST(attempts AS BIGINT)",
            )
            .bind(now + lease)
            .bind(now)
            .bind(limit)
            .fetch_all(&store.pool)
            .await?,
        };
        Ok(rows
            .into_iter()
            .map(|(id, webhook_id, event_id, attempts)| DueDelivery {
                id,
                webhook_id,
                event_id,
                attempts,
            })
            .collect())
    }

    /// Logs an attempt and moves the delivery on.
    pub async fn record_delivery_attempt(
        &self,
        delivery: &DueDelivery,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let attempt = delivery.attempts + 1;
        let (status, next_at, delivered_at) = match outcome.next {
            NextStep::Delivered => ("delivered", now, Some(now)),
            NextStep::RetryAt(at) => ("pending", at, None),
            NextStep::GiveUp => ("failed", now, None),
        };
        let code = outcome.status_code.map(i64::from);
        const UPDATE: &str = "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, \
             locked_until = NULL, last_status_code = $4, last_error = $5, delivered_at = $6 WHERE id = $7";
        const LOG: &str = "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
        match self {
            Store::Sqlite(store) => {
                let mut transaction = store.writer.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(UPDATE)
                    .bind(status)
                    .bind(attempt)
                    .bind(next_at.timestamp_micros())
                    .bind(code)
                    .bind(outcome.error.as_deref())
                    .bind(delivered_at.map(|at| at.timestamp_micros()))
                    .bind(delivery.id)
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query(LOG)
                    .bind(delivery.id)
                    .bind(attempt)
                    .bind(now.timestamp_micros())
                    .bind(code)
                    .bind(outcome.error.as_deref())
                    .bind(outcome.duration_ms)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
            }
            Store::Postgres(store) => {
                let mut transaction = store.pool.begin().await?;
                sqlx::query(UPDATE)
                    .bind(status)
                    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                    .bind(next_at)
                    .bind(code.and_then(|code| i32::try_from(code).ok()))
                    .bind(outcome.error.as_deref())
                    .bind(delivered_at)
                    .bind(delivery.id)
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query(LOG)
                    .bind(delivery.id)
                    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                    .bind(now)
                    .bind(code.and_then(|code| i32::try_from(code).ok()))
                    .bind(outcome.error.as_deref())
                    .bind(outcome.duration_ms)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// A webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        webhook_id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        const SELECT: &str = "SELECT id, event_id, status, CAST(attempts AS BIGINT), CAST(last_status_code AS BIGINT), \
             last_error, created_at, delivered_at FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2";
        type Row<T> = (
            Uuid,
            Uuid,
            String,
            i64,
            Option<i64>,
            Option<String>,
            T,
            Option<T>,
        );
        let rows: Vec<Row<DateTime<Utc>>> = match self {
            Store::Sqlite(store) => {
                let rows: Vec<Row<i64>> = sqlx::query_as(SELECT)
                    .bind(webhook_id)
                    .bind(limit)
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter()
                    .map(
                        |(id, event, status, attempts, code, error, at, delivered)| {
                            Ok((
                                id,
                                event,
                                status,
                                attempts,
                                code,
                                error,
                                micros(at)?,
                                delivered.map(micros).transpose()?,
                            ))
                        },
                    )
                    .collect::<Result<_, StoreError>>()?
            }
            Store::Postgres(store) => {
                sqlx::query_as(SELECT)
                    .bind(webhook_id)
                    .bind(limit)
                    .fetch_all(&store.pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    event_id,
                    status,
                    attempts,
                    last_status_code,
                    last_error,
                    created_at,
                    delivered_at,
                )| {
                    DeliveryRecord {
                        id,
                        event_id,
                        status,
                        attempts,
                        last_status_code,
                        last_error,
                        created_at,
                        delivered_at,
                    }
                },
            )
            .collect())
    }
}
