//! The gateway through a real server on port 0 and the fake upstream: what
//! the client gets, what the provider got, and what the ledger recorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate::fake_upstream::{self, ReceivedLog};

use common::{TestApp, TestDatabase, connect_store, create_key, spawn_app, test_config};

struct Harness {
    app: TestApp,
    key: String,
    received: ReceivedLog,
    _database: TestDatabase,
}

async fn harness(extra: &[(&str, &str)]) -> Harness {
    let (router, received) = fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let database = TestDatabase::sqlite();
    let openai = format!("{upstream}/openai/v1");
    let openrouter = format!("{upstream}/openrouter/api/v1");
    let local = format!("{upstream}/local/v1");
    let mut settings: Vec<(&str, &str)> = vec![
        ("providers.openai.base_url", &openai),
        ("providers.openai.api_key", "sk-openai-test"),
        ("providers.openrouter.base_url", &openrouter),
        ("providers.openrouter.api_key", "sk-or-test"),
        ("providers.local.base_url", &local),
        ("gateway.first_byte_timeout_ms", "2000"),
        ("gateway.stream_idle_timeout_ms", "1000"),
    ];
    settings.extend_from_slice(extra);
    let mut config = test_config(&database.url, &database.spool_dir(), &settings);
    config.gateway.fallbacks.insert(
        "openai/gpt-4o".to_owned(),
        vec!["openrouter/openai/gpt-4o".to_owned()],
    );
    config
        .gateway
        .aliases
        .insert("fast".to_owned(), "openai/gpt-4o-mini".to_owned());
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", Some("alice")).await;
    store.close().await;
    let app = spawn_app(config).await;
    Harness {
        app,
        key,
        received,
        _database: database,
    }
}

