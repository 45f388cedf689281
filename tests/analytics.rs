//! Analytics against the records themselves: stats, daily and hourly series
//! and model performance, through the API on both backends, each compared
//! with sums the test computes from the records it stored; exports that
//! round-trip every record once; and the API's refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_arithmetic,
    reason = "tests fail loudly, and check the API's rounded ratios against exact ones"
)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Days, NaiveDate, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use reqwest::Method;
use serde_json::Value;
use tollgate::generate::{Generator, Settings};
use tollgate::rollup::{LATENCY_BUCKET_BOUNDS_MS, latency_bucket};
use tollgate::store::{Grouping, RecordFilter};
use tollgate::usage::{RecordStatus, UsageEvent};

use common::{TestApp, TestDatabase, spawn_app, test_config};

both_backends_with_database!(
    stats_equal_the_sums_of_the_records_for_any_range_and_filter,
    daily_and_hourly_series_equal_the_records_per_bucket_and_provider,
    model_performance_equals_the_records_per_model_and_task_type,
    exports_return_every_record_once_in_csv_and_ndjson,
    exports_page_through_ties_and_awkward_text_field_by_field,
    rollups_filled_from_the_ledger_after_the_fact_equal_the_live_ones,
);

/// Kolkata (UTC+5:30): local days begin in the middle of a UTC hour, so
/// every range below crosses rollup days, rollup hours and raw minutes.
const TIMEZONE: &str = "Asia/Kolkata";

fn end_of_data() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T09:45:00Z")
        .unwrap()
        .to_utc()
}

/// A server on `database` with 3,000 generated records over ten days
/// recorded, and the records as stored.
async fn app_with_records(database: &TestDatabase) -> (TestApp, Vec<Value>) {
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[("server.timezone", TIMEZONE)],
    );
    let app = spawn_app(config).await;
    let mut settings = Settings::new(3_000, 10, end_of_data());
    settings.orgs = 3;
    settings.users_per_org = 4;
    let events: Vec<UsageEvent> = Generator::new(settings).collect();
    for batch in events.chunks(500) {
        app.recorder.record(batch.to_vec()).unwrap();
    }
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    assert_eq!(records.len(), 3_000);
    (app, records)
}

/// What the test expects of a group of records, computed from them alone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    requests: i64,
    errors: i64,
    cost_nano_usd: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_input_tokens: i64,
    reasoning_tokens: i64,
    latency_sum: i64,
    latencies: Vec<u64>,
}

impl Expected {
    fn add(&mut self, record: &Value) {
        let number = |name: &str| record[name].as_i64().unwrap_or(0);
        self.requests += 1;
        if record["status"] != "ok" {
            self.errors += 1;
        }
        self.cost_nano_usd += number("cost_nano_usd");
        self.input_tokens += number("input_tokens");
        self.output_tokens += number("output_tokens");
        self.cached_input_tokens += number("cached_input_tokens");
        self.reasoning_tokens += number("reasoning_tokens");
        self.latency_sum += number("latency_ms");
        self.latencies.push(record["latency_ms"].as_u64().unwrap());
    }

