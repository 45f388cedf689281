//! `tollgate generate`, `tollgate export` and `tollgate report`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;
use crate::analytics::{self, projection, summary};
use crate::app::pricing_from_config;
use crate::config::Config;
use crate::export::{self, Format};
use crate::money::NanoUsd;
use crate::query;
use crate::recorder::{LedgerListeners, RecordError, Recorder, RecorderSettings};
use crate::rollup::RollupDelta;
use crate::store::{AlertFilter, Grouping, RecordFilter, Store};
use crate::usage::Provider;

/// Events handed to the recorder at a time by `generate`.
const GENERATE_BATCH: usize = 2_000;

/// `tollgate generate`: fills the database with synthetic usage through the
/// recorder, as the gateway and ingest API would.
pub async fn generate(
    config: &Config,
    store: Store,
    settings: crate::generate::Settings,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let pricing = Arc::new(pricing_from_config(config)?);
    let (recorder, task) = Recorder::start(
        store.clone(),
        pricing,
        &config.recorder.spool_dir,
        // Synthetic records: a run that dies is simply run again.
        RecorderSettings {
            durability: crate::recorder::Durability::Off,
            ..RecorderSettings::from_config(config)
        },
        LedgerListeners::default(),
    )
    .map_err(|error| CliError::Invalid(format!("cannot open the spool: {error}")))?;
    let total = settings.records;
    let progress = progress_bar(total, "generating");
    let mut events = crate::generate::Generator::new(settings);
    let mut refused = 0_u64;
    loop {
        let batch: Vec<_> = events.by_ref().take(GENERATE_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        let count = batch.len() as u64;
        loop {
            match recorder.record(batch.clone()) {
                Ok(_) => break,
                // The writer is behind: let it catch up, as a client honouring
                // Retry-After would.
                Err(RecordError::Overloaded { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => {
                    refused += count;
                    tracing::warn!(%error, "a generated batch was refused");
                    break;
                }
            }
        }
        progress.inc(count);
    }
    progress.set_message("writing");
    task.shutdown(&recorder).await;
    progress.set_message("analyzing");
    if let Err(error) = store.refresh_statistics().await {
        tracing::warn!(%error, "cannot refresh the planner's statistics; run ANALYZE");
    }
    progress.finish_and_clear();
    writeln!(
        out,
        "Generated {} records ({refused} refused) through the recorder.",
        total - refused
    )?;
    Ok(())
}

fn progress_bar(total: u64, message: &'static str) -> ProgressBar {
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    progress.set_message(message);
    progress
}

/// `tollgate export`: the records matching the filters, oldest first, to a
/// file or standard output, with a progress bar on standard error.
pub async fn export(
    store: &Store,
    format: Format,
    filter: RecordFilter,
    timezone: chrono_tz::Tz,
    output: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // The rollups know how many records match, exactly and at once.
    let expected: i64 = analytics::aggregate(store, &filter, timezone, Grouping::BucketAndProvider)
        .await?
        .iter()
        .map(|row| row.totals.requests)
        .sum();
    let progress = progress_bar(u64::try_from(expected).unwrap_or(0), "exporting");
    let mut file = match &output {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|error| {
                CliError::Invalid(format!("cannot create {}: {error}", path.display()))
            })?,
        )),
        None => None,
    };
    let mut chunks = std::pin::pin!(export::chunks(store.clone(), filter, format));
    let mut written: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        match file.as_mut() {
            Some(file) => file.write_all(&chunk.bytes)?,
            None => out.write_all(&chunk.bytes)?,
        }
        written += u64::from(chunk.records);
        progress.set_position(written);
    }
    if let Some(mut file) = file {
        file.flush()?;
    }
    progress.finish_and_clear();
    if let Some(path) = output {
        writeln!(out, "Exported {written} records to {}.", path.display())?;
    }
    Ok(())
}

