//! Where a budget stands in its current period: pure arithmetic over the
//! spend the store reports.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use super::Budget;
use super::period::{self, Period};
use crate::analytics::projection;
use crate::money::NanoUsd;
use crate::usage::named_enum;

named_enum!(
    /// ok, past a soft threshold, or at or over the limit.
    BudgetState, "budget state" {
        Ok => "ok",
        Warning => "warning",
        Exceeded => "exceeded",
    }
);

/// A budget's current period and its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub period: Period,
    pub amount: NanoUsd,
    /// Added by (or, for overspend carried over, taken from) the previous
    /// period.
    pub rollover: NanoUsd,
    /// `amount + rollover`, never below zero.
    pub limit: NanoUsd,
    pub spent: NanoUsd,
    /// Held by requests in flight.
    pub reserved: NanoUsd,
    /// `limit - spent - reserved`, never below zero.
    pub remaining: NanoUsd,
    pub state: BudgetState,
    /// When the limit is projected to run out, if before the period ends:
    /// at the period's average rate so far from [`status`]; from the
    /// weekday-and-trend model once [`with_model_projection`] has seen the
    /// scope's history.
    pub projected_exhaustion: Option<DateTime<Utc>>,
    /// Which projection `projected_exhaustion` comes from: `period_rate`, or
    /// the model's method (`weekday_trend`, `recent_mean`).
    pub projection_method: &'static str,
}

/// The period of `budget` that contains `now`.
pub fn current_period(budget: &Budget, now: DateTime<Utc>) -> Period {
    period::period_containing(budget.budget_type, budget.reset_date, budget.timezone, now)
}

/// The period before `current`.
pub fn previous_period(budget: &Budget, current: Period) -> Period {
    period::previous(
        budget.budget_type,
        budget.reset_date,
        budget.timezone,
        current,
    )
}

/// The limit of a period, given what was spent in the one before (ignored
/// unless the budget rolls over, and when the budget did not exist then).
pub fn period_limit(
    budget: &Budget,
    period: Period,
    previous_spent: NanoUsd,
) -> (NanoUsd, NanoUsd) {
    let existed_before = budget.created_at < period.start;
    let rollover = if existed_before {
        period::rollover(
            budget.rollover_policy,
            budget.rollover_cap,
            budget.amount,
            previous_spent,
        )
    } else {
        NanoUsd::ZERO
    };
    let limit = budget
        .amount
        .nanos()
        .saturating_add(rollover.nanos())
        .max(0);
    (rollover, NanoUsd::from_nanos(limit))
}

/// The status of `budget` at `now`.
pub fn status(
    budget: &Budget,
    now: DateTime<Utc>,
    spent: NanoUsd,
    previous_spent: NanoUsd,
    reserved: NanoUsd,
) -> BudgetStatus {
    let period = current_period(budget, now);
    let (rollover, limit) = period_limit(budget, period, previous_spent);
    let remaining = limit
        .nanos()
        .saturating_sub(spent.nanos())
        .saturating_sub(reserved.nanos())
        .max(0);
    BudgetStatus {
        period,
        amount: budget.amount,
        rollover,
        limit,
        spent,
        reserved,
        remaining: NanoUsd::from_nanos(remaining),
        state: state(budget, limit, spent),
        projected_exhaustion: projection(period, now, limit, spent),
        projection_method: "period_rate",
    }
}

/// Replaces the period-rate projection with the analytics model's, fitted
/// on `history` (the scope's spend per complete local day, oldest first,
/// starting on `first_day` and ending yesterday). Today's projected spend
/// counts only what it exceeds `spent_today` by; the limit runs out on the
/// first day cumulative projected spend passes what remains, at the point
/// of that day the remainder is used up. With no history the period-rate
/// projection stays.
pub fn with_model_projection(
    mut status: BudgetStatus,
    timezone: Tz,
    now: DateTime<Utc>,
    first_day: NaiveDate,
    history: &[i64],
    spent_today: NanoUsd,
) -> BudgetStatus {
    let today = now.with_timezone(&timezone).date_naive();
    let last_day = (status.period.end - TimeDelta::microseconds(1))
        .with_timezone(&timezone)
        .date_naive();
    let horizon = usize::try_from((last_day - today).num_days() + 1).unwrap_or(0);
    let model = projection::project(first_day, history, horizon);
    if model.method == projection::Method::None || model.days.is_empty() {
        return status;
    }
    status.projection_method = model.method.as_str();
    status.projected_exhaustion = None;
    let remaining = i128::from(status.limit.nanos()) - i128::from(status.spent.nanos());
    if remaining <= 0 {
        return status;
    }
    let mut used: i128 = 0;
    for day in &model.days {
        let day_start = if day.day == today {
            now
        } else {
            period::local_midnight(day.day, timezone)
        };
        let day_end = day
            .day
            .succ_opt()
            .map(|next| period::local_midnight(next, timezone))
            .map_or(status.period.end, |end| end.min(status.period.end));
        let mut expected = i128::from(day.expected_nano_usd);
        if day.day == today {
            expected = (expected - i128::from(spent_today.nanos())).max(0);
        }
        if expected > 0 && used + expected > remaining {
            let fraction_micros = (day_end - day_start).num_microseconds().unwrap_or(0);
            let into = i128::from(fraction_micros) * (remaining - used) / expected;
            status.projected_exhaustion = i64::try_from(into)
                .ok()
                .and_then(|micros| day_start.checked_add_signed(TimeDelta::microseconds(micros)))
                .filter(|at| *at < status.period.end);
            return status;
        }
        used += expected;
    }
    status
}

/// Whether `spent` of `limit` is at or past `percent`.
pub fn reached(limit: NanoUsd, spent: NanoUsd, percent: u32) -> bool {
    i128::from(spent.nanos()) * 100 >= i128::from(limit.nanos()) * i128::from(percent)
}

fn state(budget: &Budget, limit: NanoUsd, spent: NanoUsd) -> BudgetState {
    if spent >= limit {
        BudgetState::Exceeded
    } else if budget
        .soft_limit_percents
        .first()
        .is_some_and(|lowest| reached(limit, spent, *lowest))
    {
        BudgetState::Warning
    } else {
        BudgetState::Ok
    }
}

/// Linear: the time left at the average rate since the period began.
fn projection(
    period: Period,
    now: DateTime<Utc>,
    limit: NanoUsd,
    spent: NanoUsd,
) -> Option<DateTime<Utc>> {
    let elapsed = (now - period.start).num_microseconds()?;
    if spent.nanos() <= 0 || elapsed <= 0 || spent >= limit {
        return None;
    }
    let left = i128::from(limit.nanos() - spent.nanos());
    let micros = left * i128::from(elapsed) / i128::from(spent.nanos());
    let at = now.checked_add_signed(TimeDelta::microseconds(i64::try_from(micros).ok()?))?;
    (at < period.end).then_some(at)
}