impl Harness {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url(path))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The ledger's records, oldest first, once the recorder has written them.
    async fn records(&self) -> Vec<Value> {
        self.app.recorder.flush().await.unwrap();
        let mut records = self.app.all_records().await;
        records.reverse();
        records
    }

    async fn last_received(&self) -> fake_upstream::Received {
        self.received.lock().await.last().cloned().unwrap()
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Every SSE `data:` payload of a body.
fn data_lines(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_chat_request_is_forwarded_answered_unchanged_and_recorded_with_its_cost() {
    let harness = harness(&[]).await;
    let mut body = chat("openai/gpt-4o-mini");
    body["temperature"] = json!(0.25);
    body["x_unknown_field"] = json!({"kept": true});
    body["api_base"] = json!("http://attacker.invalid");
    let response = harness
        .app
        .client
        .post(harness.app.url("/v1/chat/completions"))
        .bearer_auth(&harness.key)
        .header("x-tollgate-tags", "search, beta")
        .header("x-tollgate-user", "end-user-7")
        .header("x-tollgate-metadata", r#"{"feature":"summaries"}"#)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-tollgate-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // 15 × $0.15 + 5 × $0.075 + 10 × $0.60 per million = $0.000008625.
    assert_eq!(response.headers()["x-tollgate-cost-usd"], "0.000008625");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello from fake"
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 20);

    let received = harness.last_received().await;
    assert_eq!(received.provider, "openai");
    assert_eq!(received.path, "v1/chat/completions");
    assert_eq!(
        received.authorization.as_deref(),
        Some("Bearer sk-openai-test")
    );
    assert_eq!(received.body["model"], "gpt-4o-mini");
    assert_eq!(received.body["temperature"], 0.25);
    assert_eq!(received.body["x_unknown_field"], json!({"kept": true}));
    assert!(
        received.body.get("api_base").is_none(),
        "client-side settings never reach the provider"
    );
    assert!(received.body.get("stream_options").is_none());

    let records = harness.records().await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["request_id"], request_id);
    assert_eq!(record["provider"], "openai");
    assert_eq!(record["model"], "gpt-4o-mini");
    assert_eq!(record["task_type"], "chat");
    assert_eq!(
        (
            record["input_tokens"].as_u64(),
            record["output_tokens"].as_u64(),
            record["cached_input_tokens"].as_u64(),
            record["reasoning_tokens"].as_u64()
        ),
        (Some(20), Some(10), Some(5), Some(4))
    );
    assert_eq!(record["cost_nano_usd"], 8_625);
    assert_eq!(record["org_id"], "acme");
    assert_eq!(record["user_id"], "alice");
    assert_eq!(record["status"], "ok");
    assert_eq!(record["status_code"], 200);
    assert_eq!(record["provider_request_id"], "chatcmpl-fake");
    assert_eq!(record["metadata"]["tags"], json!(["search", "beta"]));
    assert_eq!(record["metadata"]["user"], "end-user-7");
    assert_eq!(record["metadata"]["feature"], "summaries");
    assert_eq!(record["metadata"]["requested_model"], "openai/gpt-4o-mini");
    assert_eq!(record["metadata"]["usage_source"], "reported");
    harness.app.stop().await;
}

#[tokio::test]
async fn a_stream_without_usage_requested_reaches_the_client_as_asked_and_is_metered() {
    for behaviour in ["", "split"] {
        let harness = harness(&[]).await;
        let mut body = chat("gpt-4o-mini");
        body["stream"] = json!(true);
        body["fake"] = json!(behaviour);
        let response = harness.post("/v1/chat/completions", body).await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert!(response.headers().get("x-tollgate-cost-usd").is_none());
        let text = response.text().await.unwrap();
        let data = data_lines(&text);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{behaviour}: {text}"
        );
        assert!(
            !text.contains("\"usage\""),
            "{behaviour}: the client did not ask for usage: {text}"
        );
        let content: String = data
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|chunk| {
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, "Hello from fake");
        let received = harness.last_received().await;
        assert_eq!(
            received.body["stream_options"],
            json!({"include_usage": true})
        );
        let records = harness.records().await;
        assert_eq!(records[0]["input_tokens"], 20, "{behaviour}");
        assert_eq!(records[0]["output_tokens"], 10);
        assert_eq!(records[0]["stream"], true);
        assert_eq!(records[0]["cost_nano_usd"], 8_625);
        assert!(records[0]["time_to_first_token_ms"].is_u64());
        harness.app.stop().await;
    }
}

#[tokio::test]
async fn a_stream_with_usage_requested_keeps_the_usage_chunk() {
    let harness = harness(&[]).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = harness
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let usage_chunks: Vec<Value> = data_lines(&text)
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|chunk| chunk["usage"].is_object())
        .collect();
    assert_eq!(usage_chunks.len(), 1);
    assert_eq!(usage_chunks[0]["usage"]["completion_tokens"], 10);
    assert_eq!(harness.records().await[0]["output_tokens"], 10);
    harness.app.stop().await;
}

