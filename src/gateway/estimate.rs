//! Token estimates for responses that report no usage (local servers,
//! broken or cancelled streams): OpenAI's o200k BPE, compiled into the
//! binary, over the prompt's text and the output text seen.

use serde_json::Value;

use super::routing::Target;
use crate::money::NanoUsd;
use crate::pricing::Pricing;
use crate::usage::{ExtraUsage, ImageBatch, TaskType, TokenCounts};

/// Tokens added to a prompt's count for the chat format's per-message
/// framing, which the text alone does not show.
const PROMPT_FRAMING_TOKENS: u64 = 32;

/// The most a request can cost, for budget reservations: its prompt counted
/// with the tokenizer at the input price, plus its output cap at the output
/// price (none for embeddings), plus images by count and size. Zero for a
/// model with no price (whose records carry no cost either).
pub fn max_cost(
    pricing: &Pricing,
    task: TaskType,
    target: &Target,
    body: &[u8],
    max_output_tokens: u64,
    images: Option<&ImageBatch>,
) -> NanoUsd {
    let input = count_tokens(&prompt_text(body)).saturating_add(PROMPT_FRAMING_TOKENS);
    let output = match task {
        TaskType::Embedding => 0,
        _ => max_output_tokens,
    };
    let tokens = TokenCounts {
        input,
        output,
        ..TokenCounts::default()
    };
    let extra = ExtraUsage {
        images: images.cloned(),
        ..ExtraUsage::default()
    };
    let priced = pricing.price(target.provider, &target.model, &tokens, &extra, None);
    priced
        .cost
        .or(priced.estimated_cost)
        .unwrap_or(NanoUsd::ZERO)
}

/// Tokens in `text` by the o200k vocabulary (GPT-4o and later).
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let encoder = tiktoken_rs::o200k_base_singleton();
    encoder.encode_with_special_tokens(text).len() as u64
}

/// The text a request sends as input: message contents, `prompt` or `input`
/// (strings, arrays of strings, or content parts with `text`).
pub fn prompt_text(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let mut text = String::new();
    if let Some(messages) = value.get("messages").and_then(Value::as_array) {
        for message in messages {
            if let Some(content) = message.get("content") {
                collect_text(content, &mut text);
            }
        }
    }
    for field in ["prompt", "input", "instructions"] {
        if let Some(content) = value.get(field) {
            collect_text(content, &mut text);
        }
    }
    text.truncate(text.trim_end().len());
    text
}

fn collect_text(value: &Value, text: &mut String) {
    match value {
        Value::String(part) => {
            text.push_str(part);
            text.push('\n');
        }
        Value::Array(parts) => parts.iter().for_each(|part| collect_text(part, text)),
        Value::Object(part) => {
            for field in ["text", "content", "input_text"] {
                if let Some(inner) = part.get(field) {
                    collect_text(inner, text);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_read_from_messages_prompt_and_input() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello there"}]}]}"#;
        assert_eq!(prompt_text(chat), "Be brief.\nHello there");
        assert_eq!(prompt_text(br#"{"prompt":["a","b"]}"#), "a\nb");
        assert_eq!(prompt_text(br#"{"input":"embed me"}"#), "embed me");
    }

    #[test]
    fn tokens_are_counted_with_the_o200k_vocabulary() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello world"), 2);
        assert!(count_tokens(&"word ".repeat(100)) >= 100);
    }
}
