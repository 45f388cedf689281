//! The one path every usage record takes, whoever produced it: validated,
//! priced, and handed to a background writer that batches records into one
//! transaction per batch. Callers never wait on the database; while it is
//! unavailable, records wait in a durable spool and are replayed in order.

mod journal;
mod spool;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use journal::{Durability, Ticket};
pub use spool::SpoolError;

use crate::budget::enforcer::Budgets;
use crate::config::{Config, RecorderConfig};
use crate::money::NanoUsd;
use crate::pricing::{Pricing, UnpricedPolicy};
use crate::store::Store;
use crate::usage::{InvalidField, UsageEvent, UsageRecord};

/// Why events were refused. Nothing of a refused call is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index}: {error}")]
    Invalid { index: usize, error: InvalidField },
    #[error("record {index}: {reason}")]
    Unpriced { index: usize, reason: String },
    /// More records wait for the database than the recorder holds in memory;
    /// the caller should retry shortly (the ingest API answers 503).
    #[error("{queued} records are waiting to be written; try again shortly")]
    Overloaded { queued: u64 },
    #[error("the recorder has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Records(Vec<UsageRecord>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Who hears about records once they are in the ledger (or refused for
/// good): budget reservations let go, and the alert evaluator is nudged.
#[derive(Debug, Clone, Default)]
pub struct LedgerListeners {
    pub budgets: Option<Budgets>,
    pub changed: Option<Arc<tokio::sync::Notify>>,
}

/// A cheap, cloneable handle to the background writer.
#[derive(Debug, Clone)]
pub struct Recorder {
    sender: mpsc::UnboundedSender<Command>,
    journal: Arc<journal::Journal>,
    pricing: Arc<Pricing>,
    queued: Arc<AtomicU64>,
    max_queued_records: u64,
    max_future_skew: chrono::Duration,
}

/// The writer task; [`Recorder::shutdown`] stops it after writing everything.
#[derive(Debug)]
pub struct RecorderTask {
    handle: JoinHandle<()>,
    journal: JoinHandle<()>,
    stop_journal: CancellationToken,
}

/// Records the recorder took: their ids, and where they are in the journal.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_ids: Vec<Uuid>,
    pub ticket: Ticket,
}

/// A served request's record: its cost, and where it is in the journal.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub cost: Option<NanoUsd>,
    pub ticket: Ticket,
}

/// How the recorder batches, retries and bounds its queue.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub retry_interval: Duration,
    /// Rollup days are calendar days in this zone.
    pub timezone: Tz,
    /// Records accepted but not yet written or spooled, at most.
    pub max_queued_records: u64,
    /// How far in the future a record's time may be.
    pub max_future_skew: chrono::Duration,
    /// When an accepted record is safe from a crash.
    pub durability: Durability,
    /// How often the journal is fsynced with `Durability::Process`.
    pub journal_sync_interval: Duration,
}

impl RecorderSettings {
    pub fn from_config(config: &Config) -> Self {
        let recorder: &RecorderConfig = &config.recorder;
        RecorderSettings {
            batch_size: recorder.batch_size,
            flush_interval: Duration::from_millis(recorder.flush_interval_ms.max(1)),
            retry_interval: Duration::from_millis(recorder.retry_interval_ms.max(1)),
            timezone: config.server.timezone,
            max_queued_records: recorder.max_queued_records,
            max_future_skew: chrono::Duration::seconds(config.ingest.max_future_skew_seconds),
            durability: recorder.durability,
            journal_sync_interval: Duration::from_millis(recorder.journal_sync_interval_ms.max(1)),
        }
    }
}

impl Recorder {
    /// Opens the spool in `spool_dir` and starts the writer. Records left in
    /// the spool by an earlier run are replayed first.
    pub fn start(
        store: Store,
        pricing: Arc<Pricing>,
        spool_dir: &std::path::Path,
        settings: RecorderSettings,
        listeners: LedgerListeners,
    ) -> Result<(Recorder, RecorderTask), SpoolError> {
        let spool = spool::Spool::open(spool_dir)?;
        let journal = Arc::new(journal::Journal::new(
            spool_dir,
            settings.durability,
            settings.journal_sync_interval,
        ));
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        let writer = writer::Writer::new(
            store,
            spool,
            settings.clone(),
            receiver,
            Arc::clone(&queued),
            listeners,
            Arc::clone(&journal.handled),
        );
        // The writer and the journal's upkeep are the recorder's tasks;
        // `RecorderTask::shutdown` waits for them, so nothing they hold is
        // lost on a clean stop.
        #[allow(clippy::disallowed_methods, reason = "the one place the writer starts")]
        let handle = tokio::spawn(writer.run());
        let stop_journal = CancellationToken::new();
        #[allow(clippy::disallowed_methods, reason = "started beside the writer")]
        let journal_task = tokio::spawn(Arc::clone(&journal).maintain(stop_journal.clone()));
        let recorder = Recorder {
            sender,
            journal,
            pricing,
            queued,
            max_queued_records: settings.max_queued_records,
            max_future_skew: settings.max_future_skew,
        };
        Ok((
            recorder,
            RecorderTask {
                handle,
                journal: journal_task,
                stop_journal,
            },
        ))
    }

