//! The ledger's storage: the only module that runs SQL.
//!
//! [`Store`] is the one interface the rest of Tollgate uses; it dispatches to
//! two honest backends, SQLite (the zero-set-up default) and PostgreSQL (for
//! several instances sharing one database). Each backend has its own
//! migrations with the same numbers and names, and its own native types.
//! SQL is written here as literals and filters are bound, never formatted in.

mod alerts;
mod analytics;
mod audit;
mod budgets;
mod credits;
mod error;
mod export;
mod keys;
mod postgres;
mod reconcile;
mod reports;
mod retention;
mod rows;
mod scope;
mod sqlite;
mod tenants;
mod webhooks;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

pub use alerts::AlertFilter;
pub use analytics::{AggregateRow, Bucket, Grouping};
pub use budgets::{LeaseGrant, LeaseRequest};
pub use error::StoreError;
pub use export::{ExportBatch, ExportRow};
pub use keys::KeyRecord;
pub use reconcile::{LedgerTotals, Totals};
pub use retention::Expiring;
pub use scope::Scope;
pub use tenants::Erasure;
pub use webhooks::{AttemptOutcome, DeliveryRecord, DueDelivery, EventForDelivery, NextStep};

use crate::analytics::plan::Segment;
use crate::config::DatabaseConfig;
use crate::rollup::{RollupDelta, RollupKey};
use crate::usage::{Provider, TaskType, UsageRecord};

/// Filters shared by the record listing and the rollup reader. Times are a
/// half-open range `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub task_type: Option<TaskType>,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    /// Records whose `metadata.tags` holds this tag.
    pub tag: Option<String>,
    /// Whose records: nothing unless set ([`Scope::Nobody`] by default).
    pub scope: Scope,
}

/// A position in the newest-first record listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub request_id: Uuid,
}

/// The order of a record listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// One page of records, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub records: Vec<UsageRecord>,
    pub next: Option<Cursor>,
}

/// What a batch insert did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: usize,
    /// Records whose `request_id` was already stored (or repeated in the batch).
    pub duplicates: usize,
    /// The ids of the records inserted, each once.
    pub inserted_ids: Vec<Uuid>,
}

impl BatchOutcome {
    /// The records of `batch` that this insert added, each once.
    pub fn inserted_records<'a>(&self, batch: &'a [UsageRecord]) -> Vec<&'a UsageRecord> {
        if self.duplicates == 0 {
            return batch.iter().collect();
        }
        let mut left: std::collections::HashSet<Uuid> = self.inserted_ids.iter().copied().collect();
        batch
            .iter()
            .filter(|record| left.remove(&record.request_id))
            .collect()
    }
}

/// What a `migrate` run did: the migrations it applied and the tables that
/// exist now and did not before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<(i64, String)>,
    pub created_tables: Vec<String>,
    /// Migrations that were already applied before this run.
    pub already_applied: usize,
}

/// The ledger, on one of its two backends.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

macro_rules! dispatch {
    ($self:ident, $method:ident($($argument:expr),*)) => {
        match $self {
            Store::Sqlite(store) => store.$method($($argument),*).await,
            Store::Postgres(store) => store.$method($($argument),*).await,
        }
    };
}

