//! Table-driven cost tests. Every expected figure is computed by hand from
//! the catalog prices quoted beside it (USD per million tokens).

use super::*;
use crate::usage::ImageBatch;

fn pricing() -> Pricing {
    Pricing::new(Vec::new(), true, UnpricedPolicy::Record).expect("the built-in catalog loads")
}

fn tokens(input: u64, cached_input: u64, output: u64, reasoning: u64) -> TokenCounts {
    TokenCounts {
        input,
        output,
        cached_input,
        reasoning,
    }
}

struct Case {
    name: &'static str,
    provider: Provider,
    model: &'static str,
    tokens: TokenCounts,
    extra: ExtraUsage,
    reported: Option<NanoUsd>,
    cost_nanos: Option<i64>,
    estimated_nanos: Option<i64>,
    status: CostStatus,
}

fn case(name: &'static str, provider: Provider, model: &'static str, tokens: TokenCounts) -> Case {
    Case {
        name,
        provider,
        model,
        tokens,
        extra: ExtraUsage::default(),
        reported: None,
        cost_nanos: None,
        estimated_nanos: None,
        status: CostStatus::Priced,
    }
}

impl Case {
    fn costs(mut self, nanos: i64) -> Self {
        self.cost_nanos = Some(nanos);
        self
    }
    fn extra(mut self, extra: ExtraUsage) -> Self {
        self.extra = extra;
        self
    }
    fn reported(mut self, nanos: i64, estimated: i64) -> Self {
        self.reported = Some(NanoUsd::from_nanos(nanos));
        self.cost_nanos = Some(nanos);
        self.estimated_nanos = Some(estimated);
        self.status = CostStatus::ProviderReported;
        self
    }
    fn status(mut self, status: CostStatus) -> Self {
        self.status = status;
        self
    }
}

#[test]
fn requests_cost_what_the_provider_bills_to_the_nano_dollar() {
    let cases = [
        // gpt-4o: 2.5 in, 1.25 cached, 10 out. 800×2.5 + 200×1.25 + 500×10 = 7,250 µ$.
        case(
            "gpt-4o with a cached prefix",
            Provider::OpenAi,
            "gpt-4o",
            tokens(1_000, 200, 500, 0),
        )
        .costs(7_250_000),
        // gpt-4o-mini: 0.15 in, 0.6 out. 12,345×0.15 + 678×0.6 = 2,258.55 µ$.
        case(
            "gpt-4o-mini",
            Provider::OpenAi,
            "gpt-4o-mini",
            tokens(12_345, 0, 678, 0),
        )
        .costs(2_258_550),
        // A dated snapshot is priced as its family.
        case(
            "a dated gpt-4o-mini snapshot",
            Provider::OpenAi,
            "gpt-4o-mini-2024-07-18",
            tokens(12_345, 0, 678, 0),
        )
        .costs(2_258_550),
        // o3: 2 in, 8 out. Reasoning tokens are inside output: 2,000×2 + 5,000×8 = 44,000 µ$,
        // not 76,000 (which adding the 4,000 reasoning tokens again would give).
        case(
            "o3 with reasoning tokens",
            Provider::OpenAi,
            "o3",
            tokens(2_000, 0, 5_000, 4_000),
        )
        .costs(44_000_000),
        // Cached input at its own rate: 2,000×0.15 + 8,000×0.075 + 100×0.6 = 960 µ$.
        case(
            "gpt-4o-mini mostly cached",
            Provider::OpenAi,
            "openai/gpt-4o-mini",
            tokens(10_000, 8_000, 100, 0),
        )
        .costs(960_000),
        // text-embedding-3-small: 0.02 in. 123,456×0.02 = 2,469.12 µ$.
        case(
            "an embedding",
            Provider::OpenAi,
            "text-embedding-3-small",
            tokens(123_456, 0, 0, 0),
        )
        .costs(2_469_120),
        // gpt-image-1: text in 5, image in 10, output (image tokens) 40.
        // 40×5 + 10×10 + 4,160×40 = 166,700 µ$.
        case(
            "gpt-image-1 by tokens",
            Provider::OpenAi,
            "gpt-image-1",
            tokens(50, 0, 4_160, 0),
        )
        .extra(ExtraUsage {
            input_image_tokens: 10,
            output_image_tokens: 4_160,
            ..ExtraUsage::default()
        })
        .costs(166_700_000),
        // dall-e-3 hd 1024x1792 is $0.12 an image; two images.
        case(
            "two DALL·E 3 hd images",
            Provider::OpenAi,
            "dall-e-3",
            tokens(0, 0, 0, 0),
        )
        .extra(ExtraUsage {
            images: Some(ImageBatch {
                count: 2,
                size: "1024x1792".to_owned(),
                quality: "hd".to_owned(),
            }),
            ..ExtraUsage::default()
        })
        .costs(240_000_000),
        // whisper-1: $0.36 an hour; 90 s = $0.009.
        case(
            "whisper-1 by duration",
            Provider::OpenAi,
            "whisper-1",
            tokens(0, 0, 0, 0),
        )
        .extra(ExtraUsage {
            audio_milliseconds: 90_000,
            ..ExtraUsage::default()
        })
        .costs(9_000_000),
        // gpt-5.5 above 272,000 input tokens: 10 in, 45 out for the whole request.
        // 300,000×10 + 1,000×45 = 3,045,000 µ$.
        case(
            "gpt-5.5 long-context tier",
            Provider::OpenAi,
            "gpt-5.5",
            tokens(300_000, 0, 1_000, 0),
        )
        .costs(3_045_000_000),
        // OpenRouter reported $0.0012; the catalog (2.5 / 1.25 / 10) estimates
        // 8×2.5 + 2×1.25 + 15×10 = 172.5 µ$.
        case(
            "OpenRouter with a reported cost",
            Provider::OpenRouter,
            "openrouter/openai/gpt-4o",
            tokens(10, 2, 15, 5),
        )
        .reported(1_200_000, 172_500),
        // gpt-4 has no cache price: cached tokens at the input rate (30), flagged.
        // 1,000×30 + 1,000×30 + 100×60 = 66,000 µ$.
        case(
            "a missing cache price",
            Provider::OpenAi,
            "gpt-4",
            tokens(2_000, 1_000, 100, 0),
        )
        .costs(66_000_000)
        .status(CostStatus::Estimated),
        case(
            "an unknown model",
            Provider::OpenAi,
            "gpt-unknown-9",
            tokens(1_000, 0, 1_000, 0),
        )
        .status(CostStatus::Unpriced),
        case(
            "an unknown OpenRouter model",
            Provider::OpenRouter,
            "acme/mystery",
            tokens(1_000, 0, 1_000, 0),
        )
        .status(CostStatus::Unpriced),
        case(
            "an OpenRouter free variant",
            Provider::OpenRouter,
            "acme/mystery:free",
            tokens(1_000, 0, 1_000, 0),
        )
        .costs(0),
        case(
            "an unpriced local model is free",
            Provider::Local,
            "local/llama3.1:8b",
            tokens(1_000, 0, 1_000, 0),
        )
        .costs(0),
    ];
    let pricing = pricing();
    for case in cases {
        let priced = pricing.price(
            case.provider,
            case.model,
            &case.tokens,
            &case.extra,
            case.reported,
        );
        assert_eq!(
            priced.cost.map(NanoUsd::nanos),
            case.cost_nanos,
            "{}: cost",
            case.name
        );
        assert_eq!(
            priced.estimated_cost.map(NanoUsd::nanos),
            case.estimated_nanos,
            "{}: estimate",
            case.name
        );
        assert_eq!(priced.status, case.status, "{}: status", case.name);
    }
}

