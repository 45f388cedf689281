//! Period arithmetic and rollover, hand-computed.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::period::{Period, period_containing, previous, rollover};
use super::{BudgetType, RolloverPolicy};
use crate::money::NanoUsd;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn date(text: &str) -> NaiveDate {
    text.parse()
        .unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn zone(name: &str) -> Tz {
    name.parse()
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// type, anchor, time zone, instant, expected start, expected end.
const PERIOD_CASES: &str = "
    daily   2026-01-01 UTC              2026-11-28T12:00:00Z        2026-11-28T00:00:00Z 2026-11-29T00:00:00Z
    daily   2026-01-01 UTC              2026-11-28T00:00:00Z        2026-11-28T00:00:00Z 2026-11-29T00:00:00Z
    daily   2026-01-01 UTC              2026-11-28T23:59:59.999999Z 2026-11-28T00:00:00Z 2026-11-29T00:00:00Z
    # 22:00 on the 27th in New York (UTC-5).
    daily   2026-01-01 America/New_York 2026-11-28T03:00:00Z        2026-11-27T05:00:00Z 2026-11-28T05:00:00Z
    # Spring forward: 8 March 2026 lasts 23 hours in New York; fall back: 1 November lasts 25.
    daily   2026-01-01 America/New_York 2026-03-08T12:00:00Z        2026-03-08T05:00:00Z 2026-03-09T04:00:00Z
    daily   2026-01-01 America/New_York 2026-11-01T12:00:00Z        2026-11-01T04:00:00Z 2026-11-02T05:00:00Z
    # Half-hour offset.
    daily   2026-01-01 Asia/Kolkata     2026-11-28T20:00:00Z        2026-11-28T18:30:00Z 2026-11-29T18:30:00Z
    # Chile moves its clocks at midnight: 6 September 2026 has no 00:00; the day starts at 01:00 (-03).
    daily   2026-01-01 America/Santiago 2026-09-06T12:00:00Z        2026-09-06T04:00:00Z 2026-09-07T03:00:00Z
    # Weekly, anchored on a Wednesday; 28 November 2026 is a Saturday.
    weekly  2026-11-04 UTC              2026-11-28T12:00:00Z        2026-11-25T00:00:00Z 2026-12-02T00:00:00Z
    weekly  2026-11-04 UTC              2026-11-25T00:00:00Z        2026-11-25T00:00:00Z 2026-12-02T00:00:00Z
    # An anchor in the future sets the phase just the same; across a year end.
    weekly  2027-06-30 UTC              2026-11-28T12:00:00Z        2026-11-25T00:00:00Z 2026-12-02T00:00:00Z
    weekly  2026-11-04 UTC              2027-01-01T00:00:00Z        2026-12-30T00:00:00Z 2027-01-06T00:00:00Z
    # Monthly on the 1st in Paris (UTC+1 in winter, +2 from 29 March 2026).
    monthly 2026-01-01 Europe/Paris     2026-12-15T12:00:00Z        2026-11-30T23:00:00Z 2026-12-31T23:00:00Z
    monthly 2026-01-01 Europe/Paris     2026-11-30T23:30:00Z        2026-11-30T23:00:00Z 2026-12-31T23:00:00Z
    monthly 2026-01-01 Europe/Paris     2026-03-29T12:00:00Z        2026-02-28T23:00:00Z 2026-03-31T22:00:00Z
    # Anchored on the 31st: short months reset on their last day.
    monthly 2026-01-31 UTC              2026-02-15T00:00:00Z        2026-01-31T00:00:00Z 2026-02-28T00:00:00Z
    monthly 2026-01-31 UTC              2026-03-05T00:00:00Z        2026-02-28T00:00:00Z 2026-03-31T00:00:00Z
    monthly 2026-01-31 UTC              2026-04-30T00:00:00Z        2026-04-30T00:00:00Z 2026-05-31T00:00:00Z
    monthly 2026-01-31 UTC              2026-04-29T23:59:59Z        2026-03-31T00:00:00Z 2026-04-30T00:00:00Z
    # Leap year: 2028 has a 29 February.
    monthly 2026-01-31 UTC              2028-02-29T10:00:00Z        2028-02-29T00:00:00Z 2028-03-31T00:00:00Z
    monthly 2026-01-30 UTC              2028-02-29T10:00:00Z        2028-02-29T00:00:00Z 2028-03-30T00:00:00Z
    # Anchored mid-month, across the year end.
    monthly 2026-03-15 UTC              2027-01-03T00:00:00Z        2026-12-15T00:00:00Z 2027-01-15T00:00:00Z
";

#[test]
fn periods_are_calendar_true_in_the_budget_time_zone() {
    let mut checked = 0;
    for line in PERIOD_CASES.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, anchor, timezone, at, start, end] = fields[..] else {
            panic!("bad case: {line}");
        };
        let kind: BudgetType = kind.parse().unwrap_or_else(|error| panic!("{error}"));
        let period = period_containing(kind, date(anchor), zone(timezone), utc(at));
        assert_eq!(
            period,
            Period {
                start: utc(start),
                end: utc(end)
            },
            "{line}"
        );
        assert!(period.start <= utc(at) && utc(at) < period.end, "{line}");
        checked += 1;
    }
    assert_eq!(checked, 22);
}

