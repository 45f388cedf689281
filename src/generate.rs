//! Synthetic usage for tests, demos and benchmarks: `records` events spread
//! over the `days` before `end`, with the shapes real traffic has — more on
//! weekdays and in working hours, a steady growth trend, a few heavy users
//! per org, a mix of chat, embedding and reasoning models on all three
//! providers, streams, errors, and tags. Pure and deterministic: the same
//! settings give the same events, request ids included, so filling a
//! database twice adds nothing the second time.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc, Weekday};
use serde_json::json;
use uuid::Uuid;

use crate::money::NanoUsd;
use crate::usage::{ExtraUsage, Provider, RecordStatus, TaskType, TokenCounts, UsageEvent};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub records: u64,
    pub days: u32,
    /// The instant the generated period ends (exclusive).
    pub end: DateTime<Utc>,
    pub seed: u64,
    pub orgs: u32,
    pub users_per_org: u32,
}

impl Settings {
    /// `records` over the `days` before `end`, 4 orgs of 12 users.
    pub fn new(records: u64, days: u32, end: DateTime<Utc>) -> Self {
        Settings {
            records,
            days,
            end,
            seed: 1,
            orgs: 4,
            users_per_org: 12,
        }
    }
}

/// A model the generator uses, and the shape of its requests.
struct ModelProfile {
    provider: Provider,
    model: &'static str,
    task_type: TaskType,
    /// Relative share of requests.
    weight: u64,
    input_tokens: (u64, u64),
    output_tokens: (u64, u64),
    /// Percent of output tokens that are reasoning tokens.
    reasoning_percent: u64,
    /// Typical latency in milliseconds.
    latency_ms: u64,
    /// Nano-USD per token, input and output, for the cost OpenRouter reports.
    reported_nanos_per_token: Option<(u64, u64)>,
}

const MODELS: &[ModelProfile] = &[
    ModelProfile {
        provider: Provider::OpenAi,
        model: "gpt-4o-mini",
        task_type: TaskType::Chat,
        weight: 30,
        input_tokens: (200, 4_000),
        output_tokens: (20, 800),
        reasoning_percent: 0,
        latency_ms: 900,
        reported_nanos_per_token: None,
    },
    ModelProfile {
        provider: Provider::OpenAi,
        model: "gpt-4.1",
        task_type: TaskType::Chat,
        weight: 8,
        input_tokens: (500, 12_000),
        output_tokens: (50, 1_500),
        reasoning_percent: 0,
        latency_ms: 2_500,
        reported_nanos_per_token: None,
    },
    ModelProfile {
        provider: Provider::OpenAi,
        model: "o4-mini",
        task_type: TaskType::Responses,
        weight: 6,
        input_tokens: (300, 6_000),
        output_tokens: (300, 4_000),
        reasoning_percent: 70,
        latency_ms: 6_000,
        reported_nanos_per_token: None,
    },
    ModelProfile {
        provider: Provider::OpenAi,
        model: "text-embedding-3-small",
        task_type: TaskType::Embedding,
        weight: 15,
        input_tokens: (50, 2_000),
        output_tokens: (0, 0),
        reasoning_percent: 0,
        latency_ms: 150,
        reported_nanos_per_token: None,
    },
    ModelProfile {
        provider: Provider::OpenRouter,
        model: "anthropic/claude-sonnet-4",
        task_type: TaskType::Chat,
        weight: 8,
        input_tokens: (500, 10_000),
        output_tokens: (100, 2_000),
        reasoning_percent: 0,
        latency_ms: 3_500,
        reported_nanos_per_token: Some((3_000, 15_000)),
    },
    ModelProfile {
        provider: Provider::OpenRouter,
        model: "meta-llama/llama-3.1-70b-instruct",
        task_type: TaskType::Chat,
        weight: 6,
        input_tokens: (200, 4_000),
        output_tokens: (50, 1_000),
        reasoning_percent: 0,
        latency_ms: 1_800,
        reported_nanos_per_token: Some((100, 280)),
    },
    ModelProfile {
        provider: Provider::OpenRouter,
        model: "google/gemini-2.0-flash-001",
        task_type: TaskType::Completion,
        weight: 5,
        input_tokens: (100, 3_000),
        output_tokens: (20, 600),
        reasoning_percent: 0,
        latency_ms: 700,
        reported_nanos_per_token: Some((100, 400)),
    },
    ModelProfile {
        provider: Provider::Local,
        model: "llama3.1:8b",
        task_type: TaskType::Chat,
        weight: 12,
        input_tokens: (100, 3_000),
        output_tokens: (20, 700),
        reasoning_percent: 0,
        latency_ms: 1_200,
        reported_nanos_per_token: None,
    },
    ModelProfile {
        provider: Provider::Local,
        model: "nomic-embed-text",
        task_type: TaskType::Embedding,
        weight: 10,
        input_tokens: (50, 1_000),
        output_tokens: (0, 0),
        reasoning_percent: 0,
        latency_ms: 60,
        reported_nanos_per_token: None,
    },
];

