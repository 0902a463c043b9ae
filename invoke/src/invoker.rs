//! Sending one invocation to a replica of a function and waiting for its
//! reply: every trigger (HTTP routes, event triggers, the admin API's
//! invoke and replay) calls functions through [`Invoker::call`]. If no
//! replica listens, the call waits in the [`Activator`] while the function
//! starts, then is sent again.

use crate::activator::{ActivateError, Activator};
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tern_bus::{Bus, BusError, Message};
use tern_protocol::subject;

pub struct Invoker {
    bus: Arc<dyn Bus>,
    activator: Arc<Activator>,
    held: HeldBytes,
}

/// The bytes of requests held while their functions start, across all
/// functions: each function's count is bounded by the activator, and this
/// bounds them all together.
struct HeldBytes {
    used: AtomicUsize,
    budget: usize,
}

/// Gives its bytes back when the request stops waiting, however it stops.
struct Held<'a> {
    bytes: usize,
    pool: &'a HeldBytes,
}

impl HeldBytes {
    fn hold(&self, bytes: usize) -> Option<Held<'_>> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let total = used.checked_add(bytes).filter(|t| *t <= self.budget)?;
            match self.used.compare_exchange_weak(used, total, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Held { bytes, pool: self }),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why [`Invoker::call`] got no answer from a function. Its message is
/// what a client or a dead letter is told.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No replica became ready: the activator's buffer was full, the
    /// function could not start, or it did not start in time.
    #[error(transparent)]
    Cold(ActivateError),
    #[error("function {function} did not answer in time")]
    Timeout { function: String },
    #[error("could not reach function {function}: {source}")]
    Unreachable { function: String, source: BusError },
}

impl CallError {
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::Cold(_) => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            CallError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

impl Invoker {
    /// `held_bytes`: the most request bytes held at once, across all
    /// functions, while they start from zero.
    pub fn new(bus: Arc<dyn Bus>, activator: Arc<Activator>, held_bytes: usize) -> Self {
        Invoker { bus, activator, held: HeldBytes { used: AtomicUsize::new(0), budget: held_bytes } }
    }

    /// The largest message the bus carries.
    pub fn max_payload(&self) -> usize {
        self.bus.max_payload()
    }

    /// Sends `payload` (an invoke frame) to a replica of `function` and
    /// returns its reply. `timeout_ms` is the function's own limit.
    pub async fn call(&self, function: &str, timeout_ms: u64, payload: Bytes) -> Result<Message, CallError> {
        // The worker enforces the function's timeout and answers with 504;
        // this margin only covers a worker that died mid-request.
        let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(5);
        let subject = subject::invoke(function);
        let mut deadline = None;
        let mut held = None;
        let mut pause = Duration::from_millis(2);
        loop {
            let sent_at = tokio::time::Instant::now();
            match self.bus.request(&subject, payload.clone(), wait).await {
                Err(BusError::NoResponders(_)) => {
                    // One deadline across retries: a function that is
                    // unloaded again between wake and send does not reset it.
                    let deadline = match deadline {
                        Some(d) => {
                            // Woken, yet nobody listens: the scheduler's view
                            // is a heartbeat behind. Do not spin on it.
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(200));
                            d
                        }
                        None => *deadline.insert(tokio::time::Instant::now() + self.activator.timeout),
                    };
                    if held.is_none() {
                        let budget = self.held.budget;
                        let Some(h) = self.held.hold(payload.len()) else {
                            let full = ActivateError::BytesFull { budget };
                            self.activator.metrics.rejected(function, full.reason());
                            return Err(CallError::Cold(full));
                        };
                        held = Some(h);
                    }
                    self.activator.wait(function, sent_at, deadline).await.map_err(CallError::Cold)?;
                }
                Ok(reply) => return Ok(reply),
                Err(BusError::Timeout { .. }) => {
                    return Err(CallError::Timeout { function: function.into() });
                }
                Err(source) => return Err(CallError::Unreachable { function: function.into(), source }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_are_bounded_and_given_back() {
        let pool = HeldBytes { used: AtomicUsize::new(0), budget: 10 };
        let a = pool.hold(6).unwrap();
        assert!(pool.hold(5).is_none(), "6 + 5 is past 10");
        let b = pool.hold(4).unwrap();
        drop(a);
        assert!(pool.hold(6).is_some());
        drop(b);
        assert_eq!(pool.used.load(Ordering::Relaxed), 0);
    }
}
