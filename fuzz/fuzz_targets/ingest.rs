//! The ingest API's path on arbitrary bytes: `ingest::parse_body`, then what
//! `Recorder::record` does with each event — `UsageEvent::validate` and
//! `recorder::price_event` against the built-in catalog.
//!
//! Checked: nothing panics; a parsed body has 1 to `MAX_RECORDS` events with
//! distinct request ids; a validated event prices into a record whose cost is
//! present unless it is unpriced, never negative, and which serializes (the
//! spool writes records as JSON lines).
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use tollgate::ingest;
use tollgate::money::NanoUsd;
use tollgate::pricing::{Pricing, UnpricedPolicy};
use tollgate::recorder::price_event;
use tollgate::usage::CostStatus;

/// Small, so the fuzzer reaches the limit (the default is 1,000).
const MAX_RECORDS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let now = now();
    let body = match ingest::parse_body(data, MAX_RECORDS, now) {
        Ok(body) => body,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!((1..=MAX_RECORDS).contains(&body.events.len()));
    assert!(body.is_batch || body.events.len() == 1);
    let ids: HashSet<_> = body.events.iter().map(|event| event.request_id).collect();
    assert_eq!(
        ids.len(),
        body.events.len(),
        "repeated request ids in a batch"
    );

    for event in body.events {
        if let Err(error) = event.validate(now, Duration::seconds(300)) {
            let _ = error.to_string();
            continue;
        }
        let reported = event.reported_cost;
        let record = price_event(pricing(), event);
        match record.cost {
            None => assert_eq!(record.cost_status, CostStatus::Unpriced),
            Some(cost) => {
                assert_ne!(record.cost_status, CostStatus::Unpriced);
                assert!(cost >= NanoUsd::ZERO, "negative cost {cost:?}");
            }
        }
        if let Some(reported) = reported.filter(|reported| *reported != NanoUsd::ZERO) {
            assert_eq!(
                record.cost,
                Some(reported),
                "the reported cost was not kept"
            );
        }
        assert!(record.metadata.is_object());
        assert!(serde_json::to_vec(&record).is_ok());
    }
});

fn pricing() -> &'static Pricing {
    static PRICING: OnceLock<Pricing> = OnceLock::new();
    PRICING.get_or_init(|| {
        Pricing::new(Vec::new(), false, UnpricedPolicy::Record)
            .unwrap_or_else(|error| panic!("the built-in catalog does not load: {error}"))
    })
}

/// A fixed clock, so a crash replays exactly.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .unwrap_or_default()
}
