//! The reconciliation check: the raw ledger and everything derived from it
//! (rollups, the budget spend aggregate, the alert minutes) must agree to
//! the nano-dollar. Load tests and the crash and outage tests end with it;
//! an operator can run it too (`tollgate check-ledger`).

use serde::Serialize;

use super::{Store, StoreError};
use crate::money::NanoUsd;

/// Requests and cost summed over one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: i64,
    pub cost: NanoUsd,
}

/// The ledger's totals and each derived table's (the alert minutes hold no
/// cost; their cost is the raw ledger's, so only requests are compared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerTotals {
    pub records: Totals,
    pub model_performance: Totals,
    pub daily: Totals,
    pub hourly: Totals,
    pub budget_spend: Totals,
    pub alert_minutes_requests: i64,
}

impl LedgerTotals {
    /// The derived tables that disagree with the raw records, by name.
    pub fn disagreements(&self) -> Vec<&'static str> {
        let mut wrong = Vec::new();
        for (name, totals) in [
            ("ai_model_performance", self.model_performance),
            ("ai_usage_daily", self.daily),
            ("ai_usage_hourly", self.hourly),
            ("ai_budget_spend", self.budget_spend),
        ] {
            if totals != self.records {
                wrong.push(name);
            }
        }
        if self.alert_minutes_requests != self.records.requests {
            wrong.push("ai_usage_minutes");
        }
        wrong
    }
}

const TOTALS: &str = "SELECT \
     (SELECT COUNT(*) FROM ai_provider_usage), \
     (SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_provider_usage), \
     (SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM ai_model_performance), \
     (SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_model_performance), \
     (SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM ai_usage_daily), \
     (SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_usage_daily), \
     (SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM ai_usage_hourly), \
     (SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_usage_hourly), \
     (SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM ai_budget_spend), \
     (SELECT CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ai_budget_spend), \
     (SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM ai_usage_minutes)";

type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

impl Store {
    /// Sums the ledger and its derived tables in one statement (one
    /// snapshot on PostgreSQL; SQLite reads in one transaction too). Only
    /// meaningful while retention has not pruned the raw records.
    pub async fn ledger_totals(&self) -> Result<LedgerTotals, StoreError> {
        let row: Row = match self {
            Store::Sqlite(store) => sqlx::query_as(TOTALS).fetch_one(&store.reader).await?,
            Store::Postgres(store) => sqlx::query_as(TOTALS).fetch_one(&store.pool).await?,
        };
        let totals = |requests, nanos| Totals {
            requests,
            cost: NanoUsd::from_nanos(nanos),
        };
        Ok(LedgerTotals {
            records: totals(row.0, row.1),
            model_performance: totals(row.2, row.3),
            daily: totals(row.4, row.5),
            hourly: totals(row.6, row.7),
            budget_spend: totals(row.8, row.9),
            alert_minutes_requests: row.10,
        })
    }
}
