//! Budgets: what a budget is, how a new one is validated, its periods and
//! rollover ([`period`]), and what its status is ([`status`]). Enforcement
//! in the gateway lives in [`enforcer`].

pub mod enforcer;
pub mod period;
pub mod spend;
pub mod status;

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::money::{self, NanoUsd};
use crate::usage::{Provider, named_enum};

named_enum!(
    /// How long a budget period lasts.
    BudgetType, "budget type" {
        Daily => "daily",
        Weekly => "weekly",
        Monthly => "monthly",
    }
);

named_enum!(
    /// What one period's leftover or overspend does to the next.
    RolloverPolicy, "rollover policy" {
        None => "none",
        CarryUnused => "carry_unused",
        CarryOverage => "carry_overage",
    }
);

/// The anchor when none is given: Monday 1 January 2024, so weekly budgets
/// reset on Mondays and monthly ones on the 1st.
pub const DEFAULT_RESET_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2024, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};

/// The largest budget amount accepted: one million USD per period.
const MAX_AMOUNT: NanoUsd = NanoUsd::from_nanos(1_000_000 * money::NANOS_PER_USD);

/// A budget as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub id: Uuid,
    pub org_id: String,
    pub scope: Scope,
    pub budget_type: BudgetType,
    pub amount: NanoUsd,
    /// Soft thresholds in percent of the period's limit, ascending, each
    /// alerted once per period.
    pub soft_limit_percents: Vec<u32>,
    /// Block requests that do not fit (otherwise only warn).
    pub hard_limit: bool,
    pub rollover_policy: RolloverPolicy,
    pub rollover_cap: Option<NanoUsd>,
    pub reset_date: NaiveDate,
    pub timezone: Tz,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a budget narrows its organization to; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    pub provider: Option<Provider>,
    pub user_id: Option<String>,
    pub api_key_id: Option<Uuid>,
}

impl Scope {
    /// Whether spending by this provider, user and key counts toward it.
    pub fn covers(
        &self,
        provider: Provider,
        user_id: Option<&str>,
        api_key_id: Option<Uuid>,
    ) -> bool {
        self.provider.is_none_or(|wanted| wanted == provider)
            && self
                .user_id
                .as_deref()
                .is_none_or(|wanted| Some(wanted) == user_id)
            && self
                .api_key_id
                .is_none_or(|wanted| Some(wanted) == api_key_id)
    }
}

/// A field of a budget request that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct InvalidBudget {
    pub param: String,
    pub message: String,
}

fn invalid(param: &str, message: impl Into<String>) -> InvalidBudget {
    InvalidBudget {
        param: param.to_owned(),
        message: message.into(),
    }
}

/// A budget's settings as a client sends them (`POST`, and `PUT` with every
/// field optional over the stored budget).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetInput<'a> {
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub provider: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub user_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub api_key_id: Option<&'a RawValue>,
    #[serde(default)]
    pub budget_type: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub budget_amount_usd: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub soft_limit_percent: Option<&'a RawValue>,
    #[serde(default)]
    pub hard_limit: Option<bool>,
    #[serde(default)]
    pub rollover_policy: Option<String>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub rollover_cap_usd: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub reset_date: Option<&'a RawValue>,
    #[serde(default)]
    pub timezone: Option<String>,
}

