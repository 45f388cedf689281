//! The gateway's usage reading on arbitrary upstream bytes: a whole answer
//! (`meter::read_answer`) and a stream (`SseParser` → `StreamMeter::observe`).
//!
//! Input: one control byte, then the body. The control byte, less `'0'`,
//! picks the task (modulo 5, in `TaskType::ALL` order: `0` chat … `4`
//! responses) and whether the gateway injected `include_usage` (`5`–`9`).
//!
//! Checked: nothing panics, and whatever usage and provider id are read make a
//! record that passes `UsageEvent::validate` — the gateway hands them to
//! `Recorder::record_served` as they are, and a record refused there is lost.
#![no_main]

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use tollgate::gateway::meter::{self, Disposition, ReportedUsage, StreamMeter};
use tollgate::gateway::sse::SseParser;
use tollgate::usage::{Provider, RecordStatus, TaskType, UsageEvent};

/// The most output text a meter keeps (`meter::MAX_OUTPUT_TEXT`).
const MAX_OUTPUT_TEXT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let code = usize::from(control.wrapping_sub(b'0'));
    let task = TaskType::ALL[code % TaskType::ALL.len()];
    let injected_usage = (code / TaskType::ALL.len()) % 2 == 1;

    let (usage, provider_id) = meter::read_answer(body);
    assert_eq!(meter::usage_from_body(body), usage);
    check_record(task, usage, provider_id, "a whole answer");

    let mut parser = SseParser::new();
    let mut stream_meter = StreamMeter::new();
    let mut first_outputs = 0;
    for event in parser.push(body) {
        let disposition = stream_meter.observe(&event, task, injected_usage);
        if disposition == Disposition::Drop {
            assert!(injected_usage, "dropped an event the client asked for");
            assert!(
                stream_meter.usage.is_some(),
                "dropped an event without usage"
            );
        }
        first_outputs += usize::from(stream_meter.first_output);
        if let Some(stripped) = meter::without_null_usage(&event.raw) {
            assert_eq!(stripped.len() + b",\"usage\":null".len(), event.raw.len());
        }
    }
    assert!(
        first_outputs <= 1,
        "first output seen {first_outputs} times"
    );
    assert!(stream_meter.output_text.len() <= MAX_OUTPUT_TEXT);
    check_record(
        task,
        stream_meter.usage,
        stream_meter.provider_id,
        "a stream",
    );

    for status in [400, 401, 402, 429, 500, 504] {
        let failure = meter::classify(status, body);
        let _ = (failure.error_type(), failure.falls_back());
    }
});

/// The record the gateway would make of this usage (as `Attempt::event`
/// does), which must pass validation.
fn check_record(
    task: TaskType,
    usage: Option<ReportedUsage>,
    provider_id: Option<String>,
    from: &str,
) {
    let usage = usage.unwrap_or_default();
    let now = now();
    let event = UsageEvent {
        request_id: uuid::Uuid::nil(),
        parent_request_id: None,
        created_at: now,
        org_id: "default".to_owned(),
        user_id: None,
        api_key_id: None,
        provider: Provider::OpenRouter,
        model: "openai/gpt-4o-mini".to_owned(),
        task_type: task,
        tokens: usage.tokens,
        extra: usage.extra,
        reported_cost: usage.cost,
        latency_ms: 1_000,
        time_to_first_token_ms: Some(100),
        status_code: Some(200),
        status: RecordStatus::Ok,
        error_type: None,
        stream: true,
        provider_request_id: provider_id,
        metadata: serde_json::Map::new(),
    };
    if let Err(error) = event.validate(now, Duration::minutes(5)) {
        panic!("usage read from {from} makes an invalid record: {error}\n{event:#?}");
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .unwrap_or_default()
}
