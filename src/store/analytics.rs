//! The analytics rollups (`ai_usage_daily`, `ai_usage_hourly`,
//! `ai_usage_daily_tags`) on both backends: the upserts the recorder's
//! transaction runs, and the one aggregate query every analytics read is
//! made of.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

use super::rows::{self, statement_runs};
use super::scope;
use super::{RecordFilter, StoreError};
use crate::analytics::plan::Segment;
use crate::analytics::rollups::{Dimensions, UsageDeltas};
use crate::rollup::{LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, RollupDelta};
use crate::usage::{Provider, TaskType};

/// Rows per upsert: 33 values a row keeps 512 rows under SQLite's limit of
/// 32,766 variables.
const ROWS_PER_UPSERT: usize = 512;

/// The counter columns, in [`RollupDelta`] order, then the histogram.
const COUNTERS: [&str; 11] = [
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_nano_usd",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
];

fn histogram_columns() -> impl Iterator<Item = String> {
    (0..LATENCY_BUCKETS).map(|bucket| format!("h{bucket}"))
}

fn value_columns() -> Vec<String> {
    COUNTERS
        .iter()
        .map(|name| (*name).to_owned())
        .chain(histogram_columns())
        .collect()
}

/// `INSERT INTO <table> (<key>, <dimensions>, <values>) ` for `push_values`.
fn upsert_prefix(table: &str, key: &str) -> String {
    format!(
        "INSERT INTO {table} ({key}, org_id, user_id, provider, model, task_type, {}) ",
        value_columns().join(", ")
    )
}

/// Adds each incoming row to the stored one.
fn upsert_conflict(table: &str, key: &str) -> String {
    let sets: Vec<String> = value_columns()
        .iter()
        .map(|column| format!("{column} = {table}.{column} + excluded.{column}"))
        .collect();
    format!(
        " ON CONFLICT ({key}, org_id, user_id, provider, model, task_type) DO UPDATE SET {}",
        sets.join(", ")
    )
}

struct Upsert {
    prefix: String,
    conflict: String,
}

impl Upsert {
    fn new(table: &str, key: &str) -> Self {
        Upsert {
            prefix: upsert_prefix(table, key),
            conflict: upsert_conflict(table, key),
        }
    }
}

static DAILY: LazyLock<Upsert> = LazyLock::new(|| Upsert::new("ai_usage_daily", "day"));
static HOURLY: LazyLock<Upsert> = LazyLock::new(|| Upsert::new("ai_usage_hourly", "hour"));
static TAGGED: LazyLock<Upsert> = LazyLock::new(|| Upsert::new("ai_usage_daily_tags", "tag, day"));

/// Binds a row's dimensions and counters after its time key.
macro_rules! push_row {
    ($row:expr, $dimensions:expr, $delta:expr) => {{
        let dimensions: &Dimensions = $dimensions;
        let delta: &RollupDelta = $delta;
        $row.push_bind(dimensions.org_id.clone())
            .push_bind(dimensions.user_id.clone())
            .push_bind(dimensions.provider.as_str())
            .push_bind(dimensions.model.clone())
            .push_bind(dimensions.task_type.as_str())
            .push_bind(delta.requests)
            .push_bind(delta.errors)
            .push_bind(delta.unpriced_requests)
            .push_bind(delta.input_tokens)
            .push_bind(delta.output_tokens)
            .push_bind(delta.cached_input_tokens)
            .push_bind(delta.reasoning_tokens)
            .push_bind(delta.cost_nano_usd)
            .push_bind(delta.latency_ms_sum)
            .push_bind(delta.ttft_ms_sum)
            .push_bind(delta.ttft_count);
        for count in delta.latency_histogram {
            $row.push_bind(count);
        }
    }};
}

/// Runs the upserts of one rollup in fixed-size statements.
macro_rules! upsert_all {
    ($db:ty, $transaction:expr, $upsert:expr, $rows:expr, |$row:ident, $item:ident| $push:block) => {{
        for chunk in $rows.chunks(ROWS_PER_UPSERT) {
            for run in statement_runs(chunk) {
                let mut query = QueryBuilder::<$db>::new($upsert.prefix.as_str());
                query.push_values(run, |mut $row, $item| $push);
                query.push($upsert.conflict.as_str());
                query.build().execute(&mut **$transaction).await?;
            }
        }
    }};
}