impl BudgetInput<'_> {
    /// A new budget from these settings; `org_id`, `budget_type` and
    /// `budget_amount_usd` are required.
    pub fn create(&self, id: Uuid, now: DateTime<Utc>) -> Result<Budget, InvalidBudget> {
        let org_id = self
            .org_id
            .clone()
            .ok_or_else(|| invalid("org_id", "is required"))?;
        if self.budget_type.is_none() {
            return Err(invalid("budget_type", "is required"));
        }
        if self.budget_amount_usd.is_none() {
            return Err(invalid("budget_amount_usd", "is required"));
        }
        let blank = Budget {
            id,
            org_id,
            scope: Scope::default(),
            budget_type: BudgetType::Monthly,
            amount: NanoUsd::ZERO,
            soft_limit_percents: vec![80],
            hard_limit: false,
            rollover_policy: RolloverPolicy::None,
            rollover_cap: None,
            reset_date: DEFAULT_RESET_DATE,
            timezone: chrono_tz::UTC,
            created_at: now,
            updated_at: now,
        };
        self.apply(blank, now)
    }

    /// `budget` with the fields given here replaced. The organization of a
    /// budget cannot change.
    pub fn apply(&self, mut budget: Budget, now: DateTime<Utc>) -> Result<Budget, InvalidBudget> {
        if let Some(org_id) = &self.org_id {
            if org_id.trim().is_empty() || org_id.len() > 256 {
                return Err(invalid("org_id", "must be 1 to 256 characters"));
            }
            if *org_id != budget.org_id {
                return Err(invalid("org_id", "a budget's organization cannot change"));
            }
        }
        if let Some(raw) = self.provider {
            budget.scope.provider = nullable_text(raw, "provider")?
                .map(|text| {
                    Provider::from_str(&text)
                        .map_err(|error| invalid("provider", error.to_string()))
                })
                .transpose()?;
        }
        if let Some(raw) = self.user_id {
            budget.scope.user_id = nullable_text(raw, "user_id")?;
            if budget
                .scope
                .user_id
                .as_ref()
                .is_some_and(|user| user.is_empty() || user.len() > 256)
            {
                return Err(invalid("user_id", "must be 1 to 256 characters"));
            }
        }
        if let Some(raw) = self.api_key_id {
            budget.scope.api_key_id = nullable_text(raw, "api_key_id")?
                .map(|text| {
                    Uuid::parse_str(&text).map_err(|_| {
                        invalid("api_key_id", format!("`{text}` is not a key id (a UUID)"))
                    })
                })
                .transpose()?;
        }
        if let Some(text) = &self.budget_type {
            budget.budget_type = BudgetType::from_str(text)
                .map_err(|error| invalid("budget_type", error.to_string()))?;
        }
        if let Some(raw) = self.budget_amount_usd {
            let amount = money::parse_usd_json(raw)
                .map_err(|message| invalid("budget_amount_usd", message))?
                .ok_or_else(|| invalid("budget_amount_usd", "must be a USD amount, not null"))?;
            if amount > MAX_AMOUNT {
                return Err(invalid("budget_amount_usd", "must be at most 1000000 USD"));
            }
            budget.amount = amount;
        }
        if let Some(raw) = self.soft_limit_percent {
            budget.soft_limit_percents = parse_thresholds(raw)?;
        }
        if let Some(hard) = self.hard_limit {
            budget.hard_limit = hard;
        }
        if let Some(text) = &self.rollover_policy {
            budget.rollover_policy = RolloverPolicy::from_str(text)
                .map_err(|error| invalid("rollover_policy", error.to_string()))?;
        }
        if let Some(raw) = self.rollover_cap_usd {
            budget.rollover_cap = money::parse_usd_json(raw)
                .map_err(|message| invalid("rollover_cap_usd", message))?;
            if budget.rollover_cap.is_some_and(|cap| cap > MAX_AMOUNT) {
                return Err(invalid("rollover_cap_usd", "must be at most 1000000 USD"));
            }
        }
        if budget.rollover_cap.is_some() && budget.rollover_policy != RolloverPolicy::CarryUnused {
            return Err(invalid(
                "rollover_cap_usd",
                "applies only to the `carry_unused` rollover policy",
            ));
        }
        if let Some(raw) = self.reset_date {
            budget.reset_date = match nullable_text(raw, "reset_date")? {
                None => DEFAULT_RESET_DATE,
                Some(text) => NaiveDate::from_str(&text).map_err(|_| {
                    invalid("reset_date", format!("`{text}` is not a date (YYYY-MM-DD)"))
                })?,
            };
        }
        if let Some(name) = &self.timezone {
            budget.timezone = Tz::from_str(name).map_err(|_| {
                invalid(
                    "timezone",
                    format!("`{name}` is not an IANA time zone (e.g. Europe/Paris)"),
                )
            })?;
        }
        budget.updated_at = now;
        Ok(budget)
    }
}

/// A field given, even as `null` (serde reads a `null` into `None` unless
/// told otherwise, and `null` means "clear" here).
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// What only the database can tell about a budget: that its organization
/// exists and the key it is scoped to belongs to it. `Ok(Some(_))` names
/// the field at fault.
pub async fn check_references(
    store: &crate::store::Store,
    budget: &Budget,
) -> Result<Option<InvalidBudget>, crate::store::StoreError> {
    if !store.org_exists(&budget.org_id).await? {
        return Ok(Some(invalid(
            "org_id",
            format!("unknown organization `{}`", budget.org_id),
        )));
    }
    if let Some(key_id) = budget.scope.api_key_id {
        match store.key_org(key_id).await? {
            Some(org) if org == budget.org_id => {}
            Some(_) => {
                return Ok(Some(invalid(
                    "api_key_id",
                    format!("key {key_id} belongs to another organization"),
                )));
            }
            None => return Ok(Some(invalid("api_key_id", format!("unknown key {key_id}")))),
        }
    }
    Ok(None)
}

/// A JSON string or null.
fn nullable_text(raw: &RawValue, param: &str) -> Result<Option<String>, InvalidBudget> {
    serde_json::from_str::<Option<String>>(raw.get())
        .map_err(|_| invalid(param, "must be a string or null"))
}

/// One percentage or a list of them, each 1 to 100; sorted, deduplicated.
fn parse_thresholds(raw: &RawValue) -> Result<Vec<u32>, InvalidBudget> {
    const PARAM: &str = "soft_limit_percent";
    let values: Vec<u32> = if raw.get().trim_start().starts_with('[') {
        serde_json::from_str(raw.get())
    } else {
        serde_json::from_str(raw.get()).map(|value| vec![value])
    }
    .map_err(|_| invalid(PARAM, "must be a whole percentage or a list of them"))?;
    if values.len() > 10 {
        return Err(invalid(PARAM, "at most 10 thresholds"));
    }
    if let Some(bad) = values.iter().find(|value| !(1..=100).contains(*value)) {
        return Err(invalid(PARAM, format!("{bad} is not between 1 and 100")));
    }
    let unique: BTreeMap<u32, ()> = values.into_iter().map(|value| (value, ())).collect();
    Ok(unique.into_keys().collect())
}

#[cfg(test)]
mod tests;
