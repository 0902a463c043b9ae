//! One invocation of a function, whatever its world: a fresh store with the
//! function's memory limit and deadline (or, with `--instance-reuse`, a
//! kept one readied for this invocation: [`crate::reuse`]), its stdout and
//! stderr captured as log records, and any trap, timeout or limit turned
//! into a [`Failure`].
//!
//! What differs per world (how the guest is instantiated and called, what
//! goes in and comes out) is a [`World`]; [`Function`] is the rest.

use crate::host::{Call, Host, LOG_CAPTURE_BYTES};
use crate::memory::NodeMemory;
use crate::outbound::{Notes, OutboundGrant, OutboundHooks};
use crate::output::CappedOutput;
use crate::reuse::{GiveBack, Pool};
use crate::state::Grants;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tern_protocol::trace::TraceParent;
use tern_protocol::{LogRecord, LogStream, Receipt, TriggerKind, clock};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// What a function version runs with, from its spec; either world.
pub(crate) struct Settings {
    pub name: String,
    pub version: u64,
    /// Config values, the guest's whole environment.
    pub env: Vec<(String, String)>,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Largest request and response body (`--max-body`).
    pub max_body: u64,
    /// Longest one invocation may take, a streamed body included.
    pub max_duration: Duration,
    /// Buckets it may open, and the store they are in.
    pub grants: Arc<Grants>,
    /// Its `wasi:config` keys (`--env` values and secrets), replaced when
    /// a secret rotates; each instance takes them as they are when it starts.
    pub config: Arc<RwLock<Arc<BTreeMap<String, String>>>>,
    /// Hosts it may send HTTP requests to, and its outbound counters.
    pub outbound: Option<Arc<OutboundGrant>>,
    /// The node's memory, which each instance holds its `--memory` of.
    pub node_memory: Arc<NodeMemory>,
    /// Requests one instance serves (`--instance-reuse`); 0 or 1: fresh.
    pub instance_reuse: u32,
}

/// How one world instantiates and calls its guests.
pub trait World: Send + Sync + 'static {
    type Input: Send;
    type Output: Send;
    /// The bindings' handle of an instantiated guest, kept with its store.
    type Made: Send + 'static;

    fn engine(&self) -> &Engine;

    /// Calls between functions `input` has come through (see
    /// [`tern_protocol::MAX_HOPS`]); only HTTP requests are ever called.
    fn hops(_input: &Self::Input) -> u32 {
        0
    }

    /// The trace `input` is a span of (its `traceparent`), if any: events
    /// the guest publishes carry it on.
    fn trace(_input: &Self::Input) -> Option<TraceParent> {
        None
    }

    /// Whether the guest is still producing `output` (a streamed body)
    /// when `call` returns.
    fn still_running(_output: &Self::Output) -> bool {
        false
    }

    /// Instantiates the guest (unless `instance` was kept) and calls it
    /// with `input`; gives the instance back if the guest returned normally.
    fn call(
        &self,
        instance: Instance<Self::Made>,
        limits: Limits,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Failed>> + Send;
}

/// A loaded version of a function, ready to serve many invocations.
pub struct Function<W: World> {
    pub name: String,
    pub version: u64,
    settings: Settings,
    world: W,
    /// Its kept instances, with `--instance-reuse`.
    reuse: Option<Arc<Pool<W::Made>>>,
}

/// What a world's `call` runs in: a store, with the world's handle of the
/// instance in it when it was kept from an earlier request (else the world
/// instantiates), and where it goes back to if its guest returns normally.
pub struct Instance<M> {
    pub store: Store<Host>,
    pub made: Option<M>,
    pub(crate) back: Option<GiveBack<M>>,
}

impl<M: Send + 'static> Instance<M> {
    /// The guest returned normally: the instance may serve again, if it
    /// is kept at all.
    pub(crate) fn done(back: Option<GiveBack<M>>, store: Store<Host>, made: M) {
        if let Some(back) = back {
            back.keep(store, made);
        }
    }
}

