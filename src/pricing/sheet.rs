//! Price sheets: what one model costs, per million tokens and per unit.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The prices of one model in USD. Token prices are per million tokens; the
/// others say their unit in the name. A missing price is `None`, never zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSheet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_audio_read_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_audio_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_image_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_image_read_mtok: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_image_mtok: Option<Decimal>,
    /// Per thousand requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_kcount: Option<Decimal>,
    /// Per hour of input audio (duration-billed transcription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio_hour: Option<Decimal>,
    /// Per million input characters (text to speech).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_mchars: Option<Decimal>,
}

impl PriceSheet {
    /// Every price with its name, in a fixed order, for display.
    pub fn entries(&self) -> Vec<(&'static str, Decimal)> {
        let named = [
            ("input_mtok", self.input_mtok),
            ("cache_read_mtok", self.cache_read_mtok),
            ("cache_write_mtok", self.cache_write_mtok),
            ("output_mtok", self.output_mtok),
            ("input_audio_mtok", self.input_audio_mtok),
            ("cache_audio_read_mtok", self.cache_audio_read_mtok),
            ("output_audio_mtok", self.output_audio_mtok),
            ("input_image_mtok", self.input_image_mtok),
            ("cache_image_read_mtok", self.cache_image_read_mtok),
            ("output_image_mtok", self.output_image_mtok),
            ("requests_kcount", self.requests_kcount),
            ("input_audio_hour", self.input_audio_hour),
            ("input_mchars", self.input_mchars),
        ];
        named
            .into_iter()
            .filter_map(|(name, price)| price.map(|price| (name, price)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

/// Prices that replace the base sheet once a request's input tokens exceed
/// `above_input_tokens` (long-context pricing). They apply to the whole request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub prices: PriceSheet,
}

/// A flat price for one generated image of a size and quality (DALL·E).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePrice {
    pub size: String,
    pub quality: String,
    pub usd: Decimal,
}
