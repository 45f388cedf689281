//! How a time range is answered: whole local days from the daily rollup,
//! whole UTC hours of the partial days at either end from the hourly rollup,
//! and what is left (less than an hour at each end) from the ledger itself.
//! Every instant of the range is read exactly once, so answers are exact
//! for any RFC 3339 range while a month costs about thirty rollup days.

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use super::rollups::hour_of;
use crate::query::start_of_day;

/// One piece of a range, half-open, and the table that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Local days `[first, end)`; `None` is unbounded.
    Days {
        first: Option<NaiveDate>,
        end: Option<NaiveDate>,
    },
    /// Whole UTC hours `[start, end)`.
    Hours {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Ledger rows created in `[start, end)`.
    Raw {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// Splits `[start, end)` into segments. Without `use_hours` (the hourly
/// rollup has no tag dimension) partial days are read from the ledger.
pub fn plan(
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    timezone: Tz,
    use_hours: bool,
) -> Vec<Segment> {
    let midnight = |day: NaiveDate| start_of_day(day, timezone);
    // The first whole day, and the partial day before it.
    let (first, leading) = match start {
        None => (None, None),
        Some(start) => {
            let day = start.with_timezone(&timezone).date_naive();
            if midnight(day) == Some(start) {
                (Some(day), None)
            } else {
                let next = day.checked_add_days(Days::new(1));
                let next_midnight = next.and_then(midnight);
                (next, next_midnight.map(|until| (start, until)))
            }
        }
    };
    // The day after the last whole day, and the partial day after it.
    let (last_end, trailing) = match end {
        None => (None, None),
        Some(end) => {
            let day = end.with_timezone(&timezone).date_naive();
            match midnight(day) {
                Some(from) if from == end => (Some(day), None),
                Some(from) => (Some(day), Some((from, end))),
                None => (Some(day), None),
            }
        }
    };
    let mut segments = Vec::new();
    let whole_days = match (first, last_end) {
        (Some(first), Some(last_end)) => first < last_end,
        _ => true,
    };
    let mut partial = |from: DateTime<Utc>, until: DateTime<Utc>| {
        if from < until {
            segments.extend(partial_segments(from, until, use_hours));
        }
    };
    if whole_days {
        if let Some((from, until)) = leading {
            partial(from, until);
        }
        if let Some((from, until)) = trailing {
            partial(from, until);
        }
        segments.push(Segment::Days {
            first,
            end: last_end,
        });
    } else if let (Some(start), Some(end)) = (start, end) {
        // The range lies within one day, or straddles one midnight.
        partial(start, end);
    }
    segments
}

/// `[start, end)` as whole UTC hours plus the ledger rows around them.
pub fn hour_segments(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Segment> {
    if start < end {
        partial_segments(start, end, true)
    } else {
        Vec::new()
    }
}

fn partial_segments(start: DateTime<Utc>, end: DateTime<Utc>, use_hours: bool) -> Vec<Segment> {
    let first_hour = {
        let floor = hour_of(start);
        if floor == start {
            start
        } else {
            floor + TimeDelta::hours(1)
        }
    };
    let last_hour = hour_of(end);
    if !use_hours || first_hour >= last_hour {
        return vec![Segment::Raw { start, end }];
    }
    let mut segments = Vec::with_capacity(3);
    if start < first_hour {
        segments.push(Segment::Raw {
            start,
            end: first_hour,
        });
    }
    segments.push(Segment::Hours {
        start: first_hour,
        end: last_hour,
    });
    if last_hour < end {
        segments.push(Segment::Raw {
            start: last_hour,
            end,
        });
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn whole_days_come_from_the_daily_rollup_alone() {
        let segments = plan(
            Some(at("2026-11-01T00:00:00Z")),
            Some(at("2026-11-08T00:00:00Z")),
            Tz::UTC,
            true,
        );
        assert_eq!(
            segments,
            vec![Segment::Days {
                first: Some(day("2026-11-01")),
                end: Some(day("2026-11-08"))
            }]
        );
        assert_eq!(
            plan(None, None, Tz::UTC, true),
            vec![Segment::Days {
                first: None,
                end: None
            }]
        );
    }

    #[test]
    fn partial_days_split_into_hours_and_ledger_minutes() {
        let segments = plan(
            Some(at("2026-11-01T10:30:00Z")),
            Some(at("2026-11-05T02:15:00Z")),
            Tz::UTC,
            true,
        );
        assert_eq!(
            segments,
            vec![
                Segment::Raw {
                    start: at("2026-11-01T10:30:00Z"),
                    end: at("2026-11-01T11:00:00Z")
                },
                Segment::Hours {
                    start: at("2026-11-01T11:00:00Z"),
                    end: at("2026-11-02T00:00:00Z")
                },
                Segment::Hours {
                    start: at("2026-11-05T00:00:00Z"),
                    end: at("2026-11-05T02:00:00Z")
                },
                Segment::Raw {
                    start: at("2026-11-05T02:00:00Z"),
                    end: at("2026-11-05T02:15:00Z")
                },
                Segment::Days {
                    first: Some(day("2026-11-02")),
                    end: Some(day("2026-11-05"))
                },
            ]
        );
        // Without the hourly rollup, partial days are read from the ledger.
        let segments = plan(Some(at("2026-11-01T10:30:00Z")), None, Tz::UTC, false);
        assert_eq!(
            segments,
            vec![
                Segment::Raw {
                    start: at("2026-11-01T10:30:00Z"),
                    end: at("2026-11-02T00:00:00Z")
                },
                Segment::Days {
                    first: Some(day("2026-11-02")),
                    end: None
                },
            ]
        );
    }

    #[test]
    fn a_range_inside_one_day_never_touches_the_daily_rollup() {
        let segments = plan(
            Some(at("2026-11-01T10:00:00Z")),
            Some(at("2026-11-02T03:00:00Z")),
            Tz::UTC,
            true,
        );
        assert_eq!(
            segments,
            vec![Segment::Hours {
                start: at("2026-11-01T10:00:00Z"),
                end: at("2026-11-02T03:00:00Z")
            }]
        );
        let segments = plan(
            Some(at("2026-11-01T10:10:00Z")),
            Some(at("2026-11-01T10:20:00Z")),
            Tz::UTC,
            true,
        );
        assert_eq!(
            segments,
            vec![Segment::Raw {
                start: at("2026-11-01T10:10:00Z"),
                end: at("2026-11-01T10:20:00Z")
            }]
        );
    }

    #[test]
    fn local_days_in_a_half_hour_zone_meet_utc_hours_through_the_ledger() {
        // Kolkata is UTC+5:30: its midnight is 18:30 UTC.
        let kolkata = chrono_tz::Asia::Kolkata;
        let segments = plan(
            Some(at("2026-11-01T12:00:00Z")),
            Some(at("2026-11-03T18:30:00Z")),
            kolkata,
            true,
        );
        assert_eq!(
            segments,
            vec![
                Segment::Hours {
                    start: at("2026-11-01T12:00:00Z"),
                    end: at("2026-11-01T18:00:00Z")
                },
                Segment::Raw {
                    start: at("2026-11-01T18:00:00Z"),
                    end: at("2026-11-01T18:30:00Z")
                },
                Segment::Days {
                    first: Some(day("2026-11-02")),
                    end: Some(day("2026-11-04"))
                },
            ]
        );
    }
}
