//! The durable spool: records that could not be written to the database wait
//! here, as JSON lines in numbered segment files, each append fsynced.
//!
//! Segments are replayed oldest first and deleted once the database holds
//! them; the store ignores request ids it already has, so replaying a segment
//! twice (after a crash mid-replay) counts nothing twice. A torn last line
//! (a crash mid-append) is skipped with a warning; any other unreadable
//! segment is set aside as `corrupt-*.ndjson`, never deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::usage::UsageRecord;

/// The spool's folder or files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "spool {0} is in use by another Tollgate process (each instance needs its own spool folder)"
    )]
    InUse(PathBuf),
    #[error("spool {path} line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

const SEGMENT_PREFIX: &str = "segment-";
const CORRUPT_PREFIX: &str = "corrupt-";
const SEGMENT_SUFFIX: &str = ".ndjson";

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Segment numbers on disk, oldest first.
    segments: Vec<u64>,
    /// Records in all segments (counted on open, kept up to date).
    pending: u64,
    /// The open segment that appends go to.
    current: Option<(u64, File)>,
    /// The next segment number; numbers are never reused, so a segment set
    /// aside as corrupt is never overwritten.
    next_number: u64,
    /// Held for the spool's lifetime: one process per spool folder.
    _lock: File,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let io_error = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io_error)?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::InUse(dir.to_owned()));
        }
        let mut segments = Vec::new();
        let mut highest = 0;
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let name = entry.map_err(io_error)?.file_name();
            let name = name.to_string_lossy();
            let number = name
                .strip_prefix(SEGMENT_PREFIX)
                .or_else(|| name.strip_prefix(CORRUPT_PREFIX))
                .and_then(|rest| rest.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|digits| digits.parse::<u64>().ok());
            if let Some(number) = number {
                highest = highest.max(number);
                if name.starts_with(SEGMENT_PREFIX) {
                    segments.push(number);
                }
            }
        }
        segments.sort_unstable();
        let mut next_number = highest + 1;
        // A journal left by a run that did not stop cleanly: its records may
        // never have reached the database, so they join the spool (newest).
        for journal in super::journal::leftover_segments(dir).map_err(io_error)? {
            let path = dir.join(format!("{SEGMENT_PREFIX}{next_number:012}{SEGMENT_SUFFIX}"));
            fs::rename(&journal, &path).map_err(|source| SpoolError::Io {
                path: journal.clone(),
                source,
            })?;
            tracing::warn!(journal = %journal.display(), "found the journal of a run that did not stop cleanly; replaying it");
            segments.push(next_number);
            next_number += 1;
        }
        let mut spool = Spool {
            dir: dir.to_owned(),
            segments,
            pending: 0,
            current: None,
            next_number,
            _lock: lock,
        };
        for number in spool.segments.clone() {
            spool.pending += count_lines(&spool.segment_path(number))?;
        }
        Ok(spool)
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir
            .join(format!("{SEGMENT_PREFIX}{number:012}{SEGMENT_SUFFIX}"))
    }

    /// Appends records and fsyncs before returning.
    pub fn append(&mut self, records: &[UsageRecord]) -> Result<(), SpoolError> {
        let mut buffer = Vec::with_capacity(records.len() * 512);
        for record in records {
            serde_json::to_writer(&mut buffer, record).map_err(|error| SpoolError::Corrupt {
                path: self.dir.clone(),
                line: 0,
                reason: error.to_string(),
            })?;
            buffer.push(b'\n');
        }
        let (number, file) = match &mut self.current {
            Some((number, file)) => (*number, file),
            None => {
                let number = self.next_number;
                self.next_number += 1;
                let path = self.segment_path(number);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| SpoolError::Io { path, source })?;
                self.segments.push(number);
                let (number, file) = self.current.insert((number, file));
                (*number, file)
            }
        };
        file.write_all(&buffer)
            .and_then(|()| file.sync_data())
            .map_err(|source| SpoolError::Io {
                path: self
                    .dir
                    .join(format!("{SEGMENT_PREFIX}{number:012}{SEGMENT_SUFFIX}")),
                source,
            })?;
        self.pending += records.len() as u64;
        Ok(())
    }

    /// The oldest segment's records, closing it for appends first so that
    /// records spooled during the replay go to a newer segment.
    pub fn oldest(&mut self) -> Result<Option<(u64, Vec<UsageRecord>)>, SpoolError> {
        let Some(&number) = self.segments.first() else {
            return Ok(None);
        };
        if self
            .current
            .as_ref()
            .is_some_and(|(open, _)| *open == number)
        {
            self.current = None;
        }
        let path = self.segment_path(number);
        match read_segment(&path) {
            Ok(records) => Ok(Some((number, records))),
            Err(error) => {
                let aside = self
                    .dir
                    .join(format!("corrupt-{number:012}{SEGMENT_SUFFIX}"));
                tracing::error!(%error, aside = %aside.display(), "a spool segment is unreadable; it was set aside and its records were not replayed");
                fs::rename(&path, &aside).map_err(|source| SpoolError::Io { path, source })?;
                self.forget(number, count_lines(&aside).unwrap_or(0));
                Err(error)
            }
        }
    }

    /// Deletes a segment whose records the database now holds.
    pub fn remove(&mut self, number: u64, records: usize) -> Result<(), SpoolError> {
        let path = self.segment_path(number);
        fs::remove_file(&path).map_err(|source| SpoolError::Io { path, source })?;
        self.forget(number, records as u64);
        Ok(())
    }

    fn forget(&mut self, number: u64, records: u64) {
        self.segments.retain(|segment| *segment != number);
        self.pending = self.pending.saturating_sub(records);
    }
}

