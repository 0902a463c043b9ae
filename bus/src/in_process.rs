//! The embedded bus: NATS semantics inside one process, no server.
//!
//! Payloads are `Bytes`, so a message costs a refcount, not a copy. Delivery
//! is into unbounded channels: a publish never blocks and never drops, and a
//! subscriber that stops reading holds memory, as a slow NATS consumer would
//! hold server memory (NATS would eventually cut it off).

use crate::subject::{SubjectPattern, validate_subject};
use crate::{Bus, BusError, Message, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const INBOX_PREFIX: &str = "_INBOX.";

#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    subs: RwLock<Subs>,
    /// Open requests, by inbox subject: replies skip the subscription table.
    pending: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    /// Round-robin position for queue groups.
    rr: AtomicU64,
    max_payload: usize,
}

#[derive(Default)]
struct Subs {
    /// Patterns without wildcards, by subject: the hot path (invokes).
    exact: HashMap<String, Vec<Sub>>,
    wildcard: Vec<(SubjectPattern, Sub)>,
}

#[derive(Clone)]
struct Sub {
    id: u64,
    group: Option<String>,
    tx: mpsc::UnboundedSender<Message>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::with_max_payload(64 * 1024 * 1024)
    }

    pub fn with_max_payload(max_payload: usize) -> Self {
        InProcessBus {
            inner: Arc::new(Inner {
                subs: RwLock::new(Subs::default()),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                rr: AtomicU64::new(0),
                max_payload,
            }),
        }
    }

    fn add(&self, pattern: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        validate_subject(pattern, true)?;
        let parsed = SubjectPattern::parse(pattern).expect("validated");
        if let Some(g) = group {
            validate_subject(g, false)?;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Sub { id, group: group.map(str::to_string), tx };
        let wild = parsed.has_wildcard();
        let mut subs = self.inner.subs.write().unwrap();
        if wild {
            subs.wildcard.push((parsed, sub));
        } else {
            subs.exact.entry(pattern.to_string()).or_default().push(sub);
        }
        Ok(Subscription::new(Receiver {
            rx,
            id,
            exact_key: (!wild).then(|| pattern.to_string()),
            inner: Arc::downgrade(&self.inner),
        }))
    }

    /// Delivers to every plain subscriber and one member of each queue group.
    /// Returns how many subscribers got the message.
    fn deliver(&self, msg: Message) -> usize {
        let subs = self.inner.subs.read().unwrap();
        let exact = subs.exact.get(&msg.subject).map(Vec::as_slice).unwrap_or(&[]);
        let wild = subs.wildcard.iter().filter(|(p, _)| p.matches(&msg.subject)).map(|(_, s)| s);
        let mut groups: HashMap<&str, Vec<&Sub>> = HashMap::new();
        let mut delivered = 0;
        for sub in exact.iter().chain(wild) {
            match &sub.group {
                None => {
                    if sub.tx.send(msg.clone()).is_ok() {
                        delivered += 1;
                    }
                }
                Some(g) => groups.entry(g.as_str()).or_default().push(sub),
            }
        }
        for members in groups.values() {
            // Start at a rotating member; skip ones whose receiver is gone.
            let start = self.inner.rr.fetch_add(1, Ordering::Relaxed) as usize;
            for i in 0..members.len() {
                if members[(start + i) % members.len()].tx.send(msg.clone()).is_ok() {
                    delivered += 1;
                    break;
                }
            }
        }
        delivered
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), BusError> {
        if payload.len() > self.inner.max_payload {
            return Err(BusError::PayloadTooLarge { size: payload.len(), limit: self.inner.max_payload });
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject, false)?;
        self.check_size(&payload)?;
        if subject.starts_with(INBOX_PREFIX) {
            let waiter = self.inner.pending.lock().unwrap().remove(subject);
            if let Some(tx) = waiter {
                let _ = tx.send(Message { subject: subject.to_string(), reply: None, payload });
                return Ok(());
            }
        }
        self.deliver(Message { subject: subject.to_string(), reply: None, payload });
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.add(pattern, None)
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        self.add(pattern, Some(group))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message, BusError> {
        validate_subject(subject, false)?;
        self.check_size(&payload)?;
        let inbox = format!("{INBOX_PREFIX}{}", self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap().insert(inbox.clone(), tx);
        // Removes the pending entry however this request ends (reply,
        // timeout, no responders, or the caller dropping the future).
        let _cleanup = PendingGuard { inner: &self.inner, inbox: &inbox };
        let msg = Message { subject: subject.to_string(), reply: Some(inbox.clone()), payload };
        if self.deliver(msg) == 0 {
            return Err(BusError::NoResponders(subject.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // The sender is only dropped by the guard, after we return.
            Ok(Err(_)) => Err(BusError::Connection("reply channel closed".into())),
            Err(_) => Err(BusError::Timeout { subject: subject.to_string(), timeout }),
        }
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload
    }
}

struct PendingGuard<'a> {
    inner: &'a Inner,
    inbox: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().unwrap().remove(self.inbox);
    }
}

/// The subscriber's end; unsubscribes on drop.
struct Receiver {
    rx: mpsc::UnboundedReceiver<Message>,
    id: u64,
    exact_key: Option<String>,
    inner: Weak<Inner>,
}

impl Stream for Receiver {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl crate::Source for Receiver {
    fn drain(self: Pin<&mut Self>) -> futures::future::BoxFuture<'_, ()> {
        // Delivery sends under the registry lock, so once removed nothing
        // new arrives; dropping the sender ends the stream after what is
        // already queued.
        self.unsubscribe();
        Box::pin(async {})
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl Receiver {
    fn unsubscribe(&self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut subs = inner.subs.write().unwrap();
        match &self.exact_key {
            Some(key) => {
                if let Some(list) = subs.exact.get_mut(key) {
                    list.retain(|s| s.id != self.id);
                    if list.is_empty() {
                        subs.exact.remove(key);
                    }
                }
            }
            None => subs.wildcard.retain(|(_, s)| s.id != self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::conformance::run_all(Arc::new(InProcessBus::new())).await;
    }
}
