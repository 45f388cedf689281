//! Alerts: what they are, the conditions rules derive from observations
//! ([`rules`], pure), and the evaluator that opens, escalates and resolves
//! them ([`evaluator`]).

pub mod evaluator;
pub mod minutes;
pub mod rules;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::usage::{Provider, named_enum};

named_enum!(
    /// What an alert is about.
    AlertType, "alert type" {
        HighUsage => "high_usage",
        ErrorRate => "error_rate",
        LowBalance => "low_balance",
        QuotaExceeded => "quota_exceeded",
        Budget => "budget",
        Custom => "custom",
    }
);

named_enum!(
    /// How bad; ordered, so that escalation is `new > old`.
    Severity, "severity" {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

named_enum!(
    /// Where an alert is in its life.
    AlertStatus, "alert status" {
        Active => "active",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
);

named_enum!(
    /// A change to an alert, as its history and webhooks name it.
    AlertEventKind, "alert event" {
        Created => "created",
        Escalated => "escalated",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
);

/// A condition that holds now: what an alert says while it is open. Rules
/// make these; the evaluator turns them into alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub alert_type: AlertType,
    /// One alert per condition, scope and period: two conditions with the
    /// same key are the same alert.
    pub dedupe_key: String,
    pub org_id: Option<String>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub threshold_value: Option<Decimal>,
    pub current_value: Option<Decimal>,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: Uuid,
    pub alert_type: AlertType,
    pub dedupe_key: Option<String>,
    pub org_id: Option<String>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub threshold_value: Option<Decimal>,
    pub current_value: Option<Decimal>,
    pub status: AlertStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
}

/// What applying a condition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created(Uuid),
    Escalated(Uuid),
    /// Open already at this severity or higher (its current value updated).
    Unchanged(Uuid),
    /// A person resolved it while the condition held; it stays resolved
    /// until the condition clears or worsens.
    Suppressed,
}
