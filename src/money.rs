//! Money as integer nano-USD.
//!
//! Every amount Tollgate stores or adds up is a [`NanoUsd`]: one US dollar is
//! 1,000,000,000 nano-USD. Arithmetic is checked, so an overflow is an error a
//! caller must handle rather than a silently wrong total. Conversions to and
//! from decimal USD go through `rust_decimal` and round half-even, once.
//! This module is pure: no IO, no floats.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Nano-USD in one US dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of money in nano-USD (10⁻⁹ USD).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NanoUsd(i64);

/// Why a money value could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is out of range")]
    Overflow,
    #[error("`{0}` is not a decimal USD amount")]
    NotADecimal(String),
}

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        NanoUsd(nanos)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// Rounds a decimal USD amount half-even to the nearest nano-USD.
    pub fn from_usd(usd: Decimal) -> Result<Self, MoneyError> {
        let nanos = usd
            .checked_mul(Decimal::from(NANOS_PER_USD))
            .ok_or(MoneyError::Overflow)?
            .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        i64::try_from(nanos)
            .map(NanoUsd)
            .map_err(|_| MoneyError::Overflow)
    }

    /// Parses a decimal USD string such as `"0.0012"`.
    pub fn parse_usd(text: &str) -> Result<Self, MoneyError> {
        let usd = Decimal::from_str(text.trim())
            .or_else(|_| Decimal::from_scientific(text.trim()))
            .map_err(|_| MoneyError::NotADecimal(text.to_owned()))?;
        Self::from_usd(usd)
    }

    /// The exact amount in USD (nine decimal places at most).
    pub fn to_usd(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 9).normalize()
    }

    pub fn checked_add(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_add(other.0).map(NanoUsd)
    }

    pub fn checked_sub(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_sub(other.0).map(NanoUsd)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for NanoUsd {
    /// Formats as a USD decimal with up to nine places, e.g. `0.0025`: the
    /// same text as [`NanoUsd::to_usd`], written from the integers (exports
    /// format millions of these).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let per_usd = NANOS_PER_USD.unsigned_abs();
        let (whole, mut fraction) = (magnitude / per_usd, magnitude % per_usd);
        if fraction == 0 {
            return write!(formatter, "{sign}{whole}");
        }
        let mut places = 9;
        while fraction % 10 == 0 {
            fraction /= 10;
            places -= 1;
        }
        write!(formatter, "{sign}{whole}.{fraction:0places$}")
    }
}

/// Adds amounts: the exact total when it fits, `None` when it does not
/// (never a wrapped value). Partial sums are kept wider, so the answer does
/// not depend on the order (a large credit after a large charge is fine).
pub fn checked_sum<I: IntoIterator<Item = NanoUsd>>(amounts: I) -> Option<NanoUsd> {
    let total = amounts.into_iter().try_fold(0_i128, |total, amount| {
        total.checked_add(i128::from(amount.nanos()))
    })?;
    i64::try_from(total).ok().map(NanoUsd::from_nanos)
}

/// A USD amount given as a JSON string or number, read as exact decimal
/// text (never through a float); `null` is `None`; negative is an error.
pub fn parse_usd_json(raw: &serde_json::value::RawValue) -> Result<Option<NanoUsd>, String> {
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    let literal = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    let plain = literal
        .bytes()
        .all(|byte| byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E'));
    if literal.is_empty() || !plain {
        return Err(format!("`{literal}` is not a decimal USD amount"));
    }
    let usd = Decimal::from_str(literal)
        .or_else(|_| Decimal::from_scientific(literal))
        .map_err(|_| format!("`{literal}` is not a decimal USD amount"))?;
    if usd.is_sign_negative() && !usd.is_zero() {
        return Err("must not be negative".to_owned());
    }
    NanoUsd::from_usd(usd)
        .map(Some)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_strings_round_half_even_to_the_nano() {
        let cases = [
            ("0.0012", 1_200_000),
            ("1", 1_000_000_000),
            ("0.0000000005", 0),
            ("0.0000000015", 2),
            ("0.0000000025", 2),
            ("-0.0000000015", -2),
            ("1e-6", 1_000),
            ("9.223372036", 9_223_372_036),
        ];
        for (text, nanos) in cases {
            assert_eq!(NanoUsd::parse_usd(text), Ok(NanoUsd(nanos)), "{text}");
        }
    }

    #[test]
    fn amounts_too_large_or_not_numbers_are_errors() {
        assert_eq!(
            NanoUsd::parse_usd("10000000000000"),
            Err(MoneyError::Overflow)
        );
        assert!(matches!(
            NanoUsd::parse_usd("ten"),
            Err(MoneyError::NotADecimal(_))
        ));
    }

    #[test]
    fn display_is_a_plain_usd_decimal() {
        assert_eq!(NanoUsd(2_500_000).to_string(), "0.0025");
        assert_eq!(NanoUsd(3_000_000_000).to_string(), "3");
        assert_eq!(NanoUsd(-1).to_string(), "-0.000000001");
        for nanos in [
            0,
            1,
            10,
            999_999_999,
            1_000_000_001,
            1_234_500_000,
            -2_500_000,
            -7_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                NanoUsd(nanos).to_string(),
                NanoUsd(nanos).to_usd().to_string(),
                "{nanos}"
            );
        }
    }

    #[test]
    fn sums_fail_on_overflow_rather_than_wrap() {
        assert_eq!(checked_sum([NanoUsd(1), NanoUsd(2)]), Some(NanoUsd(3)));
        assert_eq!(checked_sum([NanoUsd(i64::MAX), NanoUsd(1)]), None);
    }
}