/// What one invocation produced: the guest's output or why there is none,
/// and the log records it wrote (plus Tern's line about a failure).
pub struct Invoked<T> {
    pub result: Result<T, Failure>,
    pub logs: Vec<LogRecord>,
    /// For an output whose guest is still running (a streamed body): its
    /// log, to read once it is done.
    pub tail: Option<LogTail>,
    /// For its receipt.
    pub meter: Meter,
}

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
    start_ms: u64,
    started: Instant,
    pub usage: Arc<Usage>,
    trace_id: String,
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

/// What an invocation writes to its log, read when it is over.
pub struct LogTail {
    stdout: CappedOutput,
    stderr: CappedOutput,
    notes: Notes,
}

impl LogTail {
    /// The guest's output and Tern's outbound lines, as log records.
    pub fn collect(&self, log: &LogSink<'_>) -> Vec<LogRecord> {
        let mut logs = log.output(&self.stdout, &self.stderr);
        logs.extend(self.notes.take().into_iter().map(|line| log.record(LogStream::Tern, line)));
        logs
    }
}

impl<W: World> Function<W> {
    pub(crate) fn new(settings: Settings, world: W) -> Self {
        let reuse = Pool::new(settings.instance_reuse, settings.node_memory.clone());
        Function { name: settings.name.clone(), version: settings.version, settings, world, reuse }
    }

    /// Runs one invocation, `id`, in a kept instance (`--instance-reuse`)
    /// or a fresh one. `context` makes the prefix of Tern's log line about
    /// a failure (which event, say), only then.
    pub(crate) async fn invoke(
        &self,
        input: W::Input,
        id: String,
        context: impl FnOnce() -> String,
    ) -> Invoked<W::Output> {
        let stdout = CappedOutput::new(LOG_CAPTURE_BYTES);
        let stderr = CappedOutput::new(LOG_CAPTURE_BYTES);
        let s = &self.settings;
        let started = Instant::now();
        let deadline = Deadline::new(started + s.timeout);
        let trace = W::trace(&input);
        let trace_id = trace.as_ref().map(|t| t.trace_id.clone()).unwrap_or_default();
        let notes = Notes::default();
        let call = Call {
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            hooks: OutboundHooks::new(s.outbound.clone(), W::hops(&input), deadline.clone(), notes.clone()),
            config: s.config.read().clone(),
            trace,
            deadline: deadline.clone(),
        };
        let instance = match self.reuse.as_ref().map(|pool| (pool, pool.take())) {
            Some((pool, Some(mut kept))) => {
                kept.store.data_mut().begin(call);
                kept.store.set_epoch_deadline(1);
                Instance { store: kept.store, made: Some(kept.made), back: Some(pool.give_back(kept.served)) }
            }
            reuse => match self.fresh(call).await {
                Some(store) => {
                    let back = reuse.map(|(pool, _)| pool.give_back(0));
                    Instance { store, made: None, back }
                }
                None => {
                    let meter =
                        Meter { id, start_ms: clock::now_ms(), started, usage: Arc::default(), trace_id };
                    let log = self.log(&meter.id);
                    let failure = Failure::NodeMemory(s.memory_mib);
                    let logs =
                        vec![log.record(LogStream::Tern, format!("{}{}", context(), failure.log_line()))];
                    return Invoked { result: Err(failure), logs, tail: None, meter };
                }
            },
        };
        let host = instance.store.data();
        let memory_hit = host.limits.hit.clone();
        let usage = Arc::new(Usage { peak_memory: host.limits.peak.clone(), ..Usage::default() });
        let meter = Meter { id, start_ms: clock::now_ms(), started, usage, trace_id };
        let limits = Limits {
            deadline,
            timeout: s.timeout,
            ends_by: started + s.max_duration,
            max_body: s.max_body,
            memory_mib: s.memory_mib,
            memory_hit,
            usage: meter.usage.clone(),
        };
        let result = self.world.call(instance, limits, input).await;
        let tail = LogTail { stdout, stderr, notes };
        if matches!(&result, Ok(out) if W::still_running(out)) {
            // The guest goes on writing: its log is read when it is done.
            return Invoked { result: result.map_err(|f| f.0), logs: Vec::new(), tail: Some(tail), meter };
        }
        let log = self.log(&meter.id);
        let mut logs = tail.collect(&log);
        let result = result.map_err(|Failed(failure, detail)| {
            let mut line = format!("{}{}", context(), failure.log_line());
            if let Some(d) = detail {
                line.push_str(&format!("\n{d}"));
            }
            logs.push(log.record(LogStream::Tern, line));
            failure
        });
        Invoked { result, logs, tail: None, meter }
    }

