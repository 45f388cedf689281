//! `/api/v1/alerts`: list, create custom alerts, acknowledge, resolve.

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{only_params, parse_json};
use super::{ApiError, AppState, AuditTarget};
use crate::alerts::{Alert, AlertStatus, AlertType, Applied, Condition, Severity};
use crate::store::AlertFilter;
use crate::tenancy::Caller;
use crate::usage::Provider;

/// An alert as the API shows it.
#[derive(Serialize)]
pub struct AlertView {
    id: Uuid,
    object: &'static str,
    alert_type: &'static str,
    provider: Option<&'static str>,
    org_id: Option<String>,
    model: Option<String>,
    severity: &'static str,
    title: String,
    message: String,
    threshold_value: Option<String>,
    current_value: Option<String>,
    status: &'static str,
    dedupe_key: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
}

impl From<&Alert> for AlertView {
    fn from(alert: &Alert) -> Self {
        AlertView {
            id: alert.id,
            object: "alert",
            alert_type: alert.alert_type.as_str(),
            provider: alert.provider.map(Provider::as_str),
            org_id: alert.org_id.clone(),
            model: alert.model.clone(),
            severity: alert.severity.as_str(),
            title: alert.title.clone(),
            message: alert.message.clone(),
            threshold_value: alert
                .threshold_value
                .map(|value| value.normalize().to_string()),
            current_value: alert
                .current_value
                .map(|value| value.normalize().to_string()),
            status: alert.status.as_str(),
            dedupe_key: alert.dedupe_key.clone(),
            created_at: alert.created_at,
            updated_at: alert.updated_at,
            acknowledged_at: alert.acknowledged_at,
            acknowledged_by: alert.acknowledged_by.clone(),
            resolved_at: alert.resolved_at,
            resolved_by: alert.resolved_by.clone(),
        }
    }
}

fn parse<T: FromStr>(
    parameters: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    parameters
        .get(name)
        .map(|value| T::from_str(value).map_err(|error| ApiError::invalid(name, error.to_string())))
        .transpose()
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const KNOWN: [&str; 6] = [
        "status",
        "severity",
        "alert_type",
        "provider",
        "org_id",
        "limit",
    ];
    only_params(&parameters, &KNOWN)?;
    let limit: i64 = parse::<i64>(&parameters, "limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    caller.check_filter(parameters.get("org_id").map(String::as_str), None)?;
    let filter = AlertFilter {
        status: parse(&parameters, "status")?,
        severity: parse(&parameters, "severity")?,
        alert_type: parse(&parameters, "alert_type")?,
        provider: parse(&parameters, "provider")?,
        org_id: parameters.get("org_id").cloned(),
        open_only: false,
        limit,
        scope: caller.scope(),
    };
    let alerts = state.store.alerts(&filter).await?;
    let data: Vec<AlertView> = alerts.iter().map(AlertView::from).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// A custom alert, with the guide's fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomAlert {
    #[serde(default)]
    alert_type: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    severity: String,
    title: String,
    message: String,
    #[serde(default)]
    threshold_value: Option<Decimal>,
    #[serde(default)]
    current_value: Option<Decimal>,
    /// Alerts with the same key are one alert (it escalates in place).
    #[serde(default)]
    dedupe_key: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<AlertView>), ApiError> {
    let custom: CustomAlert = parse_json(&body)?;
    caller.check_filter(custom.org_id.as_deref(), None)?;
    // Administrators may raise alerts for no organization; everyone else
    // raises them for their own.
    let org_id = match custom.org_id {
        None if !caller.is_admin() => Some(caller.org_id.clone()),
        given => given,
    };
    let dedupe_key = match (custom.dedupe_key, caller.is_admin()) {
        (Some(key), true) => key,
        // Another organization's alert must never be escalated through a
        // key that happens to match: keys are kept per organization.
        (Some(key), false) => format!("tenant:{}:{}:{key}", caller.org_id.len(), caller.org_id),
        (None, _) => format!("custom:{}", Uuid::now_v7()),
    };
    let alert_type = match custom.alert_type.as_deref() {
        None => AlertType::Custom,
        Some(text) => AlertType::from_str(text)
            .map_err(|error| ApiError::invalid("alert_type", error.to_string()))?,
    };
    let severity = Severity::from_str(&custom.severity)
        .map_err(|error| ApiError::invalid("severity", error.to_string()))?;
    let provider = custom
        .provider
        .as_deref()
        .map(Provider::from_str)
        .transpose()
        .map_err(|error| ApiError::invalid("provider", error.to_string()))?;
    for (field, text, max) in [
        ("title", &custom.title, 300),
        ("message", &custom.message, 4000),
    ] {
        if text.trim().is_empty() || text.len() > max {
            return Err(ApiError::invalid(
                field,
                format!("must be 1 to {max} characters"),
            ));
        }
    }
    let now = Utc::now().trunc_subsecs(6);
    let condition = Condition {
        alert_type,
        dedupe_key,
        org_id,
        provider,
        model: None,
        severity,
        title: custom.title,
        message: custom.message,
        threshold_value: custom.threshold_value,
        current_value: custom.current_value,
    };
    let (status, id) = match state.store.apply_condition(&condition, now).await? {
        Applied::Created(id) => (StatusCode::CREATED, id),
        Applied::Escalated(id) | Applied::Unchanged(id) => (StatusCode::OK, id),
        Applied::Suppressed => {
            return Err(ApiError::invalid(
                "dedupe_key",
                "an alert with this key was resolved and its condition has not cleared",
            ));
        }
    };
    let alert = state
        .store
        .alert(&caller.scope(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    let target = AuditTarget {
        id: alert.id.to_string(),
        org_id: alert.org_id.clone(),
    };
    Ok((status, target, Json(AlertView::from(&alert))))
}

/// Who acts: `{"by": "…"}` in the body, else the caller's key.
fn actor(caller: &Caller, body: &Bytes) -> Result<String, ApiError> {
    if body.is_empty() {
        return Ok(caller.actor());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct By {
        by: Option<String>,
    }
    let by: By =
        serde_json::from_slice(body).map_err(|error| ApiError::invalid("by", error.to_string()))?;
    // The actor is always the caller; a name they give is kept beside it,
    // never instead of it.
    Ok(match by.by.filter(|by| !by.trim().is_empty()) {
        Some(by) => format!("{} ({by})", caller.actor()),
        None => caller.actor(),
    })
}

async fn change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    to: AlertStatus,
    body: &Bytes,
) -> Result<Json<AlertView>, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no alert `{id}`")))?;
    let by = actor(caller, body)?;
    let alert = state
        .store
        .change_alert_status(
            &caller.scope(),
            id,
            to,
            Some(&by),
            Utc::now().trunc_subsecs(6),
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    Ok(Json(AlertView::from(&alert)))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AlertView>, ApiError> {
    change(&state, &caller, &id, AlertStatus::Acknowledged, &body).await
}

pub async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AlertView>, ApiError> {
    change(&state, &caller, &id, AlertStatus::Resolved, &body).await
}
