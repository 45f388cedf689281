//! `/api/v1/providers`: each provider's balance, key limits and key status;
//! a manual balance and the low-balance threshold; a refresh on demand.

use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error::parse_json;
use super::{ApiError, AppState};
use crate::credits::{self, Credits, RefreshError};
use crate::money::{self, NanoUsd};
use crate::usage::Provider;

fn view(credits: &Credits, recorded: Option<NanoUsd>) -> Value {
    let usd = |amount: Option<NanoUsd>| amount.map(|amount| amount.to_string());
    let billed = credits.billed.map(|(day, amount)| {
        json!({
            "day": day,
            "billed_usd": amount.to_string(),
            "recorded_usd": recorded.map(|recorded| recorded.to_string()),
            "difference_usd": recorded.map(|recorded| NanoUsd::from_nanos(amount.nanos().saturating_sub(recorded.nanos())).to_string()),
        })
    });
    json!({
        "reconciliation": billed,
        "provider": credits.provider.as_str(),
        "balance_usd": usd(credits.balance),
        "total_credits_usd": usd(credits.total_credits),
        "total_usage_usd": usd(credits.total_usage),
        "key_limit_usd": usd(credits.key_limit),
        "key_limit_remaining_usd": usd(credits.key_limit_remaining),
        "key_status": credits.key_status.as_str(),
        "low_balance_threshold_usd": usd(credits.low_balance_threshold),
        "checked_at": credits.checked_at,
    })
}

async fn all(state: &AppState) -> Result<Vec<Credits>, ApiError> {
    let stored = state.store.credits().await?;
    Ok(Provider::ALL
        .iter()
        .map(|provider| {
            stored
                .iter()
                .find(|credits| credits.provider == *provider)
                .cloned()
                .unwrap_or_else(|| Credits::unknown(*provider))
        })
        .collect())
}

fn provider(text: &str) -> Result<Provider, ApiError> {
    Provider::from_str(text).map_err(|error| ApiError::NotFound(error.to_string()))
}

/// A provider's credits, with what the ledger recorded on the day the
/// provider reported billing for.
async fn shown(state: &AppState, credits: &Credits) -> Result<Value, ApiError> {
    let recorded = match credits.billed {
        Some((day, _)) => {
            let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
            Some(
                state
                    .store
                    .provider_spend(credits.provider, start, start + chrono::Duration::days(1))
                    .await?,
            )
        }
        None => None,
    };
    Ok(view(credits, recorded))
}

async fn one(state: &AppState, provider: Provider) -> Result<Value, ApiError> {
    let credits = all(state).await?;
    let found = credits
        .iter()
        .find(|credits| credits.provider == provider)
        .ok_or_else(|| ApiError::NotFound(format!("no provider {provider}")))?;
    shown(state, found).await
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut data = Vec::new();
    for credits in all(&state).await? {
        data.push(shown(&state, &credits).await?);
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    low_balance_threshold_usd: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    balance_usd: Option<&'a RawValue>,
}

/// A field given, even as `null` (which clears it).
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as Deserialize>::deserialize(deserializer).map(Some)
}

pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let provider = provider(&name)?;
    let settings: Settings<'_> = parse_json(&body)?;
    let amount = |raw: Option<&RawValue>, param: &str| {
        raw.map(|raw| {
            money::parse_usd_json(raw).map_err(|message| ApiError::invalid(param, message))
        })
        .transpose()
    };
    let threshold = amount(
        settings.low_balance_threshold_usd,
        "low_balance_threshold_usd",
    )?;
    let balance = amount(settings.balance_usd, "balance_usd")?;
    state
        .store
        .set_credits(provider, threshold, balance)
        .await?;
    Ok(Json(one(&state, provider).await?))
}

pub async fn refresh(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let provider = provider(&name)?;
    let poller = credits::Poller::new(&state.config).map_err(|_| ApiError::Internal)?;
    match credits::refresh(&poller, &state.store, provider).await {
        Ok(_) => Ok(Json(one(&state, provider).await?)),
        Err(RefreshError::Provider(message)) => Err(ApiError::Unavailable(message)),
        Err(RefreshError::Store(error)) => Err(error.into()),
    }
}