#[test]
fn the_previous_period_ends_where_the_current_one_starts() {
    let anchor = date("2026-01-31");
    let march = period_containing(
        BudgetType::Monthly,
        anchor,
        chrono_tz::UTC,
        utc("2026-04-01T00:00:00Z"),
    );
    let before = previous(BudgetType::Monthly, anchor, chrono_tz::UTC, march);
    assert_eq!(before.end, march.start);
    assert_eq!(before.start, utc("2026-02-28T00:00:00Z"));
    let new_york = zone("America/New_York");
    let day = period_containing(
        BudgetType::Daily,
        anchor,
        new_york,
        utc("2026-03-09T12:00:00Z"),
    );
    let before = previous(BudgetType::Daily, anchor, new_york, day);
    assert_eq!(
        (before.start, before.end),
        (utc("2026-03-08T05:00:00Z"), day.start)
    );
}

#[test]
fn consecutive_periods_tile_time_without_gaps() {
    let timezone = zone("Europe/London");
    for kind in [BudgetType::Daily, BudgetType::Weekly, BudgetType::Monthly] {
        let anchor = date("2024-01-31");
        let mut period = period_containing(kind, anchor, timezone, utc("2024-01-01T00:00:00Z"));
        for _ in 0..800 {
            let next = period_containing(kind, anchor, timezone, period.end);
            assert_eq!(next.start, period.end, "{kind}");
            assert!(next.end > next.start, "{kind}");
            period = next;
        }
    }
}

#[test]
fn rollover_follows_the_policy_and_never_compounds() {
    use RolloverPolicy::{CarryOverage, CarryUnused, None};
    let usd = |dollars: i64| NanoUsd::from_nanos(dollars * 1_000_000_000);
    // (policy, cap, amount, spent in the previous period, rollover)
    let cases = [
        (None, Option::None, 100, 30, 0),
        (None, Option::None, 100, 130, 0),
        (CarryUnused, Option::None, 100, 30, 70),
        (CarryUnused, Option::None, 100, 0, 100),
        (CarryUnused, Option::None, 100, 130, 0),
        (CarryUnused, Some(50), 100, 30, 50),
        (CarryUnused, Some(50), 100, 80, 20),
        (CarryUnused, Some(0), 100, 30, 0),
        (CarryOverage, Option::None, 100, 130, -30),
        (CarryOverage, Option::None, 100, 30, 0),
        (CarryOverage, Option::None, 100, 100, 0),
        (CarryOverage, Option::None, 100, 350, -250),
    ];
    for (policy, cap, amount, spent, expected) in cases {
        assert_eq!(
            rollover(policy, cap.map(usd), usd(amount), usd(spent)),
            usd(expected),
            "{policy} cap {cap:?}, amount {amount}, spent {spent}"
        );
    }
}

fn budget(amount_usd: i64, thresholds: Vec<u32>) -> super::Budget {
    super::Budget {
        id: uuid::Uuid::nil(),
        org_id: "acme".to_owned(),
        scope: super::Scope::default(),
        budget_type: BudgetType::Monthly,
        amount: NanoUsd::from_nanos(amount_usd * 1_000_000_000),
        soft_limit_percents: thresholds,
        hard_limit: true,
        rollover_policy: RolloverPolicy::None,
        rollover_cap: None,
        reset_date: super::DEFAULT_RESET_DATE,
        timezone: chrono_tz::UTC,
        created_at: utc("2026-01-01T00:00:00Z"),
        updated_at: utc("2026-01-01T00:00:00Z"),
    }
}