#[tokio::test]
async fn openrouter_requests_record_the_reported_cost_beside_the_estimate() {
    let harness = harness(&[]).await;
    let response = harness
        .post("/v1/chat/completions", chat("openrouter/openai/gpt-4o"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-cost-usd"], "0.00042");
    let received = harness.last_received().await;
    assert_eq!(
        (received.provider.as_str(), received.body["model"].as_str()),
        ("openrouter", Some("openai/gpt-4o"))
    );
    let record = &harness.records().await[0];
    assert_eq!(record["provider"], "openrouter");
    assert_eq!(record["cost_status"], "provider_reported");
    assert_eq!(record["cost_nano_usd"], 420_000);
    // 15 × $2.50 + 5 × $1.25 + 10 × $10 per million = $0.00014375.
    assert_eq!(record["estimated_cost_nano_usd"], 143_750);
    harness.app.stop().await;
}

#[tokio::test]
async fn a_local_model_without_usage_is_counted_with_the_tokenizer() {
    let harness = harness(&[]).await;
    let mut body = chat("local/llama3.1:8b");
    body["fake"] = json!("no_usage");
    assert_eq!(
        harness.post("/v1/chat/completions", body).await.status(),
        200
    );
    let record = &harness.records().await[0];
    assert_eq!(record["provider"], "local");
    assert_eq!(record["metadata"]["usage_source"], "estimated");
    assert_eq!(record["input_tokens"], 2, "`Say hello` is two o200k tokens");
    assert_eq!(record["output_tokens"], 3, "`Hello from fake` is three");
    assert_eq!(
        record["cost_nano_usd"], 0,
        "local models are free unless priced"
    );
    harness.app.stop().await;
}

#[tokio::test]
async fn every_route_records_its_task_type_and_usage() {
    let harness = harness(&[]).await;
    // gpt-3.5-turbo-instruct has no cache price, so its cached tokens make
    // the cost an estimate.
    let cases = [
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"}),
            "completion",
            20,
            "estimated",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "embed me"}),
            "embedding",
            8,
            "priced",
        ),
        (
            "/v1/images/generations",
            json!({"model": "gpt-image-1", "prompt": "a cat"}),
            "image_generation",
            50,
            "priced",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "Say hello"}),
            "responses",
            20,
            "priced",
        ),
    ];
    for (path, body, task, input_tokens, cost_status) in cases {
        let response = harness.post(path, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let records = harness.records().await;
        let record = records.last().unwrap();
        assert_eq!(record["task_type"], task, "{path}");
        assert_eq!(record["input_tokens"], input_tokens, "{path}");
        assert_eq!(record["cost_status"], cost_status, "{path}");
    }
    harness.app.stop().await;
}

#[tokio::test]
async fn dall_e_images_are_priced_per_image_from_the_request() {
    let harness = harness(&[]).await;
    let body = json!({"model": "dall-e-3", "prompt": "a cat", "n": 2, "size": "1024x1792", "quality": "hd"});
    let response = harness.post("/v1/images/generations", body).await;
    assert_eq!(response.headers()["x-tollgate-cost-usd"], "0.24");
    let record = &harness.records().await[0];
    assert_eq!(record["cost_nano_usd"], 240_000_000);
    harness.app.stop().await;
}