pub(super) async fn add_usage_sqlite(
    transaction: &mut sqlx::Transaction<'static, Sqlite>,
    deltas: &UsageDeltas,
) -> Result<(), StoreError> {
    let daily: Vec<_> = deltas.daily.iter().collect();
    upsert_all!(Sqlite, transaction, DAILY, daily, |row, item| {
        let ((day, dimensions), delta) = item;
        row.push_bind(day.to_string());
        push_row!(row, dimensions, delta);
    });
    let hourly: Vec<_> = deltas.hourly.iter().collect();
    upsert_all!(Sqlite, transaction, HOURLY, hourly, |row, item| {
        let ((hour, dimensions), delta) = item;
        row.push_bind(hour.timestamp_micros());
        push_row!(row, dimensions, delta);
    });
    let tagged: Vec<_> = deltas.tagged.iter().collect();
    upsert_all!(Sqlite, transaction, TAGGED, tagged, |row, item| {
        let ((tag, day, dimensions), delta) = item;
        row.push_bind(tag.clone()).push_bind(day.to_string());
        push_row!(row, dimensions, delta);
    });
    Ok(())
}

pub(super) async fn add_usage_postgres(
    transaction: &mut sqlx::Transaction<'static, Postgres>,
    deltas: &UsageDeltas,
) -> Result<(), StoreError> {
    let daily: Vec<_> = deltas.daily.iter().collect();
    upsert_all!(Postgres, transaction, DAILY, daily, |row, item| {
        let ((day, dimensions), delta) = item;
        row.push_bind(*day);
        push_row!(row, dimensions, delta);
    });
    let hourly: Vec<_> = deltas.hourly.iter().collect();
    upsert_all!(Postgres, transaction, HOURLY, hourly, |row, item| {
        let ((hour, dimensions), delta) = item;
        row.push_bind(*hour);
        push_row!(row, dimensions, delta);
    });
    let tagged: Vec<_> = deltas.tagged.iter().collect();
    upsert_all!(Postgres, transaction, TAGGED, tagged, |row, item| {
        let ((tag, day, dimensions), delta) = item;
        row.push_bind(tag.clone()).push_bind(*day);
        push_row!(row, dimensions, delta);
    });
    Ok(())
}

/// How the rows of an aggregate are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By provider, model, task type and user: totals and breakdowns.
    Dimensions,
    /// By time bucket (the segment's day, or UTC hour) and provider: series.
    BucketAndProvider,
    /// As `BucketAndProvider`, with only the cost summed (every other
    /// counter reads zero): projections, which read 91 days and need nothing
    /// else, at a fraction of the work.
    CostByBucketAndProvider,
}

/// A time bucket of an aggregate row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// A local day, from the daily rollups.
    Day(NaiveDate),
    /// A UTC hour, from the hourly rollup or the ledger.
    Hour(DateTime<Utc>),
}

/// One row of an aggregate: the group's identity (what the grouping names)
/// and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRow {
    pub bucket: Option<Bucket>,
    pub provider: Provider,
    pub model: Option<String>,
    pub task_type: Option<TaskType>,
    /// `Some("")` for records without a user.
    pub user_id: Option<String>,
    pub totals: RollupDelta,
}

