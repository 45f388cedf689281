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
