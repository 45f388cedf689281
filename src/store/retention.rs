//! Deleting expired rows, one small batch per call, oldest first, through
//! indexes (so a batch is quick and requests are never stalled behind it).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// What expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Raw usage records (the rollups keep their totals).
    UsageRecords,
    /// Resolved alerts (open ones are kept whatever their age), with their
    /// events and deliveries.
    ResolvedAlerts,
    /// Delivered or abandoned webhook deliveries, with their attempts.
    WebhookDeliveries,
    /// Audit entries.
    AuditEntries,
}

impl Expiring {
    pub const ALL: [Expiring; 4] = [
        Expiring::UsageRecords,
        Expiring::ResolvedAlerts,
        Expiring::WebhookDeliveries,
        Expiring::AuditEntries,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Expiring::UsageRecords => "usage records",
            Expiring::ResolvedAlerts => "resolved alerts",
            Expiring::WebhookDeliveries => "webhook deliveries",
            Expiring::AuditEntries => "audit entries",
        }
    }

    /// One batch: `$1` the cutoff, `$2` the batch size.
    fn statement(self) -> &'static str {
        match self {
            Expiring::UsageRecords => {
                "DELETE FROM ai_provider_usage WHERE request_id IN \
                 (SELECT request_id FROM ai_provider_usage WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
            }
            Expiring::ResolvedAlerts => {
                "DELETE FROM ai_usage_alerts WHERE id IN \
                 (SELECT id FROM ai_usage_alerts WHERE status = 'resolved' AND resolved_at < $1 LIMIT $2)"
            }
            Expiring::WebhookDeliveries => {
                "DELETE FROM webhook_deliveries WHERE id IN \
                 (SELECT id FROM webhook_deliveries WHERE status IN ('delivered', 'failed') \
                  AND created_at < $1 LIMIT $2)"
            }
            // SQLite; PostgreSQL calls the owner's `tollgate_expire_audit`.
            Expiring::AuditEntries => {
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
            }
        }
    }
}

impl Store {
    /// Deletes at most `batch` rows of `what` older than `before`; says how
    /// many it deleted (fewer than `batch`: nothing older is left).
    pub async fn expire(
        &self,
        what: Expiring,
        before: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        Ok(match self {
            Store::Sqlite(store) => sqlx::query(what.statement())
                .bind(before.timestamp_micros())
                .bind(i64::from(batch))
                .execute(&store.writer)
                .await?
                .rows_affected(),
            Store::Postgres(store) if what == Expiring::AuditEntries => {
                let deleted: i64 = sqlx::query_scalar("SELECT tollgate_expire_audit($1, $2)")
                    .bind(before)
                    .bind(i32::try_from(batch).unwrap_or(i32::MAX))
                    .fetch_one(&store.pool)
                    .await?;
                u64::try_from(deleted).unwrap_or(0)
            }
            Store::Postgres(store) => sqlx::query(what.statement())
                .bind(before)
                .bind(i64::from(batch))
                .execute(&store.pool)
                .await?
                .rows_affected(),
        })
    }
}
