//! The `ai_model_performance` rollup: what a batch of records adds to each
//! day × org × provider × model × task type row.
//!
//! Pure: the store applies the deltas in the same transaction as the raw rows,
//! so the rollup always equals the sum of the records it covers.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::usage::{CostStatus, Provider, RecordStatus, TaskType, UsageRecord};

/// Upper bounds, in milliseconds, of the latency histogram's buckets; the
/// last bucket holds everything slower. Roughly 1.5–2× apart, so a percentile
/// read from the histogram is off by at most one bucket.
pub const LATENCY_BUCKET_BOUNDS_MS: [u64; 21] = [
    5, 10, 20, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000,
    15_000, 20_000, 30_000, 60_000, 120_000,
];

/// Number of histogram buckets, the overflow bucket included.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_MS.len() + 1;

/// The bucket a latency falls into.
pub fn latency_bucket(latency_ms: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_MS.partition_point(|bound| *bound < latency_ms)
}

/// One rollup row's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub day: NaiveDate,
    pub org_id: String,
    pub provider: Provider,
    pub model: String,
    pub task_type: TaskType,
}

/// What some records add to one rollup row. Counters are `i64` because that
/// is what both databases store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupDelta {
    pub requests: i64,
    pub errors: i64,
    pub unpriced_requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nano_usd: i64,
    pub latency_ms_sum: i64,
    pub ttft_ms_sum: i64,
    pub ttft_count: i64,
    pub latency_histogram: [i64; LATENCY_BUCKETS],
}

impl RollupDelta {
    /// Adds one record.
    pub fn add(&mut self, record: &UsageRecord) {
        // Validation bounds every count (10¹² tokens, $10⁶), so these sums
        // stay far from i64::MAX; saturating is a guard, never a result.
        let add = |total: &mut i64, value: i64| *total = total.saturating_add(value);
        add(&mut self.requests, 1);
        if record.status != RecordStatus::Ok {
            add(&mut self.errors, 1);
        }
        if record.cost_status == CostStatus::Unpriced {
            add(&mut self.unpriced_requests, 1);
        }
        add(&mut self.input_tokens, clamp(record.tokens.input));
        add(&mut self.output_tokens, clamp(record.tokens.output));
        add(
            &mut self.cached_input_tokens,
            clamp(record.tokens.cached_input),
        );
        add(&mut self.reasoning_tokens, clamp(record.tokens.reasoning));
        add(
            &mut self.cost_nano_usd,
            record.cost.map_or(0, |cost| cost.nanos()),
        );
        add(&mut self.latency_ms_sum, clamp(record.latency_ms));
        if let Some(ttft) = record.time_to_first_token_ms {
            add(&mut self.ttft_ms_sum, clamp(ttft));
            add(&mut self.ttft_count, 1);
        }
        if let Some(slot) = self
            .latency_histogram
            .get_mut(latency_bucket(record.latency_ms))
        {
            add(slot, 1);
        }
    }
}

impl RollupDelta {
    /// Adds another row's counters to this one.
    pub fn merge(&mut self, other: &RollupDelta) {
        let add = |total: &mut i64, value: i64| *total = total.saturating_add(value);
        add(&mut self.requests, other.requests);
        add(&mut self.errors, other.errors);
        add(&mut self.unpriced_requests, other.unpriced_requests);
        add(&mut self.input_tokens, other.input_tokens);
        add(&mut self.output_tokens, other.output_tokens);
        add(&mut self.cached_input_tokens, other.cached_input_tokens);
        add(&mut self.reasoning_tokens, other.reasoning_tokens);
        add(&mut self.cost_nano_usd, other.cost_nano_usd);
        add(&mut self.latency_ms_sum, other.latency_ms_sum);
        add(&mut self.ttft_ms_sum, other.ttft_ms_sum);
        add(&mut self.ttft_count, other.ttft_count);
        for (total, value) in self
            .latency_histogram
            .iter_mut()
            .zip(other.latency_histogram)
        {
            add(total, value);
        }
    }

    /// The latency below which `per_mille`/1000 of the requests fall, read
    /// from the histogram: the bucket holding that rank, interpolated
    /// linearly inside it, so the answer is always within the true value's
    /// bucket. The overflow bucket answers with its lower bound (120 s).
    /// `None` without requests.
    pub fn latency_percentile_ms(&self, per_mille: u32) -> Option<u64> {
        latency_percentile_ms(&self.latency_histogram, per_mille)
    }
}

