//! `GET /api/v1/usage/stats`, `/usage/daily`, `/usage/hourly`,
//! `/models/performance` and `/projections`: JSON views of the analytics
//! summaries.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Datelike, Days, NaiveDate, TimeDelta, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::analytics::projection::{self, Projection};
use crate::analytics::summary::{self, Granularity};
use crate::analytics::{self as analytics_service};
use crate::money::NanoUsd;
use crate::query::{self, QueryError};
use crate::rollup::RollupDelta;
use crate::store::{Grouping, RecordFilter};
use crate::tenancy::Caller;
use crate::usage::Provider;

const FILTERS: &[&str] = &[
    "start_date",
    "end_date",
    "provider",
    "model",
    "task_type",
    "org_id",
    "user_id",
    "tag",
];

/// The longest daily series, and the longest hourly one.
const MAX_SERIES_DAYS: i64 = 366;
const MAX_SERIES_HOURS: i64 = 31 * 24;

fn invalid(error: QueryError) -> ApiError {
    ApiError::invalid(error.param, error.message)
}

/// Parses the shared filters plus `extra` parameters; anything else is
/// refused by name.
fn parse(
    parameters: &HashMap<String, String>,
    extra: &[&str],
    state: &AppState,
    caller: &Caller,
) -> Result<RecordFilter, ApiError> {
    if let Some(unknown) = parameters
        .keys()
        .find(|name| !FILTERS.contains(&name.as_str()) && !extra.contains(&name.as_str()))
    {
        let mut expected: Vec<&str> = FILTERS.to_vec();
        expected.extend_from_slice(extra);
        return Err(ApiError::invalid(
            unknown.clone(),
            format!(
                "unknown parameter (expected one of: {})",
                expected.join(", ")
            ),
        ));
    }
    let filter = query::parse_filter(parameters, state.config.server.timezone).map_err(invalid)?;
    super::auth::scoped(caller, filter)
}

/// `successful / total` and other ratios, rounded to `places`; `None` when
/// the denominator is zero. Not money: shown as JSON numbers.
fn ratio(numerator: i64, denominator: i64, places: u32) -> Option<f64> {
    if denominator == 0 {
        return None;
    }
    (Decimal::from(numerator) / Decimal::from(denominator))
        .round_dp_with_strategy(places, RoundingStrategy::MidpointNearestEven)
        .to_f64()
}

/// `nanos / count` rounded half-even to a whole nano-USD.
fn per(nanos: i64, count: i64) -> Option<NanoUsd> {
    if count == 0 {
        return None;
    }
    (Decimal::from(nanos) / Decimal::from(count))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .map(NanoUsd::from_nanos)
}

fn usd(nanos: i64) -> String {
    NanoUsd::from_nanos(nanos).to_string()
}

/// The counters of a group as every analytics view shows them.
fn usage_fields(totals: &RollupDelta) -> Value {
    let successful = totals.requests - totals.errors;
    let tokens = totals.input_tokens.saturating_add(totals.output_tokens);
    json!({
        "requests": totals.requests,
        "successful_requests": successful,
        "failed_requests": totals.errors,
        "success_rate": ratio(successful, totals.requests, 4),
        "cost_usd": usd(totals.cost_nano_usd),
        "cost_nano_usd": totals.cost_nano_usd,
        "unpriced_requests": totals.unpriced_requests,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cached_input_tokens": totals.cached_input_tokens,
        "reasoning_tokens": totals.reasoning_tokens,
        "total_tokens": tokens,
        "avg_response_time_ms": ratio(totals.latency_ms_sum, totals.requests, 1),
        "p50_response_time_ms": totals.latency_percentile_ms(500),
        "p95_response_time_ms": totals.latency_percentile_ms(950),
        "p99_response_time_ms": totals.latency_percentile_ms(990),
        "avg_time_to_first_token_ms": ratio(totals.ttft_ms_sum, totals.ttft_count, 1),
        "cost_per_request_usd": per(totals.cost_nano_usd, totals.requests).map(|cost| cost.to_string()),
        "cost_per_1k_tokens_usd": per(totals.cost_nano_usd.saturating_mul(1_000), tokens)
            .map(|cost| cost.to_string()),
    })
}

/// `base` with the fields of `extra` added (both JSON objects).
fn with(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(fields), Value::Object(extra)) = (&mut base, extra) {
        fields.extend(extra);
    }
    base
}

