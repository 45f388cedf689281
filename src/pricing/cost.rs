//! The cost of one request from its usage and a model's prices.
//!
//! Follows how the providers bill (OpenAI's convention): cached input tokens
//! are a subset of input tokens and cost the cached rate; reasoning tokens are
//! a subset of output tokens and cost the output rate, so they are not added
//! again. Image and audio token counts are subsets too. The cost is summed in
//! decimal and rounded half-even to the nano-USD once, at the end.

use rust_decimal::Decimal;

use super::ModelPrice;
use super::sheet::PriceSheet;
use crate::money::{MoneyError, NanoUsd};
use crate::usage::{ExtraUsage, TokenCounts};

/// A computed cost, and the prices that were missing and replaced by a
/// conservative fallback (a cache read charged at the full input rate).
/// A cost with fallbacks is an estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub amount: NanoUsd,
    pub fallbacks: Vec<&'static str>,
}

/// Why a request could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("the price list has no `{0}` for this model")]
    MissingPrice(&'static str),
    #[error("no per-image price for size {size} and quality {quality}")]
    NoImagePrice { size: String, quality: String },
    #[error("token subsets exceed their totals ({0})")]
    InconsistentTokens(&'static str),
    #[error("the cost is out of range")]
    Overflow,
}

impl From<MoneyError> for CostError {
    fn from(_: MoneyError) -> Self {
        CostError::Overflow
    }
}

const TOKENS_PER_MTOK: u64 = 1_000_000;
const MILLISECONDS_PER_HOUR: u64 = 3_600_000;

/// Prices one request.
pub fn cost_of(
    model: &ModelPrice,
    tokens: &TokenCounts,
    extra: &ExtraUsage,
) -> Result<Cost, CostError> {
    let sheet = model.sheet_for_input(tokens.input);
    let mut bill = Bill::default();

    let text_input = tokens
        .input
        .checked_sub(tokens.cached_input)
        .and_then(|rest| rest.checked_sub(extra.input_image_tokens))
        .and_then(|rest| rest.checked_sub(extra.input_audio_tokens))
        .ok_or(CostError::InconsistentTokens(
            "cached, image and audio input tokens exceed input tokens",
        ))?;
    let text_output = tokens
        .output
        .checked_sub(extra.output_image_tokens)
        .and_then(|rest| rest.checked_sub(extra.output_audio_tokens))
        .ok_or(CostError::InconsistentTokens(
            "image and audio output tokens exceed output tokens",
        ))?;

    bill.per_mtok(text_input, sheet.input_mtok, Fallback::None, "input_mtok")?;
    // Where a provider bills cache reads but the price list has no cache
    // price, charging the full input rate over-states the cost rather than
    // hiding it, and the record says it is an estimate.
    bill.per_mtok(
        tokens.cached_input,
        sheet.cache_read_mtok,
        Fallback::Flagged(sheet.input_mtok),
        "cache_read_mtok",
    )?;
    // The dataset lists a separate image or audio rate only where it differs
    // from the base rate (gpt-image-1's image output is under output_mtok),
    // so the base rate is the price, not a guess.
    bill.per_mtok(
        extra.input_image_tokens,
        sheet.input_image_mtok,
        Fallback::BaseRate(sheet.input_mtok),
        "input_image_mtok",
    )?;
    bill.per_mtok(
        extra.input_audio_tokens,
        sheet.input_audio_mtok,
        Fallback::BaseRate(sheet.input_mtok),
        "input_audio_mtok",
    )?;
    bill.per_mtok(
        text_output,
        sheet.output_mtok,
        Fallback::None,
        "output_mtok",
    )?;
    bill.per_mtok(
        extra.output_image_tokens,
        sheet.output_image_mtok,
        Fallback::BaseRate(sheet.output_mtok),
        "output_image_mtok",
    )?;
    bill.per_mtok(
        extra.output_audio_tokens,
        sheet.output_audio_mtok,
        Fallback::BaseRate(sheet.output_mtok),
        "output_audio_mtok",
    )?;
    bill.per_request(sheet)?;
    bill.audio_duration(extra.audio_milliseconds, sheet.input_audio_hour)?;
    if let Some(batch) = &extra.images
        && !model.per_image.is_empty()
    {
        let price = model
            .per_image
            .iter()
            .find(|price| price.size == batch.size && price.quality == batch.quality)
            .ok_or_else(|| CostError::NoImagePrice {
                size: batch.size.clone(),
                quality: batch.quality.clone(),
            })?;
        bill.add(
            price
                .usd
                .checked_mul(Decimal::from(batch.count))
                .ok_or(CostError::Overflow)?,
        )?;
    }

    Ok(Cost {
        amount: NanoUsd::from_usd(bill.total_usd)?,
        fallbacks: bill.fallbacks,
    })
}

/// What to charge when a model has no price for some kind of token.
#[derive(Clone, Copy)]
enum Fallback {
    /// Nothing: the request cannot be priced.
    None,
    /// This rate, and the cost becomes an estimate.
    Flagged(Option<Decimal>),
    /// This rate, which is the model's price for these tokens too.
    BaseRate(Option<Decimal>),
}

/// A running decimal total in USD.
#[derive(Default)]
struct Bill {
    total_usd: Decimal,
    fallbacks: Vec<&'static str>,
}

impl Bill {
    fn add(&mut self, usd: Decimal) -> Result<(), CostError> {
        self.total_usd = self.total_usd.checked_add(usd).ok_or(CostError::Overflow)?;
        Ok(())
    }

    /// Charges `count` tokens at `price` per million, or as `fallback` says
    /// when the model has no such price.
    fn per_mtok(
        &mut self,
        count: u64,
        price: Option<Decimal>,
        fallback: Fallback,
        name: &'static str,
    ) -> Result<(), CostError> {
        if count == 0 {
            return Ok(());
        }
        let rate = match (price, fallback) {
            (Some(rate), _) => rate,
            (None, Fallback::BaseRate(Some(rate))) => rate,
            (None, Fallback::Flagged(Some(rate))) => {
                self.fallbacks.push(name);
                rate
            }
            (None, _) => return Err(CostError::MissingPrice(name)),
        };
        let usd = Decimal::from(count)
            .checked_mul(rate)
            .and_then(|product| product.checked_div(Decimal::from(TOKENS_PER_MTOK)))
            .ok_or(CostError::Overflow)?;
        self.add(usd)
    }

    fn per_request(&mut self, sheet: &PriceSheet) -> Result<(), CostError> {
        match sheet.requests_kcount {
            Some(per_thousand) => self.add(per_thousand / Decimal::from(1000)),
            None => Ok(()),
        }
    }

    fn audio_duration(
        &mut self,
        milliseconds: u64,
        per_hour: Option<Decimal>,
    ) -> Result<(), CostError> {
        if milliseconds == 0 {
            return Ok(());
        }
        let per_hour = per_hour.ok_or(CostError::MissingPrice("input_audio_hour"))?;
        let usd = Decimal::from(milliseconds)
            .checked_mul(per_hour)
            .and_then(|product| product.checked_div(Decimal::from(MILLISECONDS_PER_HOUR)))
            .ok_or(CostError::Overflow)?;
        self.add(usd)
    }
}