const ORGS: &[&str] = &[
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
];
const TAGS: &[&str] = &["prod", "staging", "search", "support-bot", "batch", "eval"];

/// SplitMix64: small, fast, and good enough for synthetic traffic.
/// A small seeded pseudo-random source (SplitMix64): the same seed gives
/// the same draws. Not for secrets.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn seeded(seed: u64) -> Random {
        Random(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next() % (high - low + 1)
    }

    /// True `percent_tenths`/1000 of the time.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1_000 < per_mille
    }

    /// An index into weights, chosen in proportion to them.
    pub fn pick(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return 0;
        }
        let mut point = self.next() % total;
        for (index, weight) in weights.iter().enumerate() {
            if point < *weight {
                return index;
            }
            point -= weight;
        }
        0
    }
}

/// How busy an hour is, relative: growth over the period, quieter weekends,
/// a working-day curve (UTC).
fn hour_weight(hour: DateTime<Utc>, index: u64, hours: u64) -> u64 {
    let growth = 100 + 40 * index / hours.max(1);
    let weekday = match hour.weekday() {
        Weekday::Sat | Weekday::Sun => 35,
        Weekday::Mon => 110,
        _ => 100,
    };
    let daytime = match hour.hour() {
        8..=11 | 13..=17 => 100,
        12 | 18..=20 => 60,
        6 | 7 | 21 | 22 => 30,
        _ => 10,
    };
    growth * weekday * daytime
}

/// The events, in hour order; `Iterator::size_hint` is exact.
#[derive(Debug, Clone)]
pub struct Generator {
    settings: Settings,
    start: DateTime<Utc>,
    hours: u64,
    total_weight: u128,
    /// The hour being filled, the cumulative weight before it, and how many
    /// events it still owes.
    hour: u64,
    weight_before: u128,
    owed: u64,
    produced: u64,
    random: Random,
    user_weights: Vec<u64>,
    model_weights: Vec<u64>,
}

impl Generator {
    pub fn new(settings: Settings) -> Self {
        let hours = u64::from(settings.days.max(1)) * 24;
        let start = settings.end - TimeDelta::hours(i64::try_from(hours).unwrap_or(24));
        let total_weight = (0..hours)
            .map(|index| {
                u128::from(hour_weight(
                    start + TimeDelta::hours(i64::try_from(index).unwrap_or(0)),
                    index,
                    hours,
                ))
            })
            .sum();
        let users = u64::from(settings.users_per_org.max(1));
        // A few heavy users per org: weight 1/(rank+1), scaled to integers.
        let user_weights = (0..users).map(|rank| 10_000 / (rank + 1)).collect();
        let model_weights = MODELS.iter().map(|model| model.weight).collect();
        Generator {
            random: Random(settings.seed),
            settings,
            start,
            hours,
            total_weight,
            hour: 0,
            weight_before: 0,
            owed: 0,
            produced: 0,
            user_weights,
            model_weights,
        }
    }

