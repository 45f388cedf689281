//! Budget periods and rollover: pure calendar arithmetic, no IO.
//!
//! A period is a half-open interval of instants `[start, end)`. Its edges
//! are local midnights in the budget's time zone: daily periods start every
//! day, weekly ones on the anchor's weekday, monthly ones on the anchor's day
//! of the month (the last day of shorter months when the anchor's day does
//! not exist in them, so an anchor on the 31st resets on 28/29 February and
//! 30 April). Where a time zone skips midnight (a DST change at 00:00), the
//! period starts at the first local time that exists that day; where
//! midnight occurs twice, at the earlier one.

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::{BudgetType, RolloverPolicy};
use crate::money::NanoUsd;

/// One budget period, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The period of a budget of `kind`, anchored on `anchor` in `timezone`,
/// that contains `at`.
pub fn period_containing(
    kind: BudgetType,
    anchor: NaiveDate,
    timezone: Tz,
    at: DateTime<Utc>,
) -> Period {
    let today = at.with_timezone(&timezone).date_naive();
    let (first, next) = local_dates(kind, anchor, today);
    Period {
        start: local_midnight(first, timezone),
        end: local_midnight(next, timezone),
    }
}

/// The period just before `period`.
pub fn previous(kind: BudgetType, anchor: NaiveDate, timezone: Tz, period: Period) -> Period {
    period_containing(
        kind,
        anchor,
        timezone,
        period.start - TimeDelta::microseconds(1),
    )
}

/// The local dates on which the period containing `today` starts and the
/// next one starts.
fn local_dates(kind: BudgetType, anchor: NaiveDate, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    match kind {
        BudgetType::Daily => (today, today + Days::new(1)),
        BudgetType::Weekly => {
            let into_week = (today - anchor).num_days().rem_euclid(7);
            let first = today - Days::new(into_week.unsigned_abs());
            (first, first + Days::new(7))
        }
        BudgetType::Monthly => {
            let this_month = monthly_start(anchor, today.year(), today.month());
            if today >= this_month {
                let (year, month) = next_year_month(today);
                (this_month, monthly_start(anchor, year, month))
            } else {
                let (year, month) = previous_year_month(today);
                (monthly_start(anchor, year, month), this_month)
            }
        }
    }
}

/// The day a monthly period anchored on `anchor` starts in `year`/`month`:
/// the anchor's day of the month, or the month's last day if it is shorter.
fn monthly_start(anchor: NaiveDate, year: i32, month: u32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    let last = first
        .checked_add_months(Months::new(1))
        .and_then(|next| next.pred_opt())
        .unwrap_or(NaiveDate::MAX);
    let day = anchor.day().min(last.day());
    first.with_day(day).unwrap_or(first)
}

fn next_year_month(date: NaiveDate) -> (i32, u32) {
    if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    }
}

fn previous_year_month(date: NaiveDate) -> (i32, u32) {
    if date.month() == 1 {
        (date.year() - 1, 12)
    } else {
        (date.year(), date.month() - 1)
    }
}

/// The instant a local day begins: midnight, or when midnight does not
/// exist that day, the first local minute that does; when it occurs twice,
/// the earlier.
pub fn local_midnight(date: NaiveDate, timezone: Tz) -> DateTime<Utc> {
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    // Time-zone gaps last at most a few hours and begin and end on whole
    // minutes; a day always has an existing minute.
    for minutes in 0..(24 * 60) {
        let local = midnight + TimeDelta::minutes(minutes);
        match timezone.from_local_datetime(&local) {
            LocalResult::Single(instant) => return instant.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, _) => return earlier.with_timezone(&Utc),
            LocalResult::None => {}
        }
    }
    midnight.and_utc()
}

/// What a period adds to (positive) or takes from (negative) the budget
/// amount, given what was spent in the period before. Rollover looks back
/// one period only, against the plain amount, so it never compounds:
/// `carry_unused` adds the previous period's unspent amount (at most `cap`
/// when one is set), `carry_overage` subtracts the previous period's
/// overspend, `none` does neither.
pub fn rollover(
    policy: RolloverPolicy,
    cap: Option<NanoUsd>,
    amount: NanoUsd,
    previous_spent: NanoUsd,
) -> NanoUsd {
    let difference = amount.nanos().saturating_sub(previous_spent.nanos());
    let nanos = match policy {
        RolloverPolicy::None => 0,
        RolloverPolicy::CarryUnused => {
            let unused = difference.max(0);
            cap.map_or(unused, |cap| unused.min(cap.nanos().max(0)))
        }
        RolloverPolicy::CarryOverage => difference.min(0),
    };
    NanoUsd::from_nanos(nanos)
}