fn count_lines(path: &Path) -> Result<u64, SpoolError> {
    let file = File::open(path).map_err(|source| SpoolError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(BufReader::new(file).split(b'\n').count() as u64)
}

fn read_segment(path: &Path) -> Result<Vec<UsageRecord>, SpoolError> {
    let text = fs::read_to_string(path).map_err(|source| SpoolError::Io {
        path: path.to_owned(),
        source,
    })?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_str::<UsageRecord>(line) {
            Ok(record) => records.push(record),
            // A crash mid-append leaves a torn last line; that append never
            // completed, so its caller was never told it was durable.
            Err(error) if index + 1 == lines.len() && !text.ends_with('\n') => {
                tracing::warn!(path = %path.display(), %error, "skipping a torn last line in the spool");
            }
            Err(error) => {
                return Err(SpoolError::Corrupt {
                    path: path.to_owned(),
                    line: index + 1,
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_at_a_time_uses_a_spool_folder() {
        let folder = tempfile::TempDir::new().unwrap();
        let first = Spool::open(folder.path()).unwrap();
        assert!(matches!(
            Spool::open(folder.path()),
            Err(SpoolError::InUse(_))
        ));
        drop(first);
        assert!(Spool::open(folder.path()).is_ok());
    }

    #[test]
    fn segment_numbers_are_never_reused_after_a_corrupt_segment() {
        let folder = tempfile::TempDir::new().unwrap();
        std::fs::write(folder.path().join("corrupt-000000000007.ndjson"), "x\n").unwrap();
        let mut spool = Spool::open(folder.path()).unwrap();
        spool.append(&[]).unwrap();
        assert!(folder.path().join("segment-000000000008.ndjson").exists());
    }

    #[test]
    fn a_journal_left_by_a_killed_run_joins_the_spool_after_its_segments() {
        let folder = tempfile::TempDir::new().unwrap();
        std::fs::write(folder.path().join("segment-000000000003.ndjson"), "").unwrap();
        std::fs::write(folder.path().join("journal-000000000002.ndjson"), "").unwrap();
        std::fs::write(folder.path().join("journal-000000000001.ndjson"), "").unwrap();
        let spool = Spool::open(folder.path()).unwrap();
        assert_eq!(spool.segments, vec![3, 4, 5]);
        assert!(folder.path().join("segment-000000000005.ndjson").exists());
        assert!(
            super::super::journal::leftover_segments(folder.path())
                .unwrap()
                .is_empty()
        );
    }
}