    /// Validates and prices every event, then queues them all, or none if
    /// any is refused. Returns the request ids in order. Refuses the call
    /// (nothing recorded) when the queue is full; the caller retries. Before
    /// telling anyone the records were taken, wait for [`Recorder::durable`].
    pub fn record(&self, events: Vec<UsageEvent>) -> Result<Accepted, RecordError> {
        let queued = self.queued();
        if queued + events.len() as u64 > self.max_queued_records.max(events.len() as u64) {
            metrics::counter!("tollgate_recorder_overloaded_total").increment(1);
            return Err(RecordError::Overloaded { queued });
        }
        let records = self.admit(events, self.pricing.unpriced_policy())?;
        let request_ids = records.iter().map(|record| record.request_id).collect();
        let ticket = self.enqueue(records)?;
        Ok(Accepted {
            request_ids,
            ticket,
        })
    }

    /// Records a request the gateway has already served: validated and
    /// priced like any other, but never refused for lack of queue room or
    /// price (the provider has billed it). Returns its cost.
    pub fn record_served(&self, event: UsageEvent) -> Result<Served, RecordError> {
        let records = self.admit(vec![event], UnpricedPolicy::Record)?;
        let cost = records.first().and_then(|record| record.cost);
        let ticket = self.enqueue(records)?;
        Ok(Served { cost, ticket })
    }

    /// Whether the records up to `ticket` are already as safe as
    /// `recorder.durability` promises (always, except with `fsync`).
    pub fn is_durable(&self, ticket: Ticket) -> bool {
        self.journal.is_durable(ticket)
    }

    /// Waits until the records up to `ticket` are as safe as
    /// `recorder.durability` promises: with `fsync`, until the journal's
    /// next group commit covers them.
    pub async fn durable(&self, ticket: Ticket) {
        self.journal.durable(ticket).await;
    }

    pub fn durability(&self) -> Durability {
        self.journal.durability()
    }

    /// Validates and prices events; all or none.
    fn admit(
        &self,
        events: Vec<UsageEvent>,
        unpriced: UnpricedPolicy,
    ) -> Result<Vec<UsageRecord>, RecordError> {
        let now = Utc::now();
        let mut records = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            event
                .validate(now, self.max_future_skew)
                .map_err(|error| RecordError::Invalid { index, error })?;
            let record = price_event(&self.pricing, event);
            if record.cost_status == crate::usage::CostStatus::Unpriced
                && unpriced == UnpricedPolicy::Reject
            {
                return Err(RecordError::Unpriced {
                    index,
                    reason: record
                        .metadata
                        .get("cost_note")
                        .and_then(|note| note.as_str())
                        .unwrap_or("no price for this model")
                        .to_owned(),
                });
            }
            records.push(record);
        }
        Ok(records)
    }

    fn enqueue(&self, records: Vec<UsageRecord>) -> Result<Ticket, RecordError> {
        let count = records.len() as u64;
        self.queued.fetch_add(count, Ordering::Relaxed);
        metrics::gauge!("tollgate_recorder_queued_records").increment(count as f64);
        self.journal.append(records, &self.sender).map_err(|_| {
            self.queued.fetch_sub(count, Ordering::Relaxed);
            RecordError::Stopped
        })
    }

    /// Waits until everything queued before this call is written to the
    /// database or, if it is unavailable, to the spool.
    pub async fn flush(&self) -> Result<(), RecordError> {
        let (reply, done) = oneshot::channel();
        self.sender
            .send(Command::Flush(reply))
            .map_err(|_| RecordError::Stopped)?;
        done.await.map_err(|_| RecordError::Stopped)
    }

    /// Whether the queue is full, so a caller can refuse work before
    /// parsing it. `record` checks again.
    pub fn is_full(&self) -> bool {
        self.queued() >= self.max_queued_records
    }

    /// Records accepted but not yet written or spooled.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }
}

impl RecorderTask {
    /// Writes (or spools) everything queued, then stops the writer.
    pub async fn shutdown(self, recorder: &Recorder) {
        let (reply, done) = oneshot::channel();
        if recorder.sender.send(Command::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
        if let Err(error) = self.handle.await {
            tracing::error!(%error, "the recorder's writer task failed");
        }
        self.stop_journal.cancel();
        if let Err(error) = self.journal.await {
            tracing::error!(%error, "the journal's task failed");
        }
        recorder.journal.close();
    }
}

/// Prices an event into the record the ledger stores. Extra usage details and
/// the reason a cost is missing or estimated go into the metadata.
pub fn price_event(pricing: &Pricing, event: UsageEvent) -> UsageRecord {
    let priced = pricing.price(
        event.provider,
        &event.model,
        &event.tokens,
        &event.extra,
        event.reported_cost,
    );
    let mut metadata = event.metadata;
    if event.extra != crate::usage::ExtraUsage::default()
        && let Ok(details) = serde_json::to_value(&event.extra)
    {
        metadata.insert("usage_details".to_owned(), details);
    }
    if let Some(note) = priced.note {
        metadata.insert("cost_note".to_owned(), note.into());
    }
    UsageRecord {
        request_id: event.request_id,
        parent_request_id: event.parent_request_id,
        created_at: event.created_at,
        org_id: event.org_id,
        user_id: event.user_id,
        api_key_id: event.api_key_id,
        provider: event.provider,
        model: event.model,
        task_type: event.task_type,
        tokens: event.tokens,
        cost: priced.cost,
        estimated_cost: priced.estimated_cost,
        cost_status: priced.status,
        latency_ms: event.latency_ms,
        time_to_first_token_ms: event.time_to_first_token_ms,
        status_code: event.status_code,
        status: event.status,
        error_type: event.error_type,
        stream: event.stream,
        provider_request_id: event.provider_request_id,
        metadata: serde_json::Value::Object(metadata),
    }
}
