//! The store's contract, run against both backends: every test body is an
//! `async fn(Store)` and `contract_tests!` runs it on SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tollgate::money::NanoUsd;
use tollgate::rollup::LATENCY_BUCKETS;
use tollgate::store::{RecordFilter, Store};
use tollgate::usage::{
    CostStatus, Provider, RecordStatus, TaskType, TokenCounts, UsageRecord, new_request_id,
};

both_backends!(
    inserted_records_read_back_unchanged,
    a_record_inserted_twice_is_stored_and_counted_once,
    filters_select_exactly_the_matching_records,
    pages_cover_every_record_once_in_newest_first_order,
    export_boundaries_and_bounded_pages_split_the_ledger_exactly,
    the_rollup_equals_the_sum_of_the_raw_records_exactly,
    concurrent_writers_of_the_same_records_count_them_once,
    migrating_twice_is_harmless,
    rollups_are_selected_by_days_in_the_server_time_zone,
    batches_of_awkward_sizes_are_stored_and_rolled_up_whole,
    alert_rules_read_minute_counts_and_daily_spend,
);

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

fn record(
    created_at: DateTime<Utc>,
    org: &str,
    model: &str,
    cost_nanos: Option<i64>,
) -> UsageRecord {
    UsageRecord {
        request_id: new_request_id(),
        parent_request_id: None,
        created_at,
        org_id: org.to_owned(),
        user_id: Some("alice".to_owned()),
        api_key_id: None,
        provider: Provider::OpenAi,
        model: model.to_owned(),
        task_type: TaskType::Chat,
        tokens: TokenCounts {
            input: 1_000,
            output: 200,
            cached_input: 100,
            reasoning: 50,
        },
        cost: cost_nanos.map(NanoUsd::from_nanos),
        estimated_cost: None,
        cost_status: if cost_nanos.is_some() {
            CostStatus::Priced
        } else {
            CostStatus::Unpriced
        },
        latency_ms: 420,
        time_to_first_token_ms: Some(90),
        status_code: Some(200),
        status: RecordStatus::Ok,
        error_type: None,
        stream: false,
        provider_request_id: Some("chatcmpl-1".to_owned()),
        metadata: json!({"tags": ["a"]}),
    }
}

async fn everything(store: &Store, filter: &RecordFilter) -> Vec<UsageRecord> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.usage_records(filter, cursor, 7).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return records,
        }
    }
}

async fn inserted_records_read_back_unchanged(store: Store) {
    let mut full = record(at(3, 10), "acme", "gpt-4o", Some(7_250_000));
    full.parent_request_id = Some(new_request_id());
    full.api_key_id = Some(uuid::Uuid::now_v7());
    full.estimated_cost = Some(NanoUsd::from_nanos(7_000_000));
    full.cost_status = CostStatus::ProviderReported;
    full.status = RecordStatus::ClientDisconnected;
    full.error_type = Some("client_closed".to_owned());
    full.stream = true;
    full.created_at += Duration::microseconds(123_456);
    let sparse = UsageRecord {
        user_id: None,
        time_to_first_token_ms: None,
        status_code: None,
        provider_request_id: None,
        ..record(at(3, 11), "acme", "mystery", None)
    };
    let outcome = store
        .insert_usage(&[full.clone(), sparse.clone()], chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 0));
    let stored = everything(&store, &all_records()).await;
    assert_eq!(stored, vec![sparse, full]);
}

async fn a_record_inserted_twice_is_stored_and_counted_once(store: Store) {
    let first = record(at(4, 9), "acme", "gpt-4o", Some(1_000));
    let second = record(at(4, 9), "acme", "gpt-4o", Some(2_000));
    let batch = vec![first.clone(), second.clone(), first.clone()];
    let outcome = store.insert_usage(&batch, chrono_tz::UTC).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 1));
    let again = store.insert_usage(&batch, chrono_tz::UTC).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 3));
    assert_eq!(everything(&store, &all_records()).await.len(), 2);
    let rollups = store.rollups(&all_records(), chrono_tz::UTC).await.unwrap();
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].1.requests, 2);
    assert_eq!(rollups[0].1.cost_nano_usd, 3_000);
    // A batch mixing stored and new records adds only the new ones.
    let third = record(at(4, 9), "acme", "gpt-4o", Some(4_000));
    let mixed = store
        .insert_usage(&[second, third, first], chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!((mixed.inserted, mixed.duplicates), (1, 2));
    let rollups = store.rollups(&all_records(), chrono_tz::UTC).await.unwrap();
    assert_eq!(rollups[0].1.requests, 3);
    assert_eq!(rollups[0].1.cost_nano_usd, 7_000);
    assert_eq!(everything(&store, &all_records()).await.len(), 3);
}

