//! The background writer: batches by count and by time, one transaction per
//! batch; on a database outage, spools and retries; replays in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::spool::Spool;
use super::{Command, LedgerListeners, RecorderSettings};
use crate::store::{Store, StoreError};
use crate::usage::UsageRecord;
use crate::usage_metrics::USAGE_METRICS;

pub(super) struct Writer {
    store: Store,
    spool: Spool,
    settings: RecorderSettings,
    receiver: mpsc::UnboundedReceiver<Command>,
    queued: Arc<AtomicU64>,
    buffer: Vec<UsageRecord>,
    /// Records neither the database nor the spool would take (a full disk,
    /// say). They stay in memory and are retried; they are never dropped.
    stranded: Vec<UsageRecord>,
    next_retry: Instant,
    /// Told which records reached the ledger (or were refused for good), so
    /// that budget reservations waiting on them let go.
    listeners: LedgerListeners,
    /// Records taken from the queue and put into the database or the spool
    /// (or refused for good), in the order they were queued.
    handled: u64,
    /// Where the journal reads `handled` (only while nothing is stranded:
    /// the journal keeps what only this process's memory holds).
    journal_handled: Arc<AtomicU64>,
    journaled: bool,
}

impl Writer {
    pub(super) fn new(
        store: Store,
        spool: Spool,
        settings: RecorderSettings,
        receiver: mpsc::UnboundedReceiver<Command>,
        queued: Arc<AtomicU64>,
        listeners: LedgerListeners,
        journal_handled: Arc<AtomicU64>,
    ) -> Self {
        metrics::gauge!("tollgate_recorder_spooled_records").set(spool.pending() as f64);
        if !spool.is_empty() {
            tracing::info!(
                records = spool.pending(),
                "replaying usage records left in the spool"
            );
        }
        let journaled = settings.durability != super::Durability::Off;
        Writer {
            store,
            spool,
            settings,
            receiver,
            queued,
            buffer: Vec::new(),
            stranded: Vec::new(),
            next_retry: Instant::now(),
            listeners,
            handled: 0,
            journal_handled,
            journaled,
        }
    }

