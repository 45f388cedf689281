//! The rules: observations in, conditions out. Pure; thresholds come from
//! configuration.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{AlertType, Condition, Severity};
use crate::money::NanoUsd;
use crate::usage::Provider;

/// Daily spend thresholds, lowest first: above `medium` is medium, above
/// `high` high, above `critical` critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendThresholds {
    pub medium: NanoUsd,
    pub high: NanoUsd,
    pub critical: NanoUsd,
}

/// Error-rate thresholds in percent, over a window of at least
/// `min_requests` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorThresholds {
    pub high_percent: Decimal,
    pub critical_percent: Decimal,
    pub min_requests: i64,
}

/// One day's spend of an organization, overall (`provider: None`) or on one
/// provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySpend {
    pub org_id: String,
    pub provider: Option<Provider>,
    pub spent: NanoUsd,
}

/// Requests and failures in the window, for one provider and model, or the
/// provider as a whole (`model: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCounts {
    pub provider: Provider,
    pub model: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub quota_errors: i64,
}

/// How far a budget period has got: the highest threshold reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetReached {
    pub budget_id: Uuid,
    pub org_id: String,
    pub provider: Option<Provider>,
    pub period_start: chrono::DateTime<chrono::Utc>,
    pub percent: u32,
    pub hard_limit: bool,
    pub limit: NanoUsd,
}

fn scope_text(provider: Option<Provider>) -> String {
    provider.map_or_else(|| "*".to_owned(), |provider| provider.as_str().to_owned())
}

/// `high_usage`: a day's spend above a threshold, per org and per org ×
/// provider; one alert per scope and day, escalating as spend grows.
pub fn high_usage(
    day: NaiveDate,
    spends: &[DailySpend],
    thresholds: impl Fn(&str) -> SpendThresholds,
) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for spend in spends {
        let limits = thresholds(&spend.org_id);
        let (severity, threshold) = if spend.spent > limits.critical {
            (Severity::Critical, limits.critical)
        } else if spend.spent > limits.high {
            (Severity::High, limits.high)
        } else if spend.spent > limits.medium {
            (Severity::Medium, limits.medium)
        } else {
            continue;
        };
        let on = spend
            .provider
            .map(|provider| format!(" on {provider}"))
            .unwrap_or_default();
        conditions.push(Condition {
            alert_type: AlertType::HighUsage,
            dedupe_key: format!(
                "high_usage:{}:{}:{day}",
                spend.org_id,
                scope_text(spend.provider)
            ),
            org_id: Some(spend.org_id.clone()),
            provider: spend.provider,
            model: None,
            severity,
            title: format!("{} spent over ${threshold}{on} today", spend.org_id),
            message: format!(
                "{} has spent ${}{on} on {day}, above the {severity} threshold of ${threshold}.",
                spend.org_id, spend.spent
            ),
            threshold_value: Some(threshold.to_usd()),
            current_value: Some(spend.spent.to_usd()),
        });
    }
    conditions
}

/// `error_rate` and `quota_exceeded` over the window.
pub fn error_rate(
    counts: &[WindowCounts],
    thresholds: ErrorThresholds,
    window_minutes: i64,
) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for count in counts {
        let scope = match &count.model {
            Some(model) => format!("{} model {model}", count.provider),
            None => count.provider.to_string(),
        };
        let key = format!(
            "{}:{}",
            count.provider,
            count.model.as_deref().unwrap_or("*")
        );
        if count.requests >= thresholds.min_requests && count.requests > 0 {
            let rate = (Decimal::from(count.errors) * Decimal::from(100)
                / Decimal::from(count.requests))
            .round_dp(2);
            let level = if rate > thresholds.critical_percent {
                Some((Severity::Critical, thresholds.critical_percent))
            } else if rate > thresholds.high_percent {
                Some((Severity::High, thresholds.high_percent))
            } else {
                None
            };
            if let Some((severity, threshold)) = level {
                conditions.push(Condition {
                    alert_type: AlertType::ErrorRate,
                    dedupe_key: format!("error_rate:{key}"),
                    org_id: None,
                    provider: Some(count.provider),
                    model: count.model.clone(),
                    severity,
                    title: format!("{rate}% of requests to {scope} are failing"),
                    message: format!(
                        "{} of {} requests to {scope} failed in the last {window_minutes} minutes ({rate}%, {severity} above {threshold}%).",
                        count.errors, count.requests
                    ),
                    threshold_value: Some(threshold),
                    current_value: Some(rate),
                });
            }
        }
        // Quota is per provider: a model-level count would repeat it.
        if count.model.is_none() && count.quota_errors > 0 {
            conditions.push(Condition {
                alert_type: AlertType::QuotaExceeded,
                dedupe_key: format!("quota_exceeded:{}", count.provider),
                org_id: None,
                provider: Some(count.provider),
                model: None,
                severity: Severity::High,
                title: format!("{} says the quota is exhausted", count.provider),
                message: format!(
                    "{} answered {} request(s) with insufficient quota in the last {window_minutes} minutes; add credit or raise the limit.",
                    count.provider, count.quota_errors
                ),
                threshold_value: Some(Decimal::ZERO),
                current_value: Some(Decimal::from(count.quota_errors)),
            });
        }
    }
    conditions
}

