//! Delivery: alert events are queued per webhook in the database, taken by
//! one instance at a time, signed and POSTed; failures are retried with
//! capped exponential backoff and jitter, every attempt logged. At least
//! once: a receiver deduplicates by the event id (`id` in the body and the
//! `X-Tollgate-Event-Id` header).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::signature;
use super::target;
use super::{Webhook, WebhookFormat};
use crate::store::{AttemptOutcome, DueDelivery, EventForDelivery, NextStep, Store, StoreError};

/// How deliveries behave.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub allow_private: bool,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The first retry waits this long; each next one twice as long.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct Deliverer {
    store: Store,
    client: reqwest::Client,
    settings: Arc<DeliverySettings>,
    /// Events before this were queued already (by this process).
    cursor: Arc<RwLock<DateTime<Utc>>>,
    /// (event, webhook) pairs this process has queued (or found unwanted)
    /// within the look-back margin, so a round neither re-reads nor
    /// re-inserts them; with their event times, for pruning.
    seen: Arc<RwLock<Seen>>,
}

/// (event id, webhook id) → the event's time.
type Seen = HashMap<(uuid::Uuid, uuid::Uuid), DateTime<Utc>>;

/// How far back each round looks again, for events another instance
/// committed after this one's cursor passed their time.
const LOOK_BACK: chrono::Duration = chrono::Duration::seconds(10);

/// The body of an event, in a webhook's format.
pub fn body(event: &EventForDelivery, format: WebhookFormat) -> serde_json::Value {
    let alert = &event.alert;
    match format {
        WebhookFormat::Tollgate => json!({
            "id": event.event_id,
            "event": format!("alert.{}", event.event.as_str()),
            "alert_id": alert.id,
            "alert_type": alert.alert_type.as_str(),
            "provider": alert.provider.map(|provider| provider.as_str()),
            "org_id": alert.org_id,
            "severity": event.severity.as_str(),
            "title": alert.title,
            "message": alert.message,
            "threshold_value": alert.threshold_value.map(|value| value.normalize().to_string()),
            "current_value": alert.current_value.map(|value| value.normalize().to_string()),
            "status": alert.status.as_str(),
            "timestamp": event.created_at,
        }),
        WebhookFormat::Slack => json!({
            "text": format!(
                "[{}] {} ({}): {}",
                event.severity.as_str().to_uppercase(),
                alert.title,
                event.event.as_str(),
                alert.message
            ),
        }),
    }
}

