//! Event triggers: each is a durable consumer of the event log, pulled by
//! every gateway. This module runs one pull loop per trigger in the
//! serving table and hands what it takes, in batches of what is ready, to
//! [`EventDispatch`], which delivers and settles them.

use crate::dispatch::EventDispatch;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tern_protocol::TriggerEntry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Deliveries one gateway has in flight per trigger. The log holds the
/// rest; the autoscaler sees these as concurrency and adds replicas.
const IN_FLIGHT: usize = 256;
/// Most events sent to a function in one invoke request.
const MAX_BATCH: usize = 64;

/// The triggers this gateway runs, one task each, following the serving
/// table.
pub struct Triggers {
    dispatch: Arc<EventDispatch>,
    running: Mutex<HashMap<String, Running>>,
    /// Held (cloned) by every batch handed to the dispatch until it is
    /// settled: shutdown waits for this to be the last.
    in_flight: Arc<()>,
    /// Set by [`Triggers::stop`]: no trigger starts again.
    stopped: std::sync::atomic::AtomicBool,
}

struct Running {
    /// Read per delivery, so retry settings change without a restart.
    entry: Arc<RwLock<TriggerEntry>>,
    task: JoinHandle<()>,
}

impl Drop for Triggers {
    fn drop(&mut self) {
        for r in self.running.get_mut().values() {
            r.task.abort();
        }
    }
}

impl Triggers {
    pub fn new(dispatch: Arc<EventDispatch>) -> Self {
        Triggers {
            dispatch,
            running: Mutex::new(HashMap::new()),
            in_flight: Arc::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stops pulling for good; the future it returns ends once every batch
    /// already handed over is settled. A delivery taken but not handed over
    /// comes back after the log's ack wait, as when a trigger goes.
    pub fn stop(&self) -> impl std::future::Future<Output = ()> + use<> {
        self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
        for (_, r) in self.running.lock().drain() {
            r.task.abort();
        }
        let in_flight = self.in_flight.clone();
        async move {
            // Two holders are left once every batch is settled: `self`'s
            // and this future's.
            while Arc::strong_count(&in_flight) > 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The triggers running now.
    pub fn entries(&self) -> Vec<TriggerEntry> {
        self.running.lock().values().map(|r| r.entry.read().clone()).collect()
    }

    /// Starts the triggers in `wanted` not running yet, stops those gone,
    /// and updates the retry settings of the rest.
    pub fn apply(&self, wanted: &[TriggerEntry]) {
        let mut running = self.running.lock();
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
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
                Some(r) => *r.entry.write() = w.clone(),
                None => {
                    let entry = Arc::new(RwLock::new(w.clone()));
                    let (dispatch, e, in_flight) =
                        (self.dispatch.clone(), entry.clone(), self.in_flight.clone());
                    let task = tokio::spawn(async move {
                        let pulling = pull(dispatch.clone(), e.clone(), in_flight);
                        futures::future::join(pulling, report(dispatch, e)).await;
                    });
                    running.insert(w.trigger.consumer.clone(), Running { entry, task });
                }
            }
        }
    }
}

/// How often a trigger's backlog and its function's dead letters are read
/// for the metrics.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Keeps `tern_event_backlog` and `tern_event_dead_letters` of one trigger
/// up to date.
async fn report(dispatch: Arc<EventDispatch>, entry: Arc<RwLock<TriggerEntry>>) {
    if !dispatch.metrics().enabled() {
        return;
    }
    loop {
        tokio::time::sleep(REPORT_EVERY).await;
        let e = entry.read().clone();
        let log = dispatch.log();
        if let Ok(stats) = log.stats(&e.trigger.consumer).await {
            dispatch.metrics().backlog(&e.function, &e.trigger.filter, stats.waiting + stats.unacked);
        }
        if let Ok(n) = log.dead_letter_count(&e.function).await {
            dispatch.metrics().dead_letters(&e.function, n);
        }
    }
}

/// Takes deliveries from one trigger's consumer and hands them, in batches
/// of what is ready, to tasks of their own, at most [`IN_FLIGHT`] events
/// at once.
async fn pull(dispatch: Arc<EventDispatch>, entry: Arc<RwLock<TriggerEntry>>, in_flight: Arc<()>) {
    let name = entry.read().trigger.consumer.clone();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut pause = Duration::from_millis(100);
    'open: loop {
        // The scheduler creates the consumer before the deploy that asks
        // for it is answered; a route push may still arrive first.
        let mut consumer = match dispatch.log().consumer(&name).await {
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
            let entry = entry.read().clone();
            let dispatch = dispatch.clone();
            let settling = in_flight.clone();
            tokio::spawn(async move {
                dispatch.handle_batch(&entry, batch).await;
                drop((held, settling));
            });
        }
    }
}
