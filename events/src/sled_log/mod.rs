//! The event log for embedded mode, in sled.
//!
//! Trees:
//! - `events`: seq (u64, big-endian) → the event (a frame: JSON header and
//!   raw data). Publish flushes before it returns.
//! - `consumers`: name → [`ConsumerState`] (filter, ack wait, cursor: the
//!   next seq to look at).
//! - `pending`: name NUL seq → [`Pending`] (attempt, when it is due again).
//!   Taking an event adds its pending entry, then moves the cursor, so a
//!   crash in between redelivers it rather than skipping it. No sled
//!   transactions: in sled 0.34 they deadlock with concurrent iterators.
//!   Acks are not flushed: a lost ack is a redelivery, which at-least-once
//!   allows.
//! - `dlq`: function NUL seq → the dead letter (a frame). Flushed.
//!
//! sled is blocking: every call runs in `spawn_blocking`.

use crate::{
    Acker, Consumer, ConsumerConfig, ConsumerStats, DeadLetter, Delivery, EventError, EventLog, Settle,
    StoredEvent, now_ms,
};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tern_protocol::Frame;
use tern_protocol::nats_subject::SubjectPattern;
use tokio::sync::watch;

mod consumer;
use consumer::SledConsumer;

/// The longest a waiting consumer sleeps before looking again (a backstop;
/// publishes and due redeliveries wake it sooner).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Non-matching events looked at per call, so one call never blocks long.
const SCAN_BATCH: usize = 10_000;
/// How often events every consumer is done with are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct SledLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Where the log lives: its disk is checked for room before a publish.
    dir: std::path::PathBuf,
    events: sled::Tree,
    consumers: sled::Tree,
    pending: sled::Tree,
    dlq: sled::Tree,
    /// The last published seq, so waiting consumers wake on a publish.
    published: watch::Sender<u64>,
    /// Publishes take their seq and insert under this lock, so events land
    /// in seq order: a consumer whose cursor passed seq N never finds an
    /// event below N appearing later.
    publish_order: std::sync::Mutex<()>,
    /// Every event up to this seq is inserted (set under `publish_order`
    /// after each insert). Consumers read no further: an iterator that
    /// passed seq N before N's insert landed could otherwise see N + 1
    /// and move its cursor past N for good.
    inserted: std::sync::atomic::AtomicU64,
    /// One take at a time: two handles on one consumer never take the same
    /// event.
    take_order: std::sync::Mutex<()>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConsumerState {
    filter: String,
    ack_wait_ms: u64,
    cursor: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Pending {
    attempt: u32,
    due_ms: u64,
}

fn key(prefix: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9);
    k.extend_from_slice(prefix.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn seq_of(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len() - 8..].try_into().expect("keys end in a u64");
    u64::from_be_bytes(tail)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise")
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, EventError> {
    serde_json::from_slice(bytes).map_err(|e| EventError::Store(format!("corrupt record: {e}")))
}

fn decode_event(bytes: &[u8]) -> Result<StoredEvent, EventError> {
    let frame = Frame::<StoredEvent>::decode(Bytes::copy_from_slice(bytes))
        .map_err(|e| EventError::Store(format!("corrupt event: {e}")))?;
    Ok(StoredEvent { data: frame.body, ..frame.header })
}

impl SledLog {
    pub fn open(dir: &Path) -> Result<Self, EventError> {
        let db = sled::open(dir)?;
        let events = db.open_tree("events")?;
        let last = events.last()?.map_or(0, |(k, _)| seq_of(&k));
        // Whoever had deliveries in flight died with the last process (the
        // embedded log has one reader): they are due again now, not after
        // their ack wait.
        let pending = db.open_tree("pending")?;
        for item in pending.iter() {
            let (k, v) = item?;
            let mut p: Pending = parse(&v)?;
            p.due_ms = 0;
            pending.insert(k, json(&p))?;
        }
        let (published, _) = watch::channel(last);
        let log = SledLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                consumers: db.open_tree("consumers")?,
                pending,
                dlq: db.open_tree("dlq")?,
                events,
                db,
                published,
                publish_order: std::sync::Mutex::new(()),
                inserted: std::sync::atomic::AtomicU64::new(last),
                take_order: std::sync::Mutex::new(()),
            }),
        };
        tern_task::every_while("tern-events-prune", PRUNE_EVERY, Arc::downgrade(&log.inner), |inner| {
            if let Err(e) = inner.prune() {
                tracing::warn!("pruning the event log: {e}");
            }
        })
        .map_err(|e| EventError::Store(format!("cannot start the pruning thread: {e}")))?;
        Ok(log)
    }

    /// Waits until everything written so far is on disk. Not sled's
    /// `flush_async`: it waits on sled's small I/O pool, and enough
    /// concurrent publishes fill that pool with waiters and deadlock it.
    /// Concurrent flushes share one write.
    async fn flush(&self) -> Result<(), EventError> {
        self.blocking(|inner| {
            inner.db.flush()?;
            Ok(())
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, EventError> + Send + 'static,
    ) -> Result<T, EventError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| EventError::Store(format!("event store task failed: {e}")))?
    }
}

