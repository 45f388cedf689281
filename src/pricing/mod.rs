//! The pricing catalog: which model costs what, where that price came from,
//! and the policy for models nobody priced.
//!
//! The built-in catalog is `pricing/catalog.json`, generated from the
//! genai-prices dataset by `scripts/update_pricing.py` and embedded in the
//! binary. Configuration can replace or add any model's prices. Pure: no IO.

mod catalog;
mod cost;
mod sheet;

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use catalog::{CatalogError, configured_model_price};
pub use cost::{Cost, CostError, cost_of};
pub use sheet::{ImagePrice, PriceSheet, PriceTier};

use crate::money::NanoUsd;
use crate::usage::{CostStatus, ExtraUsage, Provider, TokenCounts};

/// Where a model's prices came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PriceSource {
    /// The vendored public dataset, as of a date.
    Catalog { dataset: String, as_of: NaiveDate },
    /// Hand-maintained additions shipped with Tollgate.
    Supplement { note: String, as_of: NaiveDate },
    /// The operator's configuration.
    Config,
}

/// The prices of one model at one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelPrice {
    pub provider: Provider,
    pub id: String,
    pub exact: Vec<String>,
    pub prefixes: Vec<String>,
    pub context_window: Option<u64>,
    pub effective_from: Option<NaiveDate>,
    pub prices: PriceSheet,
    pub tiers: Vec<PriceTier>,
    pub per_image: Vec<ImagePrice>,
    pub source: PriceSource,
}

impl ModelPrice {
    /// The sheet that applies to a request with this many input tokens: the
    /// highest tier whose threshold the request exceeds, else the base sheet.
    pub fn sheet_for_input(&self, input_tokens: u64) -> &PriceSheet {
        self.tiers
            .iter()
            .filter(|tier| input_tokens > tier.above_input_tokens)
            .max_by_key(|tier| tier.above_input_tokens)
            .map_or(&self.prices, |tier| &tier.prices)
    }
}

/// What to do with a request for a model that has no price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnpricedPolicy {
    /// Record it with `cost_status = unpriced` and no cost.
    #[default]
    Record,
    /// Refuse it (the gateway answers 400; the ingest API 422).
    Reject,
}

/// The outcome of pricing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub cost: Option<NanoUsd>,
    pub estimated_cost: Option<NanoUsd>,
    pub status: CostStatus,
    /// Why the cost is missing or estimated, for the record's metadata.
    pub note: Option<String>,
}

/// The catalog plus configuration: answers "what did this request cost?".
#[derive(Debug, Clone)]
pub struct Pricing {
    models: Vec<ModelPrice>,
    exact: HashMap<(Provider, String), usize>,
    prefixes: Vec<(Provider, String, usize)>,
    local_models_free: bool,
    unpriced_policy: UnpricedPolicy,
}

impl Pricing {
    /// The built-in catalog with configured prices laid over it.
    pub fn new(
        overrides: Vec<ModelPrice>,
        local_models_free: bool,
        unpriced_policy: UnpricedPolicy,
    ) -> Result<Self, CatalogError> {
        let mut models = catalog::builtin()?;
        for model in overrides {
            models.retain(|existing| {
                !(existing.provider == model.provider && existing.id == model.id)
            });
            models.push(model);
        }
        let mut pricing = Pricing {
            models,
            exact: HashMap::new(),
            prefixes: Vec::new(),
            local_models_free,
            unpriced_policy,
        };
        pricing.index();
        Ok(pricing)
    }

    fn index(&mut self) {
        self.exact.clear();
        self.prefixes.clear();
        // Configured models come last in `models` and are indexed last, so
        // their names win over the catalog's.
        for (position, model) in self.models.iter().enumerate() {
            self.exact
                .insert((model.provider, model.id.to_lowercase()), position);
            for name in &model.exact {
                self.exact
                    .insert((model.provider, name.to_lowercase()), position);
            }
            for prefix in &model.prefixes {
                self.prefixes
                    .push((model.provider, prefix.to_lowercase(), position));
            }
        }
        // Longest prefix first, so `gpt-4o-mini` beats `gpt-4o`.
        self.prefixes
            .sort_by_key(|(_, prefix, _)| std::cmp::Reverse(prefix.len()));
    }