fn range_fields(filter: &RecordFilter, state: &AppState) -> Value {
    json!({
        "start_date": filter.start,
        "end_date": filter.end,
        "timezone": state.config.server.timezone.name(),
    })
}

/// `GET /api/v1/usage/stats`.
pub async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = parse(&parameters, &[], &state, &caller)?;
    let timezone = state.config.server.timezone;
    let rows =
        analytics_service::aggregate(&state.store, &filter, timezone, Grouping::Dimensions).await?;
    let stats = summary::stats(&rows);
    let totals = &stats.totals;
    let share = |cost: i64| ratio(cost, totals.cost_nano_usd, 4);
    let mut body = usage_fields(totals);
    let Value::Object(fields) = &mut body else {
        return Err(ApiError::Internal);
    };
    for (from, to) in [
        ("requests", "total_requests"),
        ("cost_usd", "total_cost_usd"),
        ("cost_nano_usd", "total_cost_nano_usd"),
        ("input_tokens", "total_input_tokens"),
        ("output_tokens", "total_output_tokens"),
    ] {
        if let Some(value) = fields.remove(from) {
            fields.insert(to.to_owned(), value);
        }
    }
    let extra = json!({
        "object": "usage.stats",
        "output_input_token_ratio": ratio(totals.output_tokens, totals.input_tokens, 4),
        "by_provider": stats.by_provider.iter().map(|(provider, group)| with(usage_fields(group), json!({
            "provider": provider.as_str(), "share_of_cost": share(group.cost_nano_usd),
        }))).collect::<Vec<_>>(),
        "by_model": stats.by_model.iter().map(|((provider, model), group)| with(usage_fields(group), json!({
            "provider": provider.as_str(), "model": model, "share_of_cost": share(group.cost_nano_usd),
        }))).collect::<Vec<_>>(),
        "by_task_type": stats.by_task_type.iter().map(|(task_type, group)| with(usage_fields(group), json!({
            "task_type": task_type.as_str(), "share_of_cost": share(group.cost_nano_usd),
        }))).collect::<Vec<_>>(),
        "by_user": stats.by_user.iter().map(|(user, group)| with(usage_fields(group), json!({
            "user_id": user, "share_of_cost": share(group.cost_nano_usd),
        }))).collect::<Vec<_>>(),
    });
    let body = with(body, extra);
    Ok(Json(with(body, range_fields(&filter, &state))))
}

/// The series range: the filter's, or the last `default_days` local days
/// including today.
fn series_range(
    filter: &mut RecordFilter,
    state: &AppState,
    default: TimeDelta,
    longest: TimeDelta,
    unit: &str,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let timezone = state.config.server.timezone;
    let today = Utc::now().with_timezone(&timezone).date_naive();
    let end = match filter.end {
        Some(end) => end,
        None => today
            .checked_add_days(Days::new(1))
            .and_then(|tomorrow| query::start_of_day(tomorrow, timezone))
            .unwrap_or_else(Utc::now),
    };
    let start = filter.start.unwrap_or(end - default);
    if end <= start {
        return Err(ApiError::invalid("start_date", "must be before end_date"));
    }
    if end - start > longest {
        return Err(ApiError::invalid(
            "start_date",
            format!(
                "a {unit} series covers at most {} {unit}s; narrow the range",
                match unit {
                    "hour" => longest.num_hours(),
                    _ => longest.num_days(),
                }
            ),
        ));
    }
    filter.start = Some(start);
    filter.end = Some(end);
    Ok((start, end))
}

fn series_body(points: &[summary::SeriesPoint], granularity: Granularity) -> Value {
    let mut distribution: BTreeMap<Provider, RollupDelta> = BTreeMap::new();
    let mut overall = RollupDelta::default();
    let data: Vec<Value> = points
        .iter()
        .map(|point| {
            let mut total = RollupDelta::default();
            let providers: Vec<Value> = point
                .by_provider
                .iter()
                .map(|(provider, group)| {
                    total.merge(group);
                    distribution.entry(*provider).or_default().merge(group);
                    series_fields(group, json!({ "provider": provider.as_str() }))
                })
                .collect();
            overall.merge(&total);
            let key = match granularity {
                Granularity::Day => json!({ "date": point.day, "start": point.start }),
                Granularity::Hour => json!({ "hour": point.start, "date": point.day }),
            };
            with(
                series_fields(&total, key),
                json!({ "by_provider": providers }),
            )
        })
        .collect();
    let distribution: Vec<Value> = distribution
        .iter()
        .map(|(provider, group)| {
            json!({
                "provider": provider.as_str(),
                "requests": group.requests,
                "cost_usd": usd(group.cost_nano_usd),
                "cost_nano_usd": group.cost_nano_usd,
                "request_share": ratio(group.requests, overall.requests, 4),
                "cost_share": ratio(group.cost_nano_usd, overall.cost_nano_usd, 4),
            })
        })
        .collect();
    json!({
        "granularity": match granularity { Granularity::Day => "day", Granularity::Hour => "hour" },
        "data": data,
        "provider_distribution": distribution,
    })
}

