//! The logbook for `tern up`, in sled under the data directory.
//!
//! Trees:
//! - `batches`: kind, function, NUL, time (ms, big-endian), seq → the batch
//!   as published. One function's batches of one kind are one key range,
//!   in time order, so a query reads its newest first and stops early.
//! - `order`: time, seq → the batch's key and size: every batch in time
//!   order, for dropping the oldest by age or by bytes.
//!
//! Writes are not flushed one by one: sled writes its log every 500 ms, so
//! a crash loses at most that much of the newest lines. No transactions
//! (sled 0.34's deadlock against iterators): the batch goes in before its
//! `order` entry, and pruning removes the batch before the entry, so a
//! crash between leaves at most a batch pruning finds again.

use crate::{Kind, LogQuery, Logbook, LogbookError, ReceiptQuery, Retention};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tern_protocol::{LogRecord, Receipt, clock};

/// How often the retention is applied in the background.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// A record is stamped when written; its batch when it reached the
/// logbook, up to a flush interval later. Queries by time look this much
/// before `since` among batches.
const STAMP_SLACK_MS: u64 = 10_000;

#[derive(Clone)]
pub struct SledLogbook {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    batches: sled::Tree,
    order: sled::Tree,
    retention: Retention,
    /// Bytes of the batches kept.
    bytes: AtomicU64,
}

fn storage(e: impl std::fmt::Display) -> LogbookError {
    LogbookError::Storage(e.to_string())
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Logs => b'l',
        Kind::Receipts => b'r',
    }
}

fn prefix(kind: Kind, function: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(function.len() + 2);
    p.push(kind_byte(kind));
    p.extend_from_slice(function.as_bytes());
    p.push(0);
    p
}

fn stamp(ts_ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ts_ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl SledLogbook {
    /// Opens (or creates) the logbook in `dir`, and starts applying
    /// `retention` every few seconds for as long as it is open.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, LogbookError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            LogbookError::Storage(format!("cannot open the logbook in {}: {e}", dir.display()))
        })?;
        let batches = db.open_tree("batches").map_err(storage)?;
        let order = db.open_tree("order").map_err(storage)?;
        let mut bytes = 0u64;
        for entry in order.iter() {
            let (_, v) = entry.map_err(storage)?;
            bytes += size_of_entry(&v);
        }
        let inner = Arc::new(Inner {
            db,
            dir: dir.to_path_buf(),
            batches,
            order,
            retention,
            bytes: AtomicU64::new(bytes),
        });
        let weak = Arc::downgrade(&inner);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(PRUNE_EVERY).await;
                    let Some(inner) = weak.upgrade() else { break };
                    let pruned = tokio::task::spawn_blocking(move || inner.prune(clock::now_ms())).await;
                    if let Ok(Err(e)) = pruned {
                        tracing::warn!("could not prune the logbook: {e}");
                    }
                }
            });
        }
        Ok(SledLogbook { inner })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, LogbookError> + Send + 'static,
    ) -> Result<T, LogbookError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(storage)?
    }
}

/// An `order` entry's value: the batch's key, then its size (8 bytes).
fn size_of_entry(v: &[u8]) -> u64 {
    v.len().checked_sub(8).map_or(0, |at| u64::from_be_bytes(v[at..].try_into().expect("8 bytes")))
}

impl Inner {
    fn append(&self, kind: Kind, function: &str, batch: &[u8]) -> Result<(), LogbookError> {
        tern_disk::ensure_room(&self.dir, batch.len() as u64)?;
        let now = clock::now_ms();
        let seq = self.db.generate_id().map_err(storage)?;
        let mut key = prefix(kind, function);
        key.extend_from_slice(&stamp(now, seq));
        let mut entry = key.clone();
        entry.extend_from_slice(&(batch.len() as u64).to_be_bytes());
        self.batches.insert(&key, batch).map_err(storage)?;
        self.order.insert(stamp(now, seq), entry).map_err(storage)?;
        let total = self.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
        if total > self.retention.max_bytes {
            self.prune(now)?;
        }
        Ok(())
    }

