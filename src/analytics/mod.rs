//! Analytics: what the usage ledger adds up to. Rollups kept as records
//! land (`rollups`), how a time range is read from them (`plan`), and the
//! summaries built from the sums (`summary`). Pure; the store runs the SQL.

pub mod plan;
pub mod projection;
pub mod rollups;
pub mod summary;

use chrono_tz::Tz;

use crate::store::{AggregateRow, Grouping, RecordFilter, Store, StoreError};

/// Every record matching `filter` (its time range included), summed and
/// grouped: the range is split by [`plan::plan`] and each piece read from
/// the table that answers it.
pub async fn aggregate(
    store: &Store,
    filter: &RecordFilter,
    timezone: Tz,
    grouping: Grouping,
) -> Result<Vec<AggregateRow>, StoreError> {
    let segments = plan::plan(filter.start, filter.end, timezone, filter.tag.is_none());
    let mut rows = Vec::new();
    for segment in &segments {
        rows.extend(store.usage_aggregate(segment, filter, grouping).await?);
    }
    Ok(rows)
}

/// The migration that added the analytics rollups.
pub const ROLLUPS_MIGRATION: i64 = 6;

/// After migrations: when this run created the analytics rollups and the
/// ledger already held records, fills the rollups from them (once; a run
/// that did not apply the migration does nothing).
pub async fn after_migration(
    store: &Store,
    report: &crate::store::MigrationReport,
    timezone: Tz,
) -> Result<(), StoreError> {
    if report
        .applied
        .iter()
        .any(|(version, _)| *version == ROLLUPS_MIGRATION)
    {
        let added = backfill(store, timezone).await?;
        if added > 0 {
            tracing::info!(
                records = added,
                "filled the analytics rollups from the ledger"
            );
        }
    }
    Ok(())
}

/// Fills the analytics rollups from the records stored before they existed.
/// Returns how many records it added.
pub async fn backfill(store: &Store, timezone: Tz) -> Result<u64, StoreError> {
    let mut pages = crate::export::Pages::new(store.clone(), RecordFilter::default());
    let mut added = 0_u64;
    while let Some(records) = pages.next().await? {
        if records.is_empty() {
            break;
        }
        store.add_to_usage_rollups(&records, timezone).await?;
        added += records.len() as u64;
    }
    Ok(added)
}

/// Like [`aggregate`] for an hourly series: whole hours from the hourly
/// rollup, the rest from the ledger, never the daily rollup.
pub async fn aggregate_hours(
    store: &Store,
    filter: &RecordFilter,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<AggregateRow>, StoreError> {
    let segments = if filter.tag.is_some() {
        vec![plan::Segment::Raw { start, end }]
    } else {
        plan::hour_segments(start, end)
    };
    let mut rows = Vec::new();
    for segment in &segments {
        rows.extend(
            store
                .usage_aggregate(segment, filter, Grouping::BucketAndProvider)
                .await?,
        );
    }
    Ok(rows)
}
