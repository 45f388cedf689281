//! The audit log: one entry per change made through the API — who, what,
//! on what, with what result, from where, and when. Entries carry route
//! actions, ids and status codes, never request bodies, so no secret (a new
//! key, a webhook secret, a provider key) can reach them. Append-only: no
//! API changes an entry, and on PostgreSQL the server's role cannot.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::store::Scope;

crate::usage::named_enum!(
    /// How a change ended.
    AuditResult, "audit result" {
        Ok => "ok",
        Denied => "denied",
        Failed => "failed",
    }
);

impl AuditResult {
    /// The result an HTTP status stands for: 2xx done, 401/403 refused to
    /// the caller, anything else not done.
    pub fn of_status(status: u16) -> AuditResult {
        match status {
            200..=299 => AuditResult::Ok,
            401 | 403 => AuditResult::Denied,
            _ => AuditResult::Failed,
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Assigned by the database; 0 before the entry is stored.
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// `key:<id>`, `admin-token`, or `anonymous` for a failed login.
    pub actor: String,
    /// The organization the change belongs to, when there is one.
    pub org_id: Option<String>,
    /// `key.create`, `budget.update`, `auth.failed`, …
    pub action: String,
    /// The id acted on.
    pub target: Option<String>,
    pub result: AuditResult,
    pub client_addr: Option<String>,
    /// Small facts about the change (the HTTP status); never a body.
    pub details: Value,
}

/// Which entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub org_id: Option<String>,
    pub target: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Entries older than this id (the previous page's last).
    pub before_id: Option<i64>,
    pub limit: i64,
    /// Whose entries: nothing unless set.
    pub scope: Scope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_results() {
        assert_eq!(AuditResult::of_status(201), AuditResult::Ok);
        assert_eq!(AuditResult::of_status(403), AuditResult::Denied);
        assert_eq!(AuditResult::of_status(401), AuditResult::Denied);
        assert_eq!(AuditResult::of_status(404), AuditResult::Failed);
        assert_eq!(AuditResult::of_status(503), AuditResult::Failed);
    }
}
