//! The upstream faults suite (issue 9): a provider that resets the
//! connection, never answers, goes silent mid-stream, sends 10 MB events or
//! events over the gateway's cap, sends invalid JSON, or ends without
//! `[DONE]`. For each, the client gets a well-formed OpenAI-style error or a
//! well-formed end of stream, exactly one record is written for the attempt
//! with the right status and error type, and nothing panics. The provider is
//! a raw TCP server writing hand-made HTTP/1.1, so it can misbehave in ways
//! an HTTP server library would not let it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own faulty provider"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{TestApp, TestDatabase, connect_store, create_key, spawn_app, test_config};

/// "A 10 MB chunk": under the gateway's per-event cap, so forwarded whole.
const TEN_MB: usize = 10_000_000;
/// Over the gateway's per-event cap (`sse::MAX_EVENT_BYTES`, 16 MiB).
const OVER_THE_CAP: usize = 20 << 20;
/// Over any sensible cap on a whole (non-streamed) answer.
const OVER_THE_ANSWER_CAP: usize = 160 << 20;
/// The longest any one exchange may take before the test gives up on it.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// Panics raised outside the tests' own files (the server's, hyper's…).
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_server_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info
                .location()
                .is_some_and(|location| location.file().starts_with("tests/"));
            if !in_tests {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default_hook(info);
        }));
    });
}

// The faulty provider.

/// One thing the provider does after reading a request. When the steps run
/// out, it closes the connection cleanly (FIN).
enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// Keeps the connection open and sends nothing more.
    Stall,
    /// Closes the connection with a TCP reset (RST).
    Reset,
}

const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
    cache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
const LAST_CHUNK: &str = "0\r\n\r\n";
const DONE: &str = "data: [DONE]\n\n";
/// Lets what was sent reach the gateway before the fault.
const SETTLE: Duration = Duration::from_millis(100);

fn send(bytes: impl Into<Vec<u8>>) -> Step {
    Step::Send(bytes.into())
}

/// One HTTP/1.1 chunk holding `bytes`.
fn chunk(bytes: &[u8]) -> Step {
    let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    Step::Send(framed)
}

fn whole_head(length: usize) -> Step {
    send(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\
         connection: close\r\n\r\n"
    ))
}

