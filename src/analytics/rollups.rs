//! What a batch of records adds to the analytics rollups: usage per day (in
//! the configured time zone), per UTC hour, and per tag and day, each by
//! org × user × provider × model × task type. Pure; the store applies the
//! deltas in the ledger's own transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::rollup::RollupDelta;
use crate::usage::{Provider, TaskType, UsageRecord};

/// The most tags of one record that count in the tag rollup, and the longest
/// tag that counts (the gateway refuses more; ingested metadata may carry
/// anything, and the rollup must stay small).
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LENGTH: usize = 64;

/// Who used what: the rollups' dimensions besides time. `user_id` is empty
/// for records without a user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dimensions {
    pub org_id: String,
    pub user_id: String,
    pub provider: Provider,
    pub model: String,
    pub task_type: TaskType,
}

impl Dimensions {
    fn of(record: &UsageRecord) -> Self {
        Dimensions {
            org_id: record.org_id.clone(),
            user_id: record.user_id.clone().unwrap_or_default(),
            provider: record.provider,
            model: record.model.clone(),
            task_type: record.task_type,
        }
    }
}

/// The deltas for the three rollups. Maps are ordered so that every writer
/// updates rows in the same order (no deadlocks between instances).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsageDeltas {
    pub daily: BTreeMap<(NaiveDate, Dimensions), RollupDelta>,
    pub hourly: BTreeMap<(DateTime<Utc>, Dimensions), RollupDelta>,
    pub tagged: BTreeMap<(String, NaiveDate, Dimensions), RollupDelta>,
}

/// Groups records into the three rollups' deltas.
pub fn usage_deltas<'a, I>(records: I, timezone: Tz) -> UsageDeltas
where
    I: IntoIterator<Item = &'a UsageRecord>,
{
    let mut deltas = UsageDeltas::default();
    for record in records {
        let dimensions = Dimensions::of(record);
        let day = record.created_at.with_timezone(&timezone).date_naive();
        for tag in record_tags(record) {
            deltas
                .tagged
                .entry((tag.to_owned(), day, dimensions.clone()))
                .or_default()
                .add(record);
        }
        deltas
            .hourly
            .entry((hour_of(record.created_at), dimensions.clone()))
            .or_default()
            .add(record);
        deltas
            .daily
            .entry((day, dimensions))
            .or_default()
            .add(record);
    }
    deltas
}

/// The start of the UTC hour holding `at`.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// A record's tags as the rollup counts them: the strings of
/// `metadata.tags`, each once, at most [`MAX_TAGS`], longer than
/// [`MAX_TAG_LENGTH`] skipped.
pub fn record_tags(record: &UsageRecord) -> Vec<&str> {
    metadata_tags(&record.metadata)
}

/// The tags of a record's metadata, by the rule of [`record_tags`].
pub fn metadata_tags(metadata: &serde_json::Value) -> Vec<&str> {
    let mut tags: Vec<&str> = Vec::new();
    let Some(values) = metadata.get("tags").and_then(serde_json::Value::as_array) else {
        return tags;
    };
    for tag in values.iter().filter_map(serde_json::Value::as_str) {
        if tags.len() == MAX_TAGS {
            break;
        }
        if !tag.is_empty() && tag.len() <= MAX_TAG_LENGTH && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}