/// See [`RollupDelta::latency_percentile_ms`].
pub fn latency_percentile_ms(histogram: &[i64; LATENCY_BUCKETS], per_mille: u32) -> Option<u64> {
    let counts: Vec<u128> = histogram
        .iter()
        .map(|count| u128::try_from(*count).unwrap_or(0))
        .collect();
    let total: u128 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The 1-based rank of the request at this percentile (nearest rank).
    let rank = (total * u128::from(per_mille.min(1_000)))
        .div_ceil(1_000)
        .max(1);
    let mut below: u128 = 0;
    for (bucket, count) in counts.iter().enumerate() {
        if *count > 0 && below + count >= rank {
            let lower = match bucket {
                0 => 0,
                _ => LATENCY_BUCKET_BOUNDS_MS
                    .get(bucket - 1)
                    .copied()
                    .unwrap_or(0),
            };
            let Some(upper) = LATENCY_BUCKET_BOUNDS_MS.get(bucket).copied() else {
                return Some(lower);
            };
            let width = u128::from(upper - lower);
            let offset = width * (rank - below) / count;
            return Some(lower + u64::try_from(offset).unwrap_or(0));
        }
        below += count;
    }
    LATENCY_BUCKET_BOUNDS_MS.last().copied()
}

/// Counts are validated to fit `i64` before they reach the recorder; this
/// only guards the conversion.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The rollup days `[first, end)` that cover the instants `[start, end)` in
/// `timezone`: a partial day at either end is included.
pub fn day_range(
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
    timezone: Tz,
) -> (Option<NaiveDate>, Option<NaiveDate>) {
    let first = start.map(|start| start.with_timezone(&timezone).date_naive());
    let end = end.map(|end| {
        let local = end.with_timezone(&timezone);
        let day = local.date_naive();
        let at_midnight = local.time() == chrono::NaiveTime::MIN;
        if at_midnight {
            day
        } else {
            day.succ_opt().unwrap_or(day)
        }
    });
    (first, end)
}

/// Groups records into rollup deltas, days taken in `timezone`. The map is
/// ordered, so every writer updates rows in the same order (no deadlocks
/// between instances sharing PostgreSQL).
pub fn rollup<'a, I>(records: I, timezone: Tz) -> BTreeMap<RollupKey, RollupDelta>
where
    I: IntoIterator<Item = &'a UsageRecord>,
{
    let mut deltas: BTreeMap<RollupKey, RollupDelta> = BTreeMap::new();
    for record in records {
        let key = RollupKey {
            day: record.created_at.with_timezone(&timezone).date_naive(),
            org_id: record.org_id.clone(),
            provider: record.provider,
            model: record.model.clone(),
            task_type: record.task_type,
        };
        deltas.entry(key).or_default().add(record);
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_the_bucket_whose_bound_covers_them() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(5), 0);
        assert_eq!(latency_bucket(6), 1);
        assert_eq!(latency_bucket(1_000), 9);
        assert_eq!(latency_bucket(1_001), 10);
        assert_eq!(latency_bucket(120_000), 20);
        assert_eq!(latency_bucket(120_001), 21);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn percentiles_interpolate_inside_the_bucket_that_holds_the_rank() {
        let mut histogram = [0_i64; LATENCY_BUCKETS];
        // 100 requests: 50 in (100, 200], 40 in (200, 300], 10 in (1000, 1500].
        histogram[5] = 50;
        histogram[6] = 40;
        histogram[10] = 10;
        assert_eq!(latency_percentile_ms(&histogram, 500), Some(200));
        assert_eq!(latency_percentile_ms(&histogram, 10), Some(102));
        assert_eq!(latency_percentile_ms(&histogram, 900), Some(300));
        assert_eq!(latency_percentile_ms(&histogram, 950), Some(1_250));
        assert_eq!(latency_percentile_ms(&histogram, 1_000), Some(1_500));
        assert_eq!(latency_percentile_ms(&[0; LATENCY_BUCKETS], 500), None);
        let mut slow = [0_i64; LATENCY_BUCKETS];
        slow[LATENCY_BUCKETS - 1] = 3;
        assert_eq!(latency_percentile_ms(&slow, 990), Some(120_000));
    }
}