    pub fn models(&self) -> &[ModelPrice] {
        &self.models
    }

    pub fn unpriced_policy(&self) -> UnpricedPolicy {
        self.unpriced_policy
    }

    /// Finds a model's prices by the name a client or provider used, with or
    /// without the provider prefix (`openai/gpt-4o`, `openrouter/openai/gpt-4o`).
    pub fn lookup(&self, provider: Provider, model: &str) -> Option<&ModelPrice> {
        let name = model.trim().to_lowercase();
        let own_prefix = format!("{}/", provider.as_str());
        let bare = name.strip_prefix(&own_prefix).unwrap_or(&name);
        let candidates = [Some(bare), strip_date_suffix(bare)];
        for candidate in candidates.into_iter().flatten() {
            if let Some(position) = self.exact.get(&(provider, candidate.to_owned())) {
                return self.models.get(*position);
            }
        }
        self.prefixes
            .iter()
            .find(|(owner, prefix, _)| *owner == provider && bare.starts_with(prefix.as_str()))
            .and_then(|(_, _, position)| self.models.get(*position))
    }

    /// Prices a request. A provider-reported cost wins and the catalog's
    /// estimate is kept beside it; a model with no price is unpriced, never $0
    /// (local models excepted when they are configured to be free).
    pub fn price(
        &self,
        provider: Provider,
        model: &str,
        tokens: &TokenCounts,
        extra: &ExtraUsage,
        reported: Option<NanoUsd>,
    ) -> Priced {
        let estimate = match self.lookup(provider, model) {
            Some(prices) => cost_of(prices, tokens, extra).map_err(|error| error.to_string()),
            None if provider == Provider::Local && self.local_models_free => Ok(Cost {
                amount: NanoUsd::ZERO,
                fallbacks: Vec::new(),
            }),
            // OpenRouter's `:free` variants cost nothing by definition; the
            // dataset lists them without prices.
            None if provider == Provider::OpenRouter && model.trim().ends_with(":free") => {
                Ok(Cost {
                    amount: NanoUsd::ZERO,
                    fallbacks: Vec::new(),
                })
            }
            None => Err(format!("no price for {provider} model `{model}`")),
        };
        match (reported, estimate) {
            // A reported $0 against a non-zero price is how streams without
            // usage were once recorded free; the estimate is kept instead.
            (Some(reported), Ok(cost))
                if reported == NanoUsd::ZERO && cost.amount > NanoUsd::ZERO =>
            {
                Priced {
                    cost: Some(cost.amount),
                    estimated_cost: Some(cost.amount),
                    status: CostStatus::Estimated,
                    note: Some("the provider reported $0; the catalog price is used".to_owned()),
                }
            }
            (Some(reported), estimate) => Priced {
                cost: Some(reported),
                estimated_cost: estimate.ok().map(|cost| cost.amount),
                status: CostStatus::ProviderReported,
                note: None,
            },
            (None, Ok(cost)) if cost.fallbacks.is_empty() => Priced {
                cost: Some(cost.amount),
                estimated_cost: None,
                status: CostStatus::Priced,
                note: None,
            },
            (None, Ok(cost)) => Priced {
                cost: Some(cost.amount),
                estimated_cost: None,
                status: CostStatus::Estimated,
                note: Some(format!(
                    "missing {}; charged at the base rate",
                    cost.fallbacks.join(", ")
                )),
            },
            (None, Err(reason)) => Priced {
                cost: None,
                estimated_cost: None,
                status: CostStatus::Unpriced,
                note: Some(reason),
            },
        }
    }
}

/// `gpt-4o-2024-08-06` or `claude-x-20250514` → the family name: dated
/// snapshots share their family's price when the catalog does not list the
/// snapshot itself.
fn strip_date_suffix(name: &str) -> Option<&str> {
    let digits = |text: &str, length: usize| {
        text.len() == length && text.bytes().all(|byte| byte.is_ascii_digit())
    };
    let (rest, last) = name.rsplit_once('-')?;
    if digits(last, 8) {
        return Some(rest);
    }
    let (rest, month) = rest.rsplit_once('-')?;
    let (stem, year) = rest.rsplit_once('-')?;
    (digits(year, 4) && digits(month, 2) && digits(last, 2)).then_some(stem)
}

#[cfg(test)]
mod tests;