    pub(super) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.settings.flush_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.receiver.recv() => match command {
                    Some(Command::Records(records)) => {
                        self.buffer.extend(records);
                        while self.buffer.len() >= self.settings.batch_size {
                            let rest = self.buffer.split_off(self.settings.batch_size);
                            let batch = std::mem::replace(&mut self.buffer, rest);
                            self.write(batch).await;
                        }
                    }
                    Some(Command::Flush(reply)) => {
                        self.write_buffer().await;
                        self.replay().await;
                        let _ = reply.send(());
                    }
                    Some(Command::Shutdown(reply)) => {
                        self.drain().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.drain().await;
                        return;
                    }
                },
                _ = ticker.tick() => {
                    self.write_buffer().await;
                    if Instant::now() >= self.next_retry {
                        self.replay().await;
                    }
                }
            }
        }
    }

    /// Writes what is queued and tries the spool once more before stopping.
    async fn drain(&mut self) {
        while let Ok(command) = self.receiver.try_recv() {
            match command {
                Command::Records(records) => self.buffer.extend(records),
                Command::Flush(reply) | Command::Shutdown(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        self.write_buffer().await;
        self.replay().await;
        if !self.spool.is_empty() {
            tracing::warn!(
                records = self.spool.pending(),
                "stopping with usage records in the spool; they are written at the next start"
            );
        }
        if !self.stranded.is_empty() {
            match self.journaled {
                true => tracing::error!(
                    records = self.stranded.len(),
                    "stopping with usage records that neither the database nor the spool accepted; the journal keeps them for the next start"
                ),
                false => tracing::error!(
                    records = self.stranded.len(),
                    "stopping with usage records that neither the database nor the spool accepted; they are lost"
                ),
            }
        }
    }

    async fn write_buffer(&mut self) {
        while !self.buffer.is_empty() {
            let take = self.buffer.len().min(self.settings.batch_size);
            let batch: Vec<UsageRecord> = self.buffer.drain(..take).collect();
            self.write(batch).await;
        }
    }

    /// Writes one batch, or spools it. While the spool holds anything, new
    /// batches join it, so records reach the database in the order received.
    async fn write(&mut self, batch: Vec<UsageRecord>) {
        let count = batch.len() as u64;
        if self.spool.is_empty() && self.stranded.is_empty() {
            match self
                .store
                .insert_usage(&batch, self.settings.timezone)
                .await
            {
                Ok(outcome) => {
                    self.written(count, outcome.inserted, outcome.duplicates);
                    USAGE_METRICS
                        .observe(outcome.inserted_records(&batch))
                        .await;
                    self.in_ledger(&batch).await;
                    return;
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "database unavailable; spooling usage records");
                    self.next_retry = Instant::now() + self.settings.retry_interval;
                }
                Err(error) => {
                    self.write_one_by_one(batch, &error).await;
                    self.dequeued(count);
                    return;
                }
            }
        }
        self.spool_batch(batch);
        self.dequeued(count);
    }

    fn spool_batch(&mut self, batch: Vec<UsageRecord>) {
        match self.spool.append(&batch) {
            Ok(()) => {
                metrics::gauge!("tollgate_recorder_spooled_records")
                    .set(self.spool.pending() as f64);
                tracing::warn!(
                    waiting = self.spool.pending(),
                    "usage records waiting in the spool for the database"
                );
            }
            Err(error) => {
                tracing::error!(%error, records = batch.len(), "cannot spool usage records; keeping them in memory");
                self.stranded.extend(batch);
                metrics::gauge!("tollgate_recorder_stranded_records")
                    .set(self.stranded.len() as f64);
            }
        }
    }

    /// A batch the database refused outright: find the records it refuses,
    /// write the rest, and log the refused ones loudly (never silently).
    async fn write_one_by_one(&mut self, batch: Vec<UsageRecord>, cause: &StoreError) {
        tracing::error!(error = %cause, records = batch.len(), "the database refused a batch; writing its records one by one");
        for record in batch {
            match self
                .store
                .insert_usage(std::slice::from_ref(&record), self.settings.timezone)
                .await
            {
                Ok(outcome) => {
                    metrics::counter!("tollgate_recorder_written_records_total")
                        .increment(outcome.inserted as u64);
                    USAGE_METRICS
                        .observe(outcome.inserted_records(std::slice::from_ref(&record)))
                        .await;
                    self.in_ledger(std::slice::from_ref(&record)).await;
                }
                Err(error) if error.is_transient() => self.spool_batch(vec![record]),
                Err(error) => {
                    metrics::counter!("tollgate_recorder_refused_records_total").increment(1);
                    self.in_ledger(std::slice::from_ref(&record)).await;
                    let record = serde_json::to_string(&record).unwrap_or_default();
                    tracing::error!(%error, %record, "the database refused a usage record");
                }
            }
        }
    }

    /// Replays spooled (and stranded) records, oldest first, while the
    /// database takes them.
    async fn replay(&mut self) {
        if !self.stranded.is_empty() {
            let stranded = std::mem::take(&mut self.stranded);
            self.spool_batch(stranded);
            self.publish_handled();
        }
        while !self.spool.is_empty() {
            let (number, records) = match self.spool.oldest() {
                Ok(Some(segment)) => segment,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "cannot read the spool");
                    self.next_retry = Instant::now() + self.settings.retry_interval;
                    return;
                }
            };
            for chunk in records.chunks(self.settings.batch_size) {
                match self.store.insert_usage(chunk, self.settings.timezone).await {
                    Ok(outcome) => {
                        metrics::counter!("tollgate_recorder_written_records_total")
                            .increment(outcome.inserted as u64);
                        metrics::counter!("tollgate_recorder_duplicate_records_total")
                            .increment(outcome.duplicates as u64);
                        USAGE_METRICS.observe(outcome.inserted_records(chunk)).await;
                        self.in_ledger(chunk).await;
                    }
                    Err(error) if error.is_transient() => {
                        tracing::warn!(%error, waiting = self.spool.pending(), "the database is still unavailable; records stay in the spool");
                        self.next_retry = Instant::now() + self.settings.retry_interval;
                        return;
                    }
                    // A refused record must not hold up the ones behind it.
                    Err(error) => self.write_one_by_one(chunk.to_vec(), &error).await,
                }
            }
            if let Err(error) = self.spool.remove(number, records.len()) {
                tracing::error!(%error, "cannot delete a replayed spool segment; it will be replayed again (harmlessly)");
                self.next_retry = Instant::now() + self.settings.retry_interval;
                return;
            }
            metrics::gauge!("tollgate_recorder_spooled_records").set(self.spool.pending() as f64);
            tracing::info!(
                replayed = records.len(),
                waiting = self.spool.pending(),
                "replayed spooled usage records"
            );
        }
    }

    async fn in_ledger(&self, records: &[UsageRecord]) {
        if let Some(budgets) = &self.listeners.budgets {
            budgets.in_ledger(records).await;
        }
        if let Some(changed) = &self.listeners.changed {
            changed.notify_one();
        }
    }

    fn written(&mut self, count: u64, inserted: usize, duplicates: usize) {
        metrics::counter!("tollgate_recorder_written_records_total").increment(inserted as u64);
        metrics::counter!("tollgate_recorder_duplicate_records_total").increment(duplicates as u64);
        self.dequeued(count);
    }

    /// Records are handled in the order they were queued, so a count is
    /// enough for the journal to know which of its records are safe.
    fn dequeued(&mut self, count: u64) {
        self.queued.fetch_sub(count, Ordering::Relaxed);
        metrics::gauge!("tollgate_recorder_queued_records").decrement(count as f64);
        self.handled += count;
        self.publish_handled();
    }

    fn publish_handled(&self) {
        if self.stranded.is_empty() {
            self.journal_handled.store(self.handled, Ordering::Release);
        }
    }
}