fn content_event(text: &str) -> String {
    let chunk = json!({"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

fn finish_event() -> String {
    let chunk = json!({"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    format!("data: {chunk}\n\n")
}

/// The usage-only chunk the gateway asks for (`include_usage`).
fn usage_event() -> String {
    let chunk = json!({"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}});
    format!("data: {chunk}\n\n")
}

fn whole_answer(content: &str) -> String {
    json!({"id": "chatcmpl-faulty", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}})
    .to_string()
}

/// Each event in an HTTP chunk of its own.
fn events(events: &[String]) -> Vec<Step> {
    events.iter().map(|event| chunk(event.as_bytes())).collect()
}

/// What the provider does for a request: its `fault` field names the fault.
fn script(request: &Value) -> Vec<Step> {
    let fault = request["fault"].as_str().unwrap_or("none");
    let stream = request["stream"].as_bool() == Some(true);
    let hello = [content_event("Hello"), content_event(" world")];
    let mut steps = Vec::new();
    match (fault, stream) {
        ("none", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello));
            steps.extend(events(&[finish_event(), usage_event(), DONE.to_owned()]));
            steps.push(send(LAST_CHUNK));
        }
        ("reset_before_head", _) => steps.push(Step::Reset),
        ("reset_mid_stream", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello));
            steps.extend([Step::Pause(SETTLE), Step::Reset]);
        }
        ("reset_mid_event", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.push(chunk(b"data: {\"id\":\"chatcmpl-faulty\",\"choi"));
            steps.extend([Step::Pause(SETTLE), Step::Reset]);
        }
        ("close_mid_stream", true) => {
            // A clean FIN, but without the chunked body's last chunk.
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello));
            steps.push(Step::Pause(SETTLE));
        }
        ("reset_mid_body", false) => {
            let body = whole_answer("Hello world");
            steps.push(whole_head(body.len()));
            steps.push(send(&body.as_bytes()[..body.len() / 2]));
            steps.extend([Step::Pause(SETTLE), Step::Reset]);
        }
        ("stall_first_byte", _) => steps.push(Step::Stall),
        ("stall_after_head", true) => steps.extend([send(STREAM_HEAD), Step::Stall]),
        ("stall_mid_stream", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello));
            steps.push(Step::Stall);
        }
        ("stall_mid_event", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.push(chunk(b"data: {\"id\":\"chatcmpl-faulty\",\"choi"));
            steps.push(Step::Stall);
        }
        ("stall_mid_body", false) => {
            let body = whole_answer("Hello world");
            steps.push(whole_head(body.len()));
            steps.push(send(&body.as_bytes()[..body.len() / 2]));
            steps.push(Step::Stall);
        }
        ("huge_event", true) => {
            // One 10 MB event in one HTTP chunk, then a normal ending.
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&[
                content_event(&"lorem ipsum ".repeat(TEN_MB / 12)),
                finish_event(),
                usage_event(),
                DONE.to_owned(),
            ]));
            steps.push(send(LAST_CHUNK));
        }
        ("huge_event_then_stall", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&[content_event(
                &"lorem ipsum ".repeat(TEN_MB / 12),
            )]));
            steps.push(Step::Stall);
        }
        ("huge_unterminated_line", true) => {
            // A 10 MB `data:` line that never ends, then the body's end.
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.push(chunk(format!("data: {}", "x".repeat(TEN_MB)).as_bytes()));
            steps.push(send(LAST_CHUNK));
        }
        ("huge_body", false) => {
            let body = whole_answer(&"lorem ipsum ".repeat(TEN_MB / 12));
            steps.extend([whole_head(body.len()), send(body)]);
        }
        ("oversized_body", false) => {
            steps.push(whole_head(OVER_THE_ANSWER_CAP));
            let piece = vec![b' '; 1 << 20];
            steps.extend((0..OVER_THE_ANSWER_CAP >> 20).map(|_| send(piece.clone())));
        }
        ("oversized_event", true) => {
            // An event over the cap that ends, then a normal ending.
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.extend(events(&[
                content_event(&"x".repeat(OVER_THE_CAP)),
                content_event(" after"),
                finish_event(),
                usage_event(),
                DONE.to_owned(),
            ]));
            steps.push(send(LAST_CHUNK));
        }
        ("oversized_unterminated_line", true) => {
            // A `data:` line over the cap that never ends, sent as many
            // chunks, then the body's end.
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.push(chunk(b"data: "));
            let piece = "x".repeat(1 << 20);
            steps.extend((0..OVER_THE_CAP >> 20).map(|_| chunk(piece.as_bytes())));
            steps.push(send(LAST_CHUNK));
        }
        ("invalid_json", true) | ("invalid_json_no_usage", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello[..1]));
            steps.push(chunk(b"data: {not json\n\n"));
            steps.push(chunk(
                b"data: {\"choices\": [{\"delta\": {\"content\": \"cut\n\n",
            ));
            steps.push(chunk(b"data: \xff\xfe not UTF-8\n\n"));
            steps.push(chunk(
                b"data: {\"choices\": \"not a list\", \"usage\": 7}\n\n",
            ));
            steps.push(chunk(b"data: 42\n\n"));
            steps.extend(events(&hello[1..]));
            steps.extend(events(&[finish_event()]));
            if fault == "invalid_json" {
                steps.extend(events(&[usage_event()]));
            }
            steps.extend(events(&[DONE.to_owned()]));
            steps.push(send(LAST_CHUNK));
        }
        ("invalid_json", false) => {
            let body = "{not json";
            steps.extend([whole_head(body.len()), send(body)]);
        }
        ("no_done", true) | ("no_done_no_usage", true) => {
            steps.push(send(STREAM_HEAD));
            steps.extend(events(&hello));
            steps.extend(events(&[finish_event()]));
            if fault == "no_done" {
                steps.extend(events(&[usage_event()]));
            }
            steps.push(send(LAST_CHUNK));
        }
        (fault, stream) => panic!("no script for {fault:?} (stream: {stream})"),
    }
    steps
}

