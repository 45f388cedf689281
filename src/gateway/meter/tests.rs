use super::*;
use crate::gateway::sse::SseParser;

#[test]
fn chat_usage_keeps_cached_and_reasoning_subsets() {
    let body = br#"{"id":"chatcmpl-1","usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
        "prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":6,"audio_tokens":null}}}"#;
    let usage = usage_from_body(body).unwrap();
    assert_eq!(
        usage.tokens,
        TokenCounts {
            input: 19,
            output: 10,
            cached_input: 4,
            reasoning: 6
        }
    );
    assert_eq!(usage.cost, None);
    assert_eq!(read_answer(body).1.as_deref(), Some("chatcmpl-1"));
}

#[test]
fn openrouter_cost_is_read_exactly() {
    let body =
        br#"{"usage":{"prompt_tokens":10,"completion_tokens":15,"cost":0.0012,"is_byok":false}}"#;
    assert_eq!(
        usage_from_body(body).unwrap().cost,
        Some(NanoUsd::from_nanos(1_200_000))
    );
}

#[test]
fn responses_and_image_usage_use_input_and_output_tokens() {
    let responses = br#"{"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":5},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":48}}"#;
    assert_eq!(
        usage_from_body(responses).unwrap().tokens,
        TokenCounts {
            input: 37,
            output: 11,
            cached_input: 5,
            reasoning: 3
        }
    );
    let image = br#"{"created":1,"data":[],"usage":{"input_tokens":50,"input_tokens_details":{"text_tokens":40,"image_tokens":10},"output_tokens":4160,"output_tokens_details":{"text_tokens":0,"image_tokens":4160},"total_tokens":4210}}"#;
    let usage = usage_from_body(image).unwrap();
    assert_eq!(usage.extra.input_image_tokens, 10);
    assert_eq!(usage.extra.output_image_tokens, 4160);
    assert!(usage_from_body(br#"{"created":1,"data":[{"url":"x"}]}"#).is_none());
}

#[test]
fn errors_are_named_by_status_and_body() {
    let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    let rate = br#"{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    let cases: [(u16, &[u8], UpstreamFailure); 7] = [
        (429, quota, UpstreamFailure::QuotaExceeded),
        (429, rate, UpstreamFailure::RateLimited),
        (
            402,
            br#"{"error":{"code":402,"message":"Insufficient credits"}}"#,
            UpstreamFailure::QuotaExceeded,
        ),
        (500, b"oops", UpstreamFailure::ServerError),
        (504, b"", UpstreamFailure::Timeout),
        (400, b"{}", UpstreamFailure::InvalidRequest),
        (401, b"{}", UpstreamFailure::AuthenticationFailed),
    ];
    for (status, body, expected) in cases {
        assert_eq!(classify(status, body), expected, "{status}");
    }
    assert!(UpstreamFailure::RateLimited.falls_back());
    assert!(!UpstreamFailure::InvalidRequest.falls_back());
}

fn meter_stream(stream: &str, task: TaskType, injected: bool) -> (StreamMeter, Vec<Disposition>) {
    let mut parser = SseParser::new();
    let mut meter = StreamMeter::new();
    let dispositions = parser
        .push(stream.as_bytes())
        .iter()
        .map(|event| meter.observe(event, task, injected))
        .collect();
    (meter, dispositions)
}

const CHAT_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn the_injected_usage_chunk_is_read_and_dropped() {
    let (meter, dispositions) = meter_stream(CHAT_STREAM, TaskType::Chat, true);
    assert_eq!(
        dispositions,
        [
            Disposition::Forward,
            Disposition::Forward,
            Disposition::Forward,
            Disposition::Drop,
            Disposition::Forward
        ]
    );
    assert_eq!(meter.usage.unwrap().tokens.output, 12);
    assert_eq!(meter.output_text, "Hello");
    assert!(meter.finished);
    assert_eq!(meter.provider_id.as_deref(), Some("chatcmpl-1"));
    let (_, asked) = meter_stream(CHAT_STREAM, TaskType::Chat, false);
    assert!(
        asked
            .iter()
            .all(|disposition| *disposition == Disposition::Forward)
    );
}

#[test]
fn the_last_usage_wins_when_every_chunk_carries_a_running_total() {
    let stream = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );
    let (meter, _) = meter_stream(stream, TaskType::Chat, true);
    assert_eq!(meter.usage.unwrap().tokens.output, 2);
}

