//! Spend by quarter hour and attribution: the aggregate budgets are read
//! from. The recorder adds each batch's deltas in the same transaction as
//! the ledger rows, so the aggregate always equals the ledger's sums.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::usage::{Provider, UsageRecord};

/// Bucket width: every IANA time zone's offset is a whole number of quarter
/// hours, so every budget period is a whole number of buckets.
pub const BUCKET_MICROS: i64 = 15 * 60 * 1_000_000;

/// One row of the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpendKey {
    pub org_id: String,
    /// Microseconds since the epoch, a multiple of [`BUCKET_MICROS`].
    pub bucket_start: i64,
    pub provider: Provider,
    /// `""` when the record has no user.
    pub user_id: String,
    /// `""` when the record has no key, else the key id's text.
    pub api_key_id: String,
}

/// What a batch adds to one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendDelta {
    pub requests: i64,
    pub cost_nano_usd: i64,
}

/// The bucket `at` falls in.
pub fn bucket_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros().div_euclid(BUCKET_MICROS) * BUCKET_MICROS
}

/// The text the aggregate stores for a key id.
pub fn key_text(api_key_id: Option<Uuid>) -> String {
    api_key_id.map(|id| id.to_string()).unwrap_or_default()
}

/// Sums records into aggregate rows. Unpriced records count as requests
/// with no cost.
pub fn spend_deltas<'a, I>(records: I) -> Vec<(SpendKey, SpendDelta)>
where
    I: IntoIterator<Item = &'a UsageRecord>,
{
    let mut deltas: BTreeMap<SpendKey, SpendDelta> = BTreeMap::new();
    for record in records {
        let key = SpendKey {
            org_id: record.org_id.clone(),
            bucket_start: bucket_of(record.created_at),
            provider: record.provider,
            user_id: record.user_id.clone().unwrap_or_default(),
            api_key_id: key_text(record.api_key_id),
        };
        let delta = deltas.entry(key).or_default();
        delta.requests += 1;
        delta.cost_nano_usd = delta
            .cost_nano_usd
            .saturating_add(record.cost.map_or(0, |cost| cost.nanos()));
    }
    deltas.into_iter().collect()
}