#[async_trait]
impl EventLog for SledLog {
    async fn publish(
        &self,
        subject: &str,
        headers: Vec<(String, String)>,
        data: Bytes,
    ) -> Result<StoredEvent, EventError> {
        tern_protocol::nats_subject::check(subject, false)
            .map_err(|e| EventError::Subject { subject: subject.to_string(), reason: e.to_string() })?;
        let subject = subject.to_string();
        let size = data.len() as u64;
        let event = self
            .blocking(move |inner| {
                if !inner.routed(&subject)? {
                    return Err(EventError::Unrouted(subject));
                }
                crate::disk::ensure_room(&inner.dir, size).map_err(|e| EventError::Store(e.to_string()))?;
                let _order = inner.publish_order.lock().unwrap_or_else(|e| e.into_inner());
                // generate_id is unique and increasing across restarts.
                let seq = inner.db.generate_id()? + 1;
                let event = StoredEvent {
                    seq,
                    id: crate::new_event_id(),
                    subject,
                    headers,
                    data: Bytes::new(),
                    published_ms: now_ms(),
                };
                let record = Frame::new(event.clone(), data.clone()).encode();
                inner.events.insert(seq.to_be_bytes(), record.as_ref())?;
                Ok(StoredEvent { data, ..event })
            })
            .await?;
        // Consumers see it only once it is durable; if it cannot be made
        // durable it is taken out again, so the publisher's "not stored"
        // is true.
        if let Err(e) = self.flush().await {
            let seq = event.seq;
            let _ = self.blocking(move |inner| Ok(inner.events.remove(seq.to_be_bytes())?)).await;
            return Err(e);
        }
        self.inner.inserted.fetch_max(event.seq, std::sync::atomic::Ordering::AcqRel);
        self.inner.published.send_modify(|last| *last = (*last).max(event.seq));
        Ok(event)
    }

    async fn create_consumer(&self, config: &ConsumerConfig) -> Result<(), EventError> {
        SubjectPattern::parse(&config.filter)
            .map_err(|e| EventError::Subject { subject: config.filter.clone(), reason: e.to_string() })?;
        let c = config.clone();
        self.blocking(move |inner| {
            let _order = inner.publish_order.lock().unwrap_or_else(|e| e.into_inner());
            let cursor = match inner.consumers.get(&c.name)? {
                Some(v) => parse::<ConsumerState>(&v)?.cursor,
                None => inner.events.last()?.map_or(0, |(k, _)| seq_of(&k)) + 1,
            };
            let state =
                ConsumerState { filter: c.filter, ack_wait_ms: c.ack_wait.as_millis() as u64, cursor };
            inner.consumers.insert(&c.name, json(&state))?;
            Ok(())
        })
        .await?;
        self.flush().await?;
        Ok(())
    }

