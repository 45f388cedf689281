//! `/api/v1/budgets`: list, create, read, replace, delete, and status.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::parse_json;
use super::{ApiError, AppState, AuditTarget};
use crate::budget::status::BudgetStatus;
use crate::budget::{self, Budget, BudgetInput, InvalidBudget};
use crate::money::NanoUsd;
use crate::tenancy::Caller;

/// A budget as the API shows it.
#[derive(Serialize)]
pub struct BudgetView {
    id: Uuid,
    object: &'static str,
    org_id: String,
    provider: Option<&'static str>,
    user_id: Option<String>,
    api_key_id: Option<Uuid>,
    budget_type: &'static str,
    budget_amount_usd: String,
    budget_amount_nano_usd: i64,
    soft_limit_percent: Vec<u32>,
    hard_limit: bool,
    rollover_policy: &'static str,
    rollover_cap_usd: Option<String>,
    reset_date: String,
    timezone: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Budget> for BudgetView {
    fn from(budget: &Budget) -> Self {
        BudgetView {
            id: budget.id,
            object: "budget",
            org_id: budget.org_id.clone(),
            provider: budget.scope.provider.map(|provider| provider.as_str()),
            user_id: budget.scope.user_id.clone(),
            api_key_id: budget.scope.api_key_id,
            budget_type: budget.budget_type.as_str(),
            budget_amount_usd: budget.amount.to_string(),
            budget_amount_nano_usd: budget.amount.nanos(),
            soft_limit_percent: budget.soft_limit_percents.clone(),
            hard_limit: budget.hard_limit,
            rollover_policy: budget.rollover_policy.as_str(),
            rollover_cap_usd: budget.rollover_cap.map(|cap| cap.to_string()),
            reset_date: budget.reset_date.to_string(),
            timezone: budget.timezone.name(),
            created_at: budget.created_at,
            updated_at: budget.updated_at,
        }
    }
}

/// A budget's status as the API shows it.
pub fn status_json(budget: &Budget, status: &BudgetStatus) -> Value {
    let usd = |amount: NanoUsd| amount.to_string();
    json!({
        "object": "budget.status",
        "budget_id": budget.id,
        "budget_type": budget.budget_type.as_str(),
        "hard_limit": budget.hard_limit,
        "period_start": status.period.start,
        "period_end": status.period.end,
        "budget_amount_usd": usd(status.amount),
        "rollover_usd": usd(status.rollover),
        "limit_usd": usd(status.limit),
        "spent_usd": usd(status.spent),
        "reserved_usd": usd(status.reserved),
        "remaining_usd": usd(status.remaining),
        "state": status.state.as_str(),
        "projected_exhaustion_at": status.projected_exhaustion,
        "projection_method": status.projection_method,
    })
}

fn invalid(error: InvalidBudget) -> ApiError {
    ApiError::invalid(error.param, error.message)
}

/// Parses a budget body, naming the field at fault.
fn parse_input(body: &Bytes) -> Result<BudgetInput<'_>, ApiError> {
    parse_json(body)
}

async fn check_references(state: &AppState, budget: &Budget) -> Result<(), ApiError> {
    match budget::check_references(&state.store, budget).await? {
        Some(error) => Err(invalid(error)),
        None => Ok(()),
    }
}

/// Now, to the microsecond the database keeps.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn budget_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(format!("no budget `{text}`")))
}

async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Budget, ApiError> {
    let id = budget_id(id)?;
    state
        .store
        .budget(&caller.scope(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no budget {id}")))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(unknown) = parameters.keys().find(|name| name.as_str() != "org_id") {
        return Err(ApiError::invalid(
            unknown.clone(),
            "unknown parameter (expected org_id)",
        ));
    }
    let org_id = parameters.get("org_id").map(String::as_str);
    caller.check_filter(org_id, None)?;
    let budgets = state.store.budgets(&caller.scope(), org_id).await?;
    let data: Vec<BudgetView> = budgets.iter().map(BudgetView::from).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<BudgetView>), ApiError> {
    let input = parse_input(&body)?;
    let budget = input.create(Uuid::now_v7(), now()).map_err(invalid)?;
    caller.check_filter(Some(&budget.org_id), None)?;
    check_references(&state, &budget).await?;
    state.store.insert_budget(&caller.scope(), &budget).await?;
    state.budgets.changed().await;
    let target = AuditTarget {
        id: budget.id.to_string(),
        org_id: Some(budget.org_id.clone()),
    };
    Ok((StatusCode::CREATED, target, Json(BudgetView::from(&budget))))
}

pub async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<BudgetView>, ApiError> {
    let budget = find(&state, &caller, &id).await?;
    Ok(Json(BudgetView::from(&budget)))
}

/// Changes the fields given; the others keep their values.
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(AuditTarget, Json<BudgetView>), ApiError> {
    let stored = find(&state, &caller, &id).await?;
    let input = parse_input(&body)?;
    let budget = input.apply(stored, now()).map_err(invalid)?;
    caller.check_filter(Some(&budget.org_id), None)?;
    check_references(&state, &budget).await?;
    if !state.store.update_budget(&caller.scope(), &budget).await? {
        return Err(ApiError::NotFound(format!("no budget {}", budget.id)));
    }
    state.budgets.changed().await;
    let target = AuditTarget {
        id: budget.id.to_string(),
        org_id: Some(budget.org_id.clone()),
    };
    Ok((target, Json(BudgetView::from(&budget))))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = budget_id(&id)?;
    if !state.store.delete_budget(&caller.scope(), id).await? {
        return Err(ApiError::NotFound(format!("no budget {id}")));
    }
    state.budgets.changed().await;
    Ok(Json(
        json!({ "id": id, "object": "budget.deleted", "deleted": true }),
    ))
}

pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let budget = find(&state, &caller, &id).await?;
    let status = state.budgets.status(&budget).await?;
    Ok(Json(status_json(&budget, &status)))
}
