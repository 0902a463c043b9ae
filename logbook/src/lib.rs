//! The `Logbook` seam: what functions wrote (log records) and how each
//! invocation went (receipts), kept across restarts within a retention
//! (age and bytes), and queried by `tern logs` and `tern invocations`.
//!
//! Workers publish both on the bus in batches (`tern.v1.logs.<fn>`,
//! `tern.v1.receipts.<fn>`, JSON arrays). A logbook keeps those batches as
//! they came, without decoding them: writing costs one insert per batch,
//! not per line or per invocation, and reading decodes only what a query
//! looks at.
//!
//! [`SledLogbook`] is `tern up`'s, in the data directory;
//! [`JetStreamLogbook`] a cluster's, the stream `TERN_LOGS`.
//! [`conformance`] is the suite every implementation passes.

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use tern_protocol::{LogRecord, Receipt};

pub mod conformance;
mod jetstream;
mod sled_book;

pub use jetstream::JetStreamLogbook;
pub use sled_book::SledLogbook;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LogbookError {
    #[error("the logbook's storage failed: {0}")]
    Storage(String),
    #[error(transparent)]
    DiskFull(#[from] tern_disk::DiskFull),
}

/// Which of a function's two journals a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON array of [`LogRecord`].
    Logs,
    /// A JSON array of [`Receipt`].
    Receipts,
}

/// How long and how much is kept; the older goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    /// 24 hours, 1 GiB.
    fn default() -> Self {
        Retention { max_age: Duration::from_secs(24 * 3600), max_bytes: 1 << 30 }
    }
}

/// What `tern logs` asks for: `name` is the function.
pub use tern_protocol::LogsRequest as LogQuery;

/// What `tern invocations` asks for.
#[derive(Debug, Clone, Default)]
pub struct ReceiptQuery {
    pub function: String,
    /// At most this many, newest first.
    pub limit: usize,
    pub failed_only: bool,
    pub id: Option<String>,
    pub since_ms: Option<u64>,
}

impl ReceiptQuery {
    pub fn matches(&self, r: &Receipt) -> bool {
        (!self.failed_only || r.failed())
            && self.id.as_ref().is_none_or(|i| &r.id == i)
            && self.since_ms.is_none_or(|s| r.start_ms >= s)
    }
}

#[async_trait]
pub trait Logbook: Send + Sync + 'static {
    /// Whether it keeps the workers' batches straight off the bus by
    /// itself (JetStream binds their subjects), so nobody need append them.
    fn keeps_bus_subjects(&self) -> bool {
        false
    }

    /// Keeps one batch as the workers published it (see [`Kind`]). A batch
    /// that does not decode is kept too, and skipped by queries.
    async fn append(&self, kind: Kind, function: &str, batch: Bytes) -> Result<(), LogbookError>;

    async fn logs(&self, q: &LogQuery) -> Result<Vec<LogRecord>, LogbookError>;

    async fn receipts(&self, q: &ReceiptQuery) -> Result<Vec<Receipt>, LogbookError>;

    /// Drops everything kept for `function` (it was deleted).
    async fn forget(&self, function: &str) -> Result<(), LogbookError>;

    /// Drops what is past the retention now (implementations also do it
    /// on their own, in the background).
    async fn prune(&self) -> Result<(), LogbookError>;

    /// Everything appended so far is on disk, and so shown by queries
    /// (which show nothing a crash could lose; an implementation makes
    /// appends durable on its own within a short interval too).
    async fn flush(&self) -> Result<(), LogbookError>;
}
