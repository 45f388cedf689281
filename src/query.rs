//! Query parameters shared by the listing APIs: date ranges, filters, limits
//! and cursors, parsed from strings into a [`RecordFilter`]. Pure.

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::store::{Cursor, RecordFilter};
use crate::usage::{Provider, TaskType};

/// Records per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1_000;

/// A parameter that cannot be used, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct QueryError {
    pub param: String,
    pub message: String,
}

fn error(param: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// `GET /api/v1/usage/records` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    pub filter: RecordFilter,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

const RECORD_PARAMETERS: &[&str] = &[
    "start_date",
    "end_date",
    "provider",
    "model",
    "task_type",
    "org_id",
    "user_id",
    "tag",
    "limit",
    "cursor",
];

impl RecordQuery {
    pub fn parse(parameters: &HashMap<String, String>, timezone: Tz) -> Result<Self, QueryError> {
        if let Some(unknown) = parameters
            .keys()
            .find(|name| !RECORD_PARAMETERS.contains(&name.as_str()))
        {
            return Err(error(
                unknown,
                format!(
                    "unknown parameter (expected one of: {})",
                    RECORD_PARAMETERS.join(", ")
                ),
            ));
        }
        let filter = parse_filter(parameters, timezone)?;
        let limit = match parameters.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    error(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let cursor = parameters
            .get("cursor")
            .map(|text| {
                decode_cursor(text)
                    .ok_or_else(|| error("cursor", "is not a cursor this API returned"))
            })
            .transpose()?;
        Ok(RecordQuery {
            filter,
            cursor,
            limit,
        })
    }
}

/// The filters every usage listing shares.
pub fn parse_filter(
    parameters: &HashMap<String, String>,
    timezone: Tz,
) -> Result<RecordFilter, QueryError> {
    let text = |name: &str| {
        parameters
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let start = text("start_date")
        .map(|value| {
            parse_time(value, timezone, Bound::Start)
                .map_err(|message| error("start_date", message))
        })
        .transpose()?;
    let end = text("end_date")
        .map(|value| {
            parse_time(value, timezone, Bound::End).map_err(|message| error("end_date", message))
        })
        .transpose()?;
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        return Err(error("end_date", "must be after start_date"));
    }
    let provider = text("provider")
        .map(|value| {
            value
                .parse::<Provider>()
                .map_err(|unknown| error("provider", unknown.to_string()))
        })
        .transpose()?;
    let task_type = text("task_type")
        .map(|value| {
            value
                .parse::<TaskType>()
                .map_err(|unknown| error("task_type", unknown.to_string()))
        })
        .transpose()?;
    Ok(RecordFilter {
        start,
        end,
        provider,
        model: text("model").map(str::to_owned),
        task_type,
        org_id: text("org_id").map(str::to_owned),
        user_id: text("user_id").map(str::to_owned),
        tag: text("tag").map(str::to_owned),
        // The caller's scope is added where the caller is known (`http`).
        scope: crate::store::Scope::Nobody,
    })
}

#[derive(Clone, Copy)]
enum Bound {
    Start,
    End,
}

/// RFC 3339, or a calendar date in the server's time zone. A date as an end
/// bound includes that whole day.
fn parse_time(text: &str, timezone: Tz, bound: Bound) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let day = match bound {
        Bound::Start => date,
        Bound::End => date
            .checked_add_days(Days::new(1))
            .ok_or_else(|| format!("`{text}` is out of range"))?,
    };
    start_of_day(day, timezone).ok_or_else(|| format!("`{text}` is out of range"))
}

/// Midnight in `timezone`, or the first instant of the day when a DST change
/// skips midnight.
pub fn start_of_day(day: NaiveDate, timezone: Tz) -> Option<DateTime<Utc>> {
    let midnight = day.and_time(NaiveTime::MIN);
    timezone
        .from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            (1..=3).find_map(|hours| {
                timezone
                    .from_local_datetime(&(midnight + chrono::Duration::hours(hours)))
                    .earliest()
            })
        })
        .map(|time| time.with_timezone(&Utc))
}

/// Cursors are `<microseconds>_<request id>`: opaque to clients, stable.
pub fn encode_cursor(cursor: &Cursor) -> String {
    format!(
        "{}_{}",
        cursor.created_at.timestamp_micros(),
        cursor.request_id
    )
}

pub fn decode_cursor(text: &str) -> Option<Cursor> {
    let (micros, id) = text.split_once('_')?;
    Some(Cursor {
        created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        request_id: Uuid::parse_str(id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_date_end_bound_covers_the_whole_day_in_the_server_time_zone() {
        let query = RecordQuery::parse(
            &parameters(&[("start_date", "2026-03-01"), ("end_date", "2026-03-01")]),
            chrono_tz::Europe::Paris,
        )
        .unwrap();
        assert_eq!(
            query.filter.start.unwrap().to_rfc3339(),
            "2026-02-28T23:00:00+00:00"
        );
        assert_eq!(
            query.filter.end.unwrap().to_rfc3339(),
            "2026-03-01T23:00:00+00:00"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases = [
            (vec![("start_date", "yesterday")], "start_date"),
            (
                vec![("start_date", "2026-03-02"), ("end_date", "2026-03-01")],
                "end_date",
            ),
            (vec![("provider", "anthropic")], "provider"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "5000")], "limit"),
            (vec![("cursor", "abc")], "cursor"),
            (vec![("colour", "red")], "colour"),
        ];
        for (pairs, param) in cases {
            let error = RecordQuery::parse(&parameters(&pairs), Tz::UTC).unwrap_err();
            assert_eq!(error.param, param, "{pairs:?}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            request_id: Uuid::now_v7(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)), Some(cursor));
    }
}