/// A provider on a loopback port; returns its base URL and a count of the
/// requests it has read.
async fn faulty_provider() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(misbehave(socket, Arc::clone(&counter)));
        }
    });
    (base_url, requests)
}

async fn misbehave(mut socket: TcpStream, requests: Arc<AtomicUsize>) {
    let Some((request_line, body)) = read_request(&mut socket).await else {
        return;
    };
    if request_line != "post /v1/chat/completions http/1.1" {
        // The gateway's other calls (the credits loop reads account APIs).
        let _ = socket
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    for step in script(&request) {
        match step {
            Step::Send(bytes) => {
                if socket.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Step::Pause(time) => tokio::time::sleep(time).await,
            Step::Stall => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
            Step::Reset => {
                // With a zero linger, closing the socket sends RST.
                socket.set_zero_linger().unwrap();
                return;
            }
        }
    }
    let _ = socket.shutdown().await;
}

/// Reads one request (head and `content-length` body); its request line
/// and body.
async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut piece = [0_u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = socket.read(&mut piece).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&piece[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = socket.read(&mut piece).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&piece[..read]);
    }
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    Some((request_line, buffer[head_end..head_end + length].to_vec()))
}

// The gateway in front of it.

struct Harness {
    app: TestApp,
    key: String,
    /// Requests the provider read.
    provider_requests: Arc<AtomicUsize>,
    /// Requests the test sent to the gateway.
    sent: AtomicUsize,
    _database: TestDatabase,
}

/// What the client got.
struct Answer {
    status: u16,
    content_type: String,
    request_id: String,
    body: Vec<u8>,
    /// When the body had reached each length.
    arrivals: Vec<(usize, Instant)>,
    ended: Instant,
}

impl Answer {
    /// When the client had the body's first `length` bytes.
    fn had(&self, length: usize) -> Instant {
        self.arrivals
            .iter()
            .find(|(received, _)| *received >= length)
            .map_or(self.ended, |(_, at)| *at)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", preview(&self.text())))
    }
}

/// A gateway whose provider is a faulty one, with 1 s first-byte and idle
/// timeouts unless `extra` says otherwise.
async fn harness(extra: &[(&str, &str)]) -> Harness {
    count_server_panics();
    tollgate::providers::install_crypto_provider();
    let (base_url, provider_requests) = faulty_provider().await;
    let database = TestDatabase::sqlite();
    let mut settings = vec![
        ("providers.openai.base_url", base_url.as_str()),
        ("providers.openai.api_key", "sk-openai-test"),
        ("gateway.first_byte_timeout_ms", "1000"),
        ("gateway.stream_idle_timeout_ms", "1000"),
    ];
    settings.extend_from_slice(extra);
    let config = test_config(&database.url, &database.spool_dir(), &settings);
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let app = spawn_app(config).await;
    Harness {
        app,
        key,
        provider_requests,
        sent: AtomicUsize::new(0),
        _database: database,
    }
}

impl Harness {
    /// A chat request asking the provider for `fault`, read to its end.
    async fn chat(&self, fault: &str, stream: bool) -> Answer {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let body = json!({"model": "gpt-4o-mini", "stream": stream, "fault": fault,
            "messages": [{"role": "user", "content": "Say hello"}]});
        let exchange = async {
            let response = self
                .app
                .client
                .post(self.app.url("/v1/chat/completions"))
                .bearer_auth(&self.key)
                .json(&body)
                .send()
                .await
                .expect("the gateway answers");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (status, content_type, request_id) = (
                response.status().as_u16(),
                header("content-type"),
                header("x-tollgate-request-id"),
            );
            let mut response = response;
            let (mut body, mut arrivals) = (Vec::new(), Vec::new());
            while let Some(piece) = response
                .chunk()
                .await
                .unwrap_or_else(|error| panic!("{fault}: the body broke: {error}"))
            {
                body.extend_from_slice(&piece);
                arrivals.push((body.len(), Instant::now()));
            }
            Answer {
                status,
                content_type,
                request_id,
                body,
                arrivals,
                ended: Instant::now(),
            }
        };
        tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{fault}: no complete answer in {EXCHANGE_LIMIT:?}"))
    }

    /// The one record of the attempt that gave `answer`.
    async fn record_of(&self, answer: &Answer) -> Value {
        assert!(!answer.request_id.is_empty(), "the answer names no attempt");
        self.app.recorder.flush().await.unwrap();
        let mut records: Vec<Value> = self
            .app
            .all_records()
            .await
            .into_iter()
            .filter(|record| record["request_id"] == answer.request_id.as_str())
            .collect();
        assert_eq!(
            records.len(),
            1,
            "one record for attempt {}",
            answer.request_id
        );
        records.remove(0)
    }

    /// Checks the server still serves a healthy stream, that every request
    /// reached the provider once and left one record, and that nothing
    /// panicked; then stops the server.
    async fn finish(self) {
        let answer = self.chat("none", true).await;
        assert_eq!(answer.status, 200);
        let (data, rest) = sse_data(&answer.text());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(rest.is_empty());
        assert_record(&self.record_of(&answer).await, "ok", None);
        let sent = self.sent.load(Ordering::SeqCst);
        assert_eq!(
            self.provider_requests.load(Ordering::SeqCst),
            sent,
            "one attempt per request, no retries"
        );
        self.app.recorder.flush().await.unwrap();
        assert_eq!(self.app.all_records().await.len(), sent, "one record each");
        assert_eq!(
            SERVER_PANICS.load(Ordering::SeqCst),
            0,
            "something panicked (see above)"
        );
        self.app.stop().await;
    }
}

// Reading what the client got.

/// The `data` of each complete event in a stream body, and what followed
/// the last complete event (empty when the stream ended between events).
fn sse_data(body: &str) -> (Vec<String>, String) {
    let mut events: Vec<&str> = body.split("\n\n").collect();
    let rest = events.pop().unwrap_or_default().to_owned();
    let data = events
        .iter()
        .map(|event| {
            event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    (data, rest)
}

/// The content deltas of the chunks that parse.
fn content(data: &[String]) -> String {
    data.iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The events that are errors, parsed.
fn errors(data: &[String]) -> Vec<Value> {
    data.iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|event| event.get("error").is_some())
        .collect()
}

fn preview(text: &str) -> String {
    let cut = (0..=text.len().min(600))
        .rev()
        .find(|index| text.is_char_boundary(*index))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

/// `{"error": {"message", "type", "param", "code"}}` with `code`.
fn assert_openai_error(error: &Value, code: &str) {
    let fields = error["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not an OpenAI-style error: {error}"));
    assert!(
        fields["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{error}"
    );
    assert!(fields["type"].is_string(), "{error}");
    assert!(fields.contains_key("param"), "{error}");
    assert_eq!(fields["code"], code, "{error}");
}

/// A stream that ended with exactly one error event, `code`, as its last
/// complete event, and nothing after it; its other events' content.
fn assert_ends_with_error_event(answer: &Answer, code: &str) -> String {
    let text = answer.text();
    assert_eq!(answer.status, 200, "{}", preview(&text));
    assert!(answer.content_type.starts_with("text/event-stream"));
    let (data, rest) = sse_data(&text);
    assert!(
        rest.is_empty(),
        "a partial event after the error: {}",
        preview(&rest)
    );
    let errors = errors(&data);
    assert_eq!(errors.len(), 1, "one error event: {}", preview(&text));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_openai_error(&last, code);
    content(&data)
}

fn assert_record(record: &Value, status: &str, error_type: Option<&str>) {
    assert_eq!(
        (record["status"].as_str(), record["error_type"].as_str()),
        (Some(status), error_type),
        "{record}"
    );
}

/// The gateway's own error answer: an OpenAI-style JSON body.
fn assert_gateway_error(answer: &Answer, status: &[u16], code: &[&str]) {
    assert!(
        status.contains(&answer.status),
        "status {} not in {status:?}: {}",
        answer.status,
        preview(&answer.text())
    );
    assert!(answer.content_type.starts_with("application/json"));
    let error = answer.json();
    let got = error["error"]["code"].as_str().unwrap_or_default();
    assert!(code.contains(&got), "code {got} not in {code:?}");
    assert_openai_error(&error, got);
}

// The faults.

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_with_an_error_event_and_an_error_record() {
    let harness = harness(&[]).await;
    for (fault, seen) in [
        ("reset_mid_stream", "Hello world"),
        // The half event before the reset is not passed on: the error event
        // must start on a line of its own.
        ("reset_mid_event", "Hello"),
        // A FIN without the chunked body's last chunk is a cut too.
        ("close_mid_stream", "Hello world"),
    ] {
        let answer = harness.chat(fault, true).await;
        assert_eq!(
            assert_ends_with_error_event(&answer, "upstream_error"),
            seen,
            "{fault}"
        );
        let record = harness.record_of(&answer).await;
        assert_record(&record, "error", Some("upstream_error"));
        assert_eq!(record["stream"], true);
        assert_eq!(record["metadata"]["usage_source"], "estimated", "{fault}");
        assert!(record["output_tokens"].as_u64().unwrap() > 0, "{fault}");
    }
    harness.finish().await;
}

#[tokio::test]
async fn a_connection_reset_before_or_during_a_whole_answer_is_a_502_and_an_error_record() {
    let harness = harness(&[]).await;
    for (fault, stream) in [
        ("reset_before_head", true),
        ("reset_before_head", false),
        ("reset_mid_body", false),
    ] {
        let answer = harness.chat(fault, stream).await;
        assert_gateway_error(&answer, &[502], &["upstream_unreachable"]);
        let record = harness.record_of(&answer).await;
        assert_record(&record, "error", Some("upstream_error"));
        assert_eq!(record["stream"], stream, "{fault}");
    }
    harness.finish().await;
}

#[tokio::test]
async fn a_provider_that_never_sends_a_response_head_is_a_504_and_a_timeout_record() {
    let harness = harness(&[]).await;
    let started = std::time::Instant::now();
    let (streamed, whole) = tokio::join!(
        harness.chat("stall_first_byte", true),
        harness.chat("stall_first_byte", false)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the 1 s timeout"
    );
    for answer in [streamed, whole] {
        assert_gateway_error(&answer, &[504], &["upstream_timeout"]);
        let record = harness.record_of(&answer).await;
        assert_record(&record, "error", Some("timeout"));
        assert_eq!(record["status_code"], Value::Null, "no answer, no status");
    }
    harness.finish().await;
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_a_timeout_error_event_and_a_timeout_record() {
    let harness = harness(&[]).await;
    let faults = [
        ("stall_after_head", ""),
        ("stall_mid_stream", "Hello world"),
        ("stall_mid_event", "Hello"),
    ];
    let answers =
        futures_util::future::join_all(faults.iter().map(|(fault, _)| harness.chat(fault, true)))
            .await;
    for ((fault, seen), answer) in faults.iter().zip(&answers) {
        assert_eq!(
            assert_ends_with_error_event(answer, "timeout"),
            *seen,
            "{fault}"
        );
        let record = harness.record_of(answer).await;
        assert_record(&record, "error", Some("timeout"));
        assert_eq!(record["status_code"], 200, "{fault}");
    }
    harness.finish().await;
}

#[tokio::test]
async fn a_whole_answer_that_stalls_mid_body_is_a_504_and_a_timeout_record() {
    let harness = harness(&[]).await;
    let answer = harness.chat("stall_mid_body", false).await;
    assert_gateway_error(&answer, &[504], &["upstream_timeout"]);
    let record = harness.record_of(&answer).await;
    assert_record(&record, "error", Some("timeout"));
    harness.finish().await;
}

#[tokio::test]
async fn a_ten_megabyte_event_is_forwarded_whole_and_metered() {
    let harness = harness(&[]).await;
    let expected = "lorem ipsum ".repeat(TEN_MB / 12);

    let answer = harness.chat("huge_event", true).await;
    assert_eq!(answer.status, 200);
    let (data, rest) = sse_data(&answer.text());
    assert!(rest.is_empty());
    assert!(errors(&data).is_empty());
    assert!(content(&data) == expected, "the event arrives intact");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let record = harness.record_of(&answer).await;
    assert_record(&record, "ok", None);
    assert_eq!(record["metadata"]["usage_source"], "reported");
    assert_eq!(record["output_tokens"], 10);

    // A 10 MB line that never ends: held as one pending event (under the
    // cap) and passed on as it was when the body ends.
    let answer = harness.chat("huge_unterminated_line", true).await;
    assert_eq!(answer.status, 200);
    let (data, rest) = sse_data(&answer.text());
    assert_eq!(content(&data), "Hello");
    assert!(errors(&data).is_empty());
    assert_eq!(rest.len(), "data: ".len() + TEN_MB, "the unfinished event");
    let record = harness.record_of(&answer).await;
    assert_record(&record, "ok", None);
    assert_eq!(record["metadata"]["usage_source"], "estimated");

    // The same size as a whole answer.
    let answer = harness.chat("huge_body", false).await;
    assert_eq!(answer.status, 200);
    assert!(answer.json()["choices"][0]["message"]["content"].as_str() == Some(expected.as_str()));
    let record = harness.record_of(&answer).await;
    assert_record(&record, "ok", None);
    assert_eq!(record["output_tokens"], 10);
    harness.finish().await;
}

/// Forwarded as soon as it is whole, not kept to the stream's end: the
/// provider goes silent after it, and the client has it long before the idle
/// timeout ends the stream. (A debug build spends over a second on a 10 MB
/// event, so the idle timeout here is 4 s: the 1 s one could pass while the
/// gateway is still busy with the event.)
#[tokio::test]
async fn a_ten_megabyte_event_reaches_the_client_before_the_stream_ends() {
    let harness = harness(&[("gateway.stream_idle_timeout_ms", "4000")]).await;
    let answer = harness.chat("huge_event_then_stall", true).await;
    let expected = "lorem ipsum ".repeat(TEN_MB / 12);
    assert!(assert_ends_with_error_event(&answer, "timeout") == expected);
    let event_end = answer
        .body
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .unwrap()
        + 2;
    let held = answer.ended - answer.had(event_end);
    assert!(
        held > Duration::from_secs(1),
        "the client had the event only {held:?} before the end"
    );
    let record = harness.record_of(&answer).await;
    assert_record(&record, "error", Some("timeout"));
    assert_eq!(record["metadata"]["usage_source"], "estimated");
    harness.finish().await;
}

#[tokio::test]
async fn an_event_over_the_cap_is_replaced_by_an_error_event_and_not_buffered() {
    let harness = harness(&[]).await;
    for fault in ["oversized_event", "oversized_unterminated_line"] {
        let answer = harness.chat(fault, true).await;
        assert_eq!(answer.status, 200);
        let text = answer.text();
        // None of the oversized event reaches the client: it was dropped as
        // it came, not gathered and forwarded.
        assert!(
            text.len() < 1 << 20,
            "{fault}: {} bytes forwarded",
            text.len()
        );
        let (data, rest) = sse_data(&text);
        assert!(rest.is_empty(), "{fault}: {}", preview(&rest));
        let errors = errors(&data);
        assert_eq!(errors.len(), 1, "{fault}: {}", preview(&text));
        assert_openai_error(&errors[0], "upstream_error");
        // The error takes the oversized event's place, after what came
        // before it.
        let position = data
            .iter()
            .position(|data| data.contains("\"error\""))
            .unwrap();
        assert_eq!(content(&data[..position]), "Hello", "{fault}");
        let record = harness.record_of(&answer).await;
        assert_record(&record, "error", Some("upstream_error"));
    }
    harness.finish().await;
}

/// A whole answer is held to read its usage, so it is capped
/// (`MAX_ANSWER_BODY`, 128 MiB): a provider cannot make the gateway hold
/// any amount.
#[tokio::test]
async fn a_whole_answer_over_the_cap_is_a_502_and_not_buffered() {
    let harness = harness(&[]).await;
    let answer = harness.chat("oversized_body", false).await;
    assert_gateway_error(&answer, &[502], &["upstream_unreachable"]);
    let record = harness.record_of(&answer).await;
    assert_record(&record, "error", Some("upstream_error"));
    harness.finish().await;
}

#[tokio::test]
async fn invalid_json_chunks_are_passed_through_and_the_stream_is_still_metered() {
    let harness = harness(&[]).await;
    for (fault, usage_source, output_tokens) in [
        ("invalid_json", "reported", Some(10)),
        ("invalid_json_no_usage", "estimated", None),
    ] {
        let answer = harness.chat(fault, true).await;
        assert_eq!(answer.status, 200);
        for bad in [
            &b"data: {not json\n\n"[..],
            b"data: \xff\xfe not UTF-8\n\n",
            b"data: 42\n\n",
        ] {
            assert!(
                answer.body.windows(bad.len()).any(|window| window == bad),
                "{fault}: {} passed through unchanged",
                String::from_utf8_lossy(bad)
            );
        }
        let (data, rest) = sse_data(&answer.text());
        assert!(rest.is_empty());
        assert!(errors(&data).is_empty());
        assert_eq!(content(&data), "Hello world", "{fault}");
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(
            !answer.text().contains("\"usage\":{"),
            "the usage chunk the gateway asked for stays with it"
        );
        let record = harness.record_of(&answer).await;
        assert_record(&record, "ok", None);
        assert_eq!(record["metadata"]["usage_source"], usage_source, "{fault}");
        match output_tokens {
            Some(tokens) => assert_eq!(record["output_tokens"], tokens),
            None => assert!(record["output_tokens"].as_u64().unwrap() > 0),
        }
    }

    // A whole answer that is not JSON is passed back as it came.
    let answer = harness.chat("invalid_json", false).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "{not json"));
    let record = harness.record_of(&answer).await;
    assert_record(&record, "ok", None);
    assert_eq!(record["metadata"]["usage_source"], "estimated");
    harness.finish().await;
}

#[tokio::test]
async fn a_stream_that_ends_without_done_ends_normally_and_is_recorded() {
    let harness = harness(&[]).await;
    for (fault, usage_source) in [("no_done", "reported"), ("no_done_no_usage", "estimated")] {
        let answer = harness.chat(fault, true).await;
        assert_eq!(answer.status, 200);
        let (data, rest) = sse_data(&answer.text());
        assert!(rest.is_empty());
        assert!(errors(&data).is_empty(), "{fault}");
        assert_eq!(content(&data), "Hello world");
        assert!(
            !data.iter().any(|data| data == "[DONE]"),
            "the gateway adds nothing"
        );
        let record = harness.record_of(&answer).await;
        assert_record(&record, "ok", None);
        assert_eq!(record["metadata"]["usage_source"], usage_source, "{fault}");
        assert!(record["output_tokens"].as_u64().unwrap() > 0);
    }
    harness.finish().await;
}