fn series_fields(group: &RollupDelta, key: Value) -> Value {
    with(
        key,
        json!({
            "requests": group.requests,
            "errors": group.errors,
            "cost_usd": usd(group.cost_nano_usd),
            "cost_nano_usd": group.cost_nano_usd,
            "input_tokens": group.input_tokens,
            "output_tokens": group.output_tokens,
            "cached_input_tokens": group.cached_input_tokens,
            "reasoning_tokens": group.reasoning_tokens,
            "total_tokens": group.input_tokens.saturating_add(group.output_tokens),
        }),
    )
}

/// `GET /api/v1/usage/daily`: per local day × provider; the last 30 days
/// by default.
pub async fn daily(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = parse(&parameters, &[], &state, &caller)?;
    let timezone = state.config.server.timezone;
    let (start, end) = series_range(
        &mut filter,
        &state,
        TimeDelta::days(30),
        TimeDelta::days(MAX_SERIES_DAYS),
        "day",
    )?;
    let rows =
        analytics_service::aggregate(&state.store, &filter, timezone, Grouping::BucketAndProvider)
            .await?;
    let points = summary::series(&rows, Granularity::Day, start, end, timezone);
    let body = series_body(&points, Granularity::Day);
    Ok(Json(with(
        body,
        with(
            range_fields(&filter, &state),
            json!({ "object": "usage.daily" }),
        ),
    )))
}

/// `GET /api/v1/usage/hourly`: per UTC hour × provider; the last 24 hours
/// by default, at most 31 days.
pub async fn hourly(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = parse(&parameters, &[], &state, &caller)?;
    let timezone = state.config.server.timezone;
    if filter.end.is_none() {
        filter.end = Some(crate::analytics::rollups::hour_of(Utc::now()) + TimeDelta::hours(1));
    }
    let (start, end) = series_range(
        &mut filter,
        &state,
        TimeDelta::hours(24),
        TimeDelta::hours(MAX_SERIES_HOURS),
        "hour",
    )?;
    let rows = analytics_service::aggregate_hours(&state.store, &filter, start, end).await?;
    let points = summary::series(&rows, Granularity::Hour, start, end, timezone);
    let body = series_body(&points, Granularity::Hour);
    Ok(Json(with(
        body,
        with(
            range_fields(&filter, &state),
            json!({ "object": "usage.hourly" }),
        ),
    )))
}

/// `GET /api/v1/models/performance`: per model × task type, from the
/// `ai_model_performance` rollup, whole days the range touches.
pub async fn performance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = parse(&parameters, &[], &state, &caller)?;
    for (param, given) in [
        ("user_id", filter.user_id.is_some()),
        ("tag", filter.tag.is_some()),
    ] {
        if given {
            return Err(ApiError::invalid(
                param,
                "model performance is kept per org, provider, model and task type; \
                 use /api/v1/usage/stats (its by_model breakdown) to filter by user or tag",
            ));
        }
    }
    let timezone = state.config.server.timezone;
    let rows = state.store.rollups(&filter, timezone).await?;
    let mut groups: BTreeMap<(Provider, String, crate::usage::TaskType), RollupDelta> =
        BTreeMap::new();
    let (mut first, mut last): (Option<NaiveDate>, Option<NaiveDate>) = (None, None);
    for (key, delta) in &rows {
        first = Some(first.map_or(key.day, |day| day.min(key.day)));
        last = Some(last.map_or(key.day, |day| day.max(key.day)));
        groups
            .entry((key.provider, key.model.clone(), key.task_type))
            .or_default()
            .merge(delta);
    }
    let mut models: Vec<_> = groups.into_iter().collect();
    models.sort_by(|(left_key, left), (right_key, right)| {
        right
            .requests
            .cmp(&left.requests)
            .then(left_key.cmp(right_key))
    });
    let data: Vec<Value> = models
        .iter()
        .map(|((provider, model, task_type), group)| {
            with(
                usage_fields(group),
                json!({
                    "provider": provider.as_str(),
                    "model": model,
                    "task_type": task_type.as_str(),
                }),
            )
        })
        .collect();
    Ok(Json(with(
        range_fields(&filter, &state),
        json!({
            "object": "models.performance",
            "first_day": first,
            "last_day": last,
            "data": data,
        }),
    )))
}