    /// Drops the oldest batches while they are past the age or the bytes
    /// are over.
    fn prune(&self, now_ms: u64) -> Result<(), LogbookError> {
        let oldest_kept = now_ms.saturating_sub(self.retention.max_age.as_millis() as u64);
        for entry in self.order.iter() {
            let (stamp, v) = entry.map_err(storage)?;
            let ts = u64::from_be_bytes(stamp[..8].try_into().map_err(storage)?);
            if ts >= oldest_kept && self.bytes.load(Ordering::Relaxed) <= self.retention.max_bytes {
                break;
            }
            let size = size_of_entry(&v);
            self.batches.remove(&v[..v.len().saturating_sub(8)]).map_err(storage)?;
            self.order.remove(&stamp).map_err(storage)?;
            self.bytes.fetch_sub(size.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The newest `n` items that `keep`, decoded from the batches of
    /// `function` of `kind`, newest first (a batch that does not decode is
    /// skipped).
    fn newest<T>(
        &self,
        kind: Kind,
        function: &str,
        since_ms: Option<u64>,
        n: usize,
        decode: impl Fn(&[u8]) -> Vec<T>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, LogbookError> {
        let mut out = Vec::new();
        for batch in self.newest_first(kind, function, since_ms) {
            out.extend(decode(&batch?).into_iter().rev().filter(|x| keep(x)));
            if out.len() >= n {
                break;
            }
        }
        out.truncate(n);
        Ok(out)
    }

    /// The batches of `function` of `kind`, newest first, from those
    /// stamped at or after `since_ms` (less the slack).
    fn newest_first(
        &self,
        kind: Kind,
        function: &str,
        since_ms: Option<u64>,
    ) -> impl Iterator<Item = Result<sled::IVec, LogbookError>> + use<> {
        let start = prefix(kind, function);
        let mut from = start.clone();
        from.extend_from_slice(&stamp(since_ms.map_or(0, |s| s.saturating_sub(STAMP_SLACK_MS)), 0));
        let mut end = start;
        *end.last_mut().expect("prefix ends in NUL") = 1;
        self.batches.range(from..end).rev().map(|e| e.map(|(_, v)| v).map_err(storage))
    }
}

#[async_trait]
impl Logbook for SledLogbook {
    async fn append(&self, kind: Kind, function: &str, batch: Bytes) -> Result<(), LogbookError> {
        let function = function.to_string();
        self.blocking(move |i| i.append(kind, &function, &batch)).await
    }

    async fn logs(&self, q: &LogQuery) -> Result<Vec<LogRecord>, LogbookError> {
        let q = q.clone();
        self.blocking(move |i| {
            let decode = |b: &[u8]| serde_json::from_slice::<Vec<LogRecord>>(b).unwrap_or_default();
            let mut out = i.newest(Kind::Logs, &q.name, q.since_ms, q.tail, decode, |r| q.matches(r))?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn receipts(&self, q: &ReceiptQuery) -> Result<Vec<Receipt>, LogbookError> {
        let q = q.clone();
        self.blocking(move |i| {
            let decode = |b: &[u8]| serde_json::from_slice::<Vec<Receipt>>(b).unwrap_or_default();
            i.newest(Kind::Receipts, &q.function, q.since_ms, q.limit, decode, |r| q.matches(r))
        })
        .await
    }

    async fn forget(&self, function: &str) -> Result<(), LogbookError> {
        let function = function.to_string();
        self.blocking(move |i| {
            for kind in [Kind::Logs, Kind::Receipts] {
                let keys: Vec<_> = i.batches.scan_prefix(prefix(kind, &function)).keys().collect();
                for key in keys {
                    let key = key.map_err(storage)?;
                    // The `order` entry stays until pruning reaches it; its
                    // batch is gone, so only its size is counted till then.
                    i.batches.remove(&key).map_err(storage)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn prune(&self) -> Result<(), LogbookError> {
        self.blocking(|i| i.prune(clock::now_ms())).await
    }

    async fn flush(&self) -> Result<(), LogbookError> {
        self.blocking(|i| i.db.flush().map(|_| ()).map_err(storage)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let retention = crate::conformance::RETENTION;
        let open = |sub: &str| SledLogbook::open(&dir.path().join(sub), retention).unwrap();
        crate::conformance::run(&open("a")).await;
        crate::conformance::bytes_are_bounded(&open("b")).await;
    }

    #[tokio::test]
    async fn what_was_kept_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let book = SledLogbook::open(dir.path(), Retention::default()).unwrap();
        crate::conformance::write_some(&book, "f").await;
        book.flush().await.unwrap();
        drop(book);
        let book = SledLogbook::open(dir.path(), Retention::default()).unwrap();
        let q = LogQuery { name: "f".into(), tail: 100, ..Default::default() };
        assert_eq!(book.logs(&q).await.unwrap().len(), 3);
        assert!(book.inner.bytes.load(Ordering::Relaxed) > 0, "sizes are counted again at open");
    }
}
