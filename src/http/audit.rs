//! Writing the audit log for API calls, and `GET /api/v1/audit`.
//!
//! Routes that change something name their action in the rule table; the
//! authorization middleware calls [`record`] once the handler has answered,
//! with the caller, the id acted on and the status — never the body. Failed
//! logins are recorded too, at most one a minute per client address, so a
//! flood of bad tokens cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{IntoResponseParts, ResponseParts};
use axum::{Extension, Json};
use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};

use super::error::only_params;
use super::{ApiError, AppState};
use crate::audit::{AuditEntry, AuditFilter, AuditResult};
use crate::query;
use crate::tenancy::Caller;

/// What a handler acted on, when the path does not say (a created id),
/// and whose it is. Handlers return it as a response part.
#[derive(Debug, Clone)]
pub struct AuditTarget {
    pub id: String,
    pub org_id: Option<String>,
}

impl IntoResponseParts for AuditTarget {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut parts: ResponseParts) -> Result<ResponseParts, Self::Error> {
        parts.extensions_mut().insert(self);
        Ok(parts)
    }
}

/// Client addresses whose failed login was recorded, and when.
#[derive(Debug, Default)]
pub struct FailedLogins(RwLock<HashMap<IpAddr, Instant>>);

/// One failed-login entry per address per this long.
const FAILED_LOGIN_EVERY: Duration = Duration::from_secs(60);

/// Addresses remembered at most; past it, the expired ones are dropped.
const FAILED_LOGIN_ADDRESSES: usize = 10_000;

impl FailedLogins {
    /// Whether a failed login from `address` should be recorded now.
    fn should_record(&self, address: Option<IpAddr>) -> bool {
        let Some(address) = address else {
            return true;
        };
        let Ok(mut seen) = self.0.write() else {
            return true;
        };
        let now = Instant::now();
        if seen
            .get(&address)
            .is_some_and(|last| now.duration_since(*last) < FAILED_LOGIN_EVERY)
        {
            return false;
        }
        if seen.len() >= FAILED_LOGIN_ADDRESSES {
            seen.retain(|_, last| now.duration_since(*last) < FAILED_LOGIN_EVERY);
        }
        seen.insert(address, now);
        true
    }
}

/// What [`record`] writes about one call.
pub struct Call<'a> {
    pub caller: Option<&'a Caller>,
    pub action: &'static str,
    pub target: Option<AuditTarget>,
    pub status: u16,
    pub client: Option<IpAddr>,
}

/// Records a failed login from `client` (at most once a minute per address).
pub async fn failed_login(state: &AppState, client: Option<IpAddr>) {
    let call = Call {
        caller: None,
        action: "auth.failed",
        target: None,
        status: 401,
        client,
    };
    record(state, call).await;
}

/// Appends the call's entry. A failure to write it is logged and counted;
/// the call itself has already happened.
pub async fn record(state: &AppState, call: Call<'_>) {
    if call.caller.is_none() && !state.failed_logins.should_record(call.client) {
        return;
    }
    let org_id = match (&call.target, call.caller) {
        (
            Some(AuditTarget {
                org_id: Some(org), ..
            }),
            _,
        ) => Some(org.clone()),
        (_, Some(caller)) if !caller.is_admin() => Some(caller.org_id.clone()),
        _ => None,
    };
    let entry = AuditEntry {
        id: 0,
        created_at: Utc::now().trunc_subsecs(6),
        actor: call
            .caller
            .map_or_else(|| "anonymous".to_owned(), Caller::actor),
        org_id,
        action: call.action.to_owned(),
        target: call.target.map(|target| target.id),
        result: AuditResult::of_status(call.status),
        client_addr: call.client.map(|address| address.to_string()),
        details: json!({ "status": call.status }),
    };
    if let Err(error) = state.store.insert_audit(&entry).await {
        metrics::counter!("tollgate_audit_write_failures_total").increment(1);
        tracing::error!(%error, action = entry.action, actor = entry.actor, "cannot write the audit log");
    }
}

/// `GET /api/v1/audit`: entries newest first, with filters and a cursor
/// (`before_id`).
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const KNOWN: [&str; 8] = [
        "actor",
        "action",
        "org_id",
        "target",
        "start_date",
        "end_date",
        "before_id",
        "limit",
    ];
    only_params(&parameters, &KNOWN)?;
    let number = |name: &'static str| -> Result<Option<i64>, ApiError> {
        parameters
            .get(name)
            .map(|text| {
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid(name, "must be a whole number"))
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let dates: HashMap<String, String> = parameters
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "start_date" | "end_date"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let range = query::parse_filter(&dates, state.config.server.timezone)
        .map_err(|error| ApiError::invalid(error.param, error.message))?;
    let org_id = parameters.get("org_id").cloned();
    caller.check_filter(org_id.as_deref(), None)?;
    let filter = AuditFilter {
        actor: parameters.get("actor").cloned(),
        action: parameters.get("action").cloned(),
        org_id,
        target: parameters.get("target").cloned(),
        start: range.start,
        end: range.end,
        before_id: number("before_id")?,
        limit,
        scope: caller.scope(),
    };
    let entries = state.store.audit_entries(&filter).await?;
    let next = if entries.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
        entries.last().map(|entry| entry.id)
    } else {
        None
    };
    let data: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let mut value = json!(entry);
            value["object"] = json!("audit_entry");
            value
        })
        .collect();
    Ok(Json(
        json!({ "object": "list", "data": data, "next_before_id": next }),
    ))
}
