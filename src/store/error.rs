//! Storage errors, split by what a caller can do about them.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}` (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("cannot connect to database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    /// The database could not be reached or was busy; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The database refused the statement; retrying will not help.
    #[error("database error: {0}")]
    Rejected(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The change contradicts what is stored (a user of another org, say).
    #[error("{0}")]
    Conflict(String),
    /// A change outside the caller's scope (another organization's budget,
    /// say): refused before any SQL runs.
    #[error("outside the caller's organization or role")]
    OutOfScope,
    /// The database did something a statement's guarantees rule out.
    #[error("inconsistent write: {0}")]
    Inconsistent(String),
    /// A stored value that Tollgate cannot read back.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the same operation may succeed later (the recorder spools and
    /// retries these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Connect { .. }
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Rejected(error)
        }
    }
}

/// Connection loss, pool exhaustion, server shutdown, lock contention and
/// serialization failures are transient; constraint and syntax errors are not.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            // PostgreSQL SQLSTATE classes: 08 connection exception, 57P0x
            // shutdown, 53 insufficient resources, 40001/40P01 serialization
            // and deadlock. SQLite: 5 BUSY, 6 LOCKED, 8 READONLY, 10 IOERR,
            // 13 FULL, 14 CANTOPEN (and their extended codes, whose low byte
            // is the primary code): a full or failing disk may recover, and
            // the recorder must keep the records until it does.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
                || code
                    .parse::<i64>()
                    .is_ok_and(|number| matches!(number & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
        }
        _ => false,
    }
}
