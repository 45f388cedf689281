//! `/api/v1/webhooks`: list, create (the secret is shown once), delete, and
//! a webhook's deliveries.

use std::str::FromStr;

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
use crate::alerts::{AlertEventKind, Severity};
use crate::config::Secret;
use crate::webhooks::{Webhook, WebhookFormat, target};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    min_severity: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

fn view(webhook: &Webhook) -> Value {
    json!({
        "id": webhook.id,
        "object": "webhook",
        "url": webhook.url,
        "events": webhook.events.iter().map(|event| event.as_str()).collect::<Vec<_>>(),
        "min_severity": webhook.min_severity.as_str(),
        "format": webhook.format.as_str(),
        "created_at": webhook.created_at,
    })
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let webhooks = state.store.webhooks().await?;
    let data: Vec<Value> = webhooks.iter().map(view).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Value>), ApiError> {
    let input: NewWebhook = parse_json(&body)?;
    if input.url.len() > 2048 {
        return Err(ApiError::invalid("url", "at most 2048 characters"));
    }
    target::check(&input.url, state.config.webhooks.allow_private)
        .await
        .map_err(|error| ApiError::invalid("url", error.to_string()))?;
    let events = input
        .events
        .iter()
        .map(|event| AlertEventKind::from_str(event))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::invalid("events", error.to_string()))?;
    let min_severity = input
        .min_severity
        .as_deref()
        .map(Severity::from_str)
        .transpose()
        .map_err(|error| ApiError::invalid("min_severity", error.to_string()))?
        .unwrap_or(Severity::Low);
    let format = input
        .format
        .as_deref()
        .map(WebhookFormat::from_str)
        .transpose()
        .map_err(|error| ApiError::invalid("format", error.to_string()))?
        .unwrap_or(WebhookFormat::Tollgate);
    let secret = match input.secret {
        Some(secret) if secret.len() < 16 => {
            return Err(ApiError::invalid("secret", "at least 16 characters"));
        }
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|_| ApiError::Internal)?;
            format!(
                "whsec_{}",
                bytes
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
            )
        }
    };
    let webhook = Webhook {
        id: Uuid::now_v7(),
        url: input.url,
        secret: Secret::new(secret.clone()),
        events,
        min_severity,
        format,
        created_at: Utc::now().trunc_subsecs(6),
    };
    state.store.insert_webhook(&webhook).await?;
    let mut shown = view(&webhook);
    // The only time the secret is shown.
    shown["secret"] = Value::from(secret);
    let target = AuditTarget {
        id: webhook.id.to_string(),
        org_id: None,
    };
    Ok((StatusCode::CREATED, target, Json(shown)))
}

fn webhook_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(format!("no webhook `{text}`")))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = webhook_id(&id)?;
    if !state.store.delete_webhook(id).await? {
        return Err(ApiError::NotFound(format!("no webhook {id}")));
    }
    Ok(Json(
        json!({ "id": id, "object": "webhook.deleted", "deleted": true }),
    ))
}

pub async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = webhook_id(&id)?;
    if !state
        .store
        .webhooks()
        .await?
        .iter()
        .any(|webhook| webhook.id == id)
    {
        return Err(ApiError::NotFound(format!("no webhook {id}")));
    }
    let data: Vec<Value> = state
        .store
        .deliveries(id, 100)
        .await?
        .into_iter()
        .map(|delivery| {
            json!({
                "id": delivery.id,
                "event_id": delivery.event_id,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "last_status_code": delivery.last_status_code,
                "last_error": delivery.last_error,
                "created_at": delivery.created_at,
                "delivered_at": delivery.delivered_at,
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
