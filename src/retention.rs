//! Retention: rows older than their configured age are deleted by a
//! background job (hourly, and at start) and by `tollgate retention run`,
//! in small batches with a pause between them, oldest first.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RetentionConfig;
use crate::store::{Expiring, Store, StoreError};

/// How many rows of each kind a run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub deleted: Vec<(Expiring, u64)>,
}

/// The configured age of each kind, in days.
fn days(config: &RetentionConfig, what: Expiring) -> Option<u32> {
    match what {
        Expiring::UsageRecords => config.usage_records_days,
        Expiring::ResolvedAlerts => config.resolved_alerts_days,
        Expiring::WebhookDeliveries => config.webhook_deliveries_days,
        Expiring::AuditEntries => config.audit_entries_days,
    }
}

/// The time before which `what` expires at `now`, if it expires at all.
pub fn cutoff(
    config: &RetentionConfig,
    what: Expiring,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    days(config, what).map(|days| now - chrono::Duration::days(i64::from(days)))
}

/// Deletes everything expired at `now`, batch by batch.
pub async fn run(
    store: &Store,
    config: &RetentionConfig,
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let pause = Duration::from_millis(config.pause_ms);
    for what in Expiring::ALL {
        let Some(before) = cutoff(config, what, now) else {
            continue;
        };
        let mut total = 0;
        loop {
            let deleted = store.expire(what, before, config.batch_size).await?;
            total += deleted;
            if deleted < u64::from(config.batch_size) {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        if total > 0 {
            tracing::info!(deleted = total, what = what.as_str(), %before, "retention");
        }
        report.deleted.push((what, total));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_kinds_expire_at_their_age() {
        let config = RetentionConfig {
            usage_records_days: None,
            resolved_alerts_days: Some(30),
            webhook_deliveries_days: Some(1),
            audit_entries_days: Some(365),
            interval_seconds: 3600,
            batch_size: 10,
            pause_ms: 0,
        };
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(cutoff(&config, Expiring::UsageRecords, now), None);
        assert_eq!(
            cutoff(&config, Expiring::ResolvedAlerts, now).map(|time| time.to_rfc3339()),
            Some("2026-10-29T12:00:00+00:00".to_owned())
        );
        assert_eq!(
            cutoff(&config, Expiring::WebhookDeliveries, now).map(|time| time.to_rfc3339()),
            Some("2026-11-27T12:00:00+00:00".to_owned())
        );
    }
}
