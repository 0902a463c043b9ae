//! What an invocation used and how it ended: what its receipt is made of.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tern_protocol::{LogRecord, Receipt, TriggerKind};

/// What serving one invoke message produced: log records, and a receipt
/// per invocation (an event batch is several).
#[derive(Default)]
pub struct Served {
    pub logs: Vec<LogRecord>,
    pub receipts: Vec<Receipt>,
}

/// What an invocation used, counted as it runs (a streamed body goes on
/// counting after `invoke` returns).
#[derive(Default)]
pub struct Usage {
    /// Time the guest's code was being run (its future polled).
    pub guest_ns: AtomicU64,
    /// Of which making the instance took.
    pub instantiate_ns: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The most memory and tables the store held; kept by its limiter.
    pub peak_memory: Arc<AtomicU64>,
}

/// One invocation's id, start and usage: what its receipt is made of.
pub struct Meter {
    pub id: String,
    pub(crate) start_ms: u64,
    pub(crate) started: Instant,
    pub usage: Arc<Usage>,
    pub(crate) trace_id: String,
}

/// How an invocation ended, for its receipt.
pub struct Ending {
    pub trigger: TriggerKind,
    pub status: u16,
    pub error: Option<String>,
    pub attempt: Option<u32>,
    pub cold: bool,
}

impl Meter {
    /// The receipt, as of now (the end of the invocation).
    pub fn receipt(&self, function: &str, version: u64, node: &str, end: Ending) -> Receipt {
        let u = &self.usage;
        Receipt {
            id: self.id.clone(),
            function: function.to_string(),
            version,
            trigger: end.trigger,
            status: end.status,
            error: end.error,
            start_ms: self.start_ms,
            duration_us: self.started.elapsed().as_micros() as u64,
            guest_us: u.guest_ns.load(Ordering::Relaxed) / 1000,
            instantiate_us: u.instantiate_ns.load(Ordering::Relaxed) / 1000,
            peak_memory_bytes: u.peak_memory.load(Ordering::Relaxed),
            bytes_in: u.bytes_in.load(Ordering::Relaxed),
            bytes_out: u.bytes_out.load(Ordering::Relaxed),
            attempt: end.attempt,
            cold: end.cold,
            node: node.to_string(),
            trace_id: self.trace_id.clone(),
        }
    }
}

impl Usage {
    /// Makes an instance with `make`, counting the time it takes.
    pub(crate) async fn instantiating<T>(&self, make: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let made = make.await;
        self.instantiate_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        made
    }
}

/// A guest's future, timed: the time spent polling it is the time in the
/// guest. With `running`, it also says whether it is being run right now.
pub(crate) struct Metered<F> {
    pub guest: std::pin::Pin<Box<F>>,
    pub usage: Arc<Usage>,
    pub running: Option<Arc<AtomicBool>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let start = Instant::now();
        if let Some(r) = &self.running {
            r.store(true, Ordering::Relaxed);
        }
        let poll = self.guest.as_mut().poll(cx);
        if let Some(r) = &self.running {
            r.store(false, Ordering::Relaxed);
        }
        self.usage.guest_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        poll
    }
}
