//! Event delivery: events go to a function as one [`EventBatch`] invoke
//! request through the [`Invoker`] (the same path as HTTP, so an event
//! wakes a function at zero), and each delivery from a trigger is then
//! settled by its own result.
//!
//! Per delivery: while the function works the delivery is kept in
//! progress; success acks it; a failure asks for it again after the
//! backoff (doubling per attempt, never at once); the last allowed failure
//! writes a dead letter with the error and only then terminates it. A
//! gateway that dies mid-delivery settles nothing, and the log delivers
//! the event again after its ack wait. Delivery is at least once.

use crate::invoker::Invoker;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tern_events::{DeadLetter, Delivery, EventLog};
use tern_protocol::{
    BatchedEvent, EventBatch, EventBatchResult, EventDelivery, EventResult, Frame, FunctionSpec,
    TriggerEntry, clock,
};

/// How often a slow delivery is marked in progress; well inside the
/// consumers' ack wait (30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct EventDispatch {
    invoker: Arc<Invoker>,
    log: Arc<dyn EventLog>,
}

impl EventDispatch {
    pub fn new(invoker: Arc<Invoker>, log: Arc<dyn EventLog>) -> Self {
        EventDispatch { invoker, log }
    }

    /// The event log deliveries come from and dead letters go to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Sends events to `function` in one call; one result per event, or
    /// why none came (no replica, a timeout, a malformed or short reply).
    pub async fn deliver(
        &self,
        function: &str,
        timeout_ms: u64,
        events: impl IntoIterator<Item = (EventDelivery, &Bytes)>,
    ) -> Result<Vec<EventResult>, String> {
        let mut batch = Vec::new();
        let mut data = BytesMut::new();
        for (delivery, bytes) in events {
            batch.push(BatchedEvent { delivery, len: bytes.len() });
            data.extend_from_slice(bytes);
        }
        let sent = batch.len();
        let payload = Frame::new(EventBatch { batch }, data.freeze()).encode();
        let reply = self.invoker.call(function, timeout_ms, payload).await.map_err(|e| e.to_string())?;
        let results = Frame::<EventBatchResult>::decode(reply.payload)
            .map_err(|e| format!("function {function} sent a malformed reply: {e}"))?
            .header
            .results;
        if results.len() != sent {
            return Err(format!("function {function} answered {} of {sent} events", results.len()));
        }
        Ok(results)
    }

    /// One event, outside any trigger (`tern invoke`, a dead-letter
    /// replay): Err is why it was not handled.
    pub async fn deliver_one(
        &self,
        function: &str,
        timeout_ms: u64,
        head: EventDelivery,
        data: &Bytes,
    ) -> Result<(), String> {
        let mut results = self.deliver(function, timeout_ms, [(head, data)]).await?;
        match results.pop().and_then(|r| r.error) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Delivers a trigger's batch in one call, keeping it in progress
    /// meanwhile, then settles each delivery by its own result.
    pub async fn handle_batch(&self, t: &TriggerEntry, batch: Vec<Delivery>) {
        let events = batch.iter().map(|d| {
            let head = EventDelivery {
                id: d.event.id.clone(),
                subject: d.event.subject.clone(),
                headers: d.event.headers.clone(),
                attempt: d.attempt,
            };
            (head, &d.event.data)
        });
        let work = self.deliver(&t.function, t.timeout_ms, events);
        let keep_alive = async {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                for d in &batch {
                    if let Err(e) = d.in_progress().await {
                        tracing::debug!("could not mark a delivery in progress: {e}");
                    }
                }
            }
        };
        let outcome = tokio::select! {
            r = work => r,
            _ = keep_alive => unreachable!("marks progress until the work ends"),
        };
        match outcome {
            Ok(results) => {
                for (d, r) in batch.iter().zip(results) {
                    self.settle(t, d, r.error.map_or(Ok(()), Err)).await;
                }
            }
            Err(e) => {
                for d in &batch {
                    self.settle(t, d, Err(e.clone())).await;
                }
            }
        }
    }

    /// Ack, retry after the backoff, or (at the last attempt) dead letter
    /// then terminate.
    async fn settle(&self, t: &TriggerEntry, d: &Delivery, outcome: Result<(), String>) {
        let (id, attempt) = (d.event.id.as_str(), d.attempt);
        let settled = match outcome {
            Ok(()) => d.ack().await,
            Err(error) if attempt >= t.max_attempts => {
                tracing::warn!(function = %t.function, event = id, attempt, "dead letter: {error}");
                let letter = DeadLetter {
                    event: d.event.clone(),
                    function: t.function.clone(),
                    attempts: attempt,
                    error,
                    failed_ms: clock::now_ms(),
                };
                match self.log.dead_letter(letter).await {
                    // Only once the dead letter is durable is the event let go.
                    Ok(()) => d.terminate().await,
                    Err(e) => {
                        tracing::warn!(function = %t.function, event = id, "cannot write the dead letter: {e}");
                        d.retry_after(Duration::from_millis(t.backoff_ms)).await
                    }
                }
            }
            Err(error) => {
                let delay = FunctionSpec::retry_delay_ms(t.backoff_ms, attempt);
                tracing::info!(function = %t.function, event = id, attempt, delay_ms = delay, "retrying: {error}");
                d.retry_after(Duration::from_millis(delay)).await
            }
        };
        if let Err(e) = settled {
            // Unsettled, it is delivered again after the ack wait.
            tracing::warn!(function = %t.function, event = id, "could not settle a delivery: {e}");
        }
    }
}
