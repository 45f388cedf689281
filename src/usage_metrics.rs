//! Prometheus series for the usage that reached the ledger: requests,
//! tokens and cost by provider, model, task type and status, and latency
//! and time-to-first-token histograms, counted by the recorder's writer
//! after each commit (so retried and duplicate records count once, and each
//! instance counts what it wrote). Rendered in the Prometheus text format by
//! hand because cost is a decimal counter (`tollgate_cost_usd_total`, exact
//! from integer nano-USD), which the `metrics` crate's integer counters
//! cannot express.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::LazyLock;

use crate::alerts::Severity;
use crate::budget::enforcer::Budgets;
use crate::money::NanoUsd;
use crate::rollup::{LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, latency_bucket};
use crate::store::{AlertFilter, Store};
use crate::usage::{Provider, RecordStatus, TaskType, UsageRecord};

/// Distinct model names that get series of their own; later ones are
/// counted under `model="other"`, so a client inventing names cannot grow
/// the scrape without bound.
pub const MAX_MODELS: usize = 200;

/// The label a model beyond [`MAX_MODELS`] is counted under.
pub const OTHER_MODEL: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    provider: Provider,
    model: String,
    task_type: TaskType,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    requests: BTreeMap<RecordStatus, u64>,
    /// Cost by status, in nano-USD.
    cost: BTreeMap<RecordStatus, i128>,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    reasoning_tokens: u64,
    latency: Histogram,
    ttft: Histogram,
}

