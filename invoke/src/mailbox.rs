//! Many short conversations over one subscription: a role subscribes once
//! to `<kind>.<owner>.*` and hands each conversation (a streamed body, its
//! credits) a mailbox, the last token. Opening a mailbox costs a map
//! insert, not a subscription, so a request that might stream pays
//! nothing for it on the bus.
//!
//! An empty message is a keep-alive: it is noted (see
//! [`Mailbox::recv_within`]) and never queued, so a peer saying it is
//! alive once a second cannot fill a mailbox nobody reads for a while.

use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tern_bus::{Bus, BusError, Message};
use tokio::sync::mpsc;

type Boxes = Arc<Mutex<HashMap<u64, Entry>>>;

struct Entry {
    tx: mpsc::Sender<Message>,
    heard: Arc<Heard>,
}

/// When a mailbox last heard anything, keep-alives included.
struct Heard {
    base: Instant,
    after_ms: AtomicU64,
}

impl Heard {
    fn now(&self) {
        self.after_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.after_ms.load(Ordering::Relaxed)))
    }
}

pub struct Mailboxes {
    owner: String,
    subject: fn(&str, u64) -> String,
    next: AtomicU64,
    boxes: Boxes,
}

/// One conversation's messages; closed (and forgotten) when dropped.
pub struct Mailbox {
    pub id: u64,
    /// Where the other side sends.
    pub subject: String,
    pub rx: mpsc::Receiver<Message>,
    heard: Arc<Heard>,
    boxes: Boxes,
}

/// Why [`Mailbox::recv_within`] has no message.
#[derive(Debug, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing at all, not even a keep-alive, for the time given.
    Silent,
    /// The subscription ended (the role is shutting down).
    Closed,
}

impl Mailbox {
    /// Starts the silence clock now: a mailbox opened long before its
    /// stream begins (the request waited for a cold start) is not silent
    /// for having heard nothing until then.
    pub fn listen_from_now(&self) {
        self.heard.now();
    }

    /// The next message; `Silent` once the other side has said nothing
    /// (keep-alives count) for `silence`.
    pub async fn recv_within(&mut self, silence: Duration) -> Result<Message, Quiet> {
        loop {
            let left = silence.saturating_sub(self.heard.since());
            if left.is_zero() {
                // A message may have come with the last keep-alive.
                return self.rx.try_recv().map_err(|_| Quiet::Silent);
            }
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => return Err(Quiet::Closed),
                Err(_) => continue,
            }
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.boxes.lock().remove(&self.id);
    }
}

impl Mailboxes {
    /// Subscribes to `all(owner)` for a fresh owner token, and delivers
    /// each message to the mailbox its last token names. `one(owner, id)`
    /// is a mailbox's subject.
    pub async fn open(
        bus: &dyn Bus,
        all: fn(&str) -> String,
        one: fn(&str, u64) -> String,
    ) -> Result<Arc<Self>, BusError> {
        let owner = format!("{:016x}", tern_protocol::id::random_u64());
        let mut sub = bus.subscribe(&all(&owner)).await?;
        let boxes: Boxes = Arc::default();
        let weak = Arc::downgrade(&boxes);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(boxes) = weak.upgrade() else { break };
                let Some(id) = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else {
                    continue;
                };
                let Some((tx, heard)) = boxes.lock().get(&id).map(|e| (e.tx.clone(), e.heard.clone())) else {
                    continue;
                };
                heard.now();
                if msg.payload.is_empty() {
                    continue;
                }
                // Never block the one subscription on one slow mailbox: the
                // window bounds what a well-behaved sender has in flight,
                // and a sender past it loses the excess (its stream then
                // fails on the gap).
                let _ = tx.try_send(msg);
            }
        });
        Ok(Arc::new(Mailboxes { owner, subject: one, next: AtomicU64::new(1), boxes }))
    }

    /// A new mailbox holding up to `capacity` undelivered messages.
    pub fn mailbox(&self, capacity: usize) -> Mailbox {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let heard = Arc::new(Heard { base: Instant::now(), after_ms: AtomicU64::new(0) });
        self.boxes.lock().insert(id, Entry { tx, heard: heard.clone() });
        Mailbox { id, subject: (self.subject)(&self.owner, id), rx, heard, boxes: self.boxes.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_bus::InProcessBus;

    fn stream(owner: &str, id: u64) -> String {
        format!("t.stream.{owner}.{id}")
    }
    fn streams(owner: &str) -> String {
        format!("t.stream.{owner}.*")
    }

    #[tokio::test]
    async fn keepalives_are_heard_but_never_queued() {
        let bus = InProcessBus::new();
        let boxes = Mailboxes::open(&bus, streams, stream).await.unwrap();
        let mut m = boxes.mailbox(2);
        let silence = Duration::from_millis(300);
        // More keep-alives than the mailbox holds, a message after them.
        for _ in 0..5 {
            bus.publish(&m.subject, Bytes::new()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bus.publish(&m.subject, Bytes::from_static(b"data")).await.unwrap();
        assert_eq!(&m.recv_within(silence).await.unwrap().payload[..], b"data");
        // Keep-alives alone keep it from being silent…
        let alive = {
            let (bus, subject) = (bus.clone(), m.subject.clone());
            tokio::spawn(async move {
                loop {
                    let _ = bus.publish(&subject, Bytes::new()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let waited = tokio::time::timeout(Duration::from_millis(800), m.recv_within(silence)).await;
        assert!(waited.is_err(), "still waiting: keep-alives came");
        alive.abort();
        // …and without them it is.
        assert_eq!(m.recv_within(silence).await.unwrap_err(), Quiet::Silent);
    }
}
