//! Scheduled reports: a daily, weekly or monthly summary of usage (totals,
//! top models, top users, alerts raised, the 30-day projection), written to
//! a folder as JSON and CSV and/or POSTed, signed, to a registered webhook.
//!
//! Each report covers the latest complete period in the server's time zone
//! (yesterday; last Monday-to-Sunday week; last calendar month). The
//! scheduler runs a report when its latest complete period is not the one
//! it last delivered, so a server that was down catches up with one run
//! (the latest period), not one per missed period. Instances sharing
//! PostgreSQL claim a run with a conditional update, so one of them runs it.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::alerts::Alert;
use crate::analytics::{self, projection, summary};
use crate::money::NanoUsd;
use crate::rollup::RollupDelta;
use crate::store::{AlertFilter, Grouping, RecordFilter, Store, StoreError};
use crate::usage::named_enum;
use crate::webhooks::{signature, target};

named_enum!(
    /// How often a report runs, and the period it covers.
    Frequency, "frequency" {
        Daily => "daily",
        Weekly => "weekly",
        Monthly => "monthly",
    }
);

/// A report definition and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledReport {
    pub id: Uuid,
    pub name: String,
    pub frequency: Frequency,
    /// Only this organization's usage; all when `None`.
    pub org_id: Option<String>,
    /// A registered webhook to POST the JSON to.
    pub webhook_id: Option<Uuid>,
    /// A folder under `reports.folder` to write JSON and CSV into.
    pub folder: Option<String>,
    /// The first day of the last period delivered.
    pub last_period_start: Option<NaiveDate>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The local days `[first, end)` of the latest period that ended by `today`.
pub fn latest_period(frequency: Frequency, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    match frequency {
        Frequency::Daily => (today.pred_opt().unwrap_or(today), today),
        Frequency::Weekly => {
            let this_monday = today
                .checked_sub_days(Days::new(u64::from(today.weekday().num_days_from_monday())))
                .unwrap_or(today);
            (
                this_monday
                    .checked_sub_days(Days::new(7))
                    .unwrap_or(this_monday),
                this_monday,
            )
        }
        Frequency::Monthly => {
            let this_month = today.with_day(1).unwrap_or(today);
            (
                this_month
                    .checked_sub_months(Months::new(1))
                    .unwrap_or(this_month),
                this_month,
            )
        }
    }
}

/// Checks a report's folder: relative, inside the reports root, no `..`.
pub fn check_folder(folder: &str) -> Result<(), String> {
    let path = Path::new(folder);
    if folder.trim().is_empty() || folder.len() > 200 {
        return Err("must be a folder name of 1 to 200 characters".to_owned());
    }
    if !path
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err(
            "must be a relative path inside the reports folder (no `..`, no leading `/`)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Settings for running reports.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub root: PathBuf,
    pub timezone: Tz,
    pub allow_private: bool,
    pub timeout: Duration,
}

/// Runs due reports.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    settings: SchedulerSettings,
    client: reqwest::Client,
}

/// Why one report's run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("webhook {0} no longer exists")]
    MissingWebhook(Uuid),
    #[error("webhook delivery failed: {0}")]
    Delivery(String),
}