#[test]
fn status_projects_exhaustion_at_the_average_rate_and_names_the_state() {
    use super::status::{BudgetState, status};
    let usd = |dollars: i64| NanoUsd::from_nanos(dollars * 1_000_000_000);
    let monthly = budget(100, vec![80]);
    // 10 days into November, $50 spent: $5 a day, $50 left, 10 more days.
    let now = utc("2026-11-11T00:00:00Z");
    let half = status(&monthly, now, usd(50), NanoUsd::ZERO, usd(5));
    assert_eq!(half.period.start, utc("2026-11-01T00:00:00Z"));
    assert_eq!(half.period.end, utc("2026-12-01T00:00:00Z"));
    assert_eq!(half.projected_exhaustion, Some(utc("2026-11-21T00:00:00Z")));
    assert_eq!(half.remaining, usd(45), "limit - spent - reserved");
    assert_eq!(half.state, BudgetState::Ok);
    // $20 spent: the limit would last past the period's end, so no date.
    let slow = status(&monthly, now, usd(20), NanoUsd::ZERO, NanoUsd::ZERO);
    assert_eq!(slow.projected_exhaustion, None);
    // Nothing spent: no rate, no date.
    assert_eq!(
        status(&monthly, now, NanoUsd::ZERO, NanoUsd::ZERO, NanoUsd::ZERO).projected_exhaustion,
        None
    );
    // Past the lowest threshold: warning; at the limit: exceeded, nothing left.
    assert_eq!(
        status(&monthly, now, usd(80), NanoUsd::ZERO, NanoUsd::ZERO).state,
        BudgetState::Warning
    );
    let over = status(&monthly, now, usd(130), NanoUsd::ZERO, NanoUsd::ZERO);
    assert_eq!(
        (over.state, over.remaining, over.projected_exhaustion),
        (BudgetState::Exceeded, NanoUsd::ZERO, None)
    );
    // Overspend carried over shrinks the limit; it never goes below zero.
    let mut carried = budget(100, vec![50, 90]);
    carried.rollover_policy = RolloverPolicy::CarryOverage;
    let shrunk = status(&carried, now, usd(10), usd(130), NanoUsd::ZERO);
    assert_eq!((shrunk.rollover, shrunk.limit), (usd(-30), usd(70)));
    let gone = status(&carried, now, usd(0), usd(300), NanoUsd::ZERO);
    assert_eq!(
        (gone.limit, gone.state),
        (NanoUsd::ZERO, BudgetState::Exceeded)
    );
}

#[test]
fn the_model_projects_exhaustion_from_the_scopes_daily_history() {
    use super::status::{status, with_model_projection};
    let usd = |dollars: i64| NanoUsd::from_nanos(dollars * 1_000_000_000);
    let now = utc("2026-11-10T12:00:00Z");
    let first_day: chrono::NaiveDate = "2026-10-13".parse().unwrap();
    // Four weeks of $10 a day, then $5 so far today; $95 spent this month.
    let flat = vec![10_000_000_000_i64; 28];
    let base = status(&budget(245, vec![80]), now, usd(95), usd(0), usd(0));
    assert_eq!(base.projection_method, "period_rate");
    let modelled = with_model_projection(base, chrono_tz::UTC, now, first_day, &flat, usd(5));
    assert_eq!(modelled.projection_method, "weekday_trend");
    // $150 left: $5 more today, $140 over 11-24 November, the last $5 by
    // noon on the 25th.
    assert_eq!(
        modelled.projected_exhaustion,
        Some(utc("2026-11-25T12:00:00Z"))
    );
    // A limit the month's projected spend does not reach: no date.
    let roomy = status(&budget(300, vec![80]), now, usd(95), usd(0), usd(0));
    let roomy = with_model_projection(roomy, chrono_tz::UTC, now, first_day, &flat, usd(5));
    assert_eq!(roomy.projected_exhaustion, None);
    // Rising spend runs out sooner than the same average spent flat.
    let rising: Vec<i64> = (0..28)
        .map(|day| 3_000_000_000 + day * 500_000_000)
        .collect();
    let base = status(&budget(245, vec![80]), now, usd(95), usd(0), usd(0));
    let sooner = with_model_projection(base, chrono_tz::UTC, now, first_day, &rising, usd(5));
    assert!(
        sooner.projected_exhaustion.unwrap() < utc("2026-11-20T00:00:00Z"),
        "{sooner:?}"
    );
    // No history: the period rate stays.
    let base = status(&budget(245, vec![80]), now, usd(95), usd(0), usd(0));
    let expected = base.projected_exhaustion;
    let kept = with_model_projection(base, chrono_tz::UTC, now, first_day, &[], usd(5));
    assert_eq!(kept.projection_method, "period_rate");
    assert_eq!(kept.projected_exhaustion, expected);
}
