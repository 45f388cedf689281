//! `tollgate budgets list|set|delete|status`: the same validation as the
//! API, from flags.

use std::io::Write;

use chrono::{SubsecRound, Utc};
use clap::Subcommand;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::CliError;
use crate::budget::enforcer::{Budgets, EnforcerSettings};
use crate::budget::{self, Budget, BudgetInput};
use crate::store::{Scope, Store};

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once from the command line"
)]
pub enum BudgetsCommand {
    /// List budgets.
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Create a budget, or with --id change the settings given.
    Set {
        /// The budget to change; without it a new budget is created.
        #[arg(long)]
        id: Option<Uuid>,
        #[arg(long)]
        org: Option<String>,
        /// daily, weekly or monthly.
        #[arg(long = "type", value_name = "TYPE")]
        budget_type: Option<String>,
        /// USD per period, e.g. 25 or 0.50.
        #[arg(long, value_name = "USD", allow_hyphen_values = true)]
        amount: Option<String>,
        /// Only this provider's spend (openai, openrouter, local).
        #[arg(long)]
        provider: Option<String>,
        /// Only this user's spend.
        #[arg(long)]
        user: Option<String>,
        /// Only this gateway key's spend (its id).
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// Soft thresholds in percent, e.g. 50,80,100.
        #[arg(long, value_name = "PERCENTS", value_delimiter = ',')]
        soft: Option<Vec<u32>>,
        /// Block requests that do not fit (a hard limit).
        #[arg(long, conflicts_with = "soft_only")]
        hard: bool,
        /// Only warn (a soft limit; the default for new budgets).
        #[arg(long)]
        soft_only: bool,
        /// none, carry_unused or carry_overage.
        #[arg(long)]
        rollover: Option<String>,
        /// At most this much USD carried over (carry_unused).
        #[arg(long, value_name = "USD", allow_hyphen_values = true)]
        rollover_cap: Option<String>,
        /// The date periods are anchored on (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        reset_date: Option<String>,
        /// An IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Delete a budget.
    Delete { id: Uuid },
    /// Where a budget stands in its current period.
    Status { id: Uuid },
}

pub async fn run(
    store: &Store,
    command: BudgetsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        BudgetsCommand::List { org } => {
            writeln!(
                out,
                "{:<36}  {:<16}  {:<8}  {:>14}  {:<4}  {:<10}  SCOPE",
                "ID", "ORG", "TYPE", "AMOUNT USD", "HARD", "TIME ZONE"
            )?;
            for budget in store.budgets(&Scope::All, org.as_deref()).await? {
                writeln!(
                    out,
                    "{:<36}  {:<16}  {:<8}  {:>14}  {:<4}  {:<10}  {}",
                    budget.id,
                    budget.org_id,
                    budget.budget_type.as_str(),
                    budget.amount.to_string(),
                    if budget.hard_limit { "yes" } else { "no" },
                    budget.timezone.name(),
                    scope_text(&budget),
                )?;
            }
        }
        BudgetsCommand::Set {
            id,
            org,
            budget_type,
            amount,
            provider,
            user,
            key,
            soft,
            hard,
            soft_only,
            rollover,
            rollover_cap,
            reset_date,
            timezone,
        } => {
            let mut fields = Map::new();
            let mut put = |name: &str, value: Option<Value>| {
                if let Some(value) = value {
                    fields.insert(name.to_owned(), value);
                }
            };
            put("org_id", org.map(Value::from));
            put("budget_type", budget_type.map(Value::from));
            put("budget_amount_usd", amount.map(Value::from));
            put("provider", provider.map(Value::from));
            put("user_id", user.map(Value::from));
            put("api_key_id", key.map(Value::from));
            put("soft_limit_percent", soft.map(Value::from));
            put(
                "hard_limit",
                (hard || soft_only).then_some(Value::from(hard)),
            );
            put("rollover_policy", rollover.map(Value::from));
            put("rollover_cap_usd", rollover_cap.map(Value::from));
            put("reset_date", reset_date.map(Value::from));
            put("timezone", timezone.map(Value::from));
            let text = Value::Object(fields).to_string();
            let input: BudgetInput<'_> = serde_json::from_str(&text)
                .map_err(|error| CliError::Invalid(error.to_string()))?;
            let now = Utc::now().trunc_subsecs(6);
            let flag = |error: budget::InvalidBudget| {
                CliError::Invalid(format!("{}: {}", flag_for(&error.param), error.message))
            };
            let (budget, created) = match id {
                None => (input.create(Uuid::now_v7(), now).map_err(flag)?, true),
                Some(id) => {
                    let stored = store
                        .budget(&Scope::All, id)
                        .await?
                        .ok_or_else(|| CliError::Invalid(format!("no budget {id}")))?;
                    (input.apply(stored, now).map_err(flag)?, false)
                }
            };
            if let Some(error) = budget::check_references(store, &budget).await? {
                return Err(flag(error));
            }
            if created {
                store.insert_budget(&Scope::All, &budget).await?;
            } else if !store.update_budget(&Scope::All, &budget).await? {
                return Err(CliError::Invalid(format!("no budget {}", budget.id)));
            }
            let action = if created {
                "budget.create"
            } else {
                "budget.update"
            };
            let target = Some(budget.id.to_string());
            super::audit(store, action, target, Some(budget.org_id.clone())).await;
            writeln!(out, "{}", budget.id)?;
            tracing::info!(id = %budget.id, created, "budget saved");
        }
        BudgetsCommand::Delete { id } => {
            if !store.delete_budget(&Scope::All, id).await? {
                return Err(CliError::Invalid(format!("no budget {id}")));
            }
            super::audit(store, "budget.delete", Some(id.to_string()), None).await;
            writeln!(out, "Deleted budget {id}.")?;
        }
        BudgetsCommand::Status { id } => {
            let budget = store
                .budget(&Scope::All, id)
                .await?
                .ok_or_else(|| CliError::Invalid(format!("no budget {id}")))?;
            let status = Budgets::new(store.clone(), EnforcerSettings::default())
                .status(&budget)
                .await?;
            let rows = [
                (
                    "period",
                    format!("{} .. {}", status.period.start, status.period.end),
                ),
                ("amount USD", status.amount.to_string()),
                ("rollover USD", status.rollover.to_string()),
                ("limit USD", status.limit.to_string()),
                ("spent USD", status.spent.to_string()),
                ("reserved USD", status.reserved.to_string()),
                ("remaining USD", status.remaining.to_string()),
                ("state", status.state.as_str().to_owned()),
                (
                    "exhausted at (projected)",
                    status
                        .projected_exhaustion
                        .map_or_else(|| "-".to_owned(), |at| at.to_string()),
                ),
            ];
            for (name, value) in rows {
                writeln!(out, "{name:<26}{value}")?;
            }
        }
    }
    Ok(())
}

fn scope_text(budget: &Budget) -> String {
    let mut parts = Vec::new();
    if let Some(provider) = budget.scope.provider {
        parts.push(format!("provider={provider}"));
    }
    if let Some(user) = &budget.scope.user_id {
        parts.push(format!("user={user}"));
    }
    if let Some(key) = budget.scope.api_key_id {
        parts.push(format!("key={key}"));
    }
    if parts.is_empty() {
        "org".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The flag a budget field comes from.
fn flag_for(param: &str) -> &'static str {
    match param {
        "org_id" => "--org",
        "budget_type" => "--type",
        "budget_amount_usd" => "--amount",
        "provider" => "--provider",
        "user_id" => "--user",
        "api_key_id" => "--key",
        "soft_limit_percent" => "--soft",
        "hard_limit" => "--hard",
        "rollover_policy" => "--rollover",
        "rollover_cap_usd" => "--rollover-cap",
        "reset_date" => "--reset-date",
        "timezone" => "--timezone",
        _ => "budget",
    }
}
