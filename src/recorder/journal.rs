//! The crash journal: every record the recorder accepts is appended to a
//! local file before the caller hears it was accepted (and so before a
//! gateway client gets the last bytes of its answer). If the process dies
//! with records still in memory, the next start finds the journal in the
//! spool folder and replays it through the spool; the store ignores request
//! ids it already holds, so records that did reach the database count once.
//!
//! How durable an append is before the caller goes on is configurable
//! ([`Durability`]): written to the operating system (survives the process
//! being killed; the default), or fsynced in group commits (survives a power
//! cut too, at the price of a disk flush in every answer's path). The
//! journal is only a safety copy: segments are deleted as soon as the writer
//! has put every record in them into the database or the spool.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Command;
use crate::usage::UsageRecord;

/// When an accepted record is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// No journal: records queued in memory are lost if the process dies.
    Off,
    /// Written to the journal file before the caller goes on: survives the
    /// process being killed, not the machine losing power. Fsynced in the
    /// background every `journal_sync_interval_ms`.
    Process,
    /// Written and fsynced (group commit) before the caller goes on.
    Fsync,
}

pub(super) const JOURNAL_PREFIX: &str = "journal-";
const JOURNAL_SUFFIX: &str = ".ndjson";
/// A segment is closed once it is this large; closed segments are deleted
/// when the writer has every record in them.
const SEGMENT_BYTES: u64 = 16 << 20;
/// An idle segment whose records are all in the database is closed (and
/// deleted) after this long, so a quiet gateway keeps no journal.
const IDLE_SEGMENT: Duration = Duration::from_secs(2);
/// How often the background task looks for segments to close and delete.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);

/// A place in the journal: the last record of an append. Records are
/// numbered from 1 in the order they were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    durability: Durability,
    sync_interval: Duration,
    state: Mutex<State>,
    /// The last record fsynced.
    synced: watch::Sender<u64>,
    /// Wakes the background task when a caller waits for an fsync.
    sync_wanted: Notify,
    /// The last record the writer has put into the database or the spool
    /// (every earlier one too); set by the writer.
    pub(super) handled: Arc<AtomicU64>,
}

#[derive(Debug)]
struct State {
    current: Option<Segment>,
    closed: Vec<Closed>,
    /// The number of the last record accepted.
    last: u64,
    next_number: u64,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    file: Arc<File>,
    bytes: u64,
    last: u64,
    opened: Instant,
}

#[derive(Debug)]
struct Closed {
    path: PathBuf,
    file: Arc<File>,
    last: u64,
}

impl Journal {
    /// A journal in `dir` (the spool folder, whose lock the caller holds).
    /// Segments left by an earlier run must have been adopted by the spool.
    pub(super) fn new(dir: &Path, durability: Durability, sync_interval: Duration) -> Journal {
        Journal {
            dir: dir.to_owned(),
            durability,
            sync_interval,
            state: Mutex::new(State {
                current: None,
                closed: Vec::new(),
                last: 0,
                next_number: 1,
            }),
            synced: watch::Sender::new(0),
            sync_wanted: Notify::new(),
            handled: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(super) fn durability(&self) -> Durability {
        self.durability
    }

    /// Appends the records and hands them to the writer, in the same order
    /// on both. With `Durability::Off` only the hand-over happens. A journal
    /// that cannot be written does not refuse records (a gateway request has
    /// already been served): the failure is logged and counted, and the
    /// records are as safe as with `Off`.
    pub(super) fn append(
        &self,
        records: Vec<UsageRecord>,
        writer: &mpsc::UnboundedSender<Command>,
    ) -> Result<Ticket, mpsc::error::SendError<Command>> {
        if self.durability == Durability::Off {
            return writer.send(Command::Records(records)).map(|()| Ticket(0));
        }
        let mut lines = Vec::with_capacity(records.len() * 640);
        for record in &records {
            if let Err(error) = serde_json::to_writer(&mut lines, record) {
                tracing::error!(%error, "cannot encode a usage record for the journal");
            }
            lines.push(b'\n');
        }
        let count = records.len() as u64;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if let Err(error) = self.write(state, &lines) {
            metrics::counter!("tollgate_journal_errors_total").increment(1);
            tracing::error!(%error, records = count, "cannot write usage records to the journal; they are kept in memory only");
        }
        state.last += count;
        let ticket = Ticket(state.last);
        if let Some(segment) = &mut state.current {
            segment.last = state.last;
        }
        // Sent under the lock, so the writer sees records in journal order.
        writer.send(Command::Records(records))?;
        Ok(ticket)
    }

    fn write(&self, state: &mut State, lines: &[u8]) -> std::io::Result<()> {
        if state.current.is_none() {
            let number = state.next_number;
            state.next_number += 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.segment_path(number))?;
            state.current = Some(Segment {
                number,
                file: Arc::new(file),
                bytes: 0,
                last: state.last,
                opened: Instant::now(),
            });
        }
        if let Some(segment) = &mut state.current {
            (&*segment.file).write_all(lines)?;
            segment.bytes += lines.len() as u64;
        }
        Ok(())
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir
            .join(format!("{JOURNAL_PREFIX}{number:012}{JOURNAL_SUFFIX}"))
    }

    /// Whether the records up to `ticket` are as durable as promised now.
    pub(super) fn is_durable(&self, ticket: Ticket) -> bool {
        self.durability != Durability::Fsync || *self.synced.borrow() >= ticket.0
    }

    /// Waits until the records up to `ticket` are as durable as promised.
    pub(super) async fn durable(&self, ticket: Ticket) {
        if self.is_durable(ticket) {
            return;
        }
        let mut synced = self.synced.subscribe();
        self.sync_wanted.notify_one();
        // The sender lives as long as `self`.
        let _ = synced.wait_for(|synced| *synced >= ticket.0).await;
    }

    /// Fsyncs, closes and deletes segments until `stop`; then one last round.
    pub(super) async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        if self.durability == Durability::Off {
            return;
        }
        let mut last_sync = Instant::now();
        loop {
            let wanted = tokio::select! {
                () = stop.cancelled() => break,
                () = self.sync_wanted.notified() => true,
                () = tokio::time::sleep(MAINTENANCE_INTERVAL) => false,
            };
            let sync = wanted || last_sync.elapsed() >= self.sync_interval;
            if sync {
                last_sync = Instant::now();
            }
            let journal = Arc::clone(&self);
            let round = tokio::task::spawn_blocking(move || journal.round(sync)).await;
            if let Err(error) = round {
                tracing::error!(%error, "the journal's maintenance failed");
            }
        }
    }

