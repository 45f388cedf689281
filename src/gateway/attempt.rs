//! One upstream attempt and the usage record it leaves, whatever its end:
//! an answer, an upstream error, a timeout, a client that went away.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::estimate;
use super::meter::ReportedUsage;
use super::routing::Target;
use crate::budget::enforcer::Hold;
use crate::recorder::{Recorder, Ticket};
use crate::usage::{ExtraUsage, ImageBatch, RecordStatus, TaskType, TokenCounts, UsageEvent};

/// Who asked, and what they attached to the request.
#[derive(Debug, Clone)]
pub struct Attribution {
    pub org_id: String,
    pub user_id: Option<String>,
    pub api_key_id: Option<Uuid>,
    /// Tags, end-user id, client metadata, the model the client asked for.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Everything needed to record one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub request_id: Uuid,
    pub parent_request_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started: Instant,
    pub target: Target,
    pub task: TaskType,
    pub stream: bool,
    pub attribution: Attribution,
    /// For image models priced per image.
    pub images: Option<ImageBatch>,
    /// What the attempt reserved on hard budgets; settled when it is
    /// recorded.
    pub hold: Option<Arc<Hold>>,
}

/// An attempt's record as the recorder took it.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub cost: Option<crate::money::NanoUsd>,
    /// Where the record is in the journal (none if the recorder refused it).
    pub ticket: Option<Ticket>,
}

/// How an attempt ended, for its record.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status_code: Option<u16>,
    pub status: Option<RecordStatus>,
    pub error_type: Option<&'static str>,
    pub usage: Option<ReportedUsage>,
    /// When usage is missing: the prompt and output text to estimate from.
    pub prompt_text: Option<String>,
    pub output_text: Option<String>,
    pub time_to_first_token_ms: Option<u64>,
    pub provider_request_id: Option<String>,
}

impl Attempt {
    /// Builds the attempt's usage event and hands it to the recorder. The
    /// recorder never refuses gateway records for lack of room: the request
    /// has already been served. Before the client gets the last bytes of
    /// the answer, wait for the ticket ([`Recorder::durable`]).
    pub fn record(&self, recorder: &Recorder, outcome: Outcome) -> Served {
        let event = self.event(outcome);
        let served = match recorder.record_served(event) {
            Ok(served) => Some(served),
            Err(error) => {
                tracing::error!(%error, request_id = %self.request_id, "cannot record a gateway request");
                None
            }
        };
        let cost = served.and_then(|served| served.cost);
        if let Some(hold) = &self.hold {
            hold.settle(cost);
        }
        Served {
            cost,
            ticket: served.map(|served| served.ticket),
        }
    }

    /// Records the attempt and waits until its record is as safe as the
    /// recorder promises, for an answer about to end. Returns its cost.
    pub async fn record_durably(
        &self,
        recorder: &Recorder,
        outcome: Outcome,
    ) -> Option<crate::money::NanoUsd> {
        let served = self.record(recorder, outcome);
        if let Some(ticket) = served.ticket {
            recorder.durable(ticket).await;
        }
        served.cost
    }

    fn event(&self, outcome: Outcome) -> UsageEvent {
        let mut metadata = self.attribution.metadata.clone();
        let (tokens, extra, reported_cost, source) = match outcome.usage {
            Some(usage) => (usage.tokens, usage.extra, usage.cost, "reported"),
            None if outcome.status == Some(RecordStatus::Error)
                && outcome.output_text.is_none() =>
            {
                (TokenCounts::default(), ExtraUsage::default(), None, "none")
            }
            None => {
                let input = outcome
                    .prompt_text
                    .as_deref()
                    .map_or(0, estimate::count_tokens);
                let output = outcome
                    .output_text
                    .as_deref()
                    .map_or(0, estimate::count_tokens);
                let tokens = TokenCounts {
                    input,
                    output,
                    ..TokenCounts::default()
                };
                (tokens, ExtraUsage::default(), None, "estimated")
            }
        };
        metadata.insert("usage_source".to_owned(), source.into());
        let mut extra = extra;
        if extra.images.is_none() {
            extra.images = self.images.clone();
        }
        let latency = self.started.elapsed();
        UsageEvent {
            request_id: self.request_id,
            parent_request_id: self.parent_request_id,
            created_at: self.created_at,
            org_id: self.attribution.org_id.clone(),
            user_id: self.attribution.user_id.clone(),
            api_key_id: self.attribution.api_key_id,
            provider: self.target.provider,
            model: self.target.model.clone(),
            task_type: self.task,
            tokens,
            extra,
            reported_cost,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            time_to_first_token_ms: outcome.time_to_first_token_ms,
            status_code: outcome.status_code,
            status: outcome.status.unwrap_or(RecordStatus::Ok),
            error_type: outcome.error_type.map(str::to_owned),
            stream: self.stream,
            provider_request_id: outcome.provider_request_id,
            metadata,
        }
    }
}