#[derive(Debug, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS],
    sum_ms: u128,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; LATENCY_BUCKETS],
            sum_ms: 0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, millis: u64) {
        if let Some(slot) = self.buckets.get_mut(latency_bucket(millis)) {
            *slot += 1;
        }
        self.sum_ms += u128::from(millis);
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct State {
    series: BTreeMap<Series, Counts>,
    models: HashSet<String>,
}

/// The process's usage counters.
#[derive(Debug, Default)]
pub struct UsageMetrics {
    state: tokio::sync::Mutex<State>,
}

/// One set for the process, like the `metrics` crate's registry.
pub static USAGE_METRICS: LazyLock<UsageMetrics> = LazyLock::new(UsageMetrics::default);

impl UsageMetrics {
    /// Counts records that were just written to the ledger.
    pub async fn observe<'a, I>(&self, records: I)
    where
        I: IntoIterator<Item = &'a UsageRecord>,
    {
        let mut state = self.state.lock().await;
        for record in records {
            let model = if state.models.contains(&record.model) {
                record.model.clone()
            } else if state.models.len() < MAX_MODELS {
                state.models.insert(record.model.clone());
                record.model.clone()
            } else {
                OTHER_MODEL.to_owned()
            };
            let counts = state
                .series
                .entry(Series {
                    provider: record.provider,
                    model,
                    task_type: record.task_type,
                })
                .or_default();
            *counts.requests.entry(record.status).or_default() += 1;
            *counts.cost.entry(record.status).or_default() +=
                i128::from(record.cost.map_or(0, NanoUsd::nanos));
            counts.input_tokens = counts.input_tokens.saturating_add(record.tokens.input);
            counts.output_tokens = counts.output_tokens.saturating_add(record.tokens.output);
            counts.cached_input_tokens = counts
                .cached_input_tokens
                .saturating_add(record.tokens.cached_input);
            counts.reasoning_tokens = counts
                .reasoning_tokens
                .saturating_add(record.tokens.reasoning);
            counts.latency.observe(record.latency_ms);
            if let Some(ttft) = record.time_to_first_token_ms {
                counts.ttft.observe(ttft);
            }
        }
    }

    /// The series in the Prometheus text format.
    pub async fn render(&self) -> String {
        let state = self.state.lock().await;
        let mut out = String::new();
        family(
            &mut out,
            "tollgate_requests_total",
            "counter",
            "Requests recorded in the ledger.",
        );
        for (series, counts) in &state.series {
            for (status, requests) in &counts.requests {
                sample(
                    &mut out,
                    "tollgate_requests_total",
                    &labels(series, &[("status", status.as_str())]),
                    &requests.to_string(),
                );
            }
        }
        family(
            &mut out,
            "tollgate_tokens_total",
            "counter",
            "Tokens recorded in the ledger, by kind (cached input is part of input, reasoning part of output).",
        );
        for (series, counts) in &state.series {
            for (kind, tokens) in [
                ("input", counts.input_tokens),
                ("output", counts.output_tokens),
                ("cached_input", counts.cached_input_tokens),
                ("reasoning", counts.reasoning_tokens),
            ] {
                sample(
                    &mut out,
                    "tollgate_tokens_total",
                    &labels(series, &[("kind", kind)]),
                    &tokens.to_string(),
                );
            }
        }
        family(
            &mut out,
            "tollgate_cost_usd_total",
            "counter",
            "Cost recorded in the ledger, in US dollars (exact to the nano-dollar).",
        );
        for (series, counts) in &state.series {
            for (status, nanos) in &counts.cost {
                sample(
                    &mut out,
                    "tollgate_cost_usd_total",
                    &labels(series, &[("status", status.as_str())]),
                    &usd(*nanos),
                );
            }
        }
        for (name, help, pick) in [
            (
                "tollgate_request_duration_seconds",
                "Time from the request to the end of the answer.",
                (|counts: &Counts| &counts.latency) as fn(&Counts) -> &Histogram,
            ),
            (
                "tollgate_time_to_first_token_seconds",
                "Time from the request to the first streamed token.",
                |counts: &Counts| &counts.ttft,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            for (series, counts) in &state.series {
                let histogram = pick(counts);
                if histogram.count == 0 {
                    continue;
                }
                let mut cumulative = 0_u64;
                for (bucket, count) in histogram.buckets.iter().enumerate() {
                    cumulative += count;
                    let bound = LATENCY_BUCKET_BOUNDS_MS
                        .get(bucket)
                        .map_or_else(|| "+Inf".to_owned(), |millis| seconds(u128::from(*millis)));
                    sample(
                        &mut out,
                        &format!("{name}_bucket"),
                        &labels(series, &[("le", &bound)]),
                        &cumulative.to_string(),
                    );
                }
                sample(
                    &mut out,
                    &format!("{name}_sum"),
                    &labels(series, &[]),
                    &seconds(histogram.sum_ms),
                );
                sample(
                    &mut out,
                    &format!("{name}_count"),
                    &labels(series, &[]),
                    &histogram.count.to_string(),
                );
            }
        }
        out
    }
}

/// The most budgets given series of their own on each scrape.
const MAX_BUDGET_SERIES: usize = 500;

/// Gauges read from the database at scrape time: each budget's utilisation
/// in its current period, and open alerts by severity. A database that does
/// not answer leaves them out (and says so in the log); the rest of the
/// scrape still works.
pub async fn state_gauges(store: &Store, budgets: &Budgets) -> String {
    let mut out = String::new();
    match store.budgets(&crate::store::Scope::All, None).await {
        Ok(list) => {
            family(
                &mut out,
                "tollgate_budget_utilization_ratio",
                "gauge",
                "Spend over limit in the budget's current period (1 = the limit).",
            );
            let mut spent_lines = String::new();
            let mut limit_lines = String::new();
            for budget in list.iter().take(MAX_BUDGET_SERIES) {
                let status = match budgets.current_status(budget).await {
                    Ok(status) => status,
                    Err(error) => {
                        tracing::warn!(%error, budget = %budget.id, "metrics: cannot read a budget's status");
                        continue;
                    }
                };
                let id = budget.id.to_string();
                let labels = render_labels(&[
                    ("budget_id", &id),
                    ("org_id", &budget.org_id),
                    ("budget_type", budget.budget_type.as_str()),
                ]);
                let ratio = if status.limit.nanos() > 0 {
                    ratio_text(status.spent.nanos(), status.limit.nanos())
                } else {
                    "+Inf".to_owned()
                };
                sample(
                    &mut out,
                    "tollgate_budget_utilization_ratio",
                    &labels,
                    &ratio,
                );
                sample(
                    &mut spent_lines,
                    "tollgate_budget_spent_usd",
                    &labels,
                    &usd(i128::from(status.spent.nanos())),
                );
                sample(
                    &mut limit_lines,
                    "tollgate_budget_limit_usd",
                    &labels,
                    &usd(i128::from(status.limit.nanos())),
                );
            }
            family(
                &mut out,
                "tollgate_budget_spent_usd",
                "gauge",
                "Spend in the budget's current period, in US dollars.",
            );
            out.push_str(&spent_lines);
            family(
                &mut out,
                "tollgate_budget_limit_usd",
                "gauge",
                "The budget's limit in its current period, rollover included.",
            );
            out.push_str(&limit_lines);
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read budgets"),
    }
    let filter = AlertFilter {
        open_only: true,
        limit: 10_000,
        scope: crate::store::Scope::All,
        ..AlertFilter::default()
    };
    match store.alerts(&filter).await {
        Ok(alerts) => {
            family(
                &mut out,
                "tollgate_alerts_active",
                "gauge",
                "Open (active or acknowledged) alerts, by severity.",
            );
            for severity in Severity::ALL {
                let count = alerts
                    .iter()
                    .filter(|alert| alert.severity == *severity)
                    .count();
                sample(
                    &mut out,
                    "tollgate_alerts_active",
                    &render_labels(&[("severity", severity.as_str())]),
                    &count.to_string(),
                );
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read alerts"),
    }
    out
}

/// `part / whole` as a decimal with six places, exact (no floating point).
fn ratio_text(part: i64, whole: i64) -> String {
    let millionths = i128::from(part) * 1_000_000 / i128::from(whole);
    let sign = if millionths < 0 { "-" } else { "" };
    let millionths = millionths.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        millionths / 1_000_000,
        millionths % 1_000_000
    )
}

/// `# HELP` and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; `labels` is already rendered (`{…}` or empty).
pub fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn labels(series: &Series, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("provider", series.provider.as_str()),
        ("model", series.model.as_str()),
        ("task_type", series.task_type.as_str()),
    ];
    pairs.extend_from_slice(extra);
    render_labels(&pairs)
}

/// `{name="value",…}` with values escaped as the text format requires.
pub fn render_labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for character in value.chars() {
            match character {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                other => out.push(other),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Nano-USD as a decimal dollar figure, exact.
pub fn usd(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    format!(
        "{sign}{}.{:09}",
        nanos / 1_000_000_000,
        nanos % 1_000_000_000
    )
}

/// Milliseconds as decimal seconds, exact.
fn seconds(millis: u128) -> String {
    format!("{}.{:03}", millis / 1_000, millis % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_amounts_exact() {
        assert_eq!(
            render_labels(&[("model", "a\"b\\c\nd"), ("kind", "x")]),
            "{model=\"a\\\"b\\\\c\\nd\",kind=\"x\"}"
        );
        assert_eq!(usd(1_500_000_001), "1.500000001");
        assert_eq!(usd(-5), "-0.000000005");
        assert_eq!(seconds(1_234), "1.234");
    }
}