#[test]
fn an_unpriced_record_says_why() {
    let priced = pricing().price(
        Provider::OpenAi,
        "gpt-unknown-9",
        &tokens(1, 0, 1, 0),
        &ExtraUsage::default(),
        None,
    );
    assert_eq!(
        priced.note.as_deref(),
        Some("no price for openai model `gpt-unknown-9`")
    );
}

#[test]
fn configured_prices_replace_the_catalog_and_price_local_models() {
    let sheet = |input: &str, output: &str| PriceSheet {
        input_mtok: Some(input.parse().unwrap()),
        output_mtok: Some(output.parse().unwrap()),
        ..PriceSheet::default()
    };
    let overrides = vec![
        configured_model_price("local/llama3.1:70b", sheet("0.2", "0.6")).unwrap(),
        configured_model_price("openai/gpt-4o", sheet("1", "1")).unwrap(),
    ];
    let pricing = Pricing::new(overrides, false, UnpricedPolicy::Record).unwrap();
    let cost = |provider, model: &str| {
        pricing.price(
            provider,
            model,
            &tokens(1_000_000, 0, 1_000_000, 0),
            &ExtraUsage::default(),
            None,
        )
    };
    // 1M × 0.2 + 1M × 0.6 = $0.80.
    assert_eq!(
        cost(Provider::Local, "llama3.1:70b").cost,
        Some(NanoUsd::from_nanos(800_000_000))
    );
    assert_eq!(
        cost(Provider::OpenAi, "gpt-4o").cost,
        Some(NanoUsd::from_nanos(2_000_000_000))
    );
    // With local_models_free = false an unknown local model is unpriced.
    assert_eq!(
        cost(Provider::Local, "mistral").status,
        CostStatus::Unpriced
    );
    assert_eq!(
        pricing
            .lookup(Provider::OpenAi, "gpt-4o")
            .map(|model| &model.source),
        Some(&PriceSource::Config)
    );
}

#[test]
fn bad_configured_prices_are_refused_with_their_key() {
    let negative = PriceSheet {
        input_mtok: Some("-1".parse().unwrap()),
        ..PriceSheet::default()
    };
    let cases = [
        ("gpt-4o", PriceSheet::default(), "the key must be"),
        ("anthropic/claude", negative.clone(), "unknown provider"),
        ("local/x", PriceSheet::default(), "no prices given"),
        ("local/x", negative, "is negative"),
    ];
    for (key, sheet, expected) in cases {
        let error = configured_model_price(key, sheet).unwrap_err().to_string();
        assert!(
            error.contains(key) && error.contains(expected),
            "{key}: {error}"
        );
    }
}

#[test]
fn inconsistent_token_subsets_are_not_priced() {
    let model = pricing()
        .lookup(Provider::OpenAi, "gpt-image-1")
        .cloned()
        .unwrap();
    let extra = ExtraUsage {
        input_image_tokens: 60,
        ..ExtraUsage::default()
    };
    assert!(matches!(
        cost_of(&model, &tokens(50, 0, 0, 0), &extra),
        Err(CostError::InconsistentTokens(_))
    ));
}

#[test]
fn every_catalog_price_is_non_negative_and_every_model_has_one() {
    for model in pricing().models() {
        assert!(
            !model.prices.is_empty() || !model.per_image.is_empty(),
            "{} has no price",
            model.id
        );
        for (name, price) in model.prices.entries() {
            assert!(!price.is_sign_negative(), "{} {name}", model.id);
        }
    }
}
