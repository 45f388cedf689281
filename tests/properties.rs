//! Properties over generated inputs (proptest): money conversions, the cost
//! of a request, budget periods in awkward time zones, and the rollup equal
//! to the sum of the records it was built from.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::json;
use tollgate::budget::BudgetType;
use tollgate::budget::period::{period_containing, previous};
use tollgate::money::{NANOS_PER_USD, NanoUsd, checked_sum};
use tollgate::pricing::{ModelPrice, PriceSheet, PriceSource, cost_of};
use tollgate::rollup::{RollupDelta, RollupKey};
use tollgate::store::RecordFilter;
use tollgate::usage::{
    CostStatus, ExtraUsage, Provider, RecordStatus, TaskType, TokenCounts, UsageRecord,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A decimal USD amount: up to 12 digits after the point, magnitude under
/// a million dollars.
fn usd() -> impl Strategy<Value = Decimal> {
    (0_u32..=12).prop_flat_map(|scale| {
        let bound = 1_000_000_i64 * 10_i64.pow(scale);
        (-bound..bound).prop_map(move |mantissa| Decimal::new(mantissa, scale))
    })
}

proptest! {
    #![proptest_config(config(2_000))]

    /// A decimal becomes nano-USD by one half-even rounding, and nano-USD
    /// go back to exactly the same decimal.
    #[test]
    fn money_rounds_half_even_once_and_round_trips(amount in usd()) {
        let nanos = NanoUsd::from_usd(amount).unwrap();
        let expected = (amount * Decimal::from(NANOS_PER_USD))
            .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        prop_assert_eq!(Decimal::from(nanos.nanos()), expected);
        prop_assert_eq!(NanoUsd::from_usd(nanos.to_usd()).unwrap(), nanos);
        prop_assert_eq!(NanoUsd::parse_usd(&nanos.to_string()).unwrap(), nanos);
    }

    /// Sums are exact or refused, never wrapped.
    #[test]
    fn sums_are_exact_or_refused(amounts in proptest::collection::vec(any::<i64>(), 0..20)) {
        let exact: i128 = amounts.iter().map(|nanos| i128::from(*nanos)).sum();
        let sum = checked_sum(amounts.iter().map(|nanos| NanoUsd::from_nanos(*nanos)));
        match i64::try_from(exact) {
            Ok(exact) => prop_assert_eq!(sum, Some(NanoUsd::from_nanos(exact))),
            Err(_) => prop_assert_eq!(sum, None),
        }
    }
}

fn price(cents_per_mtok: u64) -> Option<Decimal> {
    Some(Decimal::new(i64::try_from(cents_per_mtok).unwrap(), 2))
}

fn model(input: u64, cached: u64, output: u64) -> ModelPrice {
    ModelPrice {
        provider: Provider::OpenAi,
        id: "m".to_owned(),
        exact: vec!["m".to_owned()],
        prefixes: Vec::new(),
        context_window: None,
        effective_from: None,
        prices: PriceSheet {
            input_mtok: price(input),
            cache_read_mtok: price(cached),
            output_mtok: price(output),
            ..PriceSheet::default()
        },
        tiers: Vec::new(),
        per_image: Vec::new(),
        source: PriceSource::Config,
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    /// The cost is the providers' formula in exact decimals, rounded once:
    /// uncached input at the input price, cached input at the cache price,
    /// output (reasoning included, not added again) at the output price.
    #[test]
    fn a_request_costs_its_tokens_at_their_prices_rounded_once(
        input in 0_u64..5_000_000,
        cached_share in 0_u64..=100,
        output in 0_u64..1_000_000,
        reasoning_share in 0_u64..=100,
        prices in (0_u64..100_000, 0_u64..100_000, 0_u64..100_000),
    ) {
        let (input_price, cached_price, output_price) = prices;
        let cached = input * cached_share / 100;
        let reasoning = output * reasoning_share / 100;
        let tokens = TokenCounts { input, output, cached_input: cached, reasoning };
        let cost = cost_of(
            &model(input_price, cached_price, output_price),
            &tokens,
            &ExtraUsage::default(),
        )
        .unwrap();
        let per_token = |tokens: u64, cents: u64| {
            Decimal::from(tokens) * Decimal::new(i64::try_from(cents).unwrap(), 2)
                / Decimal::from(1_000_000)
        };
        let exact = per_token(input - cached, input_price)
            + per_token(cached, cached_price)
            + per_token(output, output_price);
        prop_assert_eq!(cost.amount, NanoUsd::from_usd(exact).unwrap());
        prop_assert!(cost.fallbacks.is_empty());
        // More output never costs less.
        let more = TokenCounts { output: output + 1, ..tokens };
        let dearer = cost_of(&model(input_price, cached_price, output_price), &more, &ExtraUsage::default()).unwrap();
        prop_assert!(dearer.amount >= cost.amount);
    }
}

/// Zones with the awkward cases: DST at midnight (Santiago, Havana), half-
/// hour DST (Lord Howe), a skipped day (Apia 2011), large offsets.
const ZONES: &[chrono_tz::Tz] = &[
    chrono_tz::UTC,
    chrono_tz::Europe::Paris,
    chrono_tz::America::New_York,
    chrono_tz::America::Santiago,
    chrono_tz::America::Havana,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Pacific::Apia,
    chrono_tz::Pacific::Kiritimati,
    chrono_tz::Asia::Kolkata,
];

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 to 2040-01-01, to the second.
    (946_684_800_i64..2_208_988_800)
        .prop_map(|seconds| DateTime::from_timestamp(seconds, 0).unwrap())
}

fn anchor() -> impl Strategy<Value = NaiveDate> {
    (2000_i32..2040, 1_u32..=12, 1_u32..=31).prop_filter_map("a real date", |(year, month, day)| {
        NaiveDate::from_ymd_opt(year, month, day)
    })
}

proptest! {
    #![proptest_config(config(3_000))]

    /// Every instant lies in exactly one period; periods tile time without
    /// gaps or overlaps; each has the length its kind allows.
    #[test]
    fn budget_periods_tile_time_in_any_zone(
        at in instant(),
        anchor in anchor(),
        zone in 0..ZONES.len(),
        kind in prop_oneof![Just(BudgetType::Daily), Just(BudgetType::Weekly), Just(BudgetType::Monthly)],
    ) {
        let timezone = ZONES[zone];
        let period = period_containing(kind, anchor, timezone, at);
        prop_assert!(period.start <= at && at < period.end, "{at} not in {period:?}");
        prop_assert_eq!(period_containing(kind, anchor, timezone, period.start), period);
        let before = previous(kind, anchor, timezone, period);
        prop_assert_eq!(before.end, period.start);
        let next = period_containing(kind, anchor, timezone, period.end);
        prop_assert_eq!(next.start, period.end);
        let length = period.end - period.start;
        // Apia skipped 30 December 2011 entirely: that day's period is empty
        // of local time but not of instants, so allow a day either way.
        let (shortest, longest) = match kind {
            BudgetType::Daily => (TimeDelta::hours(21), TimeDelta::hours(49)),
            BudgetType::Weekly => (TimeDelta::days(6), TimeDelta::days(8)),
            BudgetType::Monthly => (TimeDelta::days(27), TimeDelta::days(32)),
        };
        prop_assert!(length >= shortest && length <= longest, "{kind:?} period of {length}");
        // Monthly periods start on the anchor's day, or the month's last day.
        if kind == BudgetType::Monthly {
            let local = period.start.with_timezone(&timezone).date_naive();
            let last_day = local
                .with_day(1)
                .and_then(|first| first.checked_add_months(chrono::Months::new(1)))
                .and_then(|next| next.pred_opt())
                .map(|last| last.day())
                .unwrap();
            prop_assert!(local.day() == anchor.day() || local.day() == last_day);
        }
    }
}

fn record(
    (org, model, task, day, second): (usize, usize, usize, u32, u32),
    (input, output, cost, latency, failed): (u64, u64, Option<i64>, u64, bool),
) -> UsageRecord {
    let orgs = ["acme", "globex"];
    let models = [
        ("gpt-4o", Provider::OpenAi),
        ("anthropic/claude", Provider::OpenRouter),
        ("llama3", Provider::Local),
    ];
    let tasks = [TaskType::Chat, TaskType::Embedding, TaskType::Responses];
    let (model, provider) = models[model];
    let created_at = DateTime::from_timestamp(
        1_790_000_000 + i64::from(day) * 86_400 + i64::from(second),
        0,
    )
    .unwrap();
    UsageRecord {
        request_id: tollgate::usage::new_request_id(),
        parent_request_id: None,
        created_at,
        org_id: orgs[org].to_owned(),
        user_id: Some(format!("{}-user", orgs[org])),
        api_key_id: None,
        provider,
        model: model.to_owned(),
        task_type: tasks[task],
        tokens: TokenCounts {
            input,
            output,
            cached_input: input / 3,
            reasoning: output / 4,
        },
        cost: cost.map(NanoUsd::from_nanos),
        estimated_cost: None,
        cost_status: if cost.is_some() {
            CostStatus::Priced
        } else {
            CostStatus::Unpriced
        },
        latency_ms: latency,
        time_to_first_token_ms: (latency > 500).then_some(latency / 2),
        status_code: Some(if failed { 500 } else { 200 }),
        status: if failed {
            RecordStatus::Error
        } else {
            RecordStatus::Ok
        },
        error_type: failed.then(|| "server_error".to_owned()),
        stream: false,
        provider_request_id: None,
        metadata: json!({}),
    }
}

fn records() -> impl Strategy<Value = Vec<UsageRecord>> {
    proptest::collection::vec(
        (
            (0_usize..2, 0_usize..3, 0_usize..3, 0_u32..3, 0_u32..86_400),
            (
                0_u64..200_000,
                0_u64..50_000,
                proptest::option::weighted(0.9, 0_i64..5_000_000_000),
                0_u64..120_000,
                proptest::bool::weighted(0.1),
            ),
        )
            .prop_map(|(identity, counts)| record(identity, counts)),
        1..120,
    )
}

proptest! {
    // Each case fills a fresh SQLite database: fewer cases.
    #![proptest_config(config(40))]

    /// Whatever the records and however they are split into batches (a
    /// record sent twice included), the stored rollup is their sum.
    #[test]
    fn the_rollup_is_the_sum_of_the_records(records in records(), split in 1_usize..40) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let database = common::TestDatabase::sqlite();
            let store = common::connect_store(&database.url).await;
            for batch in records.chunks(split) {
                store.insert_usage(batch, chrono_tz::UTC).await.unwrap();
            }
            // A retry of the first batch adds nothing.
            store.insert_usage(&records[..split.min(records.len())], chrono_tz::UTC).await.unwrap();
            let mut expected: std::collections::BTreeMap<(NaiveDate, String, &str, String, &str), RollupDelta> =
                std::collections::BTreeMap::new();
            for record in &records {
                let key = (
                    record.created_at.date_naive(),
                    record.org_id.clone(),
                    record.provider.as_str(),
                    record.model.clone(),
                    record.task_type.as_str(),
                );
                let delta = expected.entry(key).or_default();
                delta.requests += 1;
                delta.errors += i64::from(record.status != RecordStatus::Ok);
                delta.unpriced_requests += i64::from(record.cost.is_none());
                delta.input_tokens += i64::try_from(record.tokens.input).unwrap();
                delta.output_tokens += i64::try_from(record.tokens.output).unwrap();
                delta.cached_input_tokens += i64::try_from(record.tokens.cached_input).unwrap();
                delta.reasoning_tokens += i64::try_from(record.tokens.reasoning).unwrap();
                delta.cost_nano_usd += record.cost.map_or(0, NanoUsd::nanos);
                delta.latency_ms_sum += i64::try_from(record.latency_ms).unwrap();
                if let Some(ttft) = record.time_to_first_token_ms {
                    delta.ttft_ms_sum += i64::try_from(ttft).unwrap();
                    delta.ttft_count += 1;
                }
            }
            let filter = RecordFilter { scope: tollgate::store::Scope::All, ..RecordFilter::default() };
            let stored = store.rollups(&filter, chrono_tz::UTC).await.unwrap();
            store.close().await;
            let stored: std::collections::BTreeMap<_, _> = stored
                .into_iter()
                .map(|(key, delta): (RollupKey, RollupDelta)| {
                    let histogram_total: i64 = delta.latency_histogram.iter().sum();
                    assert_eq!(histogram_total, delta.requests, "every request in one latency bucket");
                    (
                        (key.day, key.org_id, key.provider.as_str(), key.model, key.task_type.as_str()),
                        RollupDelta { latency_histogram: Default::default(), ..delta },
                    )
                })
                .collect();
            assert_eq!(stored, expected);
        });
    }
}
