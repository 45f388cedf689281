//! Outbound requests to OpenAI, OpenRouter and local OpenAI-compatible
//! servers: the only module that builds them. Upstream addresses and keys
//! come from configuration alone, never from a client request.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, ProviderConfig};
use crate::usage::Provider;

/// Client headers forwarded upstream (all others are dropped).
const FORWARDED_HEADERS: &[&str] = &[
    "http-referer",
    "x-title",
    "x-openrouter-title",
    "x-openrouter-categories",
];

/// Why a request never got an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot reach {provider}: {message}")]
    Connect { provider: Provider, message: String },
    #[error("{provider} sent no answer within {seconds} s")]
    Timeout { provider: Provider, seconds: u64 },
}

/// Why the providers could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientError(String);

/// One provider's address and credentials.
#[derive(Debug, Clone)]
struct Upstream {
    base_url: String,
    headers: HeaderMap,
    /// Sent only when the client sent none (OpenRouter attribution).
    default_headers: HeaderMap,
}

/// The outbound side of the gateway.
#[derive(Debug, Clone)]
pub struct Providers {
    client: reqwest::Client,
    openai: Upstream,
    openrouter: Upstream,
    local: Upstream,
    first_byte_timeout: Duration,
}

/// Makes ring the process's TLS crypto provider. reqwest is built without a
/// provider of its own, so rustls uses ring, like sqlx: one TLS stack.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Providers {
    pub fn from_config(config: &Config) -> Result<Self, ClientError> {
        install_crypto_provider();
        let gateway = &config.gateway;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(gateway.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ClientError(error.to_string()))?;
        Ok(Providers {
            client,
            openai: upstream(&config.providers.openai)?,
            openrouter: upstream(&config.providers.openrouter)?,
            local: upstream(&config.providers.local)?,
            first_byte_timeout: Duration::from_millis(gateway.first_byte_timeout_ms),
        })
    }

    fn upstream(&self, provider: Provider) -> &Upstream {
        match provider {
            Provider::OpenAi => &self.openai,
            Provider::OpenRouter => &self.openrouter,
            Provider::Local => &self.local,
        }
    }

    /// POSTs `body` to `path` (e.g. `/chat/completions`) at the provider and
    /// waits for the status line and headers, not the body.
    pub async fn post(
        &self,
        provider: Provider,
        path: &str,
        body: Vec<u8>,
        client_headers: &HeaderMap,
    ) -> Result<reqwest::Response, SendError> {
        let upstream = self.upstream(provider);
        let mut headers = upstream.headers.clone();
        for name in FORWARDED_HEADERS {
            if let Some(value) = client_headers.get(*name) {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
        for (name, value) in &upstream.default_headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let request = self
            .client
            .post(format!("{}{path}", upstream.base_url))
            .headers(headers)
            .body(body)
            .send();
        match tokio::time::timeout(self.first_byte_timeout, request).await {
            Err(_) => Err(SendError::Timeout {
                provider,
                seconds: self.first_byte_timeout.as_secs(),
            }),
            Ok(Err(error)) if error.is_timeout() => Err(SendError::Timeout {
                provider,
                seconds: self.first_byte_timeout.as_secs(),
            }),
            Ok(Err(error)) => Err(SendError::Connect {
                provider,
                message: without_url(&error),
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// A reqwest error's message without the URL it carries.
fn without_url(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(url.as_str(), "the provider");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn upstream(config: &ProviderConfig) -> Result<Upstream, ClientError> {
    let header = |value: &str| {
        HeaderValue::from_str(value)
            .map_err(|_| ClientError("a configured header value is not valid".to_owned()))
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &config.api_key {
        let mut value = header(&format!("Bearer {}", key.expose()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut default_headers = HeaderMap::new();
    if let Some(referer) = &config.http_referer {
        default_headers.insert(HeaderName::from_static("http-referer"), header(referer)?);
    }
    if let Some(title) = &config.app_title {
        default_headers.insert(HeaderName::from_static("x-title"), header(title)?);
    }
    Ok(Upstream {
        base_url: config.base_url.trim_end_matches('/').to_owned(),
        headers,
        default_headers,
    })
}