/// Days projected unless `days` says otherwise, and the most it may say.
const DEFAULT_HORIZON_DAYS: usize = 30;
const MAX_HORIZON_DAYS: usize = 366;

/// `GET /api/v1/projections?days=30`: projected cost overall and per
/// provider, from the last complete days (up to 13 weeks).
pub async fn projections(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = parse(&parameters, &["days"], &state, &caller)?;
    if filter.start.is_some() || filter.end.is_some() {
        return Err(ApiError::invalid(
            if filter.start.is_some() {
                "start_date"
            } else {
                "end_date"
            },
            "projections read the last complete days themselves; use `days` for the horizon",
        ));
    }
    let horizon = match parameters.get("days") {
        None => DEFAULT_HORIZON_DAYS,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|days| (1..=MAX_HORIZON_DAYS).contains(days))
            .ok_or_else(|| {
                ApiError::invalid(
                    "days",
                    format!("must be a whole number from 1 to {MAX_HORIZON_DAYS}"),
                )
            })?,
    };
    let timezone = state.config.server.timezone;
    let today = Utc::now().with_timezone(&timezone).date_naive();
    let history = analytics_service::cost_history(&state.store, &filter, timezone, today).await?;
    let first = history.first_day;
    let overall_projection = projection::project(first, &history.overall, horizon);
    let providers: Vec<Value> = history
        .by_provider
        .iter()
        .map(|(provider, history)| {
            with(
                projection_fields(&projection::project(first, history, horizon)),
                json!({ "provider": provider.as_str() }),
            )
        })
        .collect();
    let body = with(
        projection_fields(&overall_projection),
        json!({
            "object": "projection",
            "horizon_days": horizon,
            "timezone": timezone.name(),
            "history_start": first,
            "history_end": today.pred_opt(),
            "by_provider": providers,
        }),
    );
    Ok(Json(body))
}

/// A projection as the API shows it.
pub fn projection_fields(projection: &Projection) -> Value {
    let weekdays = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let note = if projection.insufficient_history {
        Some(format!(
            "too little history: {} day(s) with usage, {} needed for the weekday-and-trend model",
            projection.history_days,
            projection::MIN_SEASONAL_DAYS
        ))
    } else {
        None
    };
    json!({
        "method": projection.method.as_str(),
        "insufficient_history": projection.insufficient_history,
        "note": note,
        "history_days": projection.history_days,
        "projected_cost_usd": usd(projection.total_nano_usd),
        "projected_cost_nano_usd": projection.total_nano_usd,
        "projected_low_usd": usd(projection.total_low_nano_usd),
        "projected_high_usd": usd(projection.total_high_nano_usd),
        "trend_usd_per_day": usd(projection.trend_nano_usd_per_day),
        "weekday_effect_usd": weekdays.iter().zip(projection.weekday_effect_nano_usd)
            .map(|(day, effect)| ((*day).to_owned(), Value::from(usd(effect))))
            .collect::<Map<String, Value>>(),
        "backtest": projection.backtest.as_ref().map(|backtest| json!({
            "holdout_days": backtest.holdout_days,
            "wape_percent": backtest.wape_basis_points.and_then(|points| ratio(points, 100, 2)),
            "projected_usd": usd(backtest.projected_nano_usd),
            "actual_usd": usd(backtest.actual_nano_usd),
        })),
        "daily": projection.days.iter().map(|day| json!({
            "date": day.day,
            "weekday": weekdays.get(day.day.weekday().num_days_from_monday() as usize),
            "expected_usd": usd(day.expected_nano_usd),
            "low_usd": usd(day.low_nano_usd),
            "high_usd": usd(day.high_nano_usd),
        })).collect::<Vec<_>>(),
    })
}