/// `budget`: a soft threshold reached (medium below 100%, high at 100% or
/// more of a soft budget) or a hard budget exhausted (critical); one alert
/// per budget and period, escalating as thresholds are passed.
pub fn budgets(reached: &[BudgetReached]) -> Vec<Condition> {
    reached
        .iter()
        .map(|budget| {
            let exhausted = budget.percent >= 100;
            let severity = match (exhausted, budget.hard_limit) {
                (true, true) => Severity::Critical,
                (true, false) => Severity::High,
                (false, _) => Severity::Medium,
            };
            let what = if exhausted && budget.hard_limit {
                "is exhausted; requests under it are refused".to_owned()
            } else {
                format!("has reached {}% of its limit", budget.percent)
            };
            Condition {
                alert_type: AlertType::Budget,
                dedupe_key: format!(
                    "budget:{}:{}",
                    budget.budget_id,
                    budget.period_start.timestamp()
                ),
                org_id: Some(budget.org_id.clone()),
                provider: budget.provider,
                model: None,
                severity,
                title: format!("Budget of {} {what}", budget.org_id),
                message: format!(
                    "Budget {} of {} (limit ${}) {what} in the period that began {}.",
                    budget.budget_id, budget.org_id, budget.limit, budget.period_start
                ),
                threshold_value: Some(Decimal::from(budget.percent)),
                current_value: Some(Decimal::from(budget.percent)),
            }
        })
        .collect()
}

/// `low_balance`: a provider's balance under its threshold (critical at or
/// below zero); `quota_exceeded`: an OpenRouter key whose limit is used up.
pub fn credits(credits: &[crate::credits::Credits]) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for entry in credits {
        if let (Some(balance), Some(threshold)) = (entry.balance, entry.low_balance_threshold)
            && balance < threshold
        {
            let severity = if balance.nanos() <= 0 {
                Severity::Critical
            } else {
                Severity::High
            };
            conditions.push(Condition {
                alert_type: AlertType::LowBalance,
                dedupe_key: format!("low_balance:{}", entry.provider),
                org_id: None,
                provider: Some(entry.provider),
                model: None,
                severity,
                title: format!("{} balance is ${balance}", entry.provider),
                message: format!(
                    "The {} balance is ${balance}, under the ${threshold} threshold; top it up before requests start failing.",
                    entry.provider
                ),
                threshold_value: Some(threshold.to_usd()),
                current_value: Some(balance.to_usd()),
            });
        }
        if entry.key_limit.is_some()
            && entry
                .key_limit_remaining
                .is_some_and(|remaining| remaining.nanos() <= 0)
        {
            conditions.push(Condition {
                alert_type: AlertType::QuotaExceeded,
                dedupe_key: format!("quota_exceeded:{}:key_limit", entry.provider),
                org_id: None,
                provider: Some(entry.provider),
                model: None,
                severity: Severity::Critical,
                title: format!("The {} key's spending limit is used up", entry.provider),
                message: format!(
                    "The configured {} key has no limit remaining (limit ${}); requests will fail with 402 until it is raised or resets.",
                    entry.provider,
                    entry.key_limit.unwrap_or_default()
                ),
                threshold_value: entry.key_limit.map(NanoUsd::to_usd),
                current_value: Some(Decimal::ZERO),
            });
        }
    }
    conditions
}

#[cfg(test)]
mod tests;