#[tokio::test]
async fn a_streamed_responses_call_is_metered_from_its_completed_event() {
    let harness = harness(&[]).await;
    let body = json!({"model": "gpt-4o-mini", "input": "Say hello", "stream": true});
    let text = harness
        .post("/v1/responses", body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: response.completed"));
    let received = harness.last_received().await;
    assert!(
        received.body.get("stream_options").is_none(),
        "the Responses API needs no opt-in"
    );
    let record = &harness.records().await[0];
    assert_eq!(
        (
            record["input_tokens"].as_u64(),
            record["output_tokens"].as_u64()
        ),
        (Some(20), Some(10))
    );
    assert_eq!(record["task_type"], "responses");
    harness.app.stop().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_and_are_recorded_by_kind() {
    let harness = harness(&[]).await;
    let cases = [
        ("rate_limit", 429, "rate_limited"),
        ("quota", 429, "quota_exceeded"),
        ("server_error", 500, "upstream_error"),
    ];
    for (behaviour, status, error_type) in cases {
        let mut body = chat("gpt-4o-mini");
        body["fake"] = json!(behaviour);
        let response = harness.post("/v1/chat/completions", body).await;
        assert_eq!(response.status(), status, "{behaviour}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].is_string(),
            "the provider's body comes back"
        );
        let records = harness.records().await;
        let record = records.last().unwrap();
        assert_eq!(record["status"], "error");
        assert_eq!(record["error_type"], error_type, "{behaviour}");
        assert_eq!(record["status_code"], status);
    }
    let mut quota = chat("openrouter/openai/gpt-4o");
    quota["fake"] = json!("quota");
    assert_eq!(
        harness.post("/v1/chat/completions", quota).await.status(),
        402
    );
    assert_eq!(
        harness.records().await.last().unwrap()["error_type"],
        "quota_exceeded"
    );
    harness.app.stop().await;
}

#[tokio::test]
async fn a_quota_failure_falls_back_to_the_next_target_with_linked_records() {
    let harness = harness(&[]).await;
    let mut body = chat("openai/gpt-4o");
    body["fake"] = json!("quota@openai");
    let response = harness.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-tollgate-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let records = harness.records().await;
    assert_eq!(records.len(), 2, "one record per attempt");
    assert_eq!(
        (
            records[0]["provider"].as_str(),
            records[0]["error_type"].as_str()
        ),
        (Some("openai"), Some("quota_exceeded"))
    );
    assert_eq!(records[1]["provider"], "openrouter");
    assert_eq!(
        records[1]["request_id"], request_id,
        "the header names the attempt that answered"
    );
    assert_eq!(records[1]["parent_request_id"], records[0]["request_id"]);
    assert_eq!(harness.received.lock().await.len(), 2, "no nested retries");
    harness.app.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_still_leaves_a_record() {
    let harness = harness(&[]).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["fake"] = json!("stall_stream");
    let response = harness.post("/v1/chat/completions", body).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let recorded = common::eventually(Duration::from_secs(5), || async {
        harness
            .records()
            .await
            .first()
            .is_some_and(|record| record["status"] == "client_disconnected")
    })
    .await;
    assert!(recorded);
    let record = &harness.records().await[0];
    assert_eq!(record["error_type"], "client_disconnected");
    assert_eq!(record["metadata"]["usage_source"], "estimated");
    assert!(record["input_tokens"].as_u64().unwrap() > 0);
    harness.app.stop().await;
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event_and_a_timeout_record() {
    let harness = harness(&[]).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["fake"] = json!("stall_stream");
    let text = harness
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let last: Value = serde_json::from_str(data_lines(&text).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout");
    let record = &harness.records().await[0];
    assert_eq!(
        (record["status"].as_str(), record["error_type"].as_str()),
        (Some("error"), Some("timeout"))
    );
    harness.app.stop().await;
}

#[tokio::test]
async fn the_gateway_answers_its_own_errors_in_openai_shape() {
    let harness = harness(&[("gateway.max_body_bytes", "2048")]).await;
    let unknown = harness
        .post("/v1/chat/completions", chat("claude-3-opus"))
        .await;
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    assert_eq!(
        harness.post("/v1/chat/completions", big).await.status(),
        413
    );
    let not_json = harness
        .app
        .client
        .post(harness.app.url("/v1/chat/completions"))
        .bearer_auth(&harness.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    for token in [None, Some("tg_nope"), Some("sk-openai-test")] {
        let mut request = harness
            .app
            .client
            .post(harness.app.url("/v1/chat/completions"))
            .json(&chat("gpt-4o-mini"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_api_key");
    }
    assert!(
        harness.received.lock().await.is_empty(),
        "nothing reached the provider"
    );
    assert!(harness.records().await.is_empty());
    harness.app.stop().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_a_502_and_a_record() {
    let harness = harness(&[("providers.local.base_url", "http://127.0.0.1:9/v1")]).await;
    let response = harness
        .post("/v1/chat/completions", chat("local/llama3"))
        .await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().contains_key("x-tollgate-request-id"));
    let record = &harness.records().await[0];
    assert_eq!(record["error_type"], "upstream_error");
    harness.app.stop().await;
}

#[tokio::test]
async fn the_models_route_lists_what_can_be_routed() {
    let harness = harness(&[]).await;
    let response = harness
        .app
        .client
        .get(harness.app.url("/v1/models"))
        .bearer_auth(&harness.key)
        .send()
        .await
        .unwrap();
    let models: Value = response.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert!(ids.contains(&"openai/gpt-4o-mini"));
    assert!(ids.contains(&"openrouter/openai/gpt-4o"));
    assert!(ids.contains(&"fast"));
    harness.app.stop().await;
}

#[tokio::test]
async fn streamed_completions_and_openrouter_streams_are_metered() {
    let harness = harness(&[]).await;
    let completion =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "stream": true});
    let text = harness
        .post("/v1/completions", completion)
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    let joined: String = data_lines(&text)
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|chunk| chunk["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(joined, "Hello from fake");
    // OpenRouter always sends usage (and keep-alive comments, passed through).
    let mut openrouter = chat("openrouter/openai/gpt-4o");
    openrouter["stream"] = json!(true);
    let text = harness
        .post("/v1/chat/completions", openrouter)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.starts_with(": OPENROUTER PROCESSING"), "{text}");
    let records = harness.records().await;
    assert_eq!(
        (
            records[0]["task_type"].as_str(),
            records[0]["output_tokens"].as_u64()
        ),
        (Some("completion"), Some(10))
    );
    assert_eq!(records[1]["cost_nano_usd"], 420_000);
    assert_eq!(records[1]["cost_status"], "provider_reported");
    harness.app.stop().await;
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_ends_with_an_error_event_and_a_record() {
    let harness = harness(&[]).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["fake"] = json!("break_stream");
    let text = harness
        .post("/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let lines = data_lines(&text);
    let last: Value = serde_json::from_str(lines.last().expect(&text)).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{text}");
    let record = &harness.records().await[0];
    assert_eq!(
        (record["status"].as_str(), record["error_type"].as_str()),
        (Some("error"), Some("upstream_error"))
    );
    assert_eq!(record["metadata"]["usage_source"], "estimated");
    harness.app.stop().await;
}

#[tokio::test]
async fn a_provider_slower_than_the_first_byte_timeout_is_a_504_and_a_timeout_record() {
    let harness = harness(&[("gateway.first_byte_timeout_ms", "300")]).await;
    let mut body = chat("gpt-4o-mini");
    body["fake"] = json!("slow:2000");
    let response = harness.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    let record = &harness.records().await[0];
    assert_eq!(record["error_type"], "timeout");
    harness.app.stop().await;
}

#[tokio::test]
async fn an_alias_routes_to_its_model_and_a_revoked_key_is_refused() {
    let harness = harness(&[("gateway.key_cache_seconds", "0")]).await;
    assert_eq!(
        harness
            .post("/v1/chat/completions", chat("fast"))
            .await
            .status(),
        200
    );
    assert_eq!(harness.last_received().await.body["model"], "gpt-4o-mini");
    let store = connect_store(&harness._database.url).await;
    let key = store
        .list_keys(&tollgate::store::Scope::All, Some("acme"))
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .revoke_key(&tollgate::store::Scope::All, key.id)
            .await
            .unwrap()
    );
    store.close().await;
    let refused = harness.post("/v1/chat/completions", chat("fast")).await;
    assert_eq!(refused.status(), 401);
    harness.app.stop().await;
}

/// A burst of first requests with a key nobody has used yet makes one
/// lookup, not one per request (which once exhausted PostgreSQL's pool and
/// answered 503 to valid callers).
#[tokio::test]
async fn a_burst_of_first_requests_with_a_new_key_all_pass() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let (router, _received) = fake_upstream::router_with_log();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/openai/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let config = test_config(
        &database.url,
        &database.spool_dir(),
        &[
            ("providers.openai.base_url", &upstream),
            ("providers.openai.api_key", "sk-test"),
            // A small pool with a short wait: 200 lookups one after another
            // would time out.
            ("database.max_connections", "1"),
            ("database.acquire_timeout_ms", "300"),
        ],
    );
    let store = connect_store(&database.url).await;
    let key = create_key(&store, "acme", None).await;
    store.close().await;
    let app = spawn_app(config).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let statuses = futures_util::future::join_all((0..200).map(|_| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    }))
    .await;
    let failed: Vec<u16> = statuses
        .into_iter()
        .map(|response| response.unwrap().status().as_u16())
        .filter(|status| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {failed:?}",
        failed.len()
    );
    app.stop().await;
}
