use chrono::TimeZone;

use super::*;
use crate::money::NanoUsd;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn parse(body: &str) -> Result<IngestBody, IngestError> {
    parse_body(body.as_bytes(), 10_000, now())
}

fn invalid_param(body: &str) -> String {
    match parse(body) {
        Err(IngestError::Invalid { param, .. }) => param,
        other => panic!("expected an invalid field for {body}, got {other:?}"),
    }
}

const MINIMAL: &str = r#"{"provider":"openai","model":"gpt-4o","task_type":"chat"}"#;

#[test]
fn a_single_record_is_read_with_defaults() {
    let parsed = parse(MINIMAL).unwrap();
    assert!(!parsed.is_batch);
    let event = &parsed.events[0];
    assert_eq!(event.org_id, DEFAULT_ORG);
    assert_eq!(event.created_at, now());
    assert_eq!(event.status, RecordStatus::Ok);
    assert_eq!(event.tokens, TokenCounts::default());
}

#[test]
fn a_full_record_keeps_every_field() {
    let body = r#"{
        "request_id": "0193a1b2-0000-7000-8000-000000000001",
        "created_at": "2026-11-27T10:00:00+01:00",
        "provider": "openrouter", "model": "anthropic/claude-sonnet-4.5", "task_type": "chat",
        "input_tokens": 100, "output_tokens": 50, "cached_input_tokens": 20, "reasoning_tokens": 10,
        "cost_usd": 0.0012, "latency_ms": 850, "time_to_first_token_ms": 120,
        "status_code": 200, "stream": true, "org_id": "acme", "user_id": "alice",
        "provider_request_id": "gen-123", "metadata": {"feature": "search"}, "tags": ["beta", "eu"]
    }"#;
    let event = parse(body).unwrap().events.remove(0);
    assert_eq!(
        event.request_id.to_string(),
        "0193a1b2-0000-7000-8000-000000000001"
    );
    assert_eq!(event.created_at.to_rfc3339(), "2026-11-27T09:00:00+00:00");
    assert_eq!(event.provider, Provider::OpenRouter);
    assert_eq!(
        event.tokens,
        TokenCounts {
            input: 100,
            output: 50,
            cached_input: 20,
            reasoning: 10
        }
    );
    assert_eq!(event.reported_cost, Some(NanoUsd::from_nanos(1_200_000)));
    assert_eq!(event.time_to_first_token_ms, Some(120));
    assert!(event.stream);
    assert_eq!(event.user_id.as_deref(), Some("alice"));
    assert_eq!(event.metadata["tags"], serde_json::json!(["beta", "eu"]));
    assert_eq!(event.metadata["feature"], "search");
}

#[test]
fn costs_are_read_as_the_decimal_written_never_through_a_float() {
    for (cost, nanos) in [
        ("\"0.000000001\"", 1),
        ("0.1", 100_000_000),
        ("0.3", 300_000_000),
        ("1.23456789", 1_234_567_890),
        ("12345678.123456789", 12_345_678_123_456_789),
        ("1e-3", 1_000_000),
        ("null", -1),
    ] {
        let body = format!(
            r#"{{"provider":"openai","model":"gpt-4o","task_type":"chat","cost_usd":{cost}}}"#
        );
        let event = parse(&body).unwrap().events.remove(0);
        let expected = (nanos >= 0).then_some(NanoUsd::from_nanos(nanos));
        assert_eq!(event.reported_cost, expected, "{cost}");
    }
}

#[test]
fn a_batch_names_the_record_and_the_field_that_is_wrong() {
    let body = format!(
        r#"{{"records":[{MINIMAL},{{"provider":"openai","model":"gpt-4o","task_type":"chat","input_tokens":-5}}]}}"#
    );
    assert_eq!(invalid_param(&body), "records[1].input_tokens");
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (
            r#"{"provider":"anthropic","model":"x","task_type":"chat"}"#,
            "provider",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"audio"}"#,
            "task_type",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","output_tokens":"many"}"#,
            "output_tokens",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","created_at":"yesterday"}"#,
            "created_at",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","cost_usd":"cheap"}"#,
            "cost_usd",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","cost_usd":-1}"#,
            "cost_usd",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","request_id":"abc"}"#,
            "request_id",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","inptu_tokens":1}"#,
            "inptu_tokens",
        ),
        (
            r#"{"provider":"openai","model":"x","task_type":"chat","success":true,"status":"error"}"#,
            "status",
        ),
        (r#"{"provider":"openai","task_type":"chat"}"#, "model"),
    ];
    for (body, param) in cases {
        assert_eq!(invalid_param(body), param, "{body}");
    }
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    let body = r#"{"provider":"openai","model":"x","task_type":"chat","inptu_tokens":1}"#;
    let error = parse(body).unwrap_err().to_string();
    assert!(error.contains("unknown field `inptu_tokens`"), "{error}");
}

#[test]
fn malformed_json_and_wrong_shapes_are_told_apart() {
    assert!(matches!(
        parse("{\"records\": ["),
        Err(IngestError::Malformed(_))
    ));
    assert!(matches!(parse("not json"), Err(IngestError::Malformed(_))));
    assert!(matches!(parse("[1, 2]"), Err(IngestError::Shape { .. })));
    assert!(matches!(
        parse(&format!(r#"{{"records":[{MINIMAL}],"extra":1}}"#)),
        Err(IngestError::Shape { .. })
    ));
    assert_eq!(invalid_param(r#"{"records":{}}"#), "records");
    assert_eq!(invalid_param(r#"{"records":[]}"#), "records");
}

#[test]
fn batches_over_the_limit_are_refused_whole() {
    let body = format!(r#"{{"records":[{MINIMAL},{MINIMAL},{MINIMAL}]}}"#);
    assert_eq!(
        parse_body(body.as_bytes(), 2, now()).unwrap_err(),
        IngestError::TooMany { count: 3, limit: 2 }
    );
}

#[test]
fn a_request_id_repeated_within_a_batch_is_refused() {
    let record = r#"{"request_id":"0193a1b2-0000-7000-8000-000000000001","provider":"openai","model":"x","task_type":"chat"}"#;
    let body = format!(r#"{{"records":[{record},{record}]}}"#);
    assert_eq!(invalid_param(&body), "records[1].request_id");
}

#[test]
fn status_follows_success_and_status_code() {
    let status = |extra: &str| {
        let body = format!(r#"{{"provider":"openai","model":"x","task_type":"chat"{extra}}}"#);
        parse(&body).unwrap().events[0].status
    };
    assert_eq!(status(""), RecordStatus::Ok);
    assert_eq!(status(r#","success":false"#), RecordStatus::Error);
    assert_eq!(status(r#","status_code":429"#), RecordStatus::Error);
    assert_eq!(
        status(r#","status":"client_disconnected""#),
        RecordStatus::ClientDisconnected
    );
}