/// How long to wait before attempt `attempts + 1`: doubling from the first
/// backoff, capped, with ±20% jitter so that retries do not arrive in step.
pub fn backoff(settings: &DeliverySettings, attempts: u32, jitter: u8) -> Duration {
    let doubled = settings
        .first_backoff
        .saturating_mul(1u32 << attempts.min(20));
    let capped = doubled.min(settings.max_backoff);
    // jitter 0..=255 → 80%..=120%, in integer per-mille.
    let per_mille = 800 + u128::from(jitter) * 400 / 255;
    let micros = capped.as_micros() * per_mille / 1000;
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

impl Deliverer {
    pub fn new(
        store: Store,
        settings: DeliverySettings,
        now: DateTime<Utc>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .build()?;
        Ok(Deliverer {
            store,
            client,
            settings: Arc::new(settings),
            // After a restart, events of the last hour are queued again if
            // they were not (queueing is idempotent).
            cursor: Arc::new(RwLock::new(now - chrono::Duration::hours(1))),
            seen: Arc::new(RwLock::new(HashMap::new())),
        })
    }

    /// Queues new events and makes the due attempts. Returns how many
    /// deliveries succeeded.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let webhooks: HashMap<uuid::Uuid, Webhook> = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .map(|webhook| (webhook.id, webhook))
            .collect();
        if webhooks.is_empty() {
            return Ok(0);
        }
        self.enqueue(&webhooks, now).await?;
        let due = self
            .store
            .claim_deliveries(now, chrono::Duration::seconds(120), 20)
            .await?;
        let mut delivered = 0;
        for delivery in due {
            if self.attempt(&webhooks, &delivery).await? {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    async fn enqueue(
        &self,
        webhooks: &HashMap<uuid::Uuid, Webhook>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let cursor = *self
            .cursor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = cursor - LOOK_BACK;
        let ids = self.store.alert_event_ids_since(since).await?;
        for (event_id, created_at) in &ids {
            let pending: Vec<&Webhook> = {
                let seen = self
                    .seen
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                webhooks
                    .values()
                    .filter(|webhook| {
                        webhook.created_at <= *created_at
                            && !seen.contains_key(&(*event_id, webhook.id))
                    })
                    .collect()
            };
            if pending.is_empty() {
                continue;
            }
            let Some(event) = self.store.event_for_delivery(*event_id).await? else {
                continue;
            };
            for webhook in &pending {
                if webhook.wants(event.event, event.severity) {
                    self.store
                        .enqueue_delivery(webhook.id, event.event_id, now)
                        .await?;
                }
            }
            let mut seen = self
                .seen
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for webhook in pending {
                seen.insert((*event_id, webhook.id), *created_at);
            }
        }
        if let Some(latest) = ids.iter().map(|(_, created_at)| *created_at).max() {
            *self
                .cursor
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = latest;
            self.seen
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, at| *at >= latest - LOOK_BACK);
        }
        Ok(())
    }

    async fn attempt(
        &self,
        webhooks: &HashMap<uuid::Uuid, Webhook>,
        delivery: &DueDelivery,
    ) -> Result<bool, StoreError> {
        let started = Instant::now();
        let event = self.store.event_for_delivery(delivery.event_id).await?;
        let (status_code, error) = match (webhooks.get(&delivery.webhook_id), event) {
            (Some(webhook), Some(event)) => self.post(webhook, &event).await,
            _ => (
                None,
                Some("the webhook or the event no longer exists".to_owned()),
            ),
        };
        let attempts = u32::try_from(delivery.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let succeeded = status_code.is_some_and(|code| (200..300).contains(&code));
        let now = Utc::now();
        let next = if succeeded {
            NextStep::Delivered
        } else if attempts >= self.settings.max_attempts
            || error
                .as_deref()
                .is_some_and(|error| error.starts_with("refused:"))
        {
            NextStep::GiveUp
        } else {
            let mut jitter = [0u8; 1];
            let _ = getrandom::fill(&mut jitter);
            let wait = backoff(&self.settings, attempts - 1, jitter[0]);
            NextStep::RetryAt(
                now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(10)),
            )
        };
        let outcome = AttemptOutcome {
            status_code,
            error,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            next,
        };
        if !succeeded {
            tracing::warn!(delivery = %delivery.id, attempt = attempts, status = ?outcome.status_code, error = ?outcome.error, "webhook delivery failed");
        }
        self.store
            .record_delivery_attempt(delivery, &outcome, now)
            .await?;
        Ok(succeeded)
    }

    /// POSTs one event: the status code, or what went wrong.
    async fn post(
        &self,
        webhook: &Webhook,
        event: &EventForDelivery,
    ) -> (Option<u16>, Option<String>) {
        // DNS may have changed since the webhook was made.
        if let Err(error) = target::check(&webhook.url, self.settings.allow_private).await {
            return (None, Some(format!("refused: {error}")));
        }
        let body = body(event, webhook.format).to_string();
        let signed = signature::sign(
            webhook.secret.expose(),
            Utc::now().timestamp(),
            body.as_bytes(),
        );
        let sent = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signed)
            .header("x-tollgate-event-id", event.event_id.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let error = (!response.status().is_success()).then(|| format!("HTTP {status}"));
                (Some(status), error)
            }
            Err(error) => (None, Some(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let settings = DeliverySettings {
            allow_private: false,
            max_attempts: 10,
            timeout: Duration::from_secs(10),
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
        };
        let middle = 128; // about 100%
        let seconds = |attempts| backoff(&settings, attempts, middle).as_secs_f64().round();
        assert_eq!(
            (seconds(0), seconds(1), seconds(2), seconds(3)),
            (2.0, 4.0, 8.0, 16.0)
        );
        assert_eq!(seconds(9), 600.0, "capped");
        assert_eq!(seconds(40), 600.0, "no overflow");
        assert_eq!(backoff(&settings, 0, 0), Duration::from_millis(1600));
        assert_eq!(backoff(&settings, 0, 255), Duration::from_millis(2400));
    }
}
