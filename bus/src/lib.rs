//! The one seam every Tern role talks through: a message bus with NATS
//! semantics (subjects with `*`/`>` wildcards, publish/subscribe, queue
//! groups, request/reply with a timeout, and an immediate "no responders"
//! when nobody listens).
//!
//! Two implementations share this trait: NATS for clusters, and
//! [`InProcessBus`] for the embedded single-node default. Both must pass
//! [`conformance`].

pub mod conformance;
mod in_process;
pub mod nats;
mod subject;

pub use in_process::InProcessBus;
pub use nats::{NatsBus, NatsOptions};
pub use subject::{SubjectPattern, validate_subject};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A message as delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    /// Where to send the answer, for a request.
    pub reply: Option<String>,
    pub payload: Bytes,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("no responders on {0}")]
    NoResponders(String),
    #[error("request on {subject} got no reply within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject { subject: String, reason: &'static str },
    #[error("payload of {size} bytes is over the bus limit of {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("bus connection failed: {0}")]
    Connection(String),
}

/// A stream of messages; dropping it unsubscribes at once (messages already
/// on their way are lost), [`Subscription::drain`] unsubscribes cleanly.
pub struct Subscription {
    inner: Pin<Box<dyn Source>>,
}

/// What a bus implementation hands out as a subscription.
pub trait Source: Stream<Item = Message> + Send {
    /// Stops new deliveries. The stream then yields every message the bus
    /// had already routed to this subscriber, and ends.
    fn drain(self: Pin<&mut Self>) -> BoxFuture<'_, ()>;
}

impl Subscription {
    pub fn new(source: impl Source + 'static) -> Self {
        Subscription { inner: Box::pin(source) }
    }

    /// Unsubscribes without losing what is in flight: keep reading the
    /// stream until it ends. A worker unloading a function uses this so
    /// that a request routed to it just before is still answered.
    pub async fn drain(&mut self) {
        self.inner.as_mut().drain().await
    }
}

impl Stream for Subscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Fire and forget. Succeeds whether or not anyone listens.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Every message on subjects matching `pattern`.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;

    /// Like [`Bus::subscribe`], but each message goes to one member of `group`.
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError>;

    /// Sends `payload` and waits for one reply. Fails at once with
    /// [`BusError::NoResponders`] when nobody subscribes to `subject`.
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message, BusError>;

    /// The largest payload this bus carries.
    fn max_payload(&self) -> usize;
}

/// Answers a request. A message without a reply subject is left unanswered:
/// its sender did not ask for one.
pub async fn respond(bus: &dyn Bus, msg: &Message, payload: Bytes) -> Result<(), BusError> {
    match &msg.reply {
        Some(reply) => bus.publish(reply, payload).await,
        None => Ok(()),
    }
}
