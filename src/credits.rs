//! Provider credits: balances, key limits and key status, read from the
//! providers (OpenRouter `/key`, and `/credits` with a management key;
//! OpenAI's key status through `/models`), or set by hand where there is no
//! balance API.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, ProviderConfig};
use crate::money::{self, NanoUsd};
use crate::usage::{Provider, named_enum};

named_enum!(
    /// Whether the configured key works.
    KeyStatus, "key status" {
        Valid => "valid",
        Invalid => "invalid",
        Missing => "missing",
        RateLimited => "rate_limited",
    }
);

/// A provider's credits as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credits {
    pub provider: Provider,
    /// What is left to spend (OpenRouter: credits − usage with a management
    /// key, else the key's remaining limit; others: set by hand).
    pub balance: Option<NanoUsd>,
    pub total_credits: Option<NanoUsd>,
    pub total_usage: Option<NanoUsd>,
    /// `None` is unlimited.
    pub key_limit: Option<NanoUsd>,
    pub key_limit_remaining: Option<NanoUsd>,
    pub key_status: KeyStatus,
    pub low_balance_threshold: Option<NanoUsd>,
    pub checked_at: Option<DateTime<Utc>>,
    /// What the provider billed on `billed_day` (UTC), when it says.
    pub billed: Option<(chrono::NaiveDate, NanoUsd)>,
}

impl Credits {
    pub fn unknown(provider: Provider) -> Self {
        Credits {
            provider,
            balance: None,
            total_credits: None,
            total_usage: None,
            key_limit: None,
            key_limit_remaining: None,
            key_status: KeyStatus::Missing,
            low_balance_threshold: None,
            checked_at: None,
            billed: None,
        }
    }
}

/// What one poll learned; fields it could not learn are `None` and leave
/// the stored values alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub key_status: KeyStatus,
    /// `Some(None)`: read, and unknown (an unlimited key); `None`: not read
    /// (a balance set by hand stays).
    pub balance: Option<Option<NanoUsd>>,
    pub total_credits: Option<NanoUsd>,
    pub total_usage: Option<NanoUsd>,
    /// `Some(None)`: the key has no limit.
    pub key_limit: Option<Option<NanoUsd>>,
    pub key_limit_remaining: Option<Option<NanoUsd>>,
    /// What the provider billed today (UTC), from its own billing API.
    pub billed_today: Option<(chrono::NaiveDate, NanoUsd)>,
    /// Why something could not be read (a non-management key, say).
    pub note: Option<String>,
}

impl Observation {
    /// Nothing learned, and no key to learn it with.
    pub fn nothing() -> Self {
        Observation {
            key_status: KeyStatus::Missing,
            balance: None,
            total_credits: None,
            total_usage: None,
            key_limit: None,
            key_limit_remaining: None,
            billed_today: None,
            note: None,
        }
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct KeyInfo<'a> {
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    limit_remaining: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CreditTotals<'a> {
    #[serde(borrow)]
    total_credits: &'a RawValue,
    #[serde(borrow)]
    total_usage: &'a RawValue,
}

fn usd(raw: Option<&RawValue>) -> Result<Option<NanoUsd>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => money::parse_usd_json(raw),
    }
}

/// Polls a provider and records what it learned.
pub async fn refresh(
    poller: &Poller,
    store: &crate::store::Store,
    provider: Provider,
) -> Result<Observation, RefreshError> {
    let observation = poller
        .poll(provider)
        .await
        .map_err(RefreshError::Provider)?;
    store
        .record_observation(provider, &observation, Utc::now())
        .await
        .map_err(RefreshError::Store)?;
    Ok(observation)
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("{0}")]
    Provider(String),
    #[error(transparent)]
    Store(crate::store::StoreError),
}

/// Reads providers' account endpoints.
#[derive(Debug, Clone)]
pub struct Poller {
    client: reqwest::Client,
    openai: ProviderConfig,
    openrouter: ProviderConfig,
}

