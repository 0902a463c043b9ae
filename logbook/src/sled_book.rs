//! The logbook for `tern up`, in sled under the data directory.
//!
//! Trees:
//! - `batches`: kind, function, NUL, time (ms, big-endian), seq → the batch
//!   as published. One function's batches of one kind are one key range,
//!   in time order, so a query reads its newest first and stops early.
//! - `order`: time, seq → the batch's key and size: every batch in time
//!   order, for dropping the oldest by age or by bytes.
//!
//! Writes are not flushed one by one: a thread of the logbook's own
//! flushes every [`FLUSH_EVERY`] while there are new batches, a query
//! first flushes what is new (so `tern logs` right after a request shows
//! its lines), and a query sees a batch only once a flush has covered it.
//! So whatever `tern logs` or `tern invocations` showed survives a crash
//! (kill -9, power loss); a crash loses only batches never shown, the last
//! flush interval's worth (plus the time the flush takes). No transactions
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
/// How often new batches are made durable (and so visible to queries).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
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
    /// Batches with a sequence number below this are on disk; queries skip
    /// the others. Appends hold `appending` for reading from taking their
    /// number until their batch is in; the flusher takes it for writing to
    /// read the next number, so every batch below that number is in before
    /// the flush that will cover it starts.
    durable_below: AtomicU64,
    appending: parking_lot::RwLock<()>,
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
        // Whatever was kept before this open is on disk.
        let durable_below = db.generate_id().map_err(storage)?;
        let inner = Arc::new(Inner {
            db,
            dir: dir.to_path_buf(),
            batches,
            order,
            retention,
            bytes: AtomicU64::new(bytes),
            durable_below: AtomicU64::new(durable_below),
            appending: parking_lot::RwLock::new(()),
        });
        tern_task::every_while("logbook-flush", FLUSH_EVERY, Arc::downgrade(&inner), |inner| {
            if let Err(e) = inner.make_durable() {
                tracing::warn!("could not flush the logbook: {e}");
            }
        })
        .map_err(storage)?;
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

/// The sequence number at the end of a `batches` key.
fn seq_of(key: &[u8]) -> u64 {
    key.len().checked_sub(8).map_or(0, |at| u64::from_be_bytes(key[at..].try_into().expect("8 bytes")))
}

/// An `order` entry's value: the batch's key, then its size (8 bytes).
fn size_of_entry(v: &[u8]) -> u64 {
    v.len().checked_sub(8).map_or(0, |at| u64::from_be_bytes(v[at..].try_into().expect("8 bytes")))
}

impl Inner {
    fn append(&self, kind: Kind, function: &str, batch: &[u8]) -> Result<(), LogbookError> {
        tern_disk::ensure_room(&self.dir, batch.len() as u64)?;
        let now = clock::now_ms();
        {
            let _appending = self.appending.read();
            let seq = self.db.generate_id().map_err(storage)?;
            let mut key = prefix(kind, function);
            key.extend_from_slice(&stamp(now, seq));
            let mut entry = key.clone();
            entry.extend_from_slice(&(batch.len() as u64).to_be_bytes());
            self.batches.insert(&key, batch).map_err(storage)?;
            self.order.insert(stamp(now, seq), entry).map_err(storage)?;
        }
        let total = self.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed) + batch.len() as u64;
        if total > self.retention.max_bytes {
            self.prune(now)?;
        }
        Ok(())
    }

    /// Flushes every batch appended so far, if any is new, and lets queries
    /// see them.
    fn make_durable(&self) -> Result<(), LogbookError> {
        let next = {
            let _no_append = self.appending.write();
            self.db.generate_id().map_err(storage)?
        };
        // A look takes an id too, so "nothing new" is exactly one id on
        // (an explicit flush beside the thread's only costs a flush).
        if next != self.durable_below.load(Ordering::Acquire) + 1 {
            self.db.flush().map_err(storage)?;
        }
        self.durable_below.fetch_max(next, Ordering::AcqRel);
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
        let durable_below = self.durable_below.load(Ordering::Acquire);
        self.batches
            .range(from..end)
            .rev()
            .filter(move |e| e.as_ref().map_or(true, |(k, _)| seq_of(k) < durable_below))
            .map(|e| e.map(|(_, v)| v).map_err(storage))
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
            i.make_durable()?;
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
            i.make_durable()?;
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
        self.blocking(|i| i.make_durable()).await
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
    async fn a_batch_is_shown_once_on_disk_and_the_logbook_gets_it_there_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let book = SledLogbook::open(dir.path(), Retention::default()).unwrap();
        let q = LogQuery { name: "f".into(), tail: 100, ..Default::default() };
        // Hold off every flush: nothing appended now can be on disk yet.
        let no_flush = book.inner.appending.read();
        let seq = book.inner.db.generate_id().unwrap();
        let key = [prefix(Kind::Logs, "f"), stamp(clock::now_ms(), seq).to_vec()].concat();
        let logs = serde_json::to_vec(&[crate::conformance::record("f", "i1", "hello")]).unwrap();
        book.inner.batches.insert(key, logs).unwrap();
        assert!(book.inner.newest_first(Kind::Logs, "f", None).next().is_none(), "shown before a flush");
        drop(no_flush);
        // The logbook's own thread flushes it, with no query asking.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while book.inner.durable_below.load(Ordering::Acquire) <= seq {
            assert!(std::time::Instant::now() < deadline, "never flushed by itself");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(book.logs(&q).await.unwrap().len(), 1);
        // A query shows what was appended just before it (flushing it).
        crate::conformance::write_some(&book, "g").await;
        let g = LogQuery { name: "g".into(), tail: 100, ..Default::default() };
        assert_eq!(book.logs(&g).await.unwrap().len(), 3);
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
