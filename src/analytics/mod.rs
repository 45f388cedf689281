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

/// Daily cost over the complete local days before `end_day` (at most
/// [`projection::MAX_HISTORY_DAYS`]), overall and per provider, zero-filled:
/// what every projection is fitted on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostHistory {
    /// The first day of the history.
    pub first_day: chrono::NaiveDate,
    pub overall: Vec<i64>,
    pub by_provider: std::collections::BTreeMap<crate::usage::Provider, Vec<i64>>,
}

/// Reads the [`CostHistory`] ending before `end_day` for the records that
/// match `filter`'s dimensions (its times are replaced).
pub async fn cost_history(
    store: &Store,
    filter: &RecordFilter,
    timezone: Tz,
    end_day: chrono::NaiveDate,
) -> Result<CostHistory, StoreError> {
    let first_day = end_day
        .checked_sub_days(chrono::Days::new(projection::MAX_HISTORY_DAYS as u64))
        .unwrap_or(end_day);
    let mut history = CostHistory {
        first_day,
        ..CostHistory::default()
    };
    let (Some(start), Some(end)) = (
        crate::query::start_of_day(first_day, timezone),
        crate::query::start_of_day(end_day, timezone),
    ) else {
        return Ok(history);
    };
    let filter = RecordFilter {
        start: Some(start),
        end: Some(end),
        ..filter.clone()
    };
    let rows = aggregate(store, &filter, timezone, Grouping::CostByBucketAndProvider).await?;
    let points = summary::series(&rows, summary::Granularity::Day, start, end, timezone);
    history.overall = vec![0; points.len()];
    for (index, point) in points.iter().enumerate() {
        for (provider, group) in &point.by_provider {
            let days = points.len();
            let costs = history
                .by_provider
                .entry(*provider)
                .or_insert_with(|| vec![0; days]);
            if let (Some(cost), Some(total)) =
                (costs.get_mut(index), history.overall.get_mut(index))
            {
                *cost = group.cost_nano_usd;
                *total = total.saturating_add(group.cost_nano_usd);
            }
        }
    }
    Ok(history)
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

/// Records read and added to the rollups per transaction by [`backfill`].
const BACKFILL_PAGE: u32 = 5_000;

/// Fills the analytics rollups from the records stored before they existed.
/// Returns how many records it added.
pub async fn backfill(store: &Store, timezone: Tz) -> Result<u64, StoreError> {
    let mut cursor = None;
    let mut added = 0_u64;
    loop {
        let page = store
            .usage_records_oldest_first(
                &RecordFilter {
                    scope: crate::store::Scope::All,
                    ..RecordFilter::default()
                },
                cursor,
                BACKFILL_PAGE,
            )
            .await?;
        if !page.records.is_empty() {
            store.add_to_usage_rollups(&page.records, timezone).await?;
            added += page.records.len() as u64;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(added),
        }
    }
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