/// Parses `--since`: `7d`, `24h`, `90m`, `2w`, or a date or RFC 3339 time.
pub fn parse_since(
    text: &str,
    now: DateTime<Utc>,
    timezone: chrono_tz::Tz,
) -> Result<DateTime<Utc>, CliError> {
    let text = text.trim();
    let invalid = || {
        CliError::Invalid(format!(
            "--since `{text}`: expected a duration like 7d, 24h, 90m or 2w, or a date"
        ))
    };
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if let Ok(count) = number.parse::<i64>()
        && (1..=100_000).contains(&count)
    {
        let span = match unit {
            "m" => Some(TimeDelta::minutes(count)),
            "h" => Some(TimeDelta::hours(count)),
            "d" => Some(TimeDelta::days(count)),
            "w" => Some(TimeDelta::weeks(count)),
            _ => None,
        };
        if let Some(span) = span {
            return Ok(now - span);
        }
    }
    let parameters = std::collections::HashMap::from([("start_date".to_owned(), text.to_owned())]);
    query::parse_filter(&parameters, timezone)
        .ok()
        .and_then(|filter| filter.start)
        .ok_or_else(invalid)
}

/// `tollgate report`: a summary of the usage since a time, as tables.
pub async fn report(
    store: &Store,
    filter: RecordFilter,
    timezone: chrono_tz::Tz,
    top: usize,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let rows = analytics::aggregate(store, &filter, timezone, Grouping::Dimensions).await?;
    let stats = summary::stats(&rows);
    let totals = &stats.totals;
    let from = filter.start.map_or_else(
        || "the beginning".to_owned(),
        |at| {
            at.with_timezone(&timezone)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        },
    );
    let until = filter
        .end
        .unwrap_or_else(Utc::now)
        .with_timezone(&timezone)
        .format("%Y-%m-%d %H:%M");
    writeln!(
        out,
        "Tollgate usage, {from} to {until} ({})",
        timezone.name()
    )?;
    writeln!(out)?;
    let successful = totals.requests - totals.errors;
    writeln!(
        out,
        "  Requests   {} ({} successful, {})",
        grouped(totals.requests),
        grouped(successful),
        percent(successful, totals.requests)
    )?;
    writeln!(
        out,
        "  Cost       ${} (${} per request)",
        NanoUsd::from_nanos(totals.cost_nano_usd),
        per_request(totals)
    )?;
    writeln!(
        out,
        "  Tokens     {} in, {} out ({} cached input, {} reasoning)",
        grouped(totals.input_tokens),
        grouped(totals.output_tokens),
        grouped(totals.cached_input_tokens),
        grouped(totals.reasoning_tokens)
    )?;
    let millis = |per_mille| {
        totals.latency_percentile_ms(per_mille).map_or_else(
            || "-".to_owned(),
            |ms| format!("{} ms", grouped(i64::try_from(ms).unwrap_or(i64::MAX))),
        )
    };
    writeln!(
        out,
        "  Latency    p50 {}, p95 {}, p99 {}",
        millis(500),
        millis(950),
        millis(990)
    )?;
    table(
        out,
        "PROVIDER",
        stats
            .by_provider
            .iter()
            .map(|(provider, group)| (provider.as_str().to_owned(), group)),
        totals,
        usize::MAX,
    )?;
    table(
        out,
        "MODEL",
        stats
            .by_model
            .iter()
            .map(|((provider, model), group)| (format!("{model} ({provider})"), group)),
        totals,
        top,
    )?;
    table(
        out,
        "USER",
        stats.by_user.iter().map(|(user, group)| {
            (
                user.clone().unwrap_or_else(|| "(no user)".to_owned()),
                group,
            )
        }),
        totals,
        top,
    )?;
    let alerts = store
        .alerts(&AlertFilter {
            open_only: true,
            org_id: filter.org_id.clone(),
            limit: 1_000,
            scope: crate::store::Scope::All,
            ..AlertFilter::default()
        })
        .await?;
    writeln!(out)?;
    writeln!(out, "  Open alerts: {}", alerts.len())?;
    for alert in alerts.iter().take(top) {
        writeln!(out, "    [{}] {}", alert.severity.as_str(), alert.title)?;
    }
    let outlook = projection_for(store, &filter, timezone).await?;
    writeln!(out)?;
    writeln!(
        out,
        "  Next 30 days: ${} (likely ${} to ${}), {}{}",
        NanoUsd::from_nanos(outlook.total_nano_usd),
        NanoUsd::from_nanos(outlook.total_low_nano_usd),
        NanoUsd::from_nanos(outlook.total_high_nano_usd),
        outlook.method.as_str(),
        if outlook.insufficient_history {
            " (too little history)"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// The 30-day projection from the last complete days, with the report's
/// dimension filters.
async fn projection_for(
    store: &Store,
    filter: &RecordFilter,
    timezone: chrono_tz::Tz,
) -> Result<projection::Projection, CliError> {
    let today = Utc::now().with_timezone(&timezone).date_naive();
    let history = analytics::cost_history(store, filter, timezone, today).await?;
    Ok(projection::project(history.first_day, &history.overall, 30))
}

fn table<'a>(
    out: &mut dyn Write,
    title: &str,
    rows: impl Iterator<Item = (String, &'a RollupDelta)>,
    totals: &RollupDelta,
    top: usize,
) -> Result<(), CliError> {
    writeln!(out)?;
    writeln!(
        out,
        "  {title:<44} {:>12} {:>9} {:>16} {:>7}",
        "REQUESTS", "ERRORS", "COST (USD)", "SHARE"
    )?;
    for (name, group) in rows.take(top) {
        let name: String = name.chars().take(44).collect();
        writeln!(
            out,
            "  {name:<44} {:>12} {:>9} {:>16} {:>7}",
            grouped(group.requests),
            grouped(group.errors),
            NanoUsd::from_nanos(group.cost_nano_usd).to_string(),
            percent(group.cost_nano_usd, totals.cost_nano_usd)
        )?;
    }
    Ok(())
}

/// 1234567 → "1,234,567".
fn grouped(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        out.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `part / whole` as a percentage with one decimal, "-" for nothing.
fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    let tenths = i128::from(part) * 1_000 / i128::from(whole);
    format!("{}.{}%", tenths / 10, (tenths % 10).abs())
}

fn per_request(totals: &RollupDelta) -> String {
    if totals.requests == 0 {
        return "0".to_owned();
    }
    NanoUsd::from_nanos(totals.cost_nano_usd / totals.requests).to_string()
}

/// Filters from the command line's flags.
pub struct FilterFlags {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub org: Option<String>,
    pub user: Option<String>,
    pub tag: Option<String>,
}

impl FilterFlags {
    pub fn into_filter(self, timezone: chrono_tz::Tz) -> Result<RecordFilter, CliError> {
        let mut parameters = std::collections::HashMap::new();
        for (name, value) in [
            ("start_date", self.start_date),
            ("end_date", self.end_date),
            (
                "provider",
                self.provider.map(|provider| provider.as_str().to_owned()),
            ),
            ("model", self.model),
            ("org_id", self.org),
            ("user_id", self.user),
            ("tag", self.tag),
        ] {
            if let Some(value) = value {
                parameters.insert(name.to_owned(), value);
            }
        }
        let filter = query::parse_filter(&parameters, timezone).map_err(|error| {
            CliError::Invalid(format!(
                "--{}: {}",
                error.param.replace('_', "-"),
                error.message
            ))
        })?;
        // Whoever runs the CLI holds the database itself.
        Ok(RecordFilter {
            scope: crate::store::Scope::All,
            ..filter
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc();
        let tz = chrono_tz::Tz::UTC;
        assert_eq!(
            parse_since("7d", now, tz).unwrap(),
            now - TimeDelta::days(7)
        );
        assert_eq!(
            parse_since("36h", now, tz).unwrap(),
            now - TimeDelta::hours(36)
        );
        assert_eq!(
            parse_since("2w", now, tz).unwrap(),
            now - TimeDelta::weeks(2)
        );
        assert_eq!(
            parse_since("2026-11-01", now, tz).unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        for bad in ["", "7", "7y", "-3d", "0d", "yesterday"] {
            assert!(parse_since(bad, now, tz).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-1_000), "-1,000");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(0, 0), "-");
    }
}
