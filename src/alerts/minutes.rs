//! Requests and errors per minute × provider × model: the aggregate the
//! error-rate and quota rules read. The recorder adds each batch's deltas
//! in the ledger's own transaction, so every instance sees every record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::usage::{Provider, RecordStatus, UsageRecord};

pub const MINUTE_MICROS: i64 = 60 * 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinuteKey {
    /// Microseconds since the epoch, a multiple of [`MINUTE_MICROS`].
    pub minute: i64,
    pub provider: Provider,
    pub model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteDelta {
    pub requests: i64,
    pub errors: i64,
    pub quota_errors: i64,
}

pub fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros().div_euclid(MINUTE_MICROS) * MINUTE_MICROS
}

/// Sums records into aggregate rows, in key order.
pub fn minute_deltas<'a, I>(records: I) -> Vec<(MinuteKey, MinuteDelta)>
where
    I: IntoIterator<Item = &'a UsageRecord>,
{
    let mut deltas: BTreeMap<MinuteKey, MinuteDelta> = BTreeMap::new();
    for record in records {
        let delta = deltas
            .entry(MinuteKey {
                minute: minute_of(record.created_at),
                provider: record.provider,
                model: record.model.clone(),
            })
            .or_default();
        delta.requests += 1;
        // A client that hung up is not a provider failing.
        if record.status == RecordStatus::Error {
            delta.errors += 1;
        }
        if record.error_type.as_deref() == Some("quota_exceeded") {
            delta.quota_errors += 1;
        }
    }
    deltas.into_iter().collect()
}
