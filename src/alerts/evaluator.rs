//! The periodic evaluator: reads what the rules need from the store,
//! applies every condition that holds (opening or escalating its alert),
//! and resolves the alerts whose conditions no longer hold. Every instance
//! may run it: the database decides which instance's insert or escalation
//! wins, so each change happens once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::rules::{self, BudgetReached, ErrorThresholds, SpendThresholds};
use super::{AlertStatus, AlertType, Applied, Condition};
use crate::budget::status as budget_status;
use crate::store::{Scope, Store, StoreError};

/// The rules' settings.
#[derive(Debug, Clone)]
pub struct EvaluatorSettings {
    pub high_usage: SpendThresholds,
    /// Per-organization daily spend thresholds.
    pub high_usage_by_org: HashMap<String, SpendThresholds>,
    pub errors: ErrorThresholds,
    pub error_window: Duration,
    /// How long an error-rate or quota condition must stay clear before its
    /// alert resolves itself.
    pub resolve_hold: Duration,
    /// The zone of "daily" spend (the rollup's).
    pub timezone: Tz,
}

/// What one evaluation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub conditions: usize,
    pub created: usize,
    pub escalated: usize,
    pub resolved: usize,
}

/// How often an open alert's current value is brought up to date when
/// nothing else about it changes.
const VALUE_REFRESH: Duration = Duration::from_secs(30);

/// Types the evaluator owns (custom alerts are resolved by people).
const EVALUATED: [AlertType; 5] = [
    AlertType::HighUsage,
    AlertType::ErrorRate,
    AlertType::QuotaExceeded,
    AlertType::Budget,
    AlertType::LowBalance,
];

#[derive(Debug, Clone)]
pub struct Evaluator {
    store: Store,
    settings: Arc<EvaluatorSettings>,
    /// When each absent condition was first seen absent (for the hold).
    clear_since: Arc<RwLock<HashMap<String, Instant>>>,
}