/// The SELECT list's sums for the rollup tables, as `<name>`s.
fn rollup_sums() -> String {
    value_columns()
        .iter()
        .map(|column| format!("CAST(SUM({column}) AS BIGINT) AS {column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The same sums computed from ledger rows.
fn ledger_sums() -> String {
    let mut sums = vec![
        "CAST(COUNT(*) AS BIGINT) AS requests".to_owned(),
        "CAST(SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS errors".to_owned(),
        "CAST(SUM(CASE WHEN cost_status = 'unpriced' THEN 1 ELSE 0 END) AS BIGINT) AS unpriced_requests".to_owned(),
        "CAST(SUM(input_tokens) AS BIGINT) AS input_tokens".to_owned(),
        "CAST(SUM(output_tokens) AS BIGINT) AS output_tokens".to_owned(),
        "CAST(SUM(cached_input_tokens) AS BIGINT) AS cached_input_tokens".to_owned(),
        "CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens".to_owned(),
        "CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) AS cost_nano_usd".to_owned(),
        "CAST(SUM(latency_ms) AS BIGINT) AS latency_ms_sum".to_owned(),
        "CAST(COALESCE(SUM(time_to_first_token_ms), 0) AS BIGINT) AS ttft_ms_sum".to_owned(),
        "CAST(COUNT(time_to_first_token_ms) AS BIGINT) AS ttft_count".to_owned(),
    ];
    let mut lower: Option<u64> = None;
    for bucket in 0..LATENCY_BUCKETS {
        let upper = LATENCY_BUCKET_BOUNDS_MS.get(bucket).copied();
        let condition = match (lower, upper) {
            (None, Some(upper)) => format!("latency_ms <= {upper}"),
            (Some(lower), Some(upper)) => {
                format!("latency_ms > {lower} AND latency_ms <= {upper}")
            }
            (Some(lower), None) => format!("latency_ms > {lower}"),
            (None, None) => "TRUE".to_owned(),
        };
        sums.push(format!(
            "CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS BIGINT) AS h{bucket}"
        ));
        lower = upper;
    }
    sums.join(", ")
}

static ROLLUP_SUMS: LazyLock<String> = LazyLock::new(rollup_sums);
static LEDGER_SUMS: LazyLock<String> = LazyLock::new(ledger_sums);
static ROLLUP_COST: LazyLock<String> =
    LazyLock::new(|| cost_sums("CAST(SUM(cost_nano_usd) AS BIGINT)"));
static LEDGER_COST: LazyLock<String> =
    LazyLock::new(|| cost_sums("CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT)"));

/// The SELECT list with `cost` as the cost's sum and zero for every other
/// counter, so rows decode as usual.
fn cost_sums(cost: &str) -> String {
    value_columns()
        .iter()
        .map(|column| {
            if column == "cost_nano_usd" {
                format!("{cost} AS {column}")
            } else {
                format!("CAST(0 AS BIGINT) AS {column}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which backend a query is for: they differ in time types and the ledger's
/// hour and tag expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The table, group expressions and sums for a segment, without filters.
fn select(segment: &Segment, grouping: Grouping, tagged: bool, backend: Backend) -> String {
    let cost_only = grouping == Grouping::CostByBucketAndProvider;
    let rollup_sums = if cost_only {
        &ROLLUP_COST
    } else {
        &ROLLUP_SUMS
    };
    let (table, bucket, sums) = match segment {
        Segment::Days { .. } if tagged => ("ai_usage_daily_tags", "day", rollup_sums.as_str()),
        Segment::Days { .. } => ("ai_usage_daily", "day", rollup_sums.as_str()),
        Segment::Hours { .. } => ("ai_usage_hourly", "hour", rollup_sums.as_str()),
        Segment::Raw { .. } => (
            "ai_provider_usage",
            match backend {
                Backend::Sqlite => "(created_at - created_at % 3600000000)",
                Backend::Postgres => "date_trunc('hour', created_at)",
            },
            if cost_only {
                LEDGER_COST.as_str()
            } else {
                LEDGER_SUMS.as_str()
            },
        ),
    };
    let user = if matches!(segment, Segment::Raw { .. }) {
        "COALESCE(user_id, '')"
    } else {
        "user_id"
    };
    let groups = match grouping {
        Grouping::Dimensions => format!("provider, model, task_type, {user} AS user_id"),
        Grouping::BucketAndProvider | Grouping::CostByBucketAndProvider => {
            format!("{bucket} AS bucket, provider")
        }
    };
    format!("SELECT {groups}, {sums} FROM {table} WHERE TRUE")
}

fn group_by(grouping: Grouping) -> &'static str {
    match grouping {
        Grouping::Dimensions => " GROUP BY 1, 2, 3, 4",
        Grouping::BucketAndProvider | Grouping::CostByBucketAndProvider => " GROUP BY 1, 2",
    }
}

/// Filters shared by every source; the user filter differs only in that the
/// rollups store "no user" as ''.
fn push_filters<DB>(query: &mut QueryBuilder<DB>, filter: &RecordFilter)
where
    DB: sqlx::Database,
    for<'value> String: sqlx::Encode<'value, DB> + sqlx::Type<DB>,
{
    rows::push_dimension_filter(query, filter, scope::USAGE);
    if let Some(user_id) = &filter.user_id {
        query.push(" AND user_id = ").push_bind(user_id.clone());
    }
}

pub(super) async fn aggregate_sqlite(
    pool: &sqlx::SqlitePool,
    segment: &Segment,
    filter: &RecordFilter,
    grouping: Grouping,
) -> Result<Vec<AggregateRow>, StoreError> {
    let tagged = filter.tag.is_some();
    let mut query = QueryBuilder::<Sqlite>::new(select(segment, grouping, tagged, Backend::Sqlite));
    match *segment {
        Segment::Days { first, end } => {
            if let Some(tag) = &filter.tag {
                query.push(" AND tag = ").push_bind(tag.clone());
            }
            if let Some(first) = first {
                query.push(" AND day >= ").push_bind(first.to_string());
            }
            if let Some(end) = end {
                query.push(" AND day < ").push_bind(end.to_string());
            }
        }
        Segment::Hours { start, end } => {
            query
                .push(" AND hour >= ")
                .push_bind(start.timestamp_micros())
                .push(" AND hour < ")
                .push_bind(end.timestamp_micros());
        }
        Segment::Raw { start, end } => {
            query
                .push(" AND created_at >= ")
                .push_bind(start.timestamp_micros())
                .push(" AND created_at < ")
                .push_bind(end.timestamp_micros());
            if let Some(tag) = &filter.tag {
                query
                    .push(" AND EXISTS (SELECT 1 FROM json_each(metadata, '$.tags') WHERE value = ")
                    .push_bind(tag.clone())
                    .push(")");
            }
        }
    }
    push_filters(&mut query, filter);
    query.push(group_by(grouping));
    let rows = query.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let bucket = match (grouping, segment) {
                (Grouping::Dimensions, _) => None,
                (_, Segment::Days { .. }) => {
                    let day: String = row.try_get("bucket")?;
                    Some(Bucket::Day(
                        NaiveDate::parse_from_str(&day, "%Y-%m-%d").map_err(|error| {
                            StoreError::Corrupt(format!("rollup day `{day}`: {error}"))
                        })?,
                    ))
                }
                _ => {
                    let micros: i64 = row.try_get("bucket")?;
                    Some(Bucket::Hour(
                        DateTime::from_timestamp_micros(micros)
                            .ok_or_else(|| StoreError::Corrupt(format!("rollup hour {micros}")))?,
                    ))
                }
            };
            aggregate_row(row, grouping, bucket)
        })
        .collect()
}

pub(super) async fn aggregate_postgres(
    connection: &mut sqlx::PgConnection,
    segment: &Segment,
    filter: &RecordFilter,
    grouping: Grouping,
) -> Result<Vec<AggregateRow>, StoreError> {
    let tagged = filter.tag.is_some();
    let mut query =
        QueryBuilder::<Postgres>::new(select(segment, grouping, tagged, Backend::Postgres));
    match *segment {
        Segment::Days { first, end } => {
            if let Some(tag) = &filter.tag {
                query.push(" AND tag = ").push_bind(tag.clone());
            }
            if let Some(first) = first {
                query.push(" AND day >= ").push_bind(first);
            }
            if let Some(end) = end {
                query.push(" AND day < ").push_bind(end);
            }
        }
        Segment::Hours { start, end } => {
            query
                .push(" AND hour >= ")
                .push_bind(start)
                .push(" AND hour < ")
                .push_bind(end);
        }
        Segment::Raw { start, end } => {
            query
                .push(" AND created_at >= ")
                .push_bind(start)
                .push(" AND created_at < ")
                .push_bind(end);
            if let Some(tag) = &filter.tag {
                query
                    .push(" AND metadata -> 'tags' ? ")
                    .push_bind(tag.clone());
            }
        }
    }
    push_filters(&mut query, filter);
    query.push(group_by(grouping));
    let rows = query.build().fetch_all(connection).await?;
    rows.iter()
        .map(|row| {
            let bucket = match (grouping, segment) {
                (Grouping::Dimensions, _) => None,
                (_, Segment::Days { .. }) => Some(Bucket::Day(row.try_get("bucket")?)),
                _ => Some(Bucket::Hour(row.try_get("bucket")?)),
            };
            aggregate_row(row, grouping, bucket)
        })
        .collect()
}

/// The dimensions and counters of a row, whichever backend it came from.
fn aggregate_row<R>(
    row: &R,
    grouping: Grouping,
    bucket: Option<Bucket>,
) -> Result<AggregateRow, StoreError>
where
    R: Row,
    for<'column> &'column str: sqlx::ColumnIndex<R>,
    for<'value> String: sqlx::Decode<'value, R::Database> + sqlx::Type<R::Database>,
    for<'value> i64: sqlx::Decode<'value, R::Database> + sqlx::Type<R::Database>,
{
    let provider: String = row.try_get("provider")?;
    let (model, task_type, user_id) = match grouping {
        Grouping::Dimensions => {
            let task_type: String = row.try_get("task_type")?;
            (
                Some(row.try_get::<String, _>("model")?),
                Some(rows::parse_name(&task_type)?),
                Some(row.try_get::<String, _>("user_id")?),
            )
        }
        Grouping::BucketAndProvider | Grouping::CostByBucketAndProvider => (None, None, None),
    };
    let counter = |name: &str| row.try_get::<i64, _>(name);
    let mut histogram = [0_i64; LATENCY_BUCKETS];
    for (bucket, slot) in histogram.iter_mut().enumerate() {
        *slot = counter(&format!("h{bucket}"))?;
    }
    Ok(AggregateRow {
        bucket,
        provider: rows::parse_name(&provider)?,
        model,
        task_type,
        user_id,
        totals: RollupDelta {
            requests: counter("requests")?,
            errors: counter("errors")?,
            unpriced_requests: counter("unpriced_requests")?,
            input_tokens: counter("input_tokens")?,
            output_tokens: counter("output_tokens")?,
            cached_input_tokens: counter("cached_input_tokens")?,
            reasoning_tokens: counter("reasoning_tokens")?,
            cost_nano_usd: counter("cost_nano_usd")?,
            latency_ms_sum: counter("latency_ms_sum")?,
            ttft_ms_sum: counter("ttft_ms_sum")?,
            ttft_count: counter("ttft_count")?,
            latency_histogram: histogram,
        },
    })
}
