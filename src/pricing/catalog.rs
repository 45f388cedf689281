//! Reading the embedded catalog and configured prices into [`ModelPrice`]s.

use chrono::NaiveDate;
use serde::Deserialize;

use super::{ImagePrice, ModelPrice, PriceSheet, PriceSource, PriceTier};
use crate::usage::{Provider, UnknownName};

const CATALOG_JSON: &str = include_str!("../../pricing/catalog.json");

/// A catalog or configured price that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the built-in pricing catalog is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("price for `{key}`: {reason}")]
    BadConfiguredPrice { key: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    source: String,
    as_of: NaiveDate,
    models: Vec<CatalogModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogModel {
    provider: Provider,
    id: String,
    #[serde(default)]
    exact: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    context_window: Option<u64>,
    effective_from: Option<NaiveDate>,
    prices: PriceSheet,
    #[serde(default)]
    tiers: Vec<PriceTier>,
    #[serde(default)]
    per_image: Vec<ImagePrice>,
    source_note: Option<String>,
}

/// Parses the catalog embedded at build time.
pub fn builtin() -> Result<Vec<ModelPrice>, CatalogError> {
    let file: CatalogFile = serde_json::from_str(CATALOG_JSON)?;
    let dataset = file.source;
    let as_of = file.as_of;
    Ok(file
        .models
        .into_iter()
        .map(|model| ModelPrice {
            source: match model.source_note {
                Some(note) => PriceSource::Supplement { note, as_of },
                None => PriceSource::Catalog {
                    dataset: dataset.clone(),
                    as_of,
                },
            },
            provider: model.provider,
            id: model.id,
            exact: model.exact,
            prefixes: model.prefixes,
            context_window: model.context_window,
            effective_from: model.effective_from,
            prices: model.prices,
            tiers: model.tiers,
            per_image: model.per_image,
        })
        .collect())
}

/// Turns a configured price, `[pricing.models."<provider>/<model>"]`, into
/// the model's prices. Configured prices are flat token and unit prices; tiers
/// and per-image lists come only from the catalog.
pub fn configured_model_price(key: &str, prices: PriceSheet) -> Result<ModelPrice, CatalogError> {
    let bad = |reason: String| CatalogError::BadConfiguredPrice {
        key: key.to_owned(),
        reason,
    };
    let (provider, model) = key
        .split_once('/')
        .ok_or_else(|| bad("the key must be `<provider>/<model>`".to_owned()))?;
    let provider: Provider = provider
        .parse()
        .map_err(|error: UnknownName| bad(error.to_string()))?;
    if model.is_empty() {
        return Err(bad("the model name is empty".to_owned()));
    }
    if prices.is_empty() {
        return Err(bad("no prices given".to_owned()));
    }
    if let Some((name, _)) = prices
        .entries()
        .into_iter()
        .find(|(_, price)| price.is_sign_negative())
    {
        return Err(bad(format!("`{name}` is negative")));
    }
    Ok(ModelPrice {
        provider,
        id: model.to_owned(),
        exact: Vec::new(),
        prefixes: Vec::new(),
        context_window: None,
        effective_from: None,
        prices,
        tiers: Vec::new(),
        per_image: Vec::new(),
        source: PriceSource::Config,
    })
}