impl Evaluator {
    pub fn new(store: Store, settings: EvaluatorSettings) -> Self {
        Evaluator {
            store,
            settings: Arc::new(settings),
            clear_since: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The conditions that hold at `now`.
    pub async fn conditions(&self, now: DateTime<Utc>) -> Result<Vec<Condition>, StoreError> {
        let settings = &self.settings;
        let day = now.with_timezone(&settings.timezone).date_naive();
        let spends = self.store.daily_spend(day).await?;
        let mut conditions = rules::high_usage(day, &spends, |org| {
            settings
                .high_usage_by_org
                .get(org)
                .copied()
                .unwrap_or(settings.high_usage)
        });
        let window = chrono::Duration::from_std(settings.error_window)
            .unwrap_or(chrono::Duration::minutes(15));
        let counts = self.store.window_counts(now - window).await?;
        conditions.extend(rules::error_rate(
            &counts,
            settings.errors,
            window.num_minutes(),
        ));
        conditions.extend(rules::budgets(&self.budgets_reached(now).await?));
        conditions.extend(rules::credits(&self.store.credits().await?));
        Ok(conditions)
    }

    /// Thresholds reached in budgets' current periods.
    async fn budgets_reached(&self, now: DateTime<Utc>) -> Result<Vec<BudgetReached>, StoreError> {
        // Monthly periods are the longest: 31 days back covers them all.
        let reached = self
            .store
            .budget_thresholds_reached(now - chrono::Duration::days(32))
            .await?;
        if reached.is_empty() {
            return Ok(Vec::new());
        }
        let budgets: HashMap<_, _> = self
            .store
            .budgets(&crate::store::Scope::All, None)
            .await?
            .into_iter()
            .map(|budget| (budget.id, budget))
            .collect();
        Ok(reached
            .into_iter()
            .filter_map(|(budget_id, period_start, percent)| {
                let budget = budgets.get(&budget_id)?;
                let period = budget_status::current_period(budget, now);
                (period.start == period_start).then(|| BudgetReached {
                    budget_id,
                    org_id: budget.org_id.clone(),
                    provider: budget.scope.provider,
                    period_start,
                    percent,
                    hard_limit: budget.hard_limit,
                    limit: budget.amount,
                })
            })
            .collect())
    }

    /// One round: apply what holds, resolve what cleared.
    pub async fn evaluate(&self, now: DateTime<Utc>) -> Result<Evaluation, StoreError> {
        let conditions = self.conditions(now).await?;
        let mut evaluation = Evaluation {
            conditions: conditions.len(),
            ..Evaluation::default()
        };
        // What is open already, read once: a condition that neither opens,
        // escalates nor moves its alert's value (refreshed at most every
        // `VALUE_REFRESH`) costs no write, so a round with hundreds of open
        // alerts does not queue behind the ledger's writer.
        let open = self.store.open_alerts(&EVALUATED).await?;
        let open_by_key: HashMap<&str, &super::Alert> = open
            .iter()
            .filter_map(|alert| alert.dedupe_key.as_deref().map(|key| (key, alert)))
            .collect();
        for condition in &conditions {
            if let Some(alert) = open_by_key.get(condition.dedupe_key.as_str()) {
                let stale = (now - alert.updated_at)
                    .to_std()
                    .is_ok_and(|age| age >= VALUE_REFRESH);
                let moved = alert.current_value != condition.current_value;
                if condition.severity <= alert.severity && !(moved && stale) {
                    continue;
                }
            }
            match self.store.apply_condition(condition, now).await? {
                Applied::Created(id) => {
                    evaluation.created += 1;
                    tracing::warn!(alert = %id, key = %condition.dedupe_key, severity = %condition.severity, "{}", condition.title);
                }
                Applied::Escalated(id) => {
                    evaluation.escalated += 1;
                    tracing::warn!(alert = %id, key = %condition.dedupe_key, severity = %condition.severity, "escalated: {}", condition.title);
                }
                Applied::Unchanged(_) | Applied::Suppressed => {}
            }
        }
        let holding: HashSet<&str> = conditions
            .iter()
            .map(|condition| condition.dedupe_key.as_str())
            .collect();
        let mut clear_since = self
            .clear_since
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        clear_since.retain(|key, _| !holding.contains(key.as_str()));
        let mut to_resolve = Vec::new();
        for alert in open {
            let Some(key) = alert.dedupe_key.clone() else {
                continue;
            };
            if holding.contains(key.as_str()) {
                continue;
            }
            // A new day or period, or a budget back under its thresholds,
            // resolves at once; error rates and quota wait out the hold.
            let hold = match alert.alert_type {
                AlertType::ErrorRate | AlertType::QuotaExceeded => self.settings.resolve_hold,
                _ => Duration::ZERO,
            };
            let since = *clear_since.entry(key).or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                to_resolve.push(alert.id);
            }
        }
        *self
            .clear_since
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = clear_since;
        for id in to_resolve {
            if let Some(alert) = self
                .store
                .change_alert_status(&Scope::All, id, AlertStatus::Resolved, None, now)
                .await?
                && alert.resolved_by.is_none()
            {
                evaluation.resolved += 1;
                tracing::info!(alert = %id, "resolved: the condition cleared");
            }
        }
        let cleared: Vec<String> = self
            .store
            .uncleared_manual_keys()
            .await?
            .into_iter()
            .filter(|key| !holding.contains(key.as_str()))
            .collect();
        self.store.mark_conditions_cleared(&cleared).await?;
        Ok(evaluation)
    }
}

/// Parses "10,25,50"-style USD thresholds (medium, high, critical).
pub fn spend_thresholds(values: &[String]) -> Result<SpendThresholds, String> {
    let parsed: Vec<crate::money::NanoUsd> = values
        .iter()
        .map(|value| {
            crate::money::NanoUsd::parse_usd(value).map_err(|error| format!("`{value}`: {error}"))
        })
        .collect::<Result<_, _>>()?;
    match parsed[..] {
        [medium, high, critical] if medium <= high && high <= critical => Ok(SpendThresholds {
            medium,
            high,
            critical,
        }),
        _ => Err("give three ascending amounts: medium, high, critical".to_owned()),
    }
}

/// Error-rate thresholds from percentages.
pub fn error_thresholds(high: u32, critical: u32, min_requests: u32) -> ErrorThresholds {
    ErrorThresholds {
        high_percent: Decimal::from(high),
        critical_percent: Decimal::from(critical),
        min_requests: i64::from(min_requests),
    }
}
