//! Many short conversations over one subscription: a role subscribes once
//! to `<kind>.<owner>.*` and hands each conversation (a streamed body, its
//! credits) a mailbox, the last token. Opening a mailbox costs a map
//! insert, not a subscription, so a request that might stream pays
//! nothing for it on the bus.

use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tern_bus::{Bus, BusError, Message};
use tokio::sync::mpsc;

pub struct Mailboxes {
    owner: String,
    subject: fn(&str, u64) -> String,
    next: AtomicU64,
    boxes: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>,
}

/// One conversation's messages; closed (and forgotten) when dropped.
pub struct Mailbox {
    pub id: u64,
    /// Where the other side sends.
    pub subject: String,
    pub rx: mpsc::Receiver<Message>,
    boxes: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>,
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
        let boxes: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>> = Arc::default();
        let weak = Arc::downgrade(&boxes);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(boxes) = weak.upgrade() else { break };
                let Some(id) = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else {
                    continue;
                };
                let tx = boxes.lock().get(&id).cloned();
                // Never block the one subscription on one slow mailbox: the
                // window bounds what a well-behaved sender has in flight,
                // and a sender past it loses the excess (its stream then
                // fails on the gap).
                if let Some(tx) = tx {
                    let _ = tx.try_send(msg);
                }
            }
        });
        Ok(Arc::new(Mailboxes { owner, subject: one, next: AtomicU64::new(1), boxes }))
    }

    /// A new mailbox holding up to `capacity` undelivered messages.
    pub fn mailbox(&self, capacity: usize) -> Mailbox {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.boxes.lock().insert(id, tx);
        Mailbox { id, subject: (self.subject)(&self.owner, id), rx, boxes: self.boxes.clone() }
    }
}