impl Scheduler {
    pub fn new(store: Store, settings: SchedulerSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Scheduler {
            store,
            settings,
            client,
        })
    }

    /// Runs every report whose latest complete period at `now` has not been
    /// delivered. Returns how many ran successfully.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let today = now.with_timezone(&self.settings.timezone).date_naive();
        let mut ran = 0;
        for report in self.store.scheduled_reports().await? {
            let (first, end) = latest_period(report.frequency, today);
            if report.last_period_start == Some(first) {
                continue;
            }
            // Claimed: no other instance runs this period now.
            if !self
                .store
                .claim_report_run(report.id, report.last_period_start, first, now)
                .await?
            {
                continue;
            }
            match self.run(&report, first, end, now).await {
                Ok(()) => {
                    self.store.report_run_finished(report.id, None).await?;
                    ran += 1;
                }
                Err(error) => {
                    tracing::warn!(report = %report.id, %error, "a scheduled report failed; it runs again next round");
                    self.store
                        .release_report_run(report.id, report.last_period_start, &error.to_string())
                        .await?;
                }
            }
        }
        Ok(ran)
    }

    /// Builds one report for `[first, end)` and delivers it.
    pub async fn run(
        &self,
        report: &ScheduledReport,
        first: NaiveDate,
        end: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let content = build(&self.store, report, first, end, self.settings.timezone, now).await?;
        if let Some(folder) = &report.folder {
            let folder = self.settings.root.join(folder);
            tokio::fs::create_dir_all(&folder)
                .await
                .map_err(|source| RunError::Write {
                    path: folder.display().to_string(),
                    source,
                })?;
            let stem = format!(
                "{}-{}-{first}",
                slug(&report.name),
                report.frequency.as_str()
            );
            for (extension, bytes) in [
                ("json", content.json.to_string().into_bytes()),
                ("csv", content.csv.clone().into_bytes()),
            ] {
                let path = folder.join(format!("{stem}.{extension}"));
                write_atomically(&path, &bytes)
                    .await
                    .map_err(|source| RunError::Write {
                        path: path.display().to_string(),
                        source,
                    })?;
            }
        }
        if let Some(webhook_id) = report.webhook_id {
            let webhook = self
                .store
                .webhooks()
                .await?
                .into_iter()
                .find(|webhook| webhook.id == webhook_id)
                .ok_or(RunError::MissingWebhook(webhook_id))?;
            target::check(&webhook.url, self.settings.allow_private)
                .await
                .map_err(|error| RunError::Delivery(error.to_string()))?;
            let body = json!({ "event": "report", "report": content.json }).to_string();
            let signed = signature::sign(webhook.secret.expose(), now.timestamp(), body.as_bytes());
            let response = self
                .client
                .post(&webhook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(signature::HEADER, signed)
                .body(body)
                .send()
                .await
                .map_err(|error| RunError::Delivery(error.to_string()))?;
            if !response.status().is_success() {
                return Err(RunError::Delivery(format!(
                    "HTTP {}",
                    response.status().as_u16()
                )));
            }
        }
        Ok(())
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a report.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("partial");
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, path).await
}

/// A name fit for a file name.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "report".to_owned()
    } else {
        slug
    }
}

/// A report's content in both forms.
#[derive(Debug, Clone)]
pub struct Content {
    pub json: Value,
    pub csv: String,
}

/// Rows in the top-models and top-users lists.
const TOP: usize = 10;

/// Builds the content of `report` for the local days `[first, end)`.
pub async fn build(
    store: &Store,
    report: &ScheduledReport,
    first: NaiveDate,
    end: NaiveDate,
    timezone: Tz,
    now: DateTime<Utc>,
) -> Result<Content, StoreError> {
    let start = crate::query::start_of_day(first, timezone);
    let stop = crate::query::start_of_day(end, timezone);
    let filter = RecordFilter {
        start,
        end: stop,
        org_id: report.org_id.clone(),
        // Scheduled reports are the server's own work, set up by an admin.
        scope: crate::store::Scope::All,
        ..RecordFilter::default()
    };
    let rows = analytics::aggregate(store, &filter, timezone, Grouping::Dimensions).await?;
    let stats = summary::stats(&rows);
    let alerts: Vec<Alert> = store
        .alerts(&AlertFilter {
            org_id: report.org_id.clone(),
            limit: 10_000,
            scope: crate::store::Scope::All,
            ..AlertFilter::default()
        })
        .await?
        .into_iter()
        .filter(|alert| {
            start.is_none_or(|start| alert.created_at >= start)
                && stop.is_none_or(|stop| alert.created_at < stop)
        })
        .collect();
    // The projection from the 13 weeks up to the period's end.
    let history = analytics::cost_history(store, &filter, timezone, end).await?;
    let outlook = projection::project(history.first_day, &history.overall, 30);
    let group = |totals: &RollupDelta| {
        json!({
            "requests": totals.requests,
            "errors": totals.errors,
            "cost_usd": NanoUsd::from_nanos(totals.cost_nano_usd).to_string(),
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
        })
    };
    let with = |mut value: Value, name: &str, key: Value| {
        if let Value::Object(fields) = &mut value {
            fields.insert(name.to_owned(), key);
        }
        value
    };
    let json = json!({
        "report_id": report.id,
        "name": report.name,
        "frequency": report.frequency.as_str(),
        "org_id": report.org_id,
        "period_start": start,
        "period_end": stop,
        "first_day": first,
        "last_day": end.pred_opt(),
        "timezone": timezone.name(),
        "generated_at": now,
        "totals": with(group(&stats.totals), "p95_response_time_ms", json!(stats.totals.latency_percentile_ms(950))),
        "by_provider": stats.by_provider.iter().map(|(provider, totals)| with(group(totals), "provider", json!(provider.as_str()))).collect::<Vec<_>>(),
        "top_models": stats.by_model.iter().take(TOP).map(|((provider, model), totals)| with(with(group(totals), "model", json!(model)), "provider", json!(provider.as_str()))).collect::<Vec<_>>(),
        "top_users": stats.by_user.iter().take(TOP).map(|(user, totals)| with(group(totals), "user_id", json!(user))).collect::<Vec<_>>(),
        "alerts": alerts.iter().map(|alert| json!({
            "id": alert.id,
            "alert_type": alert.alert_type.as_str(),
            "severity": alert.severity.as_str(),
            "title": alert.title,
            "status": alert.status.as_str(),
            "created_at": alert.created_at,
        })).collect::<Vec<_>>(),
        "projection": {
            "days": 30,
            "method": outlook.method.as_str(),
            "insufficient_history": outlook.insufficient_history,
            "projected_cost_usd": NanoUsd::from_nanos(outlook.total_nano_usd).to_string(),
            "projected_low_usd": NanoUsd::from_nanos(outlook.total_low_nano_usd).to_string(),
            "projected_high_usd": NanoUsd::from_nanos(outlook.total_high_nano_usd).to_string(),
        },
    });
    Ok(Content {
        csv: csv_table(&stats),
        json,
    })
}

