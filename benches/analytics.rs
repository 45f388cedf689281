//! Analytics read latency and export throughput against a running
//! `tollgate serve` filled by `tollgate generate`, run by hand
//! (`bench/analytics.sh`), never in the test suite.
//!
//! Each query kind is asked `--requests` times, each time for a different
//! 30-day window inside the data's span, one request at a time; the table
//! shows p50, p95 and the slowest. The export streams one 30-day window as
//! CSV and counts rows while it samples the server's RSS.
//!
//! Usage: analytics --url http://127.0.0.1:PORT --token T --end RFC3339
//!        [--days 90] [--requests 40] [--pid PID] [--export-days 30]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::float_arithmetic,
    reason = "a benchmark binary run by hand"
)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};
use futures_util::StreamExt;

struct Options {
    url: String,
    token: String,
    end: DateTime<Utc>,
    days: u64,
    requests: usize,
    pid: Option<u32>,
    export_days: u64,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        url: String::new(),
        token: String::new(),
        end: Utc::now(),
        days: 90,
        requests: 40,
        pid: None,
        export_days: 30,
    };
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => options.url = value,
            "--token" => options.token = value,
            "--end" => options.end = DateTime::parse_from_rfc3339(&value).unwrap().to_utc(),
            "--days" => options.days = value.parse().unwrap(),
            "--requests" => options.requests = value.parse().unwrap(),
            "--pid" => options.pid = Some(value.parse().unwrap()),
            "--export-days" => options.export_days = value.parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// Resident and peak memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let rank = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted[rank - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = options();
    tollgate::providers::install_crypto_provider();
    let client = reqwest::Client::new();
    let last_day = options.end.date_naive();
    let first_day = last_day.checked_sub_days(Days::new(options.days)).unwrap();
    // Windows of 30 whole days ending on successive days inside the data.
    let days = options.days;
    let window = move |index: usize| -> (NaiveDate, NaiveDate) {
        let span = days.saturating_sub(31).max(1);
        let offset = (index as u64 * 7) % span;
        let start = first_day.checked_add_days(Days::new(offset + 1)).unwrap();
        (start, start.checked_add_days(Days::new(29)).unwrap())
    };
    type Query = (&'static str, Box<dyn Fn(usize) -> String>);
    let queries: Vec<Query> = vec![
        (
            "stats, 30 days",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/stats?start_date={start}&end_date={end}")
            }),
        ),
        (
            "stats, 30 days, odd edges",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/stats?start_date={start}T07:13:00Z&end_date={end}T16:47:00Z")
            }),
        ),
        (
            "stats, 30 days, one user",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/stats?start_date={start}&end_date={end}&user_id=acme-user-1")
            }),
        ),
        (
            "stats, 30 days, one tag",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/stats?start_date={start}&end_date={end}&tag=search")
            }),
        ),
        (
            "daily, 30 days",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/daily?start_date={start}&end_date={end}")
            }),
        ),
        (
            "daily, 30 days, one provider",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/usage/daily?start_date={start}&end_date={end}&provider=openrouter")
            }),
        ),
        (
            "models/performance, 30 days",
            Box::new(move |i| {
                let (start, end) = window(i);
                format!("/api/v1/models/performance?start_date={start}&end_date={end}")
            }),
        ),
        (
            "hourly, 48 hours",
            Box::new(move |i| {
                let (_, end) = window(i);
                format!(
                    "/api/v1/usage/hourly?start_date={}&end_date={end}",
                    end.checked_sub_days(Days::new(2)).unwrap()
                )
            }),
        ),
        (
            "projections, 30 days",
            Box::new(|_| "/api/v1/projections?days=30".to_owned()),
        ),
    ];
    // A markdown table (bench/suite.sh copies it into its report).
    println!(
        "| {:<34} | {:>9} | {:>9} | {:>9} |",
        "query", "p50 ms", "p95 ms", "max ms"
    );
    println!("| {:-<34} | {:->8}: | {:->8}: | {:->8}: |", "", "", "", "");
    for (name, path) in &queries {
        // One warm-up request, then the measured ones.
        let _ = client
            .get(format!("{}{}", options.url, path(0)))
            .bearer_auth(&options.token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
        let mut times = Vec::with_capacity(options.requests);
        for index in 0..options.requests {
            let url = format!("{}{}", options.url, path(index + 1));
            let started = Instant::now();
            let response = client
                .get(&url)
                .bearer_auth(&options.token)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            times.push(started.elapsed());
            assert!(
                status.is_success(),
                "{url}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        times.sort();
        println!(
            "| {name:<34} | {:>9.1} | {:>9.1} | {:>9.1} |",
            percentile(&times, 500).as_secs_f64() * 1e3,
            percentile(&times, 950).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
    }
    // Export: the last `export_days` days as CSV and as NDJSON.
    for format in ["csv", "json"] {
        let start = last_day
            .checked_sub_days(Days::new(options.export_days))
            .unwrap();
        let url = format!(
            "{}/api/v1/usage/export?format={format}&start_date={start}",
            options.url
        );
        let before = options.pid.map(memory);
        let started = Instant::now();
        let response = client
            .get(&url)
            .bearer_auth(&options.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let mut stream = response.bytes_stream();
        let (mut bytes, mut lines) = (0_u64, 0_u64);
        let mut peak_rss: f64 = 0.0;
        let mut next_sample = Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|byte| **byte == b'\n').count() as u64;
            if let Some(pid) = options.pid
                && Instant::now() >= next_sample
            {
                peak_rss = peak_rss.max(memory(pid).0);
                next_sample = Instant::now() + Duration::from_millis(100);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rows = if format == "csv" {
            lines.saturating_sub(1)
        } else {
            lines
        };
        print!(
            "export {format:<4} {} days: {rows} rows, {:.0} MB in {elapsed:.1} s = {:.0} rows/s",
            options.export_days,
            bytes as f64 / 1e6,
            rows as f64 / elapsed
        );
        match (before, options.pid) {
            (Some((rss_before, _)), Some(pid)) => {
                let (rss_after, _) = memory(pid);
                println!(
                    "; server RSS {rss_before:.0} MiB before, {peak_rss:.0} MiB at most while streaming, {rss_after:.0} MiB after"
                );
            }
            _ => println!(),
        }
    }
}