    /// Moves to the next hour that owes events; false when none is left.
    fn advance(&mut self) -> bool {
        while self.owed == 0 {
            if self.hour >= self.hours || self.total_weight == 0 {
                return false;
            }
            let at = self.hour_start(self.hour);
            let weight = u128::from(hour_weight(at, self.hour, self.hours));
            let records = u128::from(self.settings.records);
            let before = records * self.weight_before / self.total_weight;
            self.weight_before += weight;
            let after = records * self.weight_before / self.total_weight;
            self.owed = u64::try_from(after - before).unwrap_or(0);
            self.hour += 1;
        }
        true
    }

    fn hour_start(&self, index: u64) -> DateTime<Utc> {
        self.start + TimeDelta::hours(i64::try_from(index).unwrap_or(0))
    }

    fn event(&mut self) -> UsageEvent {
        let random = &mut self.random;
        let hour =
            self.start + TimeDelta::hours(i64::try_from(self.hour.saturating_sub(1)).unwrap_or(0));
        let micros = random.between(0, 3_599_999_999);
        let created_at = hour + TimeDelta::microseconds(i64::try_from(micros).unwrap_or(0));
        let orgs = usize::try_from(self.settings.orgs.max(1)).unwrap_or(1);
        // Orgs differ in size: the first is the busiest.
        let org_weights: Vec<u64> = (0..orgs).map(|rank| 100 / (rank as u64 + 1) + 10).collect();
        let org_index = random.pick(&org_weights);
        let org = match ORGS.get(org_index) {
            Some(name) => (*name).to_owned(),
            None => format!("org-{org_index}"),
        };
        let user = random.pick(&self.user_weights);
        let profile = MODELS
            .get(random.pick(&self.model_weights))
            .unwrap_or(&MODELS[0]);
        let failed = random.chance(20);
        let stream =
            matches!(profile.task_type, TaskType::Chat | TaskType::Responses) && random.chance(400);
        let disconnected = stream && !failed && random.chance(10);
        let input = random.between(profile.input_tokens.0, profile.input_tokens.1);
        let cached_input = if random.chance(300) { input / 2 } else { 0 };
        let output = if failed {
            0
        } else {
            random.between(profile.output_tokens.0, profile.output_tokens.1)
        };
        let reasoning = output * profile.reasoning_percent / 100;
        // Latency: the model's typical figure, spread 0.5×–2× with a long tail.
        let spread =
            50 + random.between(0, 100) + random.between(0, 100) * random.between(0, 100) / 60;
        let latency_ms = if failed {
            random.between(50, 400)
        } else {
            profile.latency_ms * spread / 100
        };
        let time_to_first_token_ms = stream.then(|| latency_ms / 5 + random.between(50, 200));
        let status = if failed {
            RecordStatus::Error
        } else if disconnected {
            RecordStatus::ClientDisconnected
        } else {
            RecordStatus::Ok
        };
        let (status_code, error_type) = if failed {
            if random.chance(500) {
                (Some(429), Some("rate_limit_exceeded".to_owned()))
            } else {
                (Some(500), Some("server_error".to_owned()))
            }
        } else {
            (Some(200), None)
        };
        let reported_cost = match (profile.reported_nanos_per_token, failed) {
            (Some((per_input, per_output)), false) => {
                i64::try_from(input * per_input + output * per_output)
                    .ok()
                    .map(NanoUsd::from_nanos)
            }
            _ => None,
        };
        let mut metadata = serde_json::Map::new();
        let tag_count = random.pick(&[50, 35, 15]);
        let mut tags: Vec<&str> = Vec::new();
        for _ in 0..tag_count {
            if let Some(tag) = TAGS.get(random.pick(&[40, 15, 20, 15, 5, 5]))
                && !tags.contains(tag)
            {
                tags.push(tag);
            }
        }
        if !tags.is_empty() {
            metadata.insert("tags".to_owned(), json!(tags));
        }
        metadata.insert("generated".to_owned(), json!(true));
        let mut id_bytes = [0_u8; 10];
        for (slot, byte) in id_bytes.iter_mut().zip(
            random
                .next()
                .to_le_bytes()
                .into_iter()
                .chain(random.next().to_le_bytes()),
        ) {
            *slot = byte;
        }
        let millis = u64::try_from(created_at.timestamp_millis()).unwrap_or(0);
        let request_id = uuid::Builder::from_unix_timestamp_millis(millis, &id_bytes).into_uuid();
        UsageEvent {
            request_id,
            parent_request_id: None,
            created_at,
            org_id: org.clone(),
            user_id: Some(format!("{org}-user-{}", user + 1)),
            api_key_id: None,
            provider: profile.provider,
            model: profile.model.to_owned(),
            task_type: profile.task_type,
            tokens: TokenCounts {
                input,
                output,
                cached_input,
                reasoning,
            },
            extra: ExtraUsage::default(),
            reported_cost,
            latency_ms,
            time_to_first_token_ms,
            status_code,
            status,
            error_type,
            stream,
            provider_request_id: Some(format!("gen-{}", Uuid::simple(request_id))),
            metadata,
        }
    }
}