    /// One maintenance round: close the current segment if it is full or
    /// idle and fully handled, fsync (if asked) and delete what the writer
    /// has handled. Blocking.
    fn round(&self, sync: bool) {
        let handled = self.handled.load(Ordering::Acquire);
        let (to_sync, last, deletable) = {
            let mut state = self.state.lock();
            let close = state.current.as_ref().is_some_and(|segment| {
                segment.bytes >= SEGMENT_BYTES
                    || (segment.last <= handled && segment.opened.elapsed() >= IDLE_SEGMENT)
            });
            if close && let Some(segment) = state.current.take() {
                let path = self.segment_path(segment.number);
                state.closed.push(Closed {
                    path,
                    file: segment.file,
                    last: segment.last,
                });
            }
            let to_sync: Vec<Arc<File>> = match sync {
                true => state
                    .closed
                    .iter()
                    .map(|closed| Arc::clone(&closed.file))
                    .chain(
                        state
                            .current
                            .iter()
                            .map(|segment| Arc::clone(&segment.file)),
                    )
                    .collect(),
                false => Vec::new(),
            };
            let (deletable, kept): (Vec<Closed>, Vec<Closed>) = std::mem::take(&mut state.closed)
                .into_iter()
                .partition(|closed| closed.last <= handled);
            state.closed = kept;
            (to_sync, state.last, deletable)
        };
        if sync {
            let mut failed = false;
            for file in &to_sync {
                if let Err(error) = file.sync_data() {
                    failed = true;
                    metrics::counter!("tollgate_journal_errors_total").increment(1);
                    tracing::error!(%error, "cannot fsync the journal");
                }
            }
            if !failed {
                self.synced.send_if_modified(|synced| {
                    let advanced = last > *synced;
                    *synced = (*synced).max(last);
                    advanced
                });
            }
        }
        for closed in deletable {
            if let Err(error) = fs::remove_file(&closed.path) {
                tracing::warn!(%error, path = %closed.path.display(), "cannot delete a journal segment (it is replayed harmlessly at the next start)");
            }
        }
    }

    /// After the writer has stopped: deletes every segment if the writer
    /// handled every record, else keeps them for the next start.
    pub(super) fn close(&self) {
        let handled = self.handled.load(Ordering::Acquire);
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if handled < state.last {
            tracing::warn!(
                records = state.last - handled,
                "keeping the journal: some records reached neither the database nor the spool; they are replayed at the next start"
            );
            return;
        }
        let paths: Vec<PathBuf> = state
            .closed
            .drain(..)
            .map(|closed| closed.path)
            .chain(
                state
                    .current
                    .take()
                    .map(|segment| self.segment_path(segment.number)),
            )
            .collect();
        for path in paths {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, path = %path.display(), "cannot delete a journal segment (it is replayed harmlessly at the next start)");
            }
        }
    }
}

