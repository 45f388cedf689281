//! The audit log (`audit_log`), on both backends: appended by the server,
//! read by administrators (organization administrators: their own).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::scope::{self, Tenancy};
use super::{Store, StoreError};
use crate::audit::{AuditEntry, AuditFilter, AuditResult};

/// Audit entries belong to an organization; members read none.
const AUDIT: Tenancy = Tenancy {
    org: "org_id",
    user: None,
    members_see_org_rows: false,
    key: None,
};

const COLUMNS: &str = "SELECT id, created_at, actor, org_id, action, target, result, client_addr, details FROM audit_log WHERE 1 = 1";

type Row<T, D> = (
    i64,
    T,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<String>,
    D,
);

impl Store {
    /// Appends an entry (as the server itself, whoever the actor was).
    pub async fn insert_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => {
                sqlx::query(
                    "INSERT INTO audit_log (created_at, actor, org_id, action, target, result, client_addr, details) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(entry.created_at.timestamp_micros())
                .bind(&entry.actor)
                .bind(&entry.org_id)
                .bind(&entry.action)
                .bind(&entry.target)
                .bind(entry.result.as_str())
                .bind(&entry.client_addr)
                .bind(entry.details.to_string())
                .execute(&store.writer)
                .await?;
            }
            Store::Postgres(store) => {
                sqlx::query(
                    "INSERT INTO audit_log (created_at, actor, org_id, action, target, result, client_addr, details) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(entry.created_at)
                .bind(&entry.actor)
                .bind(&entry.org_id)
                .bind(&entry.action)
                .bind(&entry.target)
                .bind(entry.result.as_str())
                .bind(&entry.client_addr)
                .bind(Json(&entry.details))
                .execute(&store.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Entries matching the filter, in the scope, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        fn build<DB, T>(filter: &AuditFilter, start: Option<T>, end: Option<T>) -> QueryBuilder<DB>
        where
            DB: sqlx::Database,
            for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
            for<'value> i64: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
            for<'value> T: sqlx::Encode<'value, DB> + sqlx::Type<DB> + 'static,
        {
            let mut query = QueryBuilder::<DB>::new(COLUMNS);
            for (column, value) in [
                ("actor", &filter.actor),
                ("action", &filter.action),
                ("org_id", &filter.org_id),
                ("target", &filter.target),
            ] {
                if let Some(value) = value {
                    query
                        .push(format_args!(" AND {column} = "))
                        .push_bind(value.clone());
                }
            }
            if let Some(start) = start {
                query.push(" AND created_at >= ").push_bind(start);
            }
            if let Some(end) = end {
                query.push(" AND created_at < ").push_bind(end);
            }
            if let Some(before) = filter.before_id {
                query.push(" AND id < ").push_bind(before);
            }
            scope::push(&mut query, &filter.scope, AUDIT);
            query
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(filter.limit.max(1));
            query
        }
        match self {
            Store::Sqlite(store) => {
                let micros = |time: Option<DateTime<Utc>>| time.map(|time| time.timestamp_micros());
                let rows: Vec<Row<i64, String>> =
                    build::<Sqlite, i64>(filter, micros(filter.start), micros(filter.end))
                        .build_query_as()
                        .fetch_all(&store.reader)
                        .await?;
                rows.into_iter()
                    .map(|row| {
                        let created_at = super::keys::micros(row.1)?;
                        let details = serde_json::from_str(&row.8).map_err(|error| {
                            StoreError::Corrupt(format!("audit details: {error}"))
                        })?;
                        entry(row, created_at, details)
                    })
                    .collect()
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(&filter.scope).await?;
                let rows: Vec<Row<DateTime<Utc>, Json<Value>>> =
                    build::<Postgres, DateTime<Utc>>(filter, filter.start, filter.end)
                        .build_query_as()
                        .fetch_all(&mut *transaction)
                        .await?;
                transaction.commit().await?;
                rows.into_iter()
                    .map(|row| {
                        let created_at = row.1;
                        let details = row.8.0.clone();
                        entry(row, created_at, details)
                    })
                    .collect()
            }
        }
    }
}

fn entry<T, D>(
    row: Row<T, D>,
    created_at: DateTime<Utc>,
    details: Value,
) -> Result<AuditEntry, StoreError> {
    let (id, _, actor, org_id, action, target, result, client_addr, _) = row;
    Ok(AuditEntry {
        id,
        created_at,
        actor,
        org_id,
        action,
        target,
        result: AuditResult::from_str(&result)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        client_addr,
        details,
    })
}