/// SQLite sends multi-row statements in a few fixed row counts (so its
/// statement cache stays small); sizes that are not one of them, across the
/// 1,000-row chunk limit and with duplicates inside, must still store and
/// roll up every record exactly once.
async fn batches_of_awkward_sizes_are_stored_and_rolled_up_whole(store: Store) {
    let mut stored = 0;
    for size in [1usize, 3, 999, 1_537] {
        // 37 models, so the rollup upsert also has an awkward row count.
        let mut batch: Vec<UsageRecord> = (0..size)
            .map(|index| record(at(6, 10), "acme", &format!("model-{}", index % 37), Some(1)))
            .collect();
        if size > 3 {
            batch.push(batch[2].clone());
            batch.push(batch[size - 1].clone());
        }
        let outcome = store.insert_usage(&batch, chrono_tz::UTC).await.unwrap();
        assert_eq!(outcome.inserted, size, "batch of {size}");
        assert_eq!(outcome.duplicates, batch.len() - size, "batch of {size}");
        stored += size;
    }
    let filter = all_records();
    assert_eq!(everything(&store, &filter).await.len(), stored);
    let rollups = store.rollups(&filter, chrono_tz::UTC).await.unwrap();
    assert_eq!(rollups.len(), 37);
    let requests: i64 = rollups.iter().map(|(_, delta)| delta.requests).sum();
    let cost: i64 = rollups.iter().map(|(_, delta)| delta.cost_nano_usd).sum();
    assert_eq!(requests, stored as i64);
    assert_eq!(cost, stored as i64);
}

/// The alert rules' inputs are the ledger's sums, whichever batches the
/// records came in.
async fn alert_rules_read_minute_counts_and_daily_spend(store: Store) {
    let now = Utc::now();
    let mut records = Vec::new();
    for index in 0..30 {
        let mut entry = record(
            now - Duration::minutes(index % 20),
            "acme",
            "gpt-4o",
            Some(1_000),
        );
        if index % 3 == 0 {
            entry.status = RecordStatus::Error;
            entry.cost = Some(NanoUsd::ZERO);
        }
        if index == 3 {
            entry.error_type = Some("quota_exceeded".to_owned());
        }
        if index % 10 == 9 {
            entry.provider = Provider::OpenRouter;
            entry.model = "openai/gpt-4o".to_owned();
        }
        records.push(entry);
    }
    // An old record, outside the window and another day.
    records.push(record(
        now - Duration::days(2),
        "acme",
        "gpt-4o",
        Some(5_000),
    ));
    for chunk in records.chunks(7) {
        store.insert_usage(chunk, chrono_tz::UTC).await.unwrap();
    }
    let counts = store
        .window_counts(now - Duration::minutes(30))
        .await
        .unwrap();
    let find = |provider: Provider, model: Option<&str>| {
        counts
            .iter()
            .find(|count| count.provider == provider && count.model.as_deref() == model)
            .map(|count| (count.requests, count.errors, count.quota_errors))
    };
    // 30 records: 3 on OpenRouter (indices 9, 19, 29; 9 is an error).
    assert_eq!(find(Provider::OpenAi, Some("gpt-4o")), Some((27, 9, 1)));
    assert_eq!(
        find(Provider::OpenRouter, Some("openai/gpt-4o")),
        Some((3, 1, 0))
    );
    assert_eq!(find(Provider::OpenAi, None), Some((27, 9, 1)));
    assert_eq!(counts.len(), 4);
    let today = now.date_naive();
    let spends = store.daily_spend(today).await.unwrap();
    let spent = |provider: Option<Provider>| {
        spends
            .iter()
            .find(|spend| spend.org_id == "acme" && spend.provider == provider)
            .map(|spend| spend.spent.nanos())
    };
    // Records at now - 0..19 minutes may straddle midnight UTC; count them.
    let expected: i64 = records
        .iter()
        .filter(|entry| entry.created_at.date_naive() == today)
        .map(|entry| entry.cost.map_or(0, NanoUsd::nanos))
        .sum();
    assert_eq!(spent(None), Some(expected));
}

