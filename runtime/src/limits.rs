//! One invocation's limits: its deadline (moved on as a streamed body
//! makes progress), its whole duration, its body size, and its memory.

use crate::failure::{Failed, Failure, classify_error};
use crate::meter::Usage;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When an invocation's time is up. A streamed response moves it on with
/// each chunk it sends (`--timeout` bounds the time between chunks), so it
/// is shared between the guest's epoch check and the sender.
#[derive(Clone)]
pub struct Deadline {
    base: Instant,
    after_ms: Arc<AtomicU64>,
}

impl Deadline {
    pub fn new(at: Instant) -> Self {
        let base = Instant::now();
        Deadline {
            base,
            after_ms: Arc::new(AtomicU64::new(at.saturating_duration_since(base).as_millis() as u64)),
        }
    }

    pub fn get(&self) -> Instant {
        self.base + Duration::from_millis(self.after_ms.load(Ordering::Relaxed))
    }

    /// Moves the deadline to `at`, if that is later.
    pub fn extend_to(&self, at: Instant) {
        self.after_ms
            .fetch_max(at.saturating_duration_since(self.base).as_millis() as u64, Ordering::Relaxed);
    }
}

/// One invocation's limits, as a world's `call` needs them.
#[derive(Clone)]
pub struct Limits {
    pub deadline: Deadline,
    pub(crate) timeout: Duration,
    /// However often the deadline moves, never past this.
    pub ends_by: Instant,
    pub max_body: u64,
    pub(crate) memory_mib: u32,
    pub(crate) memory_hit: Arc<AtomicBool>,
    /// What the invocation uses, for its receipt.
    pub usage: Arc<Usage>,
}

impl Limits {
    /// A guest blocked on the host (not spinning, so the epoch does not
    /// stop it) is given up on at this time.
    pub fn grace(&self) -> tokio::time::Instant {
        (self.deadline.get() + Duration::from_millis(50)).into()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The guest made progress (a chunk of body went in or out): it has
    /// its timeout again from now, within the invocation's whole duration.
    pub fn progressed(&self) {
        self.deadline.extend_to((Instant::now() + self.timeout).min(self.ends_by));
    }

    /// Waits for `fut` until the deadline (plus grace), following the
    /// deadline as it moves; `None` if it passed first.
    pub async fn within<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let grace = self.grace();
            match tokio::time::timeout_at(grace, &mut fut).await {
                Ok(v) => return Some(v),
                Err(_) if self.grace() > grace => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn timed_out(&self) -> Failed {
        Failure::Timeout(self.timeout).into()
    }

    /// What a wasmtime error from the guest means for the client.
    pub fn classify(&self, e: wasmtime::Error) -> Failed {
        classify_error(e, self.memory_hit.load(Ordering::Relaxed), self.timeout, self.memory_mib)
    }
}
