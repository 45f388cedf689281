//! The invariants every usage event respects, whoever produced it: counts
//! and costs within realistic bounds (so sums cannot overflow), subsets
//! within their totals, names present, bounded and free of NUL bytes (which
//! PostgreSQL refuses), metadata small, and a plausible time.

use chrono::{DateTime, TimeZone, Utc};

use super::{InvalidField, UsageEvent};
use crate::money::NanoUsd;

/// The longest model, org, user, error or provider id a record may carry.
pub const MAX_NAME_LENGTH: usize = 256;
/// Tokens of one kind in one record: far above any context window, and low
/// enough that nine million such records still add up inside an i64.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;
/// A record's latency, time to first token or audio duration: 30 days.
const MAX_MILLISECONDS: u64 = 30 * 24 * 3_600 * 1_000;
/// The most one record may cost.
pub const MAX_COST_USD: i64 = 1_000_000;
/// Images in one record.
const MAX_IMAGES: u32 = 10_000;
/// Serialized metadata, in bytes.
const MAX_METADATA_BYTES: usize = 16 * 1024;

fn invalid(field: &'static str, reason: impl Into<String>) -> Result<(), InvalidField> {
    Err(InvalidField {
        field,
        reason: reason.into(),
    })
}

impl UsageEvent {
    /// Checks the event against `now` (a record may not lie beyond
    /// `max_future_skew` in the future).
    pub fn validate(
        &self,
        now: DateTime<Utc>,
        max_future_skew: chrono::Duration,
    ) -> Result<(), InvalidField> {
        self.validate_counts()?;
        self.validate_names()?;
        self.validate_cost()?;
        self.validate_metadata()?;
        let earliest = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(now);
        if self.created_at > now + max_future_skew {
            return invalid(
                "created_at",
                format!("{} is in the future", self.created_at.to_rfc3339()),
            );
        }
        if self.created_at < earliest {
            return invalid("created_at", "is before the year 2000");
        }
        Ok(())
    }

    fn validate_counts(&self) -> Result<(), InvalidField> {
        let extra = &self.extra;
        for (field, value, limit) in [
            ("input_tokens", self.tokens.input, MAX_TOKENS),
            ("output_tokens", self.tokens.output, MAX_TOKENS),
            ("cached_input_tokens", self.tokens.cached_input, MAX_TOKENS),
            ("reasoning_tokens", self.tokens.reasoning, MAX_TOKENS),
            ("latency_ms", self.latency_ms, MAX_MILLISECONDS),
            (
                "time_to_first_token_ms",
                self.time_to_first_token_ms.unwrap_or(0),
                MAX_MILLISECONDS,
            ),
            (
                "usage_details.audio_milliseconds",
                extra.audio_milliseconds,
                MAX_MILLISECONDS,
            ),
        ] {
            if value > limit {
                return invalid(field, format!("{value} is more than the limit of {limit}"));
            }
        }
        if extra
            .images
            .as_ref()
            .is_some_and(|images| images.count > MAX_IMAGES)
        {
            return invalid(
                "usage_details.images.count",
                format!("more than {MAX_IMAGES}"),
            );
        }
        // Each count is at most 10¹², so these sums cannot overflow.
        let input_parts =
            self.tokens.cached_input + extra.input_image_tokens + extra.input_audio_tokens;
        if self.tokens.cached_input > self.tokens.input {
            return invalid(
                "cached_input_tokens",
                "cannot exceed input_tokens (cached tokens are part of the input)",
            );
        }
        if input_parts > self.tokens.input {
            return invalid(
                "usage_details",
                "cached, image and audio input tokens together exceed input_tokens (they are parts of it)",
            );
        }
        if self.tokens.reasoning > self.tokens.output {
            return invalid(
                "reasoning_tokens",
                "cannot exceed output_tokens (reasoning tokens are part of the output)",
            );
        }
        if extra.output_image_tokens + extra.output_audio_tokens > self.tokens.output {
            return invalid(
                "usage_details",
                "image and audio output tokens together exceed output_tokens (they are parts of it)",
            );
        }
        Ok(())
    }

    fn validate_names(&self) -> Result<(), InvalidField> {
        for (field, value, required) in [
            ("model", Some(&self.model), true),
            ("org_id", Some(&self.org_id), true),
            ("user_id", self.user_id.as_ref(), true),
            ("error_type", self.error_type.as_ref(), false),
            (
                "provider_request_id",
                self.provider_request_id.as_ref(),
                false,
            ),
        ] {
            let Some(value) = value else { continue };
            if required && value.trim().is_empty() {
                return invalid(field, "must not be empty");
            }
            if value.len() > MAX_NAME_LENGTH {
                return invalid(field, format!("longer than {MAX_NAME_LENGTH} bytes"));
            }
            if value.contains('\0') {
                return invalid(field, "must not contain NUL characters");
            }
        }
        Ok(())
    }

    fn validate_cost(&self) -> Result<(), InvalidField> {
        let Some(reported) = self.reported_cost else {
            return Ok(());
        };
        if reported.is_negative() {
            return invalid("cost_usd", "must not be negative");
        }
        let limit = NanoUsd::from_nanos(MAX_COST_USD * crate::money::NANOS_PER_USD);
        if reported > limit {
            return invalid(
                "cost_usd",
                format!("more than ${MAX_COST_USD} for one request"),
            );
        }
        Ok(())
    }

    fn validate_metadata(&self) -> Result<(), InvalidField> {
        let mut bytes = 0;
        let mut stack: Vec<&serde_json::Value> = self.metadata.values().collect();
        let mut keys: Vec<&String> = self.metadata.keys().collect();
        while let Some(value) = stack.pop() {
            match value {
                serde_json::Value::String(text) => {
                    bytes += text.len();
                    if text.contains('\0') {
                        return invalid("metadata", "must not contain NUL characters");
                    }
                }
                serde_json::Value::Array(items) => stack.extend(items),
                serde_json::Value::Object(fields) => {
                    keys.extend(fields.keys());
                    stack.extend(fields.values());
                }
                _ => bytes += 8,
            }
            if bytes > MAX_METADATA_BYTES {
                return invalid(
                    "metadata",
                    format!("larger than {MAX_METADATA_BYTES} bytes"),
                );
            }
        }
        for key in keys {
            bytes += key.len();
            if key.contains('\0') {
                return invalid("metadata", "must not contain NUL characters");
            }
        }
        if bytes > MAX_METADATA_BYTES {
            return invalid(
                "metadata",
                format!("larger than {MAX_METADATA_BYTES} bytes"),
            );
        }
        Ok(())
    }
}
