//! Event triggers: each is a durable consumer of the event log, pulled by
//! every gateway, whose deliveries go through [`Gateway::call`], the same
//! invoke path as HTTP, so an event wakes a function at zero.
//!
//! Per delivery: while the function works the delivery is kept in
//! progress; success acks it; a failure asks for it again after the
//! backoff (doubling per attempt, never at once); the last allowed failure
//! writes a dead letter with the error and only then terminates it. A
//! gateway that dies mid-delivery settles nothing, and the log delivers
//! the event again after its ack wait. Delivery is at least once.

use crate::{CallError, Gateway};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tern_events::{DeadLetter, Delivery, EventLog};
use tern_protocol::{
    BatchedEvent, EventBatch, EventBatchResult, EventDelivery, EventResult, Frame, FunctionSpec, TriggerEntry,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Deliveries one gateway has in flight per trigger. The log holds the
/// rest; the autoscaler sees these as concurrency and adds replicas.
const IN_FLIGHT: usize = 256;
/// Most events sent to a function in one invoke request.
const MAX_BATCH: usize = 64;
/// How often a slow delivery is marked in progress; well inside the
/// consumers' ack wait (30 s).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The triggers this gateway runs, one task each, following the route
/// table.
#[derive(Default)]
pub(crate) struct Triggers {
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    /// Read per delivery, so retry settings change without a restart.
    entry: Arc<RwLock<TriggerEntry>>,
    task: JoinHandle<()>,
}

impl Drop for Triggers {
    fn drop(&mut self) {
        for r in self.running.get_mut().unwrap().values() {
            r.task.abort();
        }
    }
}

impl Triggers {
    /// Starts the triggers in `wanted` not running yet, stops those gone.
    pub(crate) fn apply(&self, gw: &Weak<Gateway>, events: &Arc<dyn EventLog>, wanted: &[TriggerEntry]) {
        let mut running = self.running.lock().unwrap();
        running.retain(|consumer, r| {
            let keep = wanted.iter().any(|w| &w.trigger.consumer == consumer);
            if !keep {
                // A delivery taken but not yet handed over comes back
                // after the ack wait; handed-over ones finish.
                r.task.abort();
            }
            keep
        });
        for w in wanted {
            match running.get(&w.trigger.consumer) {
                Some(r) => *r.entry.write().unwrap() = w.clone(),
                None => {
                    let entry = Arc::new(RwLock::new(w.clone()));
                    let task = tokio::spawn(pull(gw.clone(), events.clone(), entry.clone()));
                    running.insert(w.trigger.consumer.clone(), Running { entry, task });
                }
            }
        }
    }
}

/// Takes deliveries from one trigger's consumer and hands them, in batches
/// of what is ready, to tasks of their own, at most [`IN_FLIGHT`] events
/// at once.
async fn pull(gw: Weak<Gateway>, events: Arc<dyn EventLog>, entry: Arc<RwLock<TriggerEntry>>) {
    let name = entry.read().unwrap().trigger.consumer.clone();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut pause = Duration::from_millis(100);
    'open: loop {
        // The scheduler creates the consumer before the deploy that asks
        // for it is answered; a route push may still arrive first.
        let mut consumer = match events.consumer(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(consumer = %name, "waiting for the trigger's consumer: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            // Take as many as are ready, up to the free slots: they go to
            // the function in one round trip.
            let Ok(first) = slots.clone().acquire_owned().await else { return };
            let free = slots.available_permits().min(MAX_BATCH - 1);
            let batch = match consumer.next_batch(free + 1).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(consumer = %name, "event log: {e}; reopening");
                    tokio::time::sleep(pause).await;
                    continue 'open;
                }
            };
            pause = Duration::from_millis(100);
            let mut held = first;
            if batch.len() > 1 {
                // Only this loop takes slots, so the ones counted free
                // above still are: this does not wait.
                let Ok(more) = slots.clone().acquire_many_owned(batch.len() as u32 - 1).await else { return };
                held.merge(more);
            }
            let Some(gw) = gw.upgrade() else { return };
            let entry = entry.read().unwrap().clone();
            tokio::spawn(async move {
                gw.handle_batch(&entry, batch).await;
                drop(held);
            });
        }
    }
}

impl Gateway {
    /// Delivers one event to `function` through the invoke path; Err is
    /// why it was not handled (the handler's error, a trap, a timeout, or
    /// no replica).
    pub(crate) async fn deliver(
        &self,
        function: &str,
        timeout_ms: u64,
        head: EventDelivery,
        data: Bytes,
    ) -> Result<(), String> {
        let payload = Frame::new(head, data).encode();
        let reply = self.call(function, timeout_ms, payload).await.map_err(|e| call_error(function, e))?;
        let result = Frame::<EventResult>::decode(reply.payload)
            .map_err(|e| format!("function {function} sent a malformed reply: {e}"))?;
        match result.header.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Sends one batch to the function in one call, then settles each
    /// delivery by its own result.
    async fn handle_batch(&self, t: &TriggerEntry, batch: Vec<Delivery>) {
        let mut head = Vec::with_capacity(batch.len());
        let mut data = bytes::BytesMut::new();
        for d in &batch {
            head.push(BatchedEvent {
                delivery: EventDelivery {
                    id: d.event.id.clone(),
                    subject: d.event.subject.clone(),
                    headers: d.event.headers.clone(),
                    attempt: d.attempt,
                },
                len: d.event.data.len(),
            });
            data.extend_from_slice(&d.event.data);
        }
        let payload = Frame::new(EventBatch { batch: head }, data.freeze()).encode();
        let work = async {
            let reply = self
                .call(&t.function, t.timeout_ms, payload)
                .await
                .map_err(|e| call_error(&t.function, e))?;
            let result = Frame::<EventBatchResult>::decode(reply.payload)
                .map_err(|e| format!("function {} sent a malformed reply: {e}", t.function))?;
            if result.header.results.len() != batch.len() {
                return Err(format!(
                    "function {} answered {} of {} events",
                    t.function,
                    result.header.results.len(),
                    batch.len()
                ));
            }
            Ok(result.header.results)
        };
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
                    failed_ms: now_ms(),
                };
                match self.events.dead_letter(letter).await {
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

fn call_error(function: &str, e: CallError) -> String {
    match e {
        CallError::Cold(e) => e.to_string(),
        CallError::Bus(tern_bus::BusError::Timeout { .. }) => {
            format!("function {function} did not answer in time")
        }
        CallError::Bus(e) => format!("could not reach function {function}: {e}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