    /// A new store with the function's limits, once the node has room for
    /// its `--memory` (`None`: none came within its timeout).
    async fn fresh(&self, call: Call) -> Option<Store<Host>> {
        let s = &self.settings;
        let memory_bytes = (s.memory_mib as usize) << 20;
        let held = s.node_memory.hold(memory_bytes as u64, call.deadline.get().into()).await?;
        let host = Host::new(&s.env, s.grants.clone(), memory_bytes, held, call);
        let mut store = Store::new(self.world.engine(), host);
        store.limiter(|h| &mut h.limits);
        // Every epoch tick the guest yields to tokio (so a spinning guest
        // cannot starve other requests on this thread) and traps once the
        // running invocation's time is up.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline.get() {
                Err(Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Some(store)
    }

    /// Log records of invocation `id` of this version.
    pub(crate) fn log<'a>(&'a self, id: &'a str) -> LogSink<'a> {
        LogSink { function: &self.name, version: self.version, invocation: id }
    }
}

/// A failure and, for the function's log, its detail (a backtrace).
pub struct Failed(pub Failure, pub Option<String>);

impl From<Failure> for Failed {
    fn from(f: Failure) -> Self {
        Failed(f, None)
    }
}

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
    timeout: Duration,
    /// However often the deadline moves, never past this.
    pub ends_by: Instant,
    pub max_body: u64,
    memory_mib: u32,
    memory_hit: Arc<AtomicBool>,
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

/// Why an invocation produced no usable result. The client sees the status
/// and a short message; the function's log gets the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout(Duration),
    MemoryLimit(u32),
    StackOverflow,
    Trap(String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with an error code instead of a response.
    ErrorResponse(String),
    ResponseTooLarge(usize),
    /// Every instance slot on this node is busy.
    Capacity,
    /// The node's memory budget had no room for another instance of this
    /// many MiB within the function's timeout.
    NodeMemory(u32),
    BadRequest(String),
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout(_) => 504,
            Failure::NoResponse | Failure::ErrorResponse(_) | Failure::ResponseTooLarge(_) => 502,
            Failure::Capacity | Failure::NodeMemory(_) => 503,
            Failure::BadRequest(_) => 400,
            Failure::MemoryLimit(_) | Failure::StackOverflow | Failure::Trap(_) => 500,
        }
    }

    /// What the client is told: the kind of failure, never guest internals.
    pub fn public_message(&self) -> String {
        match self {
            Failure::Timeout(d) => format!("function timed out after {}", humanize(*d)),
            Failure::MemoryLimit(mib) => format!("function exceeded its memory limit of {mib} MiB"),
            Failure::StackOverflow => "function overflowed its stack".into(),
            Failure::Trap(_) => "function failed (trap)".into(),
            Failure::NoResponse => "function returned without sending a response".into(),
            Failure::ErrorResponse(_) => "function failed to produce a response".into(),
            Failure::ResponseTooLarge(limit) => {
                format!("function response is larger than the {limit} byte limit")
            }
            Failure::Capacity => "worker is at capacity, try again".into(),
            Failure::NodeMemory(mib) => {
                format!("worker has no memory left for another instance of {mib} MiB, try again")
            }
            Failure::BadRequest(m) => format!("bad request: {m}"),
        }
    }

    /// What the function's log says.
    pub(crate) fn log_line(&self) -> String {
        match self {
            Failure::Trap(detail) => format!("invocation failed: trap: {detail}"),
            Failure::ErrorResponse(detail) => {
                format!("invocation failed: guest set an error response: {detail}")
            }
            other => format!("invocation failed: {}", other.public_message()),
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Lines of trap detail (backtrace) kept in the log: a stack overflow's
/// backtrace is thousands of identical frames.
const DETAIL_LINES: usize = 24;

fn classify_error(e: wasmtime::Error, memory_hit: bool, timeout: Duration, memory_mib: u32) -> Failed {
    let full = format!("{e:?}");
    let mut detail: String = full.lines().take(DETAIL_LINES).collect::<Vec<_>>().join("\n");
    if full.lines().count() > DETAIL_LINES {
        detail.push_str(&format!("\n    … (backtrace cut; cause: {})", e.root_cause()));
    }
    let failure = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Timeout(timeout),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        _ if memory_hit => Failure::MemoryLimit(memory_mib),
        _ if format!("{e:#}").contains("maximum concurrent") => Failure::Capacity,
        Some(t) => Failure::Trap(t.to_string()),
        None => Failure::Trap(format!("{e:#}")),
    };
    Failed(failure, Some(detail))
}

/// What one invocation's log may hold, counting each record's line plus
/// [`RECORD_OVERHEAD`]: a flood of empty lines costs as much as it weighs
/// on the wire, not nothing.
pub(crate) const LOG_BYTES_PER_INVOCATION: usize = 64 * 1024;
/// What a record costs beside its line (function, version, time, stream).
pub(crate) const RECORD_OVERHEAD: usize = 64;

/// Turns one invocation's output into the function's log records.
pub struct LogSink<'a> {
    pub function: &'a str,
    pub version: u64,
    pub invocation: &'a str,
}