impl Iterator for Generator {
    type Item = UsageEvent;

    fn next(&mut self) -> Option<UsageEvent> {
        if !self.advance() {
            return None;
        }
        self.owed -= 1;
        self.produced += 1;
        Some(self.event())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.settings.records - self.produced).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(records: u64, days: u32) -> Settings {
        Settings::new(
            records,
            days,
            DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
                .unwrap()
                .to_utc(),
        )
    }

    #[test]
    fn makes_exactly_the_records_asked_for_inside_the_period() {
        let settings = settings(10_000, 14);
        let start = settings.end - TimeDelta::days(14);
        let events: Vec<UsageEvent> = Generator::new(settings.clone()).collect();
        assert_eq!(events.len(), 10_000);
        assert!(
            events
                .iter()
                .all(|event| event.created_at >= start && event.created_at < settings.end)
        );
        let mut ids: Vec<Uuid> = events.iter().map(|event| event.request_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10_000, "request ids are unique");
        // Deterministic: the same settings give the same events.
        let again: Vec<UsageEvent> = Generator::new(settings).collect();
        assert_eq!(events, again);
    }

    #[test]
    fn traffic_has_weekly_and_daily_shape_and_a_realistic_mix() {
        let events: Vec<UsageEvent> = Generator::new(settings(50_000, 28)).collect();
        let weekend = events
            .iter()
            .filter(|event| matches!(event.created_at.weekday(), Weekday::Sat | Weekday::Sun))
            .count();
        // Weekends are 2 of 7 days but about a tenth of the traffic.
        assert!(weekend * 100 / events.len() < 20, "weekend share {weekend}");
        let night = events
            .iter()
            .filter(|event| event.created_at.hour() < 5)
            .count();
        assert!(night * 100 / events.len() < 8, "night share {night}");
        let errors = events
            .iter()
            .filter(|event| event.status == RecordStatus::Error)
            .count();
        assert!((500..1_500).contains(&errors), "errors {errors}");
        for provider in [Provider::OpenAi, Provider::OpenRouter, Provider::Local] {
            assert!(events.iter().any(|event| event.provider == provider));
        }
        let tagged = events
            .iter()
            .filter(|event| event.metadata.contains_key("tags"))
            .count();
        assert!(tagged > events.len() / 3);
        // Growth: the last week is busier than the first.
        let first_week = events
            .iter()
            .filter(|event| event.created_at < events[0].created_at + TimeDelta::days(7))
            .count();
        let last_week = events
            .iter()
            .filter(|event| {
                event.created_at >= events[events.len() - 1].created_at - TimeDelta::days(7)
            })
            .count();
        assert!(last_week > first_week, "{first_week} then {last_week}");
    }
}