/// One table: a row for the totals, each provider, model and user.
fn csv_table(stats: &summary::Stats) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut rows: Vec<[String; 8]> = vec![
        [
            "section",
            "name",
            "provider",
            "requests",
            "errors",
            "cost_usd",
            "input_tokens",
            "output_tokens",
        ]
        .map(str::to_owned),
    ];
    let row = |section: &str, name: &str, provider: &str, totals: &RollupDelta| {
        [
            section.to_owned(),
            name.to_owned(),
            provider.to_owned(),
            totals.requests.to_string(),
            totals.errors.to_string(),
            NanoUsd::from_nanos(totals.cost_nano_usd).to_string(),
            totals.input_tokens.to_string(),
            totals.output_tokens.to_string(),
        ]
    };
    rows.push(row("total", "", "", &stats.totals));
    for (provider, totals) in &stats.by_provider {
        rows.push(row(
            "provider",
            provider.as_str(),
            provider.as_str(),
            totals,
        ));
    }
    for ((provider, model), totals) in &stats.by_model {
        rows.push(row("model", model, provider.as_str(), totals));
    }
    for (user, totals) in &stats.by_user {
        rows.push(row("user", user.as_deref().unwrap_or(""), "", totals));
    }
    for record in rows {
        if writer.write_record(&record).is_err() {
            break;
        }
    }
    writer
        .into_inner()
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn the_latest_complete_period_ends_today() {
        // 2026-11-28 is a Saturday.
        let today = day("2026-11-28");
        assert_eq!(
            latest_period(Frequency::Daily, today),
            (day("2026-11-27"), today)
        );
        assert_eq!(
            latest_period(Frequency::Weekly, today),
            (day("2026-11-16"), day("2026-11-23"))
        );
        assert_eq!(
            latest_period(Frequency::Weekly, day("2026-11-23")),
            (day("2026-11-16"), day("2026-11-23"))
        );
        assert_eq!(
            latest_period(Frequency::Monthly, today),
            (day("2026-10-01"), day("2026-11-01"))
        );
        assert_eq!(
            latest_period(Frequency::Monthly, day("2026-03-01")),
            (day("2026-02-01"), day("2026-03-01"))
        );
    }

    #[test]
    fn folders_stay_inside_the_reports_root() {
        assert!(check_folder("finance/weekly").is_ok());
        for bad in ["", "../etc", "/tmp", "a/../../b", "./x"] {
            assert!(check_folder(bad).is_err(), "{bad}");
        }
        assert_eq!(slug("Weekly: Finance & Ops!"), "weekly--finance---ops");
    }
}
