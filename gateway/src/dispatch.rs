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

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tern_bus::BusError;
use tern_events::{DeadLetter, Delivery, EventLog};
use tern_invoke::{CallError, Invoker};
use tern_metrics::Metrics;
use tern_protocol::{
    BatchedEvent, EventBatch, EventBatchResult, EventDelivery, EventResult, Frame, FunctionSpec,
    TriggerEntry, clock,
};

/// How often a slow delivery is marked in progress; well inside the
/// consumers' ack wait (30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Room in a bus message beyond the events' own headers and data.
const FRAME_SLACK: usize = 4096;
/// Pauses before sending again what did not reach a replica.
const RESEND_FIRST: Duration = Duration::from_millis(50);
const RESEND_MAX: Duration = Duration::from_secs(5);

/// Why a call delivered no results.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Undelivered {
    /// The call did not get to a replica and back: sent again, uncounted.
    #[error("{0}")]
    Transport(String),
    /// The call is larger than the bus carries.
    #[error("{0}")]
    TooLarge(String),
    /// A replica answered, wrongly.
    #[error("{0}")]
    Failed(String),
}

fn head(d: &Delivery) -> EventDelivery {
    EventDelivery {
        id: d.event.id.clone(),
        subject: d.event.subject.clone(),
        headers: d.event.headers.clone(),
        attempt: d.attempt,
        trigger: None,
    }
}

/// At least the bytes an event's entry in an [`EventBatch`] header takes,
/// without encoding it: JSON escaping makes a string at most 6 times as
/// long, and the keys, numbers and punctuation fit in the constants.
fn header_bound(d: &Delivery) -> usize {
    let headers: usize = d.event.headers.iter().map(|(k, v)| 6 * (k.len() + v.len()) + 8).sum();
    128 + 6 * (d.event.id.len() + d.event.subject.len()) + headers
}

/// Cuts `batch` into parts (indices) whose frames stay under `limit`
/// bytes; an event larger than that alone is a part of its own.
fn cut(batch: &[Delivery], limit: usize) -> Vec<Vec<usize>> {
    let mut parts: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for (i, d) in batch.iter().enumerate() {
        let cost = header_bound(d) + d.event.data.len();
        match parts.last_mut() {
            Some(part) if size + cost <= limit => {
                part.push(i);
                size += cost;
            }
            _ => {
                parts.push(vec![i]);
                size = cost + 16;
            }
        }
    }
    parts
}

pub struct EventDispatch {
    invoker: Arc<Invoker>,
    log: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
}

impl EventDispatch {
    pub fn new(invoker: Arc<Invoker>, log: Arc<dyn EventLog>, metrics: Arc<Metrics>) -> Self {
        EventDispatch { invoker, log, metrics }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The event log deliveries come from and dead letters go to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// Sends events to `function` in one call; one result per event, or
    /// why none came.
    pub async fn deliver(
        &self,
        function: &str,
        timeout_ms: u64,
        events: impl IntoIterator<Item = (EventDelivery, &Bytes)>,
    ) -> Result<Vec<EventResult>, Undelivered> {
        let mut batch = Vec::new();
        let mut data = BytesMut::new();
        for (delivery, bytes) in events {
            batch.push(BatchedEvent { delivery, len: bytes.len() });
            data.extend_from_slice(bytes);
        }
        let sent = batch.len();
        let payload = Frame::new(EventBatch { batch }, data.freeze()).encode();
        let reply = self.invoker.call(function, timeout_ms, payload).await.map_err(|e| match e {
            CallError::Unreachable { source: BusError::PayloadTooLarge { .. }, .. } => {
                Undelivered::TooLarge(e.to_string())
            }
            e => Undelivered::Transport(e.to_string()),
        })?;
        let results = Frame::<EventBatchResult>::decode(reply.payload)
            .map_err(|e| Undelivered::Failed(format!("function {function} sent a malformed reply: {e}")))?
            .header
            .results;
        if results.len() != sent {
            return Err(Undelivered::Failed(format!(
                "function {function} answered {} of {sent} events",
                results.len()
            )));
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
        let mut results =
            self.deliver(function, timeout_ms, [(head, data)]).await.map_err(|e| e.to_string())?;
        match results.pop().and_then(|r| r.error) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Delivers a trigger's batch, cut into calls that each fit one bus
    /// message, keeping every delivery in progress meanwhile, and settles
    /// each by its own result.
    pub async fn handle_batch(&self, t: &TriggerEntry, batch: Vec<Delivery>) {
        let limit = self.invoker.max_payload().saturating_sub(FRAME_SLACK);
        let work = futures::future::join_all(
            cut(&batch, limit).into_iter().map(|part| self.handle_part(t, &batch, part)),
        );
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
        tokio::select! {
            _ = work => {}
            _ = keep_alive => unreachable!("marks progress until the work ends"),
        }
    }

    /// Delivers the events of `batch` at `part` until each has a result of
    /// the function's own. A failure to get the call to a replica and back
    /// (no responder, a worker gone, every slot busy) is not the event's
    /// fault: the call is made again after a pause, and no attempt is
    /// counted, since the delivery is not settled meanwhile.
    async fn handle_part(&self, t: &TriggerEntry, batch: &[Delivery], mut part: Vec<usize>) {
        let mut pause = RESEND_FIRST;
        while !part.is_empty() {
            let events = part.iter().map(|&i| (head(&batch[i]), &batch[i].event.data));
            match self.deliver(&t.function, t.timeout_ms, events).await {
                Ok(results) => {
                    let mut again = Vec::new();
                    for (&i, r) in part.iter().zip(results) {
                        if r.transient {
                            again.push(i);
                        } else {
                            self.settle(t, &batch[i], r.error.map_or(Ok(()), Err)).await;
                        }
                    }
                    if !again.is_empty() {
                        tracing::debug!(function = %t.function, events = again.len(), "worker at capacity; sending again");
                    }
                    // A busy worker is alive and frees slots soon.
                    pause = RESEND_FIRST / 2;
                    part = again;
                }
                Err(Undelivered::Transport(why)) => {
                    // Said once per run of failures, not at every resend.
                    if pause == RESEND_FIRST {
                        tracing::info!(function = %t.function, events = part.len(), "sending again, no attempt counted: {why}");
                    }
                }
                Err(Undelivered::TooLarge(why)) if part.len() > 1 => {
                    // The estimate was off: one event per call then.
                    tracing::warn!(function = %t.function, "batch too large for the bus, sending one at a time: {why}");
                    for i in std::mem::take(&mut part) {
                        Box::pin(self.handle_part(t, batch, vec![i])).await;
                    }
                }
                Err(e) => {
                    // The function's side answered wrongly, or one event
                    // alone is too large for the bus: the event's attempt.
                    for &i in &part {
                        self.settle(t, &batch[i], Err(e.to_string())).await;
                    }
                    return;
                }
            }
            if !part.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RESEND_MAX);
            }
        }
    }

    /// Ack, retry after the backoff, or (at the last attempt) dead letter
    /// then terminate.
    async fn settle(&self, t: &TriggerEntry, d: &Delivery, outcome: Result<(), String>) {
        let (id, attempt) = (d.event.id.as_str(), d.attempt);
        let settled = match outcome {
            Ok(()) => {
                self.metrics.delivery(&t.function, "ack");
                d.ack().await
            }
            Err(error) if attempt >= t.max_attempts => {
                self.metrics.delivery(&t.function, "dead_letter");
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
                self.metrics.delivery(&t.function, "retry");
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
