//! Summaries built from aggregate rows: totals with breakdowns, and time
//! series by day or hour and provider. Pure.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::rollup::RollupDelta;
use crate::store::{AggregateRow, Bucket};
use crate::usage::{Provider, TaskType};

/// Totals and the four breakdowns of `GET /api/v1/usage/stats`. Each
/// breakdown is ordered by cost, then requests, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub totals: RollupDelta,
    pub by_provider: Vec<(Provider, RollupDelta)>,
    pub by_model: Vec<((Provider, String), RollupDelta)>,
    pub by_task_type: Vec<(TaskType, RollupDelta)>,
    /// `None` for records without a user.
    pub by_user: Vec<(Option<String>, RollupDelta)>,
}

/// Adds rows grouped by dimensions into totals and breakdowns.
pub fn stats(rows: &[AggregateRow]) -> Stats {
    let mut totals = RollupDelta::default();
    let mut by_provider: HashMap<Provider, RollupDelta> = HashMap::new();
    let mut by_model: HashMap<(Provider, String), RollupDelta> = HashMap::new();
    let mut by_task_type: HashMap<TaskType, RollupDelta> = HashMap::new();
    let mut by_user: HashMap<Option<String>, RollupDelta> = HashMap::new();
    for row in rows {
        totals.merge(&row.totals);
        by_provider
            .entry(row.provider)
            .or_default()
            .merge(&row.totals);
        if let Some(model) = &row.model {
            by_model
                .entry((row.provider, model.clone()))
                .or_default()
                .merge(&row.totals);
        }
        if let Some(task_type) = row.task_type {
            by_task_type
                .entry(task_type)
                .or_default()
                .merge(&row.totals);
        }
        if let Some(user_id) = &row.user_id {
            let user = Some(user_id.clone()).filter(|user| !user.is_empty());
            by_user.entry(user).or_default().merge(&row.totals);
        }
    }
    Stats {
        totals,
        by_provider: ranked(by_provider),
        by_model: ranked(by_model),
        by_task_type: ranked(by_task_type),
        by_user: ranked(by_user),
    }
}

/// Largest cost first, then most requests, then key order (stable output).
fn ranked<K: Ord + Hash>(groups: HashMap<K, RollupDelta>) -> Vec<(K, RollupDelta)> {
    let mut groups: Vec<(K, RollupDelta)> = groups.into_iter().collect();
    groups.sort_by(|(left_key, left), (right_key, right)| {
        right
            .cost_nano_usd
            .cmp(&left.cost_nano_usd)
            .then(right.requests.cmp(&left.requests))
            .then(left_key.cmp(right_key))
    });
    groups
}

/// The granularity of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Hour,
}

/// One point of a series: its start and the sums per provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    /// The local day (for daily series) as its first instant, or the UTC hour.
    pub start: DateTime<Utc>,
    pub day: NaiveDate,
    pub by_provider: BTreeMap<Provider, RollupDelta>,
}

/// Rows grouped by bucket and provider, as a gap-free series over
/// `[start, end)`: local days in `timezone`, or UTC hours. Rows outside the
/// range (none, if the plan was right) are ignored.
pub fn series(
    rows: &[AggregateRow],
    granularity: Granularity,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    timezone: Tz,
) -> Vec<SeriesPoint> {
    let mut points: Vec<SeriesPoint> = Vec::new();
    let mut index: HashMap<DateTime<Utc>, usize> = HashMap::new();
    match granularity {
        Granularity::Day => {
            let mut day = start.with_timezone(&timezone).date_naive();
            while let Some(first) = crate::query::start_of_day(day, timezone) {
                if first >= end {
                    break;
                }
                index.insert(first, points.len());
                points.push(SeriesPoint {
                    start: first,
                    day,
                    by_provider: BTreeMap::new(),
                });
                match day.checked_add_days(Days::new(1)) {
                    Some(next) => day = next,
                    None => break,
                }
            }
        }
        Granularity::Hour => {
            let mut hour = super::rollups::hour_of(start);
            while hour < end {
                index.insert(hour, points.len());
                points.push(SeriesPoint {
                    start: hour,
                    day: hour.with_timezone(&timezone).date_naive(),
                    by_provider: BTreeMap::new(),
                });
                hour += TimeDelta::hours(1);
            }
        }
    }
    for row in rows {
        let Some(bucket) = row.bucket else { continue };
        let key = match (granularity, bucket) {
            (Granularity::Day, Bucket::Day(day)) => crate::query::start_of_day(day, timezone),
            (Granularity::Day, Bucket::Hour(hour)) => {
                crate::query::start_of_day(hour.with_timezone(&timezone).date_naive(), timezone)
            }
            (Granularity::Hour, Bucket::Hour(hour)) => Some(hour),
            (Granularity::Hour, Bucket::Day(_)) => None,
        };
        if let Some(point) = key
            .and_then(|key| index.get(&key))
            .and_then(|position| points.get_mut(*position))
        {
            point
                .by_provider
                .entry(row.provider)
                .or_default()
                .merge(&row.totals);
        }
    }
    points
}
