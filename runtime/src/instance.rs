//! One invocation of a function, whatever its world: a fresh store with the
//! function's memory limit and deadline (or, with `--instance-reuse`, a
//! kept one readied for this invocation: [`crate::reuse`]), its stdout and
//! stderr captured as log records, and any trap, timeout or limit turned
//! into a [`Failure`].
//!
//! What differs per world (how the guest is instantiated and called, what
//! goes in and comes out) is a [`World`]; [`Function`] is the rest.

use crate::capture::{LogSink, LogTail};
use crate::failure::{Failed, Failure};
use crate::host::{Call, Host, LOG_CAPTURE_BYTES};
use crate::limits::{Deadline, Limits};
use crate::memory::NodeMemory;
use crate::meter::{Meter, Usage};
use crate::outbound::{Notes, OutboundGrant, OutboundHooks};
use crate::output::CappedOutput;
use crate::reuse::{GiveBack, Pool};
use crate::state::Grants;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_protocol::trace::TraceParent;
use tern_protocol::{LogRecord, LogStream, clock};
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