impl Store {
    /// Opens the database named by `config.url` (`sqlite://…` or
    /// `postgres://…`). Fails if it cannot be reached.
    pub async fn connect(config: &DatabaseConfig) -> Result<Store, StoreError> {
        let url = config.url.expose();
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(url, config).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                postgres::PostgresStore::connect(url, config).await?,
            ))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations and says what changed.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        dispatch!(self, migrate())
    }

    /// After a bulk fill: refreshes PostgreSQL's planner statistics, which
    /// its autovacuum would otherwise refresh later (or never, where it is
    /// off). SQLite plans these queries well without statistics.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(store) => store.analyze().await,
        }
    }

    /// Answers whether the database is reachable right now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, ping())
    }

    /// The database roles the server's queries run as, its own work's and
    /// callers' (PostgreSQL; `None` on SQLite, which has no roles). For
    /// diagnostics: both should be `tollgate_app`.
    pub async fn working_roles(&self) -> Result<Option<(String, String)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(store) => store.working_roles().await.map(Some),
        }
    }

    /// Inserts records in one transaction, ignoring those whose `request_id`
    /// is already stored, and adds the new ones to the rollup in the same
    /// transaction. Days are taken in `timezone`.
    pub async fn insert_usage(
        &self,
        records: &[UsageRecord],
        timezone: Tz,
    ) -> Result<BatchOutcome, StoreError> {
        dispatch!(self, insert_usage(records, timezone))
    }

    /// Records matching `filter`, newest first, after `cursor`.
    pub async fn usage_records(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        dispatch!(
            self,
            usage_records(filter, cursor, limit, Order::NewestFirst)
        )
    }

    /// Records matching `filter`, oldest first, after `cursor`: the export's
    /// pages.
    pub async fn usage_records_oldest_first(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        dispatch!(
            self,
            usage_records(filter, cursor, limit, Order::OldestFirst)
        )
    }

    /// Up to `limit` records after `cursor` matching `filter`, oldest first,
    /// encoded by the database as one JSON text (the export's fast path).
    pub async fn usage_export_page(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        until: Option<Cursor>,
        limit: u32,
    ) -> Result<ExportBatch, StoreError> {
        match self {
            Store::Sqlite(store) => {
                export::page_sqlite(&store.reader, filter, cursor, until, limit).await
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(&filter.scope).await?;
                let page =
                    export::page_postgres(&mut transaction, filter, cursor, until, limit).await?;
                transaction.commit().await?;
                Ok(page)
            }
        }
    }

    /// Where the `offset`-th record after `cursor` that matches the filter
    /// is, oldest first, if there are that many: how an export finds its
    /// pages' ends ahead of reading them, so it can read several at once.
    pub async fn usage_export_boundary(
        &self,
        filter: &RecordFilter,
        cursor: Option<Cursor>,
        offset: u32,
    ) -> Result<Option<Cursor>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                export::boundary_sqlite(&store.reader, filter, cursor, offset).await
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(&filter.scope).await?;
                let boundary =
                    export::boundary_postgres(&mut transaction, filter, cursor, offset).await?;
                transaction.commit().await?;
                Ok(boundary)
            }
        }
    }

    /// Rollup rows whose org, provider, model and task type match the filter,
    /// for the days in `timezone` that the filter's time range touches.
    pub async fn rollups(
        &self,
        filter: &RecordFilter,
        timezone: Tz,
    ) -> Result<Vec<(RollupKey, RollupDelta)>, StoreError> {
        dispatch!(self, rollups(filter, timezone))
    }

    /// Adds already-stored records to the analytics rollups (and nothing
    /// else), in one transaction: the backfill after migration 0006.
    pub async fn add_to_usage_rollups(
        &self,
        records: &[UsageRecord],
        timezone: Tz,
    ) -> Result<(), StoreError> {
        let deltas = crate::analytics::rollups::usage_deltas(records, timezone);
        match self {
            Store::Sqlite(store) => {
                let mut transaction = store.writer.begin_with("BEGIN IMMEDIATE").await?;
                analytics::add_usage_sqlite(&mut transaction, &deltas).await?;
                transaction.commit().await?;
            }
            Store::Postgres(store) => {
                let mut transaction = store.pool.begin().await?;
                analytics::add_usage_postgres(&mut transaction, &deltas).await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// Sums of the records in one segment of a range that match `filter`
    /// (its `start` and `end` are ignored: the segment is the range),
    /// grouped as asked.
    pub async fn usage_aggregate(
        &self,
        segment: &Segment,
        filter: &RecordFilter,
        grouping: Grouping,
    ) -> Result<Vec<AggregateRow>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                analytics::aggregate_sqlite(&store.reader, segment, filter, grouping).await
            }
            Store::Postgres(store) => {
                let mut transaction = store.scoped(&filter.scope).await?;
                let rows =
                    analytics::aggregate_postgres(&mut transaction, segment, filter, grouping)
                        .await?;
                transaction.commit().await?;
                Ok(rows)
            }
        }
    }

    /// Closes every connection; in-flight queries finish first.
    pub async fn close(&self) {
        dispatch!(self, close())
    }
}

/// A database URL fit for messages and logs: any password, in the user
/// part or as a `password=` parameter, is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = match base.split_once("://") {
        // The last `@` ends the user part: a password may contain `@`.
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&parameters.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/tollgate"),
            "postgres://app:***@db:5432/tollgate"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://tollgate.db"), "sqlite://tollgate.db");
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x?sslmode=require&password=hunter2"),
            "postgres://app:***@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgresql:///x?host=/run&password=hunter2"),
            "postgresql:///x?host=/run&password=***"
        );
    }
}
