//! Each rule at and around its thresholds.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::*;

fn usd(dollars: &str) -> NanoUsd {
    NanoUsd::parse_usd(dollars).unwrap_or_else(|error| panic!("{dollars}: {error}"))
}

fn defaults(_org: &str) -> SpendThresholds {
    SpendThresholds {
        medium: usd("10"),
        high: usd("25"),
        critical: usd("50"),
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or(NaiveDate::MIN)
}

#[test]
fn high_usage_fires_above_each_threshold_with_its_severity() {
    let cases = [
        ("0", None),
        ("10", None),
        ("10.000000001", Some(Severity::Medium)),
        ("25", Some(Severity::Medium)),
        ("25.01", Some(Severity::High)),
        ("50", Some(Severity::High)),
        ("50.5", Some(Severity::Critical)),
        ("1000", Some(Severity::Critical)),
    ];
    for (spent, expected) in cases {
        let spends = [DailySpend {
            org_id: "acme".to_owned(),
            provider: Some(Provider::OpenAi),
            spent: usd(spent),
        }];
        let conditions = high_usage(day(), &spends, defaults);
        assert_eq!(
            conditions.first().map(|condition| condition.severity),
            expected,
            "${spent}"
        );
        if let Some(condition) = conditions.first() {
            assert_eq!(condition.dedupe_key, "high_usage:acme:openai:2026-11-28");
            assert_eq!(condition.current_value, Some(usd(spent).to_usd()));
            assert_eq!(condition.alert_type, AlertType::HighUsage);
        }
    }
    // Per-org thresholds.
    let spends = [DailySpend {
        org_id: "big".to_owned(),
        provider: None,
        spent: usd("30"),
    }];
    let generous = |_: &str| SpendThresholds {
        medium: usd("100"),
        high: usd("200"),
        critical: usd("300"),
    };
    assert!(high_usage(day(), &spends, generous).is_empty());
    assert_eq!(
        high_usage(day(), &spends, defaults)[0].dedupe_key,
        "high_usage:big:*:2026-11-28"
    );
}

#[test]
fn error_rate_needs_enough_requests_and_names_its_scope() {
    let thresholds = ErrorThresholds {
        high_percent: Decimal::from(10),
        critical_percent: Decimal::from(25),
        min_requests: 20,
    };
    let counts = |requests, errors| WindowCounts {
        provider: Provider::OpenRouter,
        model: Some("openai/gpt-4o".to_owned()),
        requests,
        errors,
        quota_errors: 0,
    };
    let cases = [
        (19, 19, None),
        (20, 2, None),
        (20, 3, Some(Severity::High)),
        (100, 25, Some(Severity::High)),
        (100, 26, Some(Severity::Critical)),
        (20, 20, Some(Severity::Critical)),
    ];
    for (requests, errors, expected) in cases {
        let conditions = error_rate(&[counts(requests, errors)], thresholds, 15);
        assert_eq!(
            conditions.first().map(|condition| condition.severity),
            expected,
            "{errors}/{requests}"
        );
        if let Some(condition) = conditions.first() {
            assert_eq!(condition.dedupe_key, "error_rate:openrouter:openai/gpt-4o");
        }
    }
    let quota = WindowCounts {
        provider: Provider::OpenAi,
        model: None,
        requests: 3,
        errors: 1,
        quota_errors: 1,
    };
    let conditions = error_rate(&[quota], thresholds, 15);
    assert_eq!(
        conditions.len(),
        1,
        "too few requests for a rate, but quota counts"
    );
    assert_eq!(conditions[0].alert_type, AlertType::QuotaExceeded);
    assert_eq!(conditions[0].dedupe_key, "quota_exceeded:openai");
}

#[test]
fn budget_conditions_escalate_with_the_threshold_reached() {
    let reached = |percent, hard_limit| BudgetReached {
        budget_id: Uuid::nil(),
        org_id: "acme".to_owned(),
        provider: None,
        period_start: chrono::DateTime::UNIX_EPOCH,
        percent,
        hard_limit,
        limit: usd("10"),
    };
    let severities: Vec<Severity> = budgets(&[
        reached(50, true),
        reached(80, false),
        reached(100, false),
        reached(100, true),
    ])
    .iter()
    .map(|condition| condition.severity)
    .collect();
    assert_eq!(
        severities,
        vec![
            Severity::Medium,
            Severity::Medium,
            Severity::High,
            Severity::Critical
        ]
    );
}