async fn filters_select_exactly_the_matching_records(store: Store) {
    let mut records = Vec::new();
    for (index, (org, model, provider, task)) in [
        ("acme", "gpt-4o", Provider::OpenAi, TaskType::Chat),
        (
            "acme",
            "text-embedding-3-small",
            Provider::OpenAi,
            TaskType::Embedding,
        ),
        (
            "globex",
            "openai/gpt-4o",
            Provider::OpenRouter,
            TaskType::Chat,
        ),
        ("globex", "llama3", Provider::Local, TaskType::Completion),
    ]
    .into_iter()
    .enumerate()
    {
        let mut entry = record(at(5 + index as u32, 12), org, model, Some(10));
        entry.provider = provider;
        entry.task_type = task;
        entry.user_id = Some(if index % 2 == 0 { "alice" } else { "bob" }.to_owned());
        records.push(entry);
    }
    store.insert_usage(&records, chrono_tz::UTC).await.unwrap();
    let models = |found: Vec<UsageRecord>| {
        let mut names: Vec<String> = found.into_iter().map(|record| record.model).collect();
        names.sort();
        names
    };
    let cases: Vec<(RecordFilter, Vec<&str>)> = vec![
        (
            RecordFilter {
                org_id: Some("acme".into()),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["gpt-4o", "text-embedding-3-small"],
        ),
        (
            RecordFilter {
                provider: Some(Provider::OpenRouter),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["openai/gpt-4o"],
        ),
        (
            RecordFilter {
                task_type: Some(TaskType::Completion),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["llama3"],
        ),
        (
            RecordFilter {
                model: Some("gpt-4o".into()),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["gpt-4o"],
        ),
        (
            RecordFilter {
                user_id: Some("bob".into()),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["llama3", "text-embedding-3-small"],
        ),
        (
            // Half-open: the 6th at 12:00 is in, the 8th at 12:00 is out.
            RecordFilter {
                start: Some(at(6, 12)),
                end: Some(at(8, 12)),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["openai/gpt-4o", "text-embedding-3-small"],
        ),
        (
            RecordFilter {
                org_id: Some("globex".into()),
                user_id: Some("alice".into()),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec!["openai/gpt-4o"],
        ),
        (
            RecordFilter {
                org_id: Some("' OR 1=1 --".into()),
                scope: tollgate::store::Scope::All,
                ..RecordFilter::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            models(everything(&store, &filter).await),
            expected,
            "{filter:?}"
        );
    }
}

async fn pages_cover_every_record_once_in_newest_first_order(store: Store) {
    // Several records share a timestamp, so the cursor must break ties by id.
    let records: Vec<UsageRecord> = (0..40)
        .map(|index| record(at(10, index % 5), "acme", "gpt-4o", Some(1)))
        .collect();
    store.insert_usage(&records, chrono_tz::UTC).await.unwrap();
    let listed = everything(&store, &all_records()).await;
    assert_eq!(listed.len(), 40);
    let mut ids: Vec<_> = listed.iter().map(|record| record.request_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "no record appears twice");
    assert!(listed.windows(2).all(|pair| {
        (pair[0].created_at, pair[0].request_id) > (pair[1].created_at, pair[1].request_id)
    }));
}

/// An export plans its pages by asking where the n-th next record is, then
/// reads (after, until] ranges at once: every record must land in exactly
/// one range, ties on `created_at` included, and a range written into since
/// it was planned must still be read whole.
async fn export_boundaries_and_bounded_pages_split_the_ledger_exactly(store: Store) {
    let records: Vec<UsageRecord> = (0..23)
        .map(|index| record(at(12, index % 4), "acme", "gpt-4o", Some(1)))
        .collect();
    store.insert_usage(&records, chrono_tz::UTC).await.unwrap();
    let mut expected: Vec<_> = records
        .iter()
        .map(|record| (record.created_at, record.request_id))
        .collect();
    expected.sort();
    let filter = all_records();
    let position = |index: usize| tollgate::store::Cursor {
        created_at: expected[index].0,
        request_id: expected[index].1,
    };
    assert_eq!(
        store.usage_export_boundary(&filter, None, 1).await.unwrap(),
        Some(position(0))
    );
    assert_eq!(
        store
            .usage_export_boundary(&filter, Some(position(4)), 5)
            .await
            .unwrap(),
        Some(position(9))
    );
    assert_eq!(
        store
            .usage_export_boundary(&filter, Some(position(20)), 3)
            .await
            .unwrap(),
        None,
        "only two records after the 21st"
    );
    // Ranges of five, planned by boundaries, read back every record once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let until = store
            .usage_export_boundary(&filter, after, 5)
            .await
            .unwrap();
        let page = store
            .usage_export_page(&filter, after, until, 10)
            .await
            .unwrap();
        assert!(page.count <= 5);
        seen.extend(
            page.rows()
                .unwrap()
                .iter()
                .map(|row| (row.created_at, row.request_id)),
        );
        match until {
            Some(until) => after = Some(until),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // A record written into a planned range since: the bounded page has it.
    let until = position(9);
    let mut late = record(at(12, 0), "acme", "gpt-4o", Some(1));
    late.request_id = uuid::Uuid::nil();
    store.insert_usage(&[late], chrono_tz::UTC).await.unwrap();
    let page = store
        .usage_export_page(&filter, None, Some(until), 100)
        .await
        .unwrap();
    assert_eq!(page.count, 11, "ten planned records and the late one");
    assert!(page.next.is_none());
    // The limit still holds, with the position to go on from.
    let page = store
        .usage_export_page(&filter, None, Some(until), 4)
        .await
        .unwrap();
    assert_eq!(page.count, 4);
    assert!(page.next.is_some());
}

async fn the_rollup_equals_the_sum_of_the_raw_records_exactly(store: Store) {
    let timezone = chrono_tz::America::New_York;
    let mut records = Vec::new();
    for index in 0..300_u32 {
        // Spread over three UTC days and both sides of New York midnight.
        let created_at = at(20 + index % 3, 0) + Duration::minutes(i64::from(index) * 7);
        let model = ["gpt-4o", "gpt-4o-mini", "o3"][(index % 3) as usize];
        let org = ["acme", "globex"][(index % 2) as usize];
        let cost = (index % 11 != 0).then_some(i64::from(index) * 1_234_567 + 1);
        let mut entry = record(created_at, org, model, cost);
        entry.latency_ms = u64::from(index * 37 % 9_000);
        entry.status = if index % 13 == 0 {
            RecordStatus::Error
        } else {
            RecordStatus::Ok
        };
        entry.time_to_first_token_ms = (index % 4 != 0).then_some(u64::from(index));
        entry.tokens.input = u64::from(index) * 3;
        entry.tokens.output = u64::from(index) * 2;
        records.push(entry);
    }
    for batch in records.chunks(64) {
        store.insert_usage(batch, timezone).await.unwrap();
    }
    let raw = everything(&store, &all_records()).await;
    let rollups = store.rollups(&all_records(), chrono_tz::UTC).await.unwrap();
    let sum = |field: fn(&tollgate::rollup::RollupDelta) -> i64| -> i64 {
        rollups.iter().map(|(_, delta)| field(delta)).sum()
    };
    assert_eq!(sum(|d| d.requests), raw.len() as i64);
    assert_eq!(
        sum(|d| d.cost_nano_usd),
        raw.iter()
            .filter_map(|r| r.cost)
            .map(NanoUsd::nanos)
            .sum::<i64>()
    );
    assert_eq!(
        sum(|d| d.unpriced_requests),
        raw.iter()
            .filter(|r| r.cost_status == CostStatus::Unpriced)
            .count() as i64
    );
    assert_eq!(
        sum(|d| d.errors),
        raw.iter().filter(|r| !r.success()).count() as i64
    );
    assert_eq!(
        sum(|d| d.input_tokens),
        raw.iter().map(|r| r.tokens.input as i64).sum::<i64>()
    );
    assert_eq!(
        sum(|d| d.output_tokens),
        raw.iter().map(|r| r.tokens.output as i64).sum::<i64>()
    );
    assert_eq!(
        sum(|d| d.latency_ms_sum),
        raw.iter().map(|r| r.latency_ms as i64).sum::<i64>()
    );
    assert_eq!(
        sum(|d| d.ttft_count),
        raw.iter()
            .filter(|r| r.time_to_first_token_ms.is_some())
            .count() as i64
    );
    let mut histogram = [0_i64; LATENCY_BUCKETS];
    for (_, delta) in &rollups {
        for (total, count) in histogram.iter_mut().zip(delta.latency_histogram) {
            *total += count;
        }
    }
    for record in &raw {
        histogram[tollgate::rollup::latency_bucket(record.latency_ms)] -= 1;
    }
    assert_eq!(
        histogram, [0; LATENCY_BUCKETS],
        "every record is in exactly its bucket"
    );
    // Per day in New York: each rollup day holds exactly the records of that local day.
    for (key, delta) in &rollups {
        let matching = raw
            .iter()
            .filter(|r| {
                r.created_at.with_timezone(&timezone).date_naive() == key.day
                    && r.org_id == key.org_id
                    && r.model == key.model
            })
            .count() as i64;
        assert_eq!(delta.requests, matching, "{key:?}");
    }
}

async fn concurrent_writers_of_the_same_records_count_them_once(store: Store) {
    let records: Vec<UsageRecord> = (0..200)
        .map(|index| record(at(12, index % 24), "acme", "gpt-4o", Some(5)))
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let records = records.clone();
            tokio::spawn(async move {
                let mut inserted = 0;
                for batch in records.chunks(50) {
                    loop {
                        match store.insert_usage(batch, chrono_tz::UTC).await {
                            Ok(outcome) => {
                                inserted += outcome.inserted;
                                break;
                            }
                            Err(error) if error.is_transient() => continue,
                            Err(error) => panic!("{error}"),
                        }
                    }
                }
                inserted
            })
        })
        .collect();
    let mut inserted = 0;
    for writer in writers {
        inserted += writer.await.unwrap();
    }
    assert_eq!(inserted, 200);
    let rollups = store.rollups(&all_records(), chrono_tz::UTC).await.unwrap();
    assert_eq!(
        rollups.iter().map(|(_, delta)| delta.requests).sum::<i64>(),
        200
    );
    assert_eq!(
        rollups
            .iter()
            .map(|(_, delta)| delta.cost_nano_usd)
            .sum::<i64>(),
        1_000
    );
}

async fn migrating_twice_is_harmless(store: Store) {
    let again = store.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert!(again.created_tables.is_empty());
    assert!(again.already_applied >= 1);
}

async fn rollups_are_selected_by_days_in_the_server_time_zone(store: Store) {
    let paris = chrono_tz::Europe::Paris;
    // 23:30 UTC on 28 February is already 1 March in Paris.
    let late_feb_utc = Utc.with_ymd_and_hms(2026, 2, 28, 23, 30, 0).unwrap();
    let mid_feb = Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap();
    let records = [
        record(late_feb_utc, "acme", "march-first", Some(1)),
        record(mid_feb, "acme", "february", Some(1)),
    ];
    store.insert_usage(&records, paris).await.unwrap();
    // 1 March in Paris: [2026-02-28T23:00Z, 2026-03-01T23:00Z).
    let filter = RecordFilter {
        start: Some(Utc.with_ymd_and_hms(2026, 2, 28, 23, 0, 0).unwrap()),
        end: Some(Utc.with_ymd_and_hms(2026, 3, 1, 23, 0, 0).unwrap()),
        scope: tollgate::store::Scope::All,
        ..RecordFilter::default()
    };
    let rollups = store.rollups(&filter, paris).await.unwrap();
    let models: Vec<&str> = rollups.iter().map(|(key, _)| key.model.as_str()).collect();
    assert_eq!(models, ["march-first"]);
    assert_eq!(rollups[0].0.day.to_string(), "2026-03-01");
}

/// A filter for every record (the store's own, unscoped view).
fn all_records() -> RecordFilter {
    RecordFilter {
        scope: tollgate::store::Scope::All,
        ..RecordFilter::default()
    }
}
