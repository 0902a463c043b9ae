//! The activator: what a request for a function with no ready replica waits
//! in. Requests for one function wait together (up to a bound), one wake
//! goes to the scheduler however many wait, and they all go on as soon as a
//! replica is ready. Past the bound, or the cold-start timeout, the caller
//! gets an error to turn into 503 with Retry-After.

use crate::scheduler_client::SchedulerClient;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tern_bus::BusError;
use tern_metrics::Metrics;
use tern_protocol::subject::SchedulerOp;
use tern_protocol::{ErrorKind, WakeReply, WakeRequest};
use tern_task::guarded;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivateError {
    #[error("{waiting} requests already wait for function {function} to start (the limit)")]
    Full { function: String, waiting: usize },
    #[error("requests held for functions starting from zero already take {budget} bytes (the limit)")]
    BytesFull { budget: usize },
    #[error("function {function} did not start within {timeout:?}")]
    Timeout { function: String, timeout: Duration },
    /// The scheduler answered that the function cannot start now.
    #[error("{0}")]
    Refused(String),
}

impl ActivateError {
    /// The `reason` label of `tern_activator_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ActivateError::Full { .. } => "full",
            ActivateError::BytesFull { .. } => "bytes_full",
            ActivateError::Timeout { .. } => "timeout",
            ActivateError::Refused(_) => "refused",
        }
    }
}

/// One function's wake in progress: its waiters and, once the scheduler
/// answered, the outcome.
struct Waking {
    id: u64,
    waiting: AtomicUsize,
    outcome: watch::Receiver<Option<Result<(), ActivateError>>>,
}

pub struct Activator {
    scheduler: SchedulerClient,
    /// Requests held per function, at most.
    limit: usize,
    pub(crate) timeout: Duration,
    waking: Mutex<HashMap<String, Arc<Waking>>>,
    /// When each function's last wake succeeded. A request sent before that
    /// found no replica only because it was early: it is sent again without
    /// another wake.
    woken_at: Mutex<HashMap<String, Instant>>,
    next_id: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
}

/// Decrements the waiter count (and the held gauge) when a held request
/// leaves, however it leaves (answered, timed out, or its client went
/// away).
struct Held<'a> {
    waking: Arc<Waking>,
    metrics: &'a Metrics,
    function: &'a str,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.waking.waiting.fetch_sub(1, Ordering::Relaxed);
        self.metrics.held(self.function, -1);
    }
}

impl Activator {
    pub fn new(scheduler: SchedulerClient, limit: usize, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Activator {
            scheduler,
            limit,
            timeout,
            waking: Mutex::new(HashMap::new()),
            woken_at: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    /// Waits until `function` has a ready replica (as far as the scheduler
    /// knows), or `deadline`. The first waiter sends the wake. `sent_at` is
    /// when the request that found no replica was sent.
    pub async fn wait(
        self: &Arc<Self>,
        function: &str,
        sent_at: Instant,
        deadline: Instant,
    ) -> Result<(), ActivateError> {
        if self.woken_at.lock().get(function).is_some_and(|t| *t > sent_at) {
            return Ok(());
        }
        let (held, mut outcome) = {
            let mut waking = self.waking.lock();
            let w = waking.entry(function.to_string()).or_insert_with(|| self.start_wake(function));
            let waiting = w.waiting.fetch_add(1, Ordering::Relaxed);
            self.metrics.held(function, 1);
            let held = Held { waking: w.clone(), metrics: &self.metrics, function };
            if waiting >= self.limit {
                let full = ActivateError::Full { function: function.to_string(), waiting };
                self.metrics.rejected(function, full.reason());
                return Err(full);
            }
            (held, w.outcome.clone())
        };
        let result = match tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some)).await {
            Ok(Ok(r)) => r.clone().expect("wait_for saw Some"),
            // The wake task ended without an outcome: only at shutdown.
            Ok(Err(_)) => Err(ActivateError::Refused("the gateway is shutting down".into())),
            Err(_) => Err(ActivateError::Timeout { function: function.to_string(), timeout: self.timeout }),
        };
        drop(held);
        if let Err(e) = &result {
            self.metrics.rejected(function, e.reason());
        }
        result
    }

    /// Spawns the one wake for `function`; called with `waking` locked.
    fn start_wake(self: &Arc<Self>, function: &str) -> Arc<Waking> {
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let w = Arc::new(Waking { id, waiting: AtomicUsize::new(0), outcome: rx });
        let me = self.clone();
        let function = function.to_string();
        let waking = w.clone();
        tokio::spawn(async move {
            // Even if the wake panics, the waiters get an answer and the
            // next request starts a new wake: a dead wake must not hold the
            // function at 503 for good.
            let started = Instant::now();
            let outcome = guarded("activator-wake", me.wake(&function, &waking)).await.unwrap_or_else(|| {
                Err(ActivateError::Refused(format!("waking function {function} failed; try again")))
            });
            if outcome.is_ok() {
                me.woken_at.lock().insert(function.clone(), Instant::now());
                me.metrics.cold_start(&function, started.elapsed());
            }
            // Leave the map first: a request that finds no replica after
            // this outcome (it was unloaded again) starts a new wake.
            {
                let mut map = me.waking.lock();
                if map.get(&function).is_some_and(|w| w.id == id) {
                    map.remove(&function);
                }
            }
            let _ = tx.send(Some(outcome));
        });
        w
    }

    /// Asks the scheduler until it answers or the cold-start timeout passes.
    /// A scheduler that is down or restarting is retried; one that says the
    /// function cannot start ends the wait at once.
    async fn wake(&self, function: &str, waking: &Waking) -> Result<(), ActivateError> {
        let deadline = Instant::now() + self.timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ActivateError::Timeout { function: function.to_string(), timeout: self.timeout });
            }
            let req = WakeRequest {
                function: function.to_string(),
                waiting: waking.waiting.load(Ordering::Relaxed) as u64,
            };
            let body = Bytes::from(serde_json::to_vec(&req).expect("serialise"));
            let answer = self.scheduler.request_within::<WakeReply>(SchedulerOp::Wake, body, remaining).await;
            let reason = match answer {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if e.kind == ErrorKind::Unavailable || e.kind == ErrorKind::NotFound => {
                    return Err(ActivateError::Refused(e.message));
                }
                Ok(Err(e)) => e.message,
                Err(BusError::NoResponders(_)) => "the scheduler is not running".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::info!(function, "waiting to wake: {reason}");
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