    /// Checks the fields every analytics view shares; `prefix` is `total_`
    /// for the stats totals' renamed fields.
    fn check(&mut self, view: &Value, what: &str) {
        let field = |name: &str| {
            view.get(format!("total_{name}"))
                .or_else(|| view.get(name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(field("requests"), self.requests, "{what}: requests");
        assert_eq!(
            view["successful_requests"],
            self.requests - self.errors,
            "{what}: successful"
        );
        assert_eq!(field("cost_nano_usd"), self.cost_nano_usd, "{what}: cost");
        assert_eq!(field("input_tokens"), self.input_tokens, "{what}: input");
        assert_eq!(field("output_tokens"), self.output_tokens, "{what}: output");
        assert_eq!(
            view["cached_input_tokens"], self.cached_input_tokens,
            "{what}"
        );
        assert_eq!(view["reasoning_tokens"], self.reasoning_tokens, "{what}");
        if self.requests == 0 {
            return;
        }
        // Averages as the API rounds them (one decimal).
        let average = view["avg_response_time_ms"].as_f64().unwrap();
        let exact = self.latency_sum as f64 / self.requests as f64;
        assert!(
            (average - exact).abs() <= 0.051,
            "{what}: average {average} vs {exact}"
        );
        // Percentiles: within the bucket of the true value.
        self.latencies.sort_unstable();
        for (name, per_mille) in [("p50", 500), ("p95", 950), ("p99", 990)] {
            let rank = (self.latencies.len() * per_mille).div_ceil(1_000).max(1);
            let truth = self.latencies[rank - 1];
            let reported = view[format!("{name}_response_time_ms")].as_u64().unwrap();
            let bucket = latency_bucket(truth);
            let lower = if bucket == 0 {
                0
            } else {
                LATENCY_BUCKET_BOUNDS_MS[bucket - 1]
            };
            let upper = LATENCY_BUCKET_BOUNDS_MS
                .get(bucket)
                .copied()
                .unwrap_or(lower);
            assert!(
                (lower..=upper).contains(&reported),
                "{what}: {name} {reported} outside the bucket ({lower}, {upper}] of the true {truth}"
            );
        }
    }
}

/// One end of a time range; `None` is unbounded.
type Bound = Option<DateTime<Utc>>;
/// Which records a filter keeps, decided from the record alone.
type Keep = Box<dyn Fn(&Value) -> bool>;

fn created_at(record: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(record["created_at"].as_str().unwrap())
        .unwrap()
        .to_utc()
}

fn tags(record: &Value) -> Vec<&str> {
    record["metadata"]["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn stats_equal_the_sums_of_the_records_for_any_range_and_filter(database: &TestDatabase) {
    let (app, records) = app_with_records(database).await;
    let ranges: Vec<(String, Bound, Bound)> = vec![
        ("everything".into(), None, None),
        // Whole local days (dates are days in the server's time zone).
        (
            "local days".into(),
            Some(at("2026-11-12T18:30:00Z")),
            Some(at("2026-11-16T18:30:00Z")),
        ),
        // Mid-hour, mid-day edges on both sides.
        (
            "odd edges".into(),
            Some(at("2026-11-11T07:12:33Z")),
            Some(at("2026-11-18T21:47:05Z")),
        ),
        // Inside one hour, and across one local midnight.
        (
            "one hour".into(),
            Some(at("2026-11-17T10:05:00Z")),
            Some(at("2026-11-17T10:55:00Z")),
        ),
        (
            "midnight".into(),
            Some(at("2026-11-15T16:10:00Z")),
            Some(at("2026-11-15T20:50:00Z")),
        ),
        ("open start".into(), None, Some(at("2026-11-14T03:20:00Z"))),
        ("open end".into(), Some(at("2026-11-19T12:40:00Z")), None),
    ];
    let sample = &records[17];
    let filters: Vec<(&str, String, Keep)> = vec![
        ("", String::new(), Box::new(|_: &Value| true)),
        (
            "provider",
            "openrouter".into(),
            Box::new(|r: &Value| r["provider"] == "openrouter"),
        ),
        (
            "model",
            "gpt-4o-mini".into(),
            Box::new(|r: &Value| r["model"] == "gpt-4o-mini"),
        ),
        (
            "task_type",
            "embedding".into(),
            Box::new(|r: &Value| r["task_type"] == "embedding"),
        ),
        (
            "org_id",
            "globex".into(),
            Box::new(|r: &Value| r["org_id"] == "globex"),
        ),
        ("user_id", sample["user_id"].as_str().unwrap().into(), {
            let user = sample["user_id"].clone();
            Box::new(move |r: &Value| r["user_id"] == user)
        }),
        (
            "tag",
            "search".into(),
            Box::new(|r: &Value| tags(r).contains(&"search")),
        ),
    ];
    let mut checked_non_empty = 0;
    for (range_name, start, stop) in &ranges {
        for (param, value, keep) in &filters {
            let mut query = Vec::new();
            if let Some(start) = start {
                query.push(format!("start_date={}", rfc3339(*start)));
            }
            if let Some(stop) = stop {
                query.push(format!("end_date={}", rfc3339(*stop)));
            }
            if !param.is_empty() {
                query.push(format!("{param}={value}"));
            }
            let (status, stats) = app
                .admin(
                    Method::GET,
                    &format!("/api/v1/usage/stats?{}", query.join("&")),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{stats}");
            let chosen: Vec<&Value> = records
                .iter()
                .filter(|record| {
                    let at = created_at(record);
                    start.is_none_or(|start| at >= start)
                        && stop.is_none_or(|stop| at < stop)
                        && keep(record)
                })
                .collect();
            let what = format!("{range_name} / {param}={value}");
            let mut total = Expected::default();
            let mut by_provider: BTreeMap<String, Expected> = BTreeMap::new();
            let mut by_user: BTreeMap<String, Expected> = BTreeMap::new();
            let mut by_model: BTreeMap<String, Expected> = BTreeMap::new();
            let mut by_task: BTreeMap<String, Expected> = BTreeMap::new();
            for record in &chosen {
                total.add(record);
                by_provider
                    .entry(record["provider"].as_str().unwrap().into())
                    .or_default()
                    .add(record);
                by_user
                    .entry(record["user_id"].as_str().unwrap_or("").into())
                    .or_default()
                    .add(record);
                by_model
                    .entry(record["model"].as_str().unwrap().into())
                    .or_default()
                    .add(record);
                by_task
                    .entry(record["task_type"].as_str().unwrap().into())
                    .or_default()
                    .add(record);
            }
            total.check(&stats, &what);
            if total.requests > 0 {
                checked_non_empty += 1;
            }
            for (name, expected, key) in [
                ("by_provider", &mut by_provider, "provider"),
                ("by_user", &mut by_user, "user_id"),
                ("by_model", &mut by_model, "model"),
                ("by_task_type", &mut by_task, "task_type"),
            ] {
                let rows = stats[name].as_array().unwrap();
                assert_eq!(rows.len(), expected.len(), "{what}: {name} groups");
                for row in rows {
                    let group = row[key].as_str().unwrap_or("").to_owned();
                    expected
                        .get_mut(&group)
                        .unwrap_or_else(|| panic!("{what}: unexpected {name} group {group}"))
                        .check(row, &format!("{what} {name} {group}"));
                }
                // Ordered by cost, largest first.
                let costs: Vec<i64> = rows
                    .iter()
                    .map(|row| row["cost_nano_usd"].as_i64().unwrap())
                    .collect();
                assert!(
                    costs.windows(2).all(|pair| pair[0] >= pair[1]),
                    "{what}: {name} order"
                );
            }
            let ratio = stats["output_input_token_ratio"].as_f64();
            if total.input_tokens > 0 {
                let exact = total.output_tokens as f64 / total.input_tokens as f64;
                assert!(
                    (ratio.unwrap() - exact).abs() < 0.0001,
                    "{what}: token ratio"
                );
            }
        }
    }
    assert!(
        checked_non_empty > 30,
        "the ranges and filters select records"
    );
    app.stop().await;
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

async fn daily_and_hourly_series_equal_the_records_per_bucket_and_provider(
    database: &TestDatabase,
) {
    let (app, records) = app_with_records(database).await;
    let timezone: Tz = TIMEZONE.parse().unwrap();
    // Daily, whole days by date (inclusive end), with a provider filter too.
    for filter in ["", "&provider=openai", "&tag=prod"] {
        let (status, daily) = app
            .admin(
                Method::GET,
                &format!("/api/v1/usage/daily?start_date=2026-11-08&end_date=2026-11-20{filter}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{daily}");
        let days = daily["data"].as_array().unwrap();
        assert_eq!(
            days.len(),
            13,
            "every day of the range, empty ones included"
        );
        let mut expected: BTreeMap<(NaiveDate, String), (i64, i64, i64, i64)> = BTreeMap::new();
        for record in &records {
            if filter == "&provider=openai" && record["provider"] != "openai" {
                continue;
            }
            if filter == "&tag=prod" && !tags(record).contains(&"prod") {
                continue;
            }
            let day = created_at(record).with_timezone(&timezone).date_naive();
            let entry = expected
                .entry((day, record["provider"].as_str().unwrap().to_owned()))
                .or_default();
            entry.0 += 1;
            entry.1 += i64::from(record["status"] != "ok");
            entry.2 += record["cost_nano_usd"].as_i64().unwrap_or(0);
            entry.3 += record["input_tokens"].as_i64().unwrap()
                + record["output_tokens"].as_i64().unwrap();
        }
        let mut seen = 0;
        let mut first_day = NaiveDate::from_ymd_opt(2026, 11, 8).unwrap();
        for day in days {
            assert_eq!(day["date"], first_day.to_string());
            for provider in day["by_provider"].as_array().unwrap() {
                let key = (first_day, provider["provider"].as_str().unwrap().to_owned());
                let want = expected.get(&key).copied().unwrap_or_default();
                let got = (
                    provider["requests"].as_i64().unwrap(),
                    provider["errors"].as_i64().unwrap(),
                    provider["cost_nano_usd"].as_i64().unwrap(),
                    provider["total_tokens"].as_i64().unwrap(),
                );
                assert_eq!(got, want, "{key:?}{filter}");
                seen += 1;
            }
            first_day = first_day.checked_add_days(Days::new(1)).unwrap();
        }
        let wanted = expected
            .keys()
            .filter(|(day, _)| {
                (NaiveDate::from_ymd_opt(2026, 11, 8).unwrap()
                    ..=NaiveDate::from_ymd_opt(2026, 11, 20).unwrap())
                    .contains(day)
            })
            .count();
        assert_eq!(
            seen, wanted,
            "every (day, provider) with usage appears{filter}"
        );
        let shares: f64 = daily["provider_distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|provider| provider["request_share"].as_f64().unwrap())
            .sum();
        assert!((shares - 1.0).abs() < 0.001);
    }
    // Hourly, with minute-level edges.
    let start = at("2026-11-18T05:20:00Z");
    let stop = at("2026-11-19T07:40:00Z");
    let (status, hourly) = app
        .admin(
            Method::GET,
            &format!(
                "/api/v1/usage/hourly?start_date={}&end_date={}",
                rfc3339(start),
                rfc3339(stop)
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{hourly}");
    let hours = hourly["data"].as_array().unwrap();
    assert_eq!(hours.len(), 27, "05:00 on the 18th to 07:00 on the 19th");
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    for record in records
        .iter()
        .filter(|record| (start..stop).contains(&created_at(record)))
    {
        let hour = created_at(record).format("%Y-%m-%dT%H:00:00Z").to_string();
        *expected
            .entry((hour, record["provider"].as_str().unwrap().to_owned()))
            .or_default() += 1;
    }
    let mut total = 0;
    for hour in hours {
        let start_of_hour = DateTime::parse_from_rfc3339(hour["hour"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let label = start_of_hour.format("%Y-%m-%dT%H:00:00Z").to_string();
        for provider in hour["by_provider"].as_array().unwrap() {
            let key = (
                label.clone(),
                provider["provider"].as_str().unwrap().to_owned(),
            );
            assert_eq!(
                provider["requests"].as_i64().unwrap(),
                expected.get(&key).copied().unwrap_or(0),
                "{key:?}"
            );
            total += provider["requests"].as_i64().unwrap();
        }
    }
    assert_eq!(total, expected.values().sum::<i64>());
    app.stop().await;
}

async fn model_performance_equals_the_records_per_model_and_task_type(database: &TestDatabase) {
    let (app, records) = app_with_records(database).await;
    let timezone: Tz = TIMEZONE.parse().unwrap();
    let (status, performance) = app
        .admin(
            Method::GET,
            "/api/v1/models/performance?start_date=2026-11-12&end_date=2026-11-18",
            None,
        )
        .await;
    assert_eq!(status, 200, "{performance}");
    let first = NaiveDate::from_ymd_opt(2026, 11, 12).unwrap();
    let last = NaiveDate::from_ymd_opt(2026, 11, 18).unwrap();
    let mut expected: BTreeMap<(String, String), Expected> = BTreeMap::new();
    let mut ttft: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for record in &records {
        let day = created_at(record).with_timezone(&timezone).date_naive();
        if !(first..=last).contains(&day) {
            continue;
        }
        let key = (
            record["model"].as_str().unwrap().to_owned(),
            record["task_type"].as_str().unwrap().to_owned(),
        );
        expected.entry(key.clone()).or_default().add(record);
        if let Some(value) = record["time_to_first_token_ms"].as_i64() {
            let entry = ttft.entry(key).or_default();
            entry.0 += value;
            entry.1 += 1;
        }
    }
    let rows = performance["data"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let key = (
            row["model"].as_str().unwrap().to_owned(),
            row["task_type"].as_str().unwrap().to_owned(),
        );
        let want = expected.get_mut(&key).unwrap();
        want.check(row, &format!("{key:?}"));
        let tokens = want.input_tokens + want.output_tokens;
        if want.cost_nano_usd > 0 && tokens > 0 {
            let per_1k: f64 = row["cost_per_1k_tokens_usd"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let exact = want.cost_nano_usd as f64 * 1_000.0 / tokens as f64 / 1e9;
            assert!(
                (per_1k - exact).abs() < 1e-9,
                "{key:?}: per 1K {per_1k} vs {exact}"
            );
        }
        match ttft.get(&key) {
            Some((sum, count)) => {
                let average = row["avg_time_to_first_token_ms"].as_f64().unwrap();
                assert!(
                    (average - *sum as f64 / *count as f64).abs() <= 0.051,
                    "{key:?}: ttft"
                );
            }
            None => assert!(row["avg_time_to_first_token_ms"].is_null(), "{key:?}"),
        }
        let rate = row["success_rate"].as_f64().unwrap();
        let exact = (want.requests - want.errors) as f64 / want.requests as f64;
        assert!((rate - exact).abs() <= 0.00005, "{key:?}: success rate");
    }
    app.stop().await;
}

async fn exports_return_every_record_once_in_csv_and_ndjson(database: &TestDatabase) {
    let (app, records) = app_with_records(database).await;
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|record| (record["request_id"].as_str().unwrap(), record))
        .collect();
    // CSV, everything: parsed with a CSV library, every record once, fields intact.
    let response = app
        .client
        .get(app.url("/api/v1/usage/export?format=csv"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = response.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|header| header == name).unwrap();
    let mut seen = HashSet::new();
    let mut previous = String::new();
    for row in reader.records() {
        let row = row.unwrap();
        let id = row[column("request_id")].to_owned();
        let record = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("unknown id {id}"));
        assert!(seen.insert(id.clone()), "{id} exported twice");
        assert_eq!(row[column("model")], *record["model"].as_str().unwrap());
        assert_eq!(
            row[column("cost_nano_usd")],
            record["cost_nano_usd"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or_default()
        );
        assert_eq!(
            row[column("input_tokens")],
            record["input_tokens"].to_string()
        );
        let metadata: Value = serde_json::from_str(&row[column("metadata")]).unwrap();
        assert_eq!(metadata, record["metadata"]);
        assert_eq!(row[column("tags")], tags(record).join(";"));
        let created = row[column("created_at")].to_owned();
        assert!(created >= previous, "oldest first");
        previous = created;
    }
    assert_eq!(seen.len(), records.len());
    // NDJSON with a filter and a range: exactly the matching records.
    let start = at("2026-11-14T06:06:06Z");
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/usage/export?format=json&provider=openai&start_date={}",
            rfc3339(start)
        )))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let wanted: HashSet<&str> = records
        .iter()
        .filter(|record| record["provider"] == "openai" && created_at(record) >= start)
        .map(|record| record["request_id"].as_str().unwrap())
        .collect();
    let got: HashSet<&str> = lines
        .iter()
        .map(|line| line["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), lines.len(), "no duplicates");
    assert_eq!(got, wanted);
    for line in &lines {
        assert_eq!(
            line,
            by_id[line["request_id"].as_str().unwrap()],
            "the record view, unchanged"
        );
    }
    // Nothing matches: CSV still has its header.
    let response = app
        .client
        .get(app.url("/api/v1/usage/export?format=csv&model=none-such"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert_eq!(body.lines().count(), 1);
    assert!(body.starts_with("request_id,"));
    app.stop().await;
}

/// The tags a record is counted under: strings, each once, non-empty, at
/// most 64 bytes, the first 32 (the rule `metadata_tags` implements).
fn counted_tags(record: &Value) -> Vec<String> {
    let mut counted: Vec<String> = Vec::new();
    for tag in tags(record) {
        if counted.len() < 32
            && !tag.is_empty()
            && tag.len() <= 64
            && !counted.iter().any(|seen| seen == tag)
        {
            counted.push(tag.to_owned());
        }
    }
    counted
}

/// More records than two export pages, many sharing one timestamp (the
/// cursor must break ties by id), with text that CSV must quote and JSON
/// must escape; every field of every exported record is compared with the
/// record as the listing API shows it.
async fn exports_page_through_ties_and_awkward_text_field_by_field(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let mut settings = Settings::new(10_007, 3, end_of_data());
    settings.orgs = 2;
    let awkward = [
        "comma, inside",
        "a \"quoted\" word",
        "two\nlines",
        "carriage\rreturn",
        "ünïcødé ✓ 日本",
        "back\\slash",
        "",
    ];
    let mut events: Vec<UsageEvent> = Generator::new(settings).collect();
    let base = end_of_data() - TimeDelta::hours(20);
    for (index, event) in events.iter_mut().enumerate() {
        // Runs of seven records share a timestamp.
        event.created_at = base + TimeDelta::milliseconds(i64::try_from(index / 7).unwrap());
        let text = awkward[index % awkward.len()];
        if index % 3 == 0 {
            event.user_id = Some(format!("user {text}"));
        }
        if index % 5 == 0 {
            event.error_type = Some(format!("error {text}"));
            event.model = format!("model {text}");
        }
        if index % 4 == 0 {
            event.parent_request_id = Some(uuid::Uuid::now_v7());
            event.api_key_id = Some(uuid::Uuid::now_v7());
            event.provider_request_id = Some(format!("req,{index}\""));
        }
        if index % 6 == 0 {
            let long = "x".repeat(65);
            event.metadata.insert(
                "tags".into(),
                serde_json::json!([text, "b;c", 7, "b;c", long, "\"tags\""]),
            );
            event
                .metadata
                .insert("note".into(), serde_json::json!(format!("{text} \"tags\"")));
        }
    }
    for batch in events.chunks(1_000) {
        app.recorder.record(batch.to_vec()).unwrap();
    }
    app.recorder.flush().await.unwrap();
    let records = app.all_records().await;
    assert_eq!(records.len(), 10_007);
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|record| (record["request_id"].as_str().unwrap(), record))
        .collect();
    let export = |format: &'static str| {
        let request = app
            .client
            .get(app.url(&format!("/api/v1/usage/export?format={format}")))
            .bearer_auth(common::ADMIN_TOKEN);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };

    // NDJSON: each line is exactly the listing's view of the record.
    let body = export("json").await;
    let mut order = Vec::new();
    for line in body.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let id = line["request_id"].as_str().unwrap().to_owned();
        assert_eq!(&line, by_id[id.as_str()], "{id}");
        order.push((created_at(&line), id));
    }
    assert_eq!(order.len(), records.len());
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted, "oldest first, ties by id, each once");

    // CSV: every column, parsed with a CSV library.
    let body = export("csv").await;
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let mut seen = HashSet::new();
    for row in reader.records() {
        let row = row.unwrap();
        let field = |name: &str| &row[headers.iter().position(|header| header == name).unwrap()];
        let id = field("request_id").to_owned();
        let record = by_id[id.as_str()];
        assert!(seen.insert(id.clone()), "{id} twice");
        for name in &headers {
            let got = field(name);
            match name.as_str() {
                "created_at" => assert_eq!(
                    DateTime::parse_from_rfc3339(got).unwrap().to_utc(),
                    created_at(record),
                    "{id} created_at"
                ),
                "metadata" => assert_eq!(
                    serde_json::from_str::<Value>(got).unwrap(),
                    record["metadata"],
                    "{id} metadata"
                ),
                "tags" => assert_eq!(got, counted_tags(record).join(";"), "{id} tags"),
                _ => {
                    let want = match &record[name.as_str()] {
                        Value::Null => String::new(),
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    assert_eq!(got, want, "{id} {name}");
                }
            }
        }
    }
    assert_eq!(seen.len(), records.len());

    // A range over several pages: exactly the records inside it, once
    // (the cursor replaces the start bound after the first page).
    let start = base + TimeDelta::milliseconds(100);
    let end = base + TimeDelta::milliseconds(1_400);
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/usage/export?format=json&start_date={}&end_date={}",
            start.to_rfc3339_opts(SecondsFormat::Millis, true),
            end.to_rfc3339_opts(SecondsFormat::Millis, true)
        )))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got: Vec<String> = response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let wanted: HashSet<String> = records
        .iter()
        .filter(|record| created_at(record) >= start && created_at(record) < end)
        .map(|record| record["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(wanted.len() > 5_000, "the range spans pages");
    assert_eq!(got.len(), wanted.len());
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), wanted);
    app.stop().await;
}

#[tokio::test]
async fn analytics_refuse_bad_parameters_by_name() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    for (path, param) in [
        ("/api/v1/usage/stats?start_date=yesterday", "start_date"),
        (
            "/api/v1/usage/stats?start_date=2026-11-02&end_date=2026-11-01",
            "end_date",
        ),
        ("/api/v1/usage/stats?end_date=2026-13-01", "end_date"),
        ("/api/v1/usage/stats?provider=anthropic", "provider"),
        ("/api/v1/usage/stats?colour=red", "colour"),
        (
            "/api/v1/usage/daily?start_date=2020-01-01&end_date=2026-01-01",
            "start_date",
        ),
        (
            "/api/v1/usage/hourly?start_date=2026-01-01&end_date=2026-03-01",
            "start_date",
        ),
        ("/api/v1/models/performance?user_id=alice", "user_id"),
        ("/api/v1/projections?days=0", "days"),
        ("/api/v1/projections?days=lots", "days"),
        ("/api/v1/projections?start_date=2026-01-01", "start_date"),
        ("/api/v1/usage/export?format=xml", "format"),
        ("/api/v1/usage/export?start_date=nope", "start_date"),
    ] {
        let (status, body) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
    }
    // Empty database: zeros, not errors.
    let (status, stats) = app.admin(Method::GET, "/api/v1/usage/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["total_requests"], 0);
    assert!(stats["success_rate"].is_null());
    let (status, projection) = app.admin(Method::GET, "/api/v1/projections", None).await;
    assert_eq!(status, 200);
    assert_eq!(projection["method"], "none");
    assert_eq!(projection["insufficient_history"], true);
    app.stop().await;
}

#[tokio::test]
async fn projections_follow_trend_and_weekdays_and_say_when_history_is_short() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    // Eight weeks of one priced model with a known weekday pattern and trend,
    // reported costs so the test knows each day's spend exactly.
    let today = Utc::now().date_naive();
    let mut events = Vec::new();
    let mut truth_next_30 = 0_i64;
    let daily_cost = |index: i64, day: NaiveDate| -> i64 {
        use chrono::Datelike;
        let weekday = match day.weekday() {
            chrono::Weekday::Sat | chrono::Weekday::Sun => -8_000_000_000,
            chrono::Weekday::Mon => 4_000_000_000,
            _ => 1_600_000_000,
        };
        20_000_000_000 + index * 250_000_000 + weekday
    };
    for back in (1..=56_i64).rev() {
        let day = today.checked_sub_days(Days::new(back as u64)).unwrap();
        let index = 56 - back;
        let cost = daily_cost(index, day);
        let at = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
        events.push(common_event(at, cost));
    }
    for ahead in 0..30_i64 {
        let day = today.checked_add_days(Days::new(ahead as u64)).unwrap();
        truth_next_30 += daily_cost(56 + ahead, day);
    }
    app.recorder.record(events).unwrap();
    app.recorder.flush().await.unwrap();
    let (status, projection) = app
        .admin(Method::GET, "/api/v1/projections?days=30", None)
        .await;
    assert_eq!(status, 200, "{projection}");
    assert_eq!(projection["method"], "weekday_trend");
    assert_eq!(projection["insufficient_history"], false);
    assert_eq!(projection["daily"].as_array().unwrap().len(), 30);
    let projected = projection["projected_cost_nano_usd"].as_i64().unwrap();
    let error = (projected - truth_next_30).abs() as f64 / truth_next_30 as f64;
    assert!(error < 0.01, "projected {projected}, truth {truth_next_30}");
    // A flat average of the history would miss by far more than that.
    let by_provider = projection["by_provider"].as_array().unwrap();
    assert_eq!(by_provider.len(), 1);
    assert_eq!(by_provider[0]["provider"], "openrouter");
    assert!(projection["backtest"]["wape_percent"].as_f64().unwrap() < 1.0);
    app.stop().await;

    // Five days of history: said so.
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let events = (1..=5_u64)
        .map(|back| {
            let day = today.checked_sub_days(Days::new(back)).unwrap();
            common_event(day.and_hms_opt(12, 0, 0).unwrap().and_utc(), 1_000_000_000)
        })
        .collect();
    app.recorder.record(events).unwrap();
    app.recorder.flush().await.unwrap();
    let (_, projection) = app.admin(Method::GET, "/api/v1/projections", None).await;
    assert_eq!(projection["insufficient_history"], true);
    assert_eq!(projection["method"], "recent_mean");
    assert!(
        projection["note"]
            .as_str()
            .unwrap()
            .contains("too little history")
    );
    assert_eq!(projection["projected_cost_nano_usd"], 30_000_000_000_i64);
    app.stop().await;
}

/// One OpenRouter request whose reported cost is `cost_nanos`.
fn common_event(at: DateTime<Utc>, cost_nanos: i64) -> UsageEvent {
    let mut settings = Settings::new(1, 1, at + TimeDelta::hours(1));
    settings.seed = u64::try_from(at.timestamp()).unwrap();
    let mut event = Generator::new(settings).next().unwrap();
    event.created_at = at;
    event.provider = tollgate::usage::Provider::OpenRouter;
    event.model = "anthropic/claude-sonnet-4".to_owned();
    event.task_type = tollgate::usage::TaskType::Chat;
    event.status = RecordStatus::Ok;
    event.status_code = Some(200);
    event.error_type = None;
    event.reported_cost = Some(tollgate::money::NanoUsd::from_nanos(cost_nanos));
    event
}

async fn rollups_filled_from_the_ledger_after_the_fact_equal_the_live_ones(
    database: &TestDatabase,
) {
    let (app, _) = app_with_records(database).await;
    app.stop().await;
    let timezone: Tz = TIMEZONE.parse().unwrap();
    let store = common::connect_store(&database.url).await;
    let everything = RecordFilter {
        scope: tollgate::store::Scope::All,
        ..RecordFilter::default()
    };
    let live = stats_of(&store, &everything, timezone).await;
    assert_eq!(live.totals.requests, 3_000);
    // As a database migrated from before the rollups existed would be.
    let wipe =
        "DELETE FROM ai_usage_daily; DELETE FROM ai_usage_hourly; DELETE FROM ai_usage_daily_tags";
    if database.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
        sqlx::raw_sql(wipe).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        sqlx::raw_sql(wipe).execute(&pool).await.unwrap();
        pool.close().await;
    }
    assert_eq!(
        stats_of(&store, &everything, timezone)
            .await
            .totals
            .requests,
        0
    );
    assert_eq!(
        tollgate::analytics::backfill(&store, timezone)
            .await
            .unwrap(),
        3_000
    );
    assert_eq!(stats_of(&store, &everything, timezone).await, live);
    let tagged = RecordFilter {
        tag: Some("prod".to_owned()),
        scope: tollgate::store::Scope::All,
        ..RecordFilter::default()
    };
    assert!(stats_of(&store, &tagged, timezone).await.totals.requests > 0);
    store.close().await;
}

async fn stats_of(
    store: &tollgate::store::Store,
    filter: &RecordFilter,
    timezone: Tz,
) -> tollgate::analytics::summary::Stats {
    let rows = tollgate::analytics::aggregate(store, filter, timezone, Grouping::Dimensions)
        .await
        .unwrap();
    tollgate::analytics::summary::stats(&rows)
}

#[tokio::test]
async fn metrics_count_each_stored_record_once_and_show_budgets_and_alerts() {
    let database = TestDatabase::sqlite();
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    // The registry is the process's: a model name of its own keeps this
    // test's series apart from other tests'.
    let model = format!("metrics-model-{}", uuid::Uuid::now_v7().simple());
    let mut settings = Settings::new(200, 2, Utc::now());
    settings.seed = 99;
    let events: Vec<UsageEvent> = Generator::new(settings)
        .map(|mut event| {
            event.model = model.clone();
            event.provider = tollgate::usage::Provider::OpenRouter;
            event
        })
        .collect();
    app.recorder.record(events.clone()).unwrap();
    app.recorder.flush().await.unwrap();
    // The same records again (a client retrying its ingest): not counted twice.
    app.recorder.record(events.clone()).unwrap();
    app.recorder.flush().await.unwrap();
    let (status, _) = app
        .admin(
            Method::POST,
            "/api/v1/budgets",
            Some(serde_json::json!({"org_id": "default", "budget_type": "daily", "budget_amount_usd": "10"})),
        )
        .await;
    assert_eq!(status, 201);
    let body = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> Option<String> {
        body.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_owned)
    };
    let records = app.all_records().await;
    let ours: Vec<&Value> = records
        .iter()
        .filter(|record| record["model"] == model.as_str())
        .collect();
    assert_eq!(ours.len(), 200);
    let ok = ours
        .iter()
        .filter(|record| record["status"] == "ok")
        .count();
    let requests_ok: u64 = body
        .lines()
        .filter(|line| {
            line.starts_with("tollgate_requests_total{")
                && line.contains(&model)
                && line.contains("status=\"ok\"")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(requests_ok, ok as u64, "each stored record counted once");
    let cost_nanos: i64 = ours
        .iter()
        .map(|record| record["cost_nano_usd"].as_i64().unwrap_or(0))
        .sum();
    let reported: i64 = body
        .lines()
        .filter(|line| line.starts_with("tollgate_cost_usd_total{") && line.contains(&model))
        .map(|line| {
            let text = line.rsplit(' ').next().unwrap();
            let (whole, fraction) = text.split_once('.').unwrap();
            whole.parse::<i64>().unwrap() * 1_000_000_000 + fraction.parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(reported, cost_nanos, "cost exact to the nano-dollar");
    let input: i64 = ours
        .iter()
        .map(|record| record["input_tokens"].as_i64().unwrap())
        .sum();
    let input_reported: i64 = body
        .lines()
        .filter(|line| {
            line.starts_with("tollgate_tokens_total{")
                && line.contains(&model)
                && line.contains("kind=\"input\"")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(input_reported, input);
    let histogram_count: u64 = body
        .lines()
        .filter(|line| {
            line.starts_with("tollgate_request_duration_seconds_count{") && line.contains(&model)
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(histogram_count, 200);
    assert!(body.contains("le=\"+Inf\""));
    assert!(
        value("tollgate_budget_utilization_ratio{").is_some(),
        "{body}"
    );
    for severity in ["low", "medium", "high", "critical"] {
        assert!(body.contains(&format!(
            "tollgate_alerts_active{{severity=\"{severity}\"}}"
        )));
    }
    assert!(body.contains("# TYPE tollgate_cost_usd_total counter"));
    app.stop().await;
}