/// Journal segments left in `dir` by an earlier run, oldest first.
pub(super) fn leftover_segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let number = name
            .strip_prefix(JOURNAL_PREFIX)
            .and_then(|rest| rest.strip_suffix(JOURNAL_SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, dir.join(name.as_ref())));
        }
    }
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{Pricing, UnpricedPolicy};

    fn records(count: u64) -> Vec<UsageRecord> {
        let pricing = Pricing::new(Vec::new(), true, UnpricedPolicy::Record).unwrap();
        let settings = crate::generate::Settings::new(count, 1, chrono::Utc::now());
        crate::generate::Generator::new(settings)
            .map(|event| super::super::price_event(&pricing, event))
            .collect()
    }

    fn journal_files(dir: &Path) -> Vec<PathBuf> {
        leftover_segments(dir).unwrap()
    }

    #[test]
    fn records_are_in_the_file_before_append_returns_and_in_writer_order() {
        let folder = tempfile::TempDir::new().unwrap();
        let journal = Journal::new(folder.path(), Durability::Process, Duration::from_secs(1));
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let batch = records(3);
        let first = journal.append(batch[..2].to_vec(), &sender).unwrap();
        let second = journal.append(batch[2..].to_vec(), &sender).unwrap();
        assert_eq!((first, second), (Ticket(2), Ticket(3)));
        assert!(
            journal.is_durable(second),
            "process durability needs no fsync"
        );
        let files = journal_files(folder.path());
        assert_eq!(files.len(), 1);
        let text = fs::read_to_string(&files[0]).unwrap();
        let ids: Vec<uuid::Uuid> = text
            .lines()
            .map(|line| {
                serde_json::from_str::<UsageRecord>(line)
                    .unwrap()
                    .request_id
            })
            .collect();
        let expected: Vec<uuid::Uuid> = batch.iter().map(|record| record.request_id).collect();
        assert_eq!(ids, expected);
        let mut sent = Vec::new();
        while let Ok(Command::Records(records)) = receiver.try_recv() {
            sent.extend(records.into_iter().map(|record| record.request_id));
        }
        assert_eq!(sent, expected, "the writer gets them in journal order");
    }

    #[test]
    fn segments_go_only_once_the_writer_has_every_record_in_them() {
        let folder = tempfile::TempDir::new().unwrap();
        let journal = Journal::new(folder.path(), Durability::Process, Duration::from_secs(1));
        let (sender, _receiver) = mpsc::unbounded_channel();
        journal.append(records(4), &sender).unwrap();
        // Not yet idle long enough, nothing handled: kept.
        journal.round(true);
        assert_eq!(journal_files(folder.path()).len(), 1);
        // Idle, but the writer has only three of four: kept.
        journal.handled.store(3, Ordering::Release);
        if let Some(segment) = &mut journal.state.lock().current {
            segment.opened -= IDLE_SEGMENT;
        }
        journal.round(false);
        assert_eq!(journal_files(folder.path()).len(), 1);
        // All four handled: closed and deleted; the next append opens a new one.
        journal.handled.store(4, Ordering::Release);
        journal.round(false);
        assert!(journal_files(folder.path()).is_empty());
        journal.append(records(1), &sender).unwrap();
        assert_eq!(journal_files(folder.path()).len(), 1);
    }

    #[test]
    fn a_stop_with_unhandled_records_keeps_the_journal_for_the_next_start() {
        let folder = tempfile::TempDir::new().unwrap();
        let journal = Journal::new(folder.path(), Durability::Process, Duration::from_secs(1));
        let (sender, _receiver) = mpsc::unbounded_channel();
        journal.append(records(2), &sender).unwrap();
        journal.handled.store(1, Ordering::Release);
        journal.close();
        assert_eq!(journal_files(folder.path()).len(), 1);
        journal.handled.store(2, Ordering::Release);
        journal.close();
        assert!(journal_files(folder.path()).is_empty());
    }

    #[test]
    fn off_writes_no_journal() {
        let folder = tempfile::TempDir::new().unwrap();
        let journal = Journal::new(folder.path(), Durability::Off, Duration::from_secs(1));
        let (sender, mut receiver) = mpsc::unbounded_channel();
        journal.append(records(2), &sender).unwrap();
        assert!(journal_files(folder.path()).is_empty());
        assert!(matches!(receiver.try_recv(), Ok(Command::Records(sent)) if sent.len() == 2));
    }

    #[tokio::test]
    async fn fsync_durability_waits_for_a_group_commit() {
        let folder = tempfile::TempDir::new().unwrap();
        let journal = Arc::new(Journal::new(
            folder.path(),
            Durability::Fsync,
            Duration::from_secs(3600),
        ));
        let (sender, _receiver) = mpsc::unbounded_channel();
        let ticket = journal.append(records(2), &sender).unwrap();
        assert!(!journal.is_durable(ticket));
        let stop = CancellationToken::new();
        #[allow(clippy::disallowed_methods, reason = "a test's own task")]
        let upkeep = tokio::spawn(Arc::clone(&journal).maintain(stop.clone()));
        tokio::time::timeout(Duration::from_secs(5), journal.durable(ticket))
            .await
            .expect("an fsync covers the ticket");
        assert!(journal.is_durable(ticket));
        stop.cancel();
        upkeep.await.unwrap();
    }
}
