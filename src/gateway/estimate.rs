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

/// Text counted token by token; the rest of a longer text is counted at the
/// same tokens per byte. The count runs on the request's task, and BPE over
/// text without word breaks costs about 1 µs a byte (16 ms a MiB for prose),
/// so a huge prompt must not hold a runtime worker for seconds.
const EXACT_COUNT_BYTES: usize = 256 << 10;

/// Tokens in `text` by the o200k vocabulary (GPT-4o and later); past
/// [`EXACT_COUNT_BYTES`], extrapolated from its start.
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let mut cut = text.len().min(EXACT_COUNT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let encoder = tiktoken_rs::o200k_base_singleton();
    let counted = encoder.encode_with_special_tokens(&text[..cut]).len() as u64;
    if cut == text.len() || cut == 0 {
        return counted;
    }
    // Rounded up: an estimate for a budget errs on the side of holding more.
    let scaled = u128::from(counted) * text.len() as u128;
    u64::try_from(scaled.div_ceil(cut as u128)).unwrap_or(u64::MAX)
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
    fn long_texts_are_counted_from_their_start_and_scaled_up() {
        let short = "hello world ".repeat(100);
        let exact = tiktoken_rs::o200k_base_singleton()
            .encode_with_special_tokens(&short)
            .len() as u64;
        assert_eq!(count_tokens(&short), exact);
        // Past the exact part: the start's tokens, scaled by length.
        let unit = "héllo wörld ".repeat(EXACT_COUNT_BYTES / 14);
        let long = unit.repeat(8);
        let head = count_tokens(&long[..]);
        let mut cut = EXACT_COUNT_BYTES;
        while !long.is_char_boundary(cut) {
            cut -= 1;
        }
        let prefix = count_tokens(&long[..cut]);
        let expected = (u128::from(prefix) * long.len() as u128).div_ceil(cut as u128);
        assert_eq!(u128::from(head), expected);
        // Multi-byte characters at the cut are not split.
        assert!(count_tokens(&"é".repeat(EXACT_COUNT_BYTES)) > 0);
    }

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
