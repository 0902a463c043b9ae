//! The durable event log: where published events wait until every trigger
//! that wants them has had its function handle them.
//!
//! One seam, [`EventLog`], with the semantics of JetStream durable consumers
//! as Tern uses them: an event is durable once [`EventLog::publish`]
//! returns; each trigger is a named durable consumer with a subject filter
//! (NATS wildcards) that sees every event published after it was created;
//! a delivery is acknowledged ([`Delivery::ack`]), retried after a delay
//! ([`Delivery::retry_after`], never at once), kept in progress for a slow
//! handler ([`Delivery::in_progress`]), or dropped for good
//! ([`Delivery::terminate`]); a delivery neither acked nor retried within the
//! consumer's ack wait is delivered again. Delivery is at least once.
//! Dead letters are kept per function.
//!
//! [`SledLog`] implements it for the embedded mode, [`JetStreamLog`] for
//! cluster mode. [`conformance`] is the
//! behaviour every implementation must show.

pub mod conformance;
pub use tern_disk as disk;
mod jetstream;
mod sled_log;

pub use jetstream::JetStreamLog;
pub use sled_log::SledLog;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event store: {0}")]
    Store(String),
    #[error("invalid subject {subject:?}: {reason}")]
    Subject { subject: String, reason: String },
    #[error("no such consumer {0}")]
    NoConsumer(String),
    /// Nothing would ever deliver it, so it is not stored.
    #[error("no trigger takes events on {0:?}; the event was not stored")]
    Unrouted(String),
}

impl From<sled::Error> for EventError {
    fn from(e: sled::Error) -> Self {
        EventError::Store(e.to_string())
    }
}

/// An event as stored: what was published, and where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the log; increases with every publish.
    pub seq: u64,
    /// Unique per published event; the same on every redelivery.
    pub id: String,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub data: Bytes,
    pub published_ms: u64,
}

/// An event that used up its attempts, with the last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub event: StoredEvent,
    pub function: String,
    pub attempts: u32,
    pub error: String,
    pub failed_ms: u64,
}

/// A consumer's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Matching events published and not yet delivered.
    pub waiting: u64,
    /// Delivered, not yet acked or terminated (in flight, or due again).
    pub unacked: u64,
}

/// A dead letter as both logs store it: a frame of this JSON header, then
/// the event's data.
#[derive(Serialize, Deserialize)]
struct DeadLetterHeader {
    event: StoredEvent,
    function: String,
    attempts: u32,
    error: String,
    failed_ms: u64,
}

impl DeadLetter {
    pub(crate) fn encode(self) -> Bytes {
        let data = self.event.data.clone();
        let header = DeadLetterHeader {
            event: self.event,
            function: self.function,
            attempts: self.attempts,
            error: self.error,
            failed_ms: self.failed_ms,
        };
        tern_protocol::Frame::new(header, data).encode()
    }

    pub(crate) fn decode(stored: Bytes) -> Result<DeadLetter, EventError> {
        let frame = tern_protocol::Frame::<DeadLetterHeader>::decode(stored)
            .map_err(|e| EventError::Store(format!("corrupt dead letter: {e}")))?;
        let h = frame.header;
        Ok(DeadLetter {
            event: StoredEvent { data: frame.body, ..h.event },
            function: h.function,
            attempts: h.attempts,
            error: h.error,
            failed_ms: h.failed_ms,
        })
    }
}

/// What a durable consumer is: its name (one per trigger) and the subjects
/// it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    pub name: String,
    /// A NATS subject pattern (`orders.*`, `orders.>`).
    pub filter: String,
    /// A delivery not acknowledged, retried or marked in progress within
    /// this long is delivered again.
    pub ack_wait: Duration,
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores an event; it is durable once this returns. An event no
    /// consumer's filter matches is refused ([`EventError::Unrouted`]).
    async fn publish(
        &self,
        subject: &str,
        headers: Vec<(String, String)>,
        data: Bytes,
    ) -> Result<StoredEvent, EventError>;

    /// Creates the durable consumer if it does not exist (its position and
    /// unacknowledged deliveries survive restarts). A new one starts after
    /// the last event published so far.
    async fn create_consumer(&self, config: &ConsumerConfig) -> Result<(), EventError>;

    /// Every durable consumer.
    async fn consumers(&self) -> Result<Vec<ConsumerConfig>, EventError>;

    /// Opens an existing consumer to take its deliveries. Several may be
    /// open at once (one per gateway): each delivery goes to one of them.
    async fn consumer(&self, name: &str) -> Result<Box<dyn Consumer>, EventError>;

    /// How far behind a consumer is.
    async fn stats(&self, name: &str) -> Result<ConsumerStats, EventError>;

    /// Removes a consumer and everything it had pending.
    async fn delete_consumer(&self, name: &str) -> Result<(), EventError>;

    /// Keeps a failed event for `function`; durable once this returns.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), EventError>;

    /// A function's dead letters, oldest first.
    async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, EventError>;

    /// Removes one dead letter (after a replay); false if there was none.
    async fn remove_dead_letter(&self, function: &str, event_id: &str) -> Result<bool, EventError>;

    /// How many dead letters `function` has, without reading them.
    async fn dead_letter_count(&self, function: &str) -> Result<u64, EventError>;

    /// Removes every dead letter of `function` (it was deleted); returns
    /// how many.
    async fn delete_dead_letters(&self, function: &str) -> Result<u64, EventError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// The next delivery: a redelivery that is due, else the next new event
    /// that matches the filter; waits until there is one. Dropping the
    /// future half way may leave an event taken: it comes back after the
    /// ack wait, so nothing is lost, but do not race `next` in a select.
    async fn next(&mut self) -> Result<Delivery, EventError>;

    /// At least one delivery (waiting like [`Consumer::next`]), plus up to
    /// `max - 1` more that are ready now without waiting, so a trigger can
    /// hand them to its function in one round trip.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>, EventError> {
        let _ = max;
        Ok(vec![self.next().await?])
    }
}

/// One delivery of an event to a consumer.
pub struct Delivery {
    pub event: StoredEvent,
    /// 1 on the first delivery, 2 on the first redelivery, and so on.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(event: StoredEvent, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Delivery { event, attempt, acker }
    }

    /// Handled: never deliver it to this consumer again.
    pub async fn ack(&self) -> Result<(), EventError> {
        self.acker.settle(Settle::Ack).await
    }

    /// Failed: deliver it again after `delay` (not before).
    pub async fn retry_after(&self, delay: Duration) -> Result<(), EventError> {
        self.acker.settle(Settle::RetryAfter(delay)).await
    }

    /// Still working: restart the ack wait.
    pub async fn in_progress(&self) -> Result<(), EventError> {
        self.acker.settle(Settle::InProgress).await
    }

    /// Give up on it for this consumer (after writing a dead letter).
    pub async fn terminate(&self) -> Result<(), EventError> {
        self.acker.settle(Settle::Terminate).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    RetryAfter(Duration),
    InProgress,
    Terminate,
}

/// How an implementation settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn settle(&self, how: Settle) -> Result<(), EventError>;
}

pub(crate) use tern_protocol::clock::now_ms;

/// A new event id: 128 random bits, hex. Unique per published event; a
/// redelivery keeps it, so handlers can deduplicate.
pub fn new_event_id() -> String {
    tern_protocol::id::random_hex::<16>()
}