impl LogSink<'_> {
    /// Records for what the guest wrote, within the per-invocation budget;
    /// past it (or past the capture cap) one line says what was dropped.
    pub fn output(&self, stdout: &CappedOutput, stderr: &CappedOutput) -> Vec<LogRecord> {
        let mut logs = Vec::new();
        let mut budget = LOG_BYTES_PER_INVOCATION;
        let (mut dropped_bytes, mut dropped_lines) = (0u64, 0u64);
        for (stream, out) in [(LogStream::Stdout, stdout), (LogStream::Stderr, stderr)] {
            let (bytes, past_cap) = out.contents();
            dropped_bytes += past_cap;
            for line in String::from_utf8_lossy(&bytes).lines() {
                let cost = line.len() + RECORD_OVERHEAD;
                if cost > budget {
                    dropped_bytes += line.len() as u64 + 1;
                    dropped_lines += 1;
                    continue;
                }
                budget -= cost;
                logs.push(self.record(stream, line.to_string()));
            }
        }
        if dropped_bytes > 0 {
            let lines =
                if dropped_lines > 0 { format!(" ({dropped_lines} lines and more)") } else { String::new() };
            logs.push(self.record(
                LogStream::Tern,
                format!(
                    "output truncated: {dropped_bytes} bytes{lines} not kept; an invocation keeps {} KiB of log",
                    LOG_BYTES_PER_INVOCATION / 1024
                ),
            ));
        }
        logs
    }

    pub fn record(&self, stream: LogStream, line: String) -> LogRecord {
        LogRecord {
            function: self.function.to_string(),
            version: self.version,
            ts_ms: clock::now_ms(),
            stream,
            line,
            invocation: self.invocation.to_string(),
        }
    }
}

pub(crate) use tern_task::AbortOnDrop;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_statuses_and_never_leak_guest_detail() {
        let trap = Failure::Trap("secret internals at 0x1234".into());
        assert_eq!(trap.status(), 500);
        assert!(!trap.public_message().contains("secret"));
        assert!(trap.log_line().contains("secret"), "the function's own log gets the detail");
        assert_eq!(
            Failure::Timeout(Duration::from_millis(1500)).public_message(),
            "function timed out after 1500ms"
        );
        assert_eq!(Failure::Timeout(Duration::from_secs(2)).public_message(), "function timed out after 2s");
        assert_eq!(Failure::Capacity.status(), 503);
        assert_eq!(Failure::NoResponse.status(), 502);
    }

    #[test]
    fn a_refused_grow_reads_as_the_memory_limit() {
        let Failed(f, detail) =
            classify_error(wasmtime::Error::msg("unreachable"), true, Duration::from_secs(1), 64);
        assert_eq!(f, Failure::MemoryLimit(64));
        assert!(detail.is_some());
        let Failed(f, _) = classify_error(Trap::Interrupt.into(), false, Duration::from_secs(1), 64);
        assert_eq!(f, Failure::Timeout(Duration::from_secs(1)));
    }
}
