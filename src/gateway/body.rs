//! The client's JSON request: read what routing and metering need, and
//! rewrite only the model name and `stream_options`. Every other field is
//! passed through byte for byte, in its original order. Pure.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Fields that configure a client SDK, never a provider. They are dropped so
/// that no request can carry an upstream address or key.
const CLIENT_ONLY_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "organization",
];

/// Why a request body cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is not a JSON object: {0}")]
    NotJson(String),
    #[error("`{0}` is missing or not a string")]
    MissingModel(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

/// A parsed request: the top-level fields as raw JSON, plus what matters.
#[derive(Debug)]
pub struct RequestBody<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub model: String,
    pub stream: bool,
    /// Whether the client asked for the usage chunk itself.
    pub include_usage: bool,
    /// The OpenAI `user` field (an end-user id), if a string.
    pub user: Option<String>,
    /// For image generation: images requested (`n`, default 1), size, quality.
    pub images: (u32, Option<String>, Option<String>),
    /// The output cap the client set (`max_completion_tokens`, `max_tokens`
    /// or, for the Responses API, `max_output_tokens`).
    pub max_output_tokens: Option<u64>,
}

impl<'a> RequestBody<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let TopLevel(fields) =
            serde_json::from_slice(bytes).map_err(|error| BodyError::NotJson(error.to_string()))?;
        let field = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.get())
        };
        let model = field("model")
            .and_then(|raw| serde_json::from_str::<String>(raw).ok())
            .ok_or(BodyError::MissingModel("model"))?;
        let stream = match field("stream") {
            None | Some("null") => false,
            Some(raw) => serde_json::from_str::<bool>(raw).map_err(|_| BodyError::WrongType {
                field: "stream",
                expected: "a boolean",
            })?,
        };
        let include_usage = field("stream_options")
            .and_then(|raw| serde_json::from_str::<StreamOptions>(raw).ok())
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let user = field("user").and_then(|raw| serde_json::from_str::<String>(raw).ok());
        let text = |name| field(name).and_then(|raw| serde_json::from_str::<String>(raw).ok());
        let count = field("n")
            .and_then(|raw| serde_json::from_str::<u32>(raw).ok())
            .unwrap_or(1);
        let images = (count, text("size"), text("quality"));
        let max_output_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .into_iter()
            .find_map(|name| field(name).and_then(|raw| serde_json::from_str::<u64>(raw).ok()));
        Ok(RequestBody {
            fields,
            model,
            stream,
            include_usage,
            user,
            images,
            max_output_tokens,
        })
    }

    /// The body to send upstream: `model` replaced, client-only fields
    /// dropped, and, when `add_usage` is set, `stream_options.include_usage`
    /// turned on (keeping the client's other stream options).
    pub fn rewrite(&self, model: &str, add_usage: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.fields
                .iter()
                .map(|(_, value)| value.get().len() + 16)
                .sum(),
        );
        out.push(b'{');
        let mut first = true;
        let mut push = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        let model_json = serde_json::Value::from(model).to_string();
        let mut wrote_options = false;
        for (key, value) in &self.fields {
            match key.as_ref() {
                "model" => push(&mut out, key, &model_json),
                "stream_options" if add_usage => {
                    push(&mut out, key, &with_usage(value.get()));
                    wrote_options = true;
                }
                name if CLIENT_ONLY_FIELDS.contains(&name) => {}
                _ => push(&mut out, key, value.get()),
            }
        }
        if add_usage && !wrote_options {
            push(&mut out, "stream_options", r#"{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }
}

/// The client's stream options with `include_usage: true`.
fn with_usage(options: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(options) {
        Ok(mut map) => {
            map.insert("include_usage".to_owned(), true.into());
            serde_json::Value::Object(map).to_string()
        }
        Err(_) => r#"{"include_usage":true}"#.to_owned(),
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A JSON object's fields in order, values unparsed.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_model_changes_and_unknown_fields_pass_through_in_order() {
        let body = br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.30,"x_custom":{"a":[1,2]}}"#;
        let parsed = RequestBody::parse(body).unwrap();
        assert_eq!(parsed.model, "openai/gpt-4o");
        assert!(!parsed.stream);
        let rewritten = String::from_utf8(parsed.rewrite("gpt-4o", false)).unwrap();
        assert_eq!(
            rewritten,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.30,"x_custom":{"a":[1,2]}}"#
        );
    }

    #[test]
    fn usage_is_requested_for_streams_keeping_other_stream_options() {
        let plain = RequestBody::parse(br#"{"model":"m","stream":true}"#).unwrap();
        assert!(plain.stream && !plain.include_usage);
        assert_eq!(
            String::from_utf8(plain.rewrite("m", true)).unwrap(),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        let options = RequestBody::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#,
        )
        .unwrap();
        let rewritten: serde_json::Value =
            serde_json::from_slice(&options.rewrite("m", true)).unwrap();
        assert_eq!(
            rewritten["stream_options"],
            serde_json::json!({"include_obfuscation": false, "include_usage": true})
        );
        let asked = RequestBody::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(asked.include_usage);
    }

    #[test]
    fn client_side_settings_never_reach_the_provider() {
        let body = br#"{"model":"m","api_base":"http://attacker.example","base_url":"http://x","api_key":"sk-1","input":"hi"}"#;
        let rewritten =
            String::from_utf8(RequestBody::parse(body).unwrap().rewrite("m", false)).unwrap();
        assert_eq!(rewritten, r#"{"model":"m","input":"hi"}"#);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(
            RequestBody::parse(b"[1]"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            RequestBody::parse(b"{\"model\": 5}"),
            Err(BodyError::MissingModel(_))
        ));
        assert!(matches!(
            RequestBody::parse(b"{\"model\": \"m\", \"stream\": \"yes\"}"),
            Err(BodyError::WrongType {
                field: "stream",
                ..
            })
        ));
    }

    #[test]
    fn image_requests_carry_count_size_and_quality() {
        let parsed = RequestBody::parse(
            br#"{"model":"dall-e-3","prompt":"a cat","n":2,"size":"1024x1792","quality":"hd","user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.images,
            (2, Some("1024x1792".to_owned()), Some("hd".to_owned()))
        );
        assert_eq!(parsed.user.as_deref(), Some("u1"));
    }
}