impl Poller {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        crate::providers::install_crypto_provider();
        Ok(Poller {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(15))
                .build()?,
            openai: config.providers.openai.clone(),
            openrouter: config.providers.openrouter.clone(),
        })
    }

    async fn get(&self, url: String, key: &str) -> Result<(u16, bytes::Bytes), String> {
        let response = self
            .client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .map_err(|error| format!("cannot reach the provider: {}", error.without_url()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("the provider's answer broke off: {}", error.without_url()))?;
        Ok((status, body))
    }

    /// Polls one provider. `Err` when it could not be reached at all.
    pub async fn poll(&self, provider: Provider) -> Result<Observation, String> {
        match provider {
            Provider::OpenRouter => self.poll_openrouter().await,
            Provider::OpenAi => self.poll_key_only(&self.openai).await,
            Provider::Local => Ok(Observation {
                note: Some("local servers have no balance".to_owned()),
                ..Observation::nothing()
            }),
        }
    }

    fn status_of(code: u16) -> Option<KeyStatus> {
        match code {
            200..=299 => Some(KeyStatus::Valid),
            401 | 403 => Some(KeyStatus::Invalid),
            429 => Some(KeyStatus::RateLimited),
            _ => None,
        }
    }

    /// OpenAI has no balance API: the key's status, through `/models`.
    async fn poll_key_only(&self, config: &ProviderConfig) -> Result<Observation, String> {
        let mut observation = Observation::nothing();
        let Some(key) = &config.api_key else {
            return Ok(observation);
        };
        let base = config.base_url.trim_end_matches('/');
        let (code, _) = self.get(format!("{base}/models"), key.expose()).await?;
        observation.key_status = Self::status_of(code)
            .ok_or_else(|| format!("the provider answered {code} to a key check"))?;
        if let Some(admin) = &config.admin_key {
            match self.billed_today(base, admin.expose()).await {
                Ok(billed) => observation.billed_today = Some(billed),
                Err(message) => observation.note = Some(message),
            }
        }
        Ok(observation)
    }

    /// OpenAI's costs API: today's (UTC) billed amount, over every page.
    async fn billed_today(
        &self,
        base: &str,
        admin_key: &str,
    ) -> Result<(chrono::NaiveDate, NanoUsd), String> {
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            data: Vec<Bucket<'a>>,
            #[serde(default)]
            has_more: bool,
            #[serde(default)]
            next_page: Option<String>,
        }
        #[derive(Deserialize)]
        struct Bucket<'a> {
            #[serde(borrow)]
            results: Vec<Cost<'a>>,
        }
        #[derive(Deserialize)]
        struct Cost<'a> {
            #[serde(borrow)]
            amount: Amount<'a>,
        }
        #[derive(Deserialize)]
        struct Amount<'a> {
            #[serde(borrow)]
            value: &'a RawValue,
        }
        let today = Utc::now().date_naive();
        let start = today.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        let mut total = NanoUsd::ZERO;
        let mut page: Option<String> = None;
        for _ in 0..10 {
            let mut url =
                format!("{base}/organization/costs?start_time={start}&bucket_width=1d&limit=1");
            if let Some(page) = &page {
                url.push_str("&page=");
                url.push_str(page);
            }
            let (code, body) = self.get(url, admin_key).await?;
            if !(200..300).contains(&code) {
                return Err(format!(
                    "the costs API answered {code} (an admin key is needed)"
                ));
            }
            let parsed: Page<'_> = serde_json::from_slice(&body)
                .map_err(|error| format!("unexpected costs answer: {error}"))?;
            for cost in parsed.data.iter().flat_map(|bucket| bucket.results.iter()) {
                let amount = money::parse_usd_json(cost.amount.value)?.unwrap_or(NanoUsd::ZERO);
                total = total
                    .checked_add(amount)
                    .ok_or_else(|| "billed amount out of range".to_owned())?;
            }
            match (parsed.has_more, parsed.next_page) {
                (true, Some(next)) => page = Some(next),
                _ => return Ok((today, total)),
            }
        }
        Err("the costs API kept paging".to_owned())
    }

    async fn poll_openrouter(&self) -> Result<Observation, String> {
        let mut observation = self.poll_key_limits().await?;
        let base = self.openrouter.base_url.trim_end_matches('/');
        if let Some(management) = &self.openrouter.management_key {
            let (code, body) = self
                .get(format!("{base}/credits"), management.expose())
                .await?;
            match code {
                200..=299 => {
                    let totals: Data<CreditTotals<'_>> = serde_json::from_slice(&body)
                        .map_err(|error| format!("unexpected /credits answer: {error}"))?;
                    let credits = money::parse_usd_json(totals.data.total_credits)?;
                    let usage = money::parse_usd_json(totals.data.total_usage)?;
                    observation.total_credits = credits;
                    observation.total_usage = usage;
                    if let (Some(credits), Some(usage)) = (credits, usage) {
                        observation.balance = Some(Some(NanoUsd::from_nanos(
                            credits.nanos().saturating_sub(usage.nanos()),
                        )));
                    }
                }
                403 => {
                    observation.note = Some(
                        "the management key is not a management key (403 from /credits)".to_owned(),
                    );
                }
                code => observation.note = Some(format!("/credits answered {code}")),
            }
        }
        Ok(observation)
    }

    /// OpenRouter's `/key`: the key's status and limits; without a
    /// management key, the key's remaining limit is the balance.
    async fn poll_key_limits(&self) -> Result<Observation, String> {
        let mut observation = Observation::nothing();
        let Some(key) = &self.openrouter.api_key else {
            return Ok(observation);
        };
        let base = self.openrouter.base_url.trim_end_matches('/');
        let (code, body) = self.get(format!("{base}/key"), key.expose()).await?;
        observation.key_status =
            Self::status_of(code).ok_or_else(|| format!("OpenRouter answered {code} to /key"))?;
        if observation.key_status != KeyStatus::Valid {
            return Ok(observation);
        }
        let info: Data<KeyInfo<'_>> = serde_json::from_slice(&body)
            .map_err(|error| format!("unexpected /key answer: {error}"))?;
        let limit = usd(info.data.limit.filter(|raw| raw.get() != "null"))?;
        let remaining = usd(info.data.limit_remaining.filter(|raw| raw.get() != "null"))?;
        observation.key_limit = Some(limit);
        observation.key_limit_remaining = Some(remaining);
        observation.balance = Some(remaining);
        Ok(observation)
    }
}
