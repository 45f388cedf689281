//! `/api/v1/reports`: list, create and delete scheduled reports.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::parse_json;
use super::{ApiError, AppState, AuditTarget};
use crate::reports::{self, Frequency, ScheduledReport};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReport {
    name: String,
    frequency: String,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    webhook_id: Option<String>,
    #[serde(default)]
    folder: Option<String>,
}

fn view(report: &ScheduledReport) -> Value {
    json!({
        "id": report.id,
        "object": "report",
        "name": report.name,
        "frequency": report.frequency.as_str(),
        "org_id": report.org_id,
        "webhook_id": report.webhook_id,
        "folder": report.folder,
        "last_period_start": report.last_period_start,
        "last_run_at": report.last_run_at,
        "last_error": report.last_error,
        "created_at": report.created_at,
    })
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let reports = state.store.scheduled_reports().await?;
    let data: Vec<Value> = reports.iter().map(view).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Value>), ApiError> {
    let input: NewReport = parse_json(&body)?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    let frequency: Frequency =
        input
            .frequency
            .parse()
            .map_err(|error: crate::usage::UnknownName| {
                ApiError::invalid("frequency", error.to_string())
            })?;
    let folder = input
        .folder
        .map(|folder| folder.trim().to_owned())
        .filter(|folder| !folder.is_empty());
    if let Some(folder) = &folder {
        reports::check_folder(folder).map_err(|message| ApiError::invalid("folder", message))?;
    }
    let webhook_id = input
        .webhook_id
        .map(|id| {
            Uuid::parse_str(id.trim())
                .map_err(|_| ApiError::invalid("webhook_id", "is not a webhook id"))
        })
        .transpose()?;
    if let Some(id) = webhook_id
        && !state
            .store
            .webhooks()
            .await?
            .iter()
            .any(|webhook| webhook.id == id)
    {
        return Err(ApiError::invalid("webhook_id", "no webhook has this id"));
    }
    if webhook_id.is_none() && folder.is_none() {
        return Err(ApiError::invalid(
            "webhook_id",
            "a report needs somewhere to go: a webhook_id, a folder, or both",
        ));
    }
    let now = Utc::now().trunc_subsecs(6);
    let report = ScheduledReport {
        id: Uuid::now_v7(),
        name,
        frequency,
        org_id: input
            .org_id
            .map(|org| org.trim().to_owned())
            .filter(|org| !org.is_empty()),
        webhook_id,
        folder,
        last_period_start: None,
        last_run_at: None,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_scheduled_report(&report).await?;
    let target = AuditTarget {
        id: report.id.to_string(),
        org_id: report.org_id.clone(),
    };
    Ok((StatusCode::CREATED, target, Json(view(&report))))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no report {id}")))?;
    if !state.store.delete_scheduled_report(id).await? {
        return Err(ApiError::NotFound(format!("no report {id}")));
    }
    Ok(Json(
        json!({ "id": id, "object": "report.deleted", "deleted": true }),
    ))
}
