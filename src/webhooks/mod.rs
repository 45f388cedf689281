//! Webhooks: where alert events are delivered, how a delivery is signed,
//! and which addresses a webhook may point at.

pub mod delivery;
pub mod signature;
pub mod target;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::alerts::{AlertEventKind, Severity};
use crate::config::Secret;
use crate::usage::named_enum;

named_enum!(
    /// The body a webhook receives.
    WebhookFormat, "webhook format" {
        Tollgate => "tollgate",
        Slack => "slack",
    }
);

/// A configured receiver of alert events.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// Signs every delivery (`X-Tollgate-Signature`); never shown again.
    pub secret: Secret,
    /// The events it wants; all of them when empty.
    pub events: Vec<AlertEventKind>,
    /// Only alerts at least this severe.
    pub min_severity: Severity,
    pub format: WebhookFormat,
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether an event of this kind and severity goes to this webhook.
    pub fn wants(&self, event: AlertEventKind, severity: Severity) -> bool {
        (self.events.is_empty() || self.events.contains(&event)) && severity >= self.min_severity
    }
}