#[test]
fn responses_usage_comes_from_the_completed_event() {
    let stream = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
    );
    let (meter, _) = meter_stream(stream, TaskType::Responses, false);
    assert_eq!(meter.usage.unwrap().tokens.input, 37);
    assert!(meter.finished);
    assert_eq!(meter.output_text, "Hi");
    assert_eq!(meter.provider_id.as_deref(), Some("resp_1"));
}

#[test]
fn a_mid_stream_error_is_noticed() {
    let stream = "data: {\"id\":\"x\",\"error\":{\"code\":\"server_error\",\"message\":\"Provider disconnected\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n";
    let (meter, _) = meter_stream(stream, TaskType::Chat, true);
    assert!(meter.error.unwrap().contains("Provider disconnected"));
}

#[test]
fn null_usage_is_removed_from_chunks_the_client_did_not_ask_usage_for() {
    let raw = b"data: {\"id\":\"c\",\"choices\":[],\"usage\":null}\n\n";
    assert_eq!(
        without_null_usage(raw).unwrap(),
        b"data: {\"id\":\"c\",\"choices\":[]}\n\n".to_vec()
    );
    assert!(without_null_usage(b"data: {\"a\":1}\n\n").is_none());
}

/// Found by the `usage_extraction` fuzz target: the record of a served
/// request was refused (and lost) for an id the ledger cannot hold.
#[test]
fn a_provider_id_a_record_cannot_hold_is_dropped_not_the_record() {
    let long = "x".repeat(257);
    let body = format!(r#"{{"id":"{long}","usage":{{"prompt_tokens":1}}}}"#);
    let (usage, id) = read_answer(body.as_bytes());
    assert_eq!(usage.map(|usage| usage.tokens.input), Some(1));
    assert_eq!(id, None);
    let (_, id) = read_answer(br#"{"id":"gen-\u0000","usage":null}"#);
    assert_eq!(id, None);
    let (_, id) = read_answer(format!(r#"{{"id":"{}"}}"#, "y".repeat(256)).as_bytes());
    assert_eq!(id.map(|id| id.len()), Some(256));

    let stream = format!(
        "data: {{\"id\":\"{long}\",\"choices\":[]}}\n\ndata: {{\"id\":\"gen-2\",\"choices\":[]}}\n\n"
    );
    let (meter, _) = meter_stream(&stream, TaskType::Chat, false);
    assert_eq!(meter.provider_id.as_deref(), Some("gen-2"));
}

/// Found by the `usage_extraction` fuzz target: counts past the ledger's
/// bounds, or parts that add up to more than their total, made the record
/// of a served request invalid, so it was refused and lost.
#[test]
fn reported_usage_always_fits_a_record() {
    let body = br#"{"usage":{"prompt_tokens":100,"completion_tokens":333333333333333332,
        "prompt_tokens_details":{"cached_tokens":70,"image_tokens":20,"audio_tokens":50},
        "completion_tokens_details":{"reasoning_tokens":5,"image_tokens":900000000000000,"audio_tokens":1000000000000}}}"#;
    let usage = usage_from_body(body).unwrap();
    assert_eq!(
        usage.tokens,
        TokenCounts {
            input: 100,
            output: MAX_TOKENS,
            cached_input: 70,
            reasoning: 5
        }
    );
    assert_eq!(usage.extra.input_image_tokens, 20);
    assert_eq!(
        usage.extra.input_audio_tokens, 10,
        "what is left of the input"
    );
    assert_eq!(usage.extra.output_image_tokens, MAX_TOKENS);
    assert_eq!(
        usage.extra.output_audio_tokens, 0,
        "nothing is left of the output"
    );

    let over = br#"{"usage":{"prompt_tokens":1,"cost":1000000.000000001}}"#;
    assert_eq!(usage_from_body(over).unwrap().cost, None);
    let limit = br#"{"usage":{"prompt_tokens":1,"cost":1000000}}"#;
    assert_eq!(
        usage_from_body(limit).unwrap().cost,
        Some(NanoUsd::from_nanos(
            MAX_COST_USD * crate::money::NANOS_PER_USD
        ))
    );
}