    async fn consumers(&self) -> Result<Vec<ConsumerConfig>, EventError> {
        self.blocking(|inner| {
            let mut out = Vec::new();
            for item in inner.consumers.iter() {
                let (k, v) = item?;
                let state: ConsumerState = parse(&v)?;
                out.push(ConsumerConfig {
                    name: String::from_utf8_lossy(&k).into_owned(),
                    filter: state.filter,
                    ack_wait: Duration::from_millis(state.ack_wait_ms),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn consumer(&self, name: &str) -> Result<Box<dyn Consumer>, EventError> {
        let config = self
            .consumers()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| EventError::NoConsumer(name.to_string()))?;
        let pattern = SubjectPattern::parse(&config.filter)
            .map_err(|e| EventError::Subject { subject: config.filter.clone(), reason: e.to_string() })?;
        Ok(Box::new(SledConsumer {
            log: self.clone(),
            name: config.name,
            pattern,
            ack_wait: config.ack_wait,
            published: self.inner.published.subscribe(),
        }))
    }

    async fn stats(&self, name: &str) -> Result<ConsumerStats, EventError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let Some(state) = inner.consumers.get(&name)? else {
                return Err(EventError::NoConsumer(name));
            };
            let state: ConsumerState = parse(&state)?;
            let pattern = SubjectPattern::parse(&state.filter)
                .map_err(|e| EventError::Store(format!("stored filter {:?}: {e}", state.filter)))?;
            let mut waiting = 0;
            for item in inner.events.range(state.cursor.to_be_bytes()..) {
                if pattern.matches(&decode_event(&item?.1)?.subject) {
                    waiting += 1;
                }
            }
            let unacked = inner.pending.scan_prefix(prefix(&name)).count() as u64;
            Ok(ConsumerStats { waiting, unacked })
        })
        .await
    }

    async fn delete_consumer(&self, name: &str) -> Result<(), EventError> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner.consumers.remove(&name)?;
            for item in inner.pending.scan_prefix(prefix(&name)) {
                inner.pending.remove(item?.0)?;
            }
            Ok(())
        })
        .await
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), EventError> {
        self.blocking(move |inner| {
            let k = key(&letter.function, letter.event.seq);
            inner.dlq.insert(k, letter.encode().as_ref())?;
            Ok(())
        })
        .await?;
        self.flush().await?;
        Ok(())
    }

    async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, EventError> {
        let function = function.to_string();
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for item in inner.dlq.scan_prefix(prefix(&function)) {
                out.push(DeadLetter::decode(Bytes::copy_from_slice(&item?.1))?);
            }
            Ok(out)
        })
        .await
    }

    async fn remove_dead_letter(&self, function: &str, event_id: &str) -> Result<bool, EventError> {
        let letters = self.dead_letters(function).await?;
        let Some(letter) = letters.into_iter().find(|l| l.event.id == event_id) else {
            return Ok(false);
        };
        let k = key(function, letter.event.seq);
        self.blocking(move |inner| Ok(inner.dlq.remove(k)?.is_some())).await?;
        self.flush().await?;
        Ok(true)
    }

    async fn dead_letter_count(&self, function: &str) -> Result<u64, EventError> {
        let p = prefix(function);
        self.blocking(move |inner| {
            let mut n = 0;
            for k in inner.dlq.scan_prefix(p).keys() {
                k?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn delete_dead_letters(&self, function: &str) -> Result<u64, EventError> {
        let p = prefix(function);
        let n = self
            .blocking(move |inner| {
                let mut n = 0;
                for k in inner.dlq.scan_prefix(p).keys() {
                    inner.dlq.remove(k?)?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
        self.flush().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        crate::conformance::run_all(Arc::new(SledLog::open(dir.path()).unwrap())).await;
    }

    #[tokio::test]
    async fn events_every_consumer_is_done_with_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path()).unwrap();
        let cfg = |name: &str| ConsumerConfig {
            name: name.into(),
            filter: "p.*".into(),
            ack_wait: Duration::from_secs(30),
        };
        log.create_consumer(&cfg("fast")).await.unwrap();
        log.create_consumer(&cfg("slow")).await.unwrap();
        let (mut fast, mut slow) = (log.consumer("fast").await.unwrap(), log.consumer("slow").await.unwrap());
        for i in 0..3 {
            log.publish("p.x", vec![], Bytes::from(vec![i])).await.unwrap();
        }
        for _ in 0..3 {
            fast.next().await.unwrap().ack().await.unwrap();
        }
        assert_eq!(log.inner.prune().unwrap(), 0, "slow has not taken any yet");
        let first = slow.next().await.unwrap(); // taken, not settled: pending
        slow.next().await.unwrap().ack().await.unwrap();
        assert_eq!(log.inner.prune().unwrap(), 0, "the oldest pending one holds the floor");
        first.ack().await.unwrap();
        assert_eq!(log.inner.prune().unwrap(), 2);
        let third = slow.next().await.unwrap();
        assert_eq!(third.event.data.as_ref(), &[2]);
        third.ack().await.unwrap();
        assert_eq!(log.inner.prune().unwrap(), 1);
        assert!(log.inner.events.is_empty());
        // Seqs go on after the log was emptied, and consumers see new events.
        let e = log.publish("p.y", vec![], Bytes::from_static(b"later")).await.unwrap();
        assert!(e.seq > 3);
        assert_eq!(fast.next().await.unwrap().event.id, e.id);
    }

    #[tokio::test]
    async fn position_and_pending_deliveries_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConsumerConfig {
            name: "f.t0".into(),
            filter: "orders.>".into(),
            ack_wait: Duration::from_secs(2),
        };
        {
            let log = SledLog::open(dir.path()).unwrap();
            log.create_consumer(&config).await.unwrap();
            let mut c = log.consumer(&config.name).await.unwrap();
            for i in 0..3 {
                log.publish("orders.new", vec![], Bytes::from(format!("e{i}"))).await.unwrap();
            }
            let d = c.next().await.unwrap();
            assert_eq!(d.event.data, "e0");
            d.ack().await.unwrap();
            // e1 taken but never settled: in flight when the process died.
            assert_eq!(c.next().await.unwrap().event.data, "e1");
            log.inner.db.flush().unwrap();
        }
        let log = SledLog::open(dir.path()).unwrap();
        log.create_consumer(&config).await.unwrap();
        let mut c = log.consumer(&config.name).await.unwrap();
        // The embedded log has one reader, which died: what it had in
        // flight is due at once, not after its ack wait.
        let d = tokio::time::timeout(Duration::from_secs(1), c.next()).await.unwrap().unwrap();
        assert_eq!((d.event.data.as_ref(), d.attempt), (&b"e1"[..], 2), "the unsettled one comes back first");
        d.ack().await.unwrap();
        let d = c.next().await.unwrap();
        assert_eq!(
            (d.event.data.as_ref(), d.attempt),
            (&b"e2"[..], 1),
            "new events continue after the cursor"
        );
    }
}
