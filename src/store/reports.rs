//! Scheduled report definitions, and the claim that lets one instance run
//! each period, on both backends.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::reports::{Frequency, ScheduledReport};

const REPORT_COLUMNS: &str = "id, name, frequency, org_id, webhook_id, folder, last_period_start, \
     last_run_at, last_error, created_at, updated_at";

type SqliteRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

type PostgresRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<Uuid>,
    Option<String>,
    Option<NaiveDate>,
    Option<DateTime<Utc>>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros}")))
}

fn frequency(text: &str) -> Result<Frequency, StoreError> {
    Frequency::from_str(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// A SQLite row in the native types PostgreSQL returns.
fn from_sqlite(row: SqliteRow) -> Result<ScheduledReport, StoreError> {
    let (id, name, kind, org_id, webhook_id, folder, last, run_at, last_error, created, updated) =
        row;
    let last = last
        .map(|day| {
            NaiveDate::from_str(&day)
                .map_err(|error| StoreError::Corrupt(format!("report period: {error}")))
        })
        .transpose()?;
    from_postgres((
        id,
        name,
        kind,
        org_id,
        webhook_id,
        folder,
        last,
        run_at.map(time).transpose()?,
        last_error,
        time(created)?,
        time(updated)?,
    ))
}

fn from_postgres(row: PostgresRow) -> Result<ScheduledReport, StoreError> {
    let (id, name, kind, org_id, webhook_id, folder, last, run_at, last_error, created, updated) =
        row;
    Ok(ScheduledReport {
        id,
        name,
        frequency: frequency(&kind)?,
        org_id,
        webhook_id,
        folder,
        last_period_start: last,
        last_run_at: run_at,
        last_error,
        created_at: created,
        updated_at: updated,
    })
}

impl Store {
    pub async fn insert_scheduled_report(
        &self,
        report: &ScheduledReport,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO scheduled_reports (id, name, frequency, org_id, \
             webhook_id, folder, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        match self {
            Store::Sqlite(store) => {
                sqlx::query(INSERT)
                    .bind(report.id)
                    .bind(&report.name)
                    .bind(report.frequency.as_str())
                    .bind(&report.org_id)
                    .bind(report.webhook_id)
                    .bind(&report.folder)
                    .bind(report.created_at.timestamp_micros())
                    .bind(report.updated_at.timestamp_micros())
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(INSERT)
                    .bind(report.id)
                    .bind(&report.name)
                    .bind(report.frequency.as_str())
                    .bind(&report.org_id)
                    .bind(report.webhook_id)
                    .bind(&report.folder)
                    .bind(report.created_at)
                    .bind(report.updated_at)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn scheduled_reports(&self) -> Result<Vec<ScheduledReport>, StoreError> {
        let select =
            format!("SELECT {REPORT_COLUMNS} FROM scheduled_reports ORDER BY created_at, id");
        match self {
            Store::Sqlite(store) => {
                let rows: Vec<SqliteRow> = sqlx::query_as(sqlx::AssertSqlSafe(select))
                    .fetch_all(&store.reader)
                    .await?;
                rows.into_iter().map(from_sqlite).collect()
            }
            Store::Postgres(store) => {
                let rows: Vec<PostgresRow> = sqlx::query_as(sqlx::AssertSqlSafe(select))
                    .fetch_all(&store.pool)
                    .await?;
                rows.into_iter().map(from_postgres).collect()
            }
        }
    }

    pub async fn delete_scheduled_report(&self, id: Uuid) -> Result<bool, StoreError> {
        const DELETE: &str = "DELETE FROM scheduled_reports WHERE id = $1";
        let affected = match self {
            Store::Sqlite(store) => sqlx::query(DELETE)
                .bind(id)
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) => sqlx::query(DELETE)
                .bind(id)
                .execute(&store.pool)
                .await?
                .rows_affected(),
        };
        Ok(affected > 0)
    }

    /// Marks the period starting `period` as this instance's to run, if the
    /// report still stands where the caller saw it (`seen`). False when
    /// another instance got there first.
    pub async fn claim_report_run(
        &self,
        id: Uuid,
        seen: Option<NaiveDate>,
        period: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const CLAIM: &str = "UPDATE scheduled_reports SET last_period_start = $1, last_run_at = $2, \
             updated_at = $2 WHERE id = $3 AND last_period_start IS NOT DISTINCT FROM $4";
        let affected = match self {
            Store::Sqlite(store) => sqlx::query(
                "UPDATE scheduled_reports SET last_period_start = $1, last_run_at = $2, \
                 updated_at = $2 WHERE id = $3 AND last_period_start IS $4",
            )
            .bind(period.to_string())
            .bind(now.timestamp_micros())
            .bind(id)
            .bind(seen.map(|day| day.to_string()))
            .execute(&store.writer)
            .await?
            .rows_affected(),
            Store::Postgres(store) => sqlx::query(CLAIM)
                .bind(period)
                .bind(now)
                .bind(id)
                .bind(seen)
                .execute(&store.pool)
                .await?
                .rows_affected(),
        };
        Ok(affected == 1)
    }

    /// A run that failed: the period goes back to `previous` (so the next
    /// round tries again) and the error is kept.
    pub async fn release_report_run(
        &self,
        id: Uuid,
        previous: Option<NaiveDate>,
        error: &str,
    ) -> Result<(), StoreError> {
        const RELEASE: &str =
            "UPDATE scheduled_reports SET last_period_start = $1, last_error = $2 WHERE id = $3";
        match self {
            Store::Sqlite(store) => {
                sqlx::query(RELEASE)
                    .bind(previous.map(|day| day.to_string()))
                    .bind(error)
                    .bind(id)
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(RELEASE)
                    .bind(previous)
                    .bind(error)
                    .bind(id)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A run that succeeded: clears the last error.
    pub async fn report_run_finished(
        &self,
        id: Uuid,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        const FINISH: &str = "UPDATE scheduled_reports SET last_error = $1 WHERE id = $2";
        match self {
            Store::Sqlite(store) => {
                sqlx::query(FINISH)
                    .bind(error)
                    .bind(id)
                    .execute(&store.writer)
                    .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(FINISH)
                    .bind(error)
                    .bind(id)
                    .execute(&store.pool)
                    .await?;
            }
        }
        Ok(())
    }
}
