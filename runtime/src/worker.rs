//! The worker node on the bus: announces itself, heartbeats its state every
//! second, loads the function versions the scheduler assigns to it, serves
//! their invoke subjects, and publishes their logs.

use crate::artifact::{LoadError, digest_of};
use crate::event::{EventFunction, EventFunctionPre};
use crate::invoke::{HttpFunction, Settings};
use crate::{Runtime, host::Host};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tern_bus::{Bus, BusError, Message, respond};
use tern_protocol::{
    ApiError, ArtifactChunk, ArtifactRequest, Assign, Capacity, EventBatch, EventBatchResult, EventRequest,
    EventResult, Frame, FunctionLoad, Generation, InvokeRequest, InvokeResponse, LogRecord, NodeAnnounce,
    Reply, Unassign, World, subject,
};
use tokio::task::JoinHandle;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Artifacts travel in chunks this size, well under NATS's default 1 MiB
/// payload limit.
const CHUNK: u64 = 512 * 1024;
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Who a worker is and what it offers the scheduler.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_id: String,
    pub capacity: Capacity,
    pub labels: BTreeMap<String, String>,
}

pub struct Worker {
    config: WorkerConfig,
    bus: Arc<dyn Bus>,
    runtime: Arc<Runtime>,
    body_limit: usize,
    functions: Mutex<Functions>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The functions this node serves, and the count of changes to that set
/// (the scheduler orders what it hears by it).
struct Functions {
    boot: String,
    changes: u64,
    loaded: HashMap<String, Loaded>,
}

impl Functions {
    fn generation(&self) -> Generation {
        Generation { boot: self.boot.clone(), changes: self.changes }
    }
}

/// A function this node serves. `current` is swapped on a new version, so
/// the invoke subscription and requests in flight are undisturbed.
///
/// Dropping it unloads the function: `stop` closes, the serving task drains
/// its subscription (answering requests already routed here), and the last
/// `Arc` of the function (its compiled code and instances) goes with the
/// last request.
struct Loaded {
    version: u64,
    current: Arc<RwLock<Handler>>,
    load: Arc<LoadCounters>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A loaded function version of either world; both are served on the
/// function's invoke subject.
#[derive(Clone)]
enum Handler {
    Http(Arc<HttpFunction>),
    Event(Arc<EventFunction>),
}

impl Handler {
    fn name(&self) -> &str {
        match self {
            Handler::Http(f) => &f.name,
            Handler::Event(f) => &f.name,
        }
    }
}

/// Per-function counters reported in heartbeats (the autoscaler's input).
#[derive(Default)]
struct LoadCounters {
    concurrency: Mutex<Concurrency>,
    completed: AtomicU64,
    errors: AtomicU64,
    latency_us_total: AtomicU64,
}

/// In-flight requests and their integral over time. The autoscaler needs
/// mean concurrency between heartbeats, which a sample of `in_flight` at
/// heartbeat time misses for short requests and the completed requests'
/// latency misses for long ones.
#[derive(Default)]
struct Concurrency {
    in_flight: u64,
    busy_us: u64,
    since: Option<Instant>,
}

impl Concurrency {
    fn accrue(&mut self, now: Instant) {
        if let Some(since) = self.since {
            self.busy_us += self.in_flight * now.saturating_duration_since(since).as_micros() as u64;
        }
        self.since = Some(now);
    }
}

impl LoadCounters {
    /// Counts a request in; returns when, for [`LoadCounters::finished`].
    fn started(&self) -> Instant {
        let now = Instant::now();
        let mut c = self.concurrency.lock().unwrap();
        c.accrue(now);
        c.in_flight += 1;
        now
    }

    fn finished(&self, started: Instant, failed: bool) {
        let latency = started.elapsed();
        {
            let mut c = self.concurrency.lock().unwrap();
            c.accrue(Instant::now());
            c.in_flight -= 1;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latency_us_total.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> FunctionLoad {
        let (in_flight, busy_us) = {
            let mut c = self.concurrency.lock().unwrap();
            c.accrue(Instant::now());
            (c.in_flight, c.busy_us)
        };
        FunctionLoad {
            in_flight,
            busy_us,
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency_us_total: self.latency_us_total.load(Ordering::Relaxed),
        }
    }
}

impl Worker {
    pub fn new(config: WorkerConfig, bus: Arc<dyn Bus>, runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Worker {
            config,
            runtime,
            // A response travels in one bus message, with its header.
            body_limit: tern_protocol::DEFAULT_BODY_LIMIT.min(bus.max_payload().saturating_sub(64 * 1024)),
            functions: Mutex::new(Functions {
                boot: format!("{:016x}", rand_u64()),
                changes: 0,
                loaded: HashMap::new(),
            }),
            tasks: Mutex::new(Vec::new()),
            bus,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// Subscribes to this node's control subjects, announces the node, and
    /// starts its heartbeat.
    pub async fn start(self: &Arc<Self>) -> Result<(), BusError> {
        let node = &self.config.node_id;
        let mut assign = self.bus.subscribe(&subject::worker_assign(node)).await?;
        let mut unassign = self.bus.subscribe(&subject::worker_unassign(node)).await?;
        let mut discover = self.bus.subscribe(&subject::node_discover()).await?;

        let me = self.clone();
        // Control messages are handled one at a time, so two versions of a
        // function are never loaded concurrently out of order.
        let control = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(msg) = assign.next() => {
                        let reply: Reply<Generation> = match serde_json::from_slice::<Assign>(&msg.payload) {
                            Ok(a) => me.assign(a).await,
                            Err(e) => Err(ApiError::bad_request(format!("malformed assign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(msg) = unassign.next() => {
                        let reply: Reply<Generation> = match serde_json::from_slice::<Unassign>(&msg.payload) {
                            Ok(u) => Ok(me.unassign(&u.function)),
                            Err(e) => Err(ApiError::bad_request(format!("malformed unassign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(_) = discover.next() => me.publish_state(&subject::node_announce()).await,
                    else => break,
                }
            }
        });
        self.publish_state(&subject::node_announce()).await;
        let me = Arc::downgrade(self);
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { break };
                me.publish_state(&subject::node_heartbeat()).await;
            }
        });
        self.tasks.lock().unwrap().extend([control, heartbeat]);
        Ok(())
    }

    /// This node as the scheduler should see it now.
    pub fn state(&self) -> NodeAnnounce {
        // Listing the cache reads a directory: not while holding the lock
        // that assign, unassign and every heartbeat share.
        let artifacts = self.runtime.cache.digests();
        let functions = self.functions.lock().unwrap();
        NodeAnnounce {
            node_id: self.config.node_id.clone(),
            capacity: self.config.capacity.clone(),
            labels: self.config.labels.clone(),
            loaded: functions.loaded.iter().map(|(k, l)| (k.clone(), l.version)).collect(),
            artifacts,
            load: functions.loaded.iter().map(|(k, l)| (k.clone(), l.load.snapshot())).collect(),
            generation: functions.generation(),
        }
    }

    async fn publish_state(&self, subject: &str) {
        let body = serde_json::to_vec(&self.state()).expect("serialise");
        if let Err(e) = self.bus.publish(subject, body.into()).await {
            tracing::warn!("could not publish node state: {e}");
        }
    }

    async fn reply<T: serde::Serialize>(&self, msg: &Message, reply: &Reply<T>) {
        let body = serde_json::to_vec(reply).expect("serialise reply");
        if let Err(e) = respond(&*self.bus, msg, body.into()).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    /// Functions loaded on this node, with their versions.
    pub fn loaded(&self) -> Vec<(String, u64)> {
        let f = self.functions.lock().unwrap();
        let mut v: Vec<_> = f.loaded.iter().map(|(k, l)| (k.clone(), l.version)).collect();
        v.sort();
        v
    }

    async fn assign(self: &Arc<Self>, a: Assign) -> Reply<Generation> {
        {
            let functions = self.functions.lock().unwrap();
            if functions.loaded.get(&a.function).is_some_and(|l| l.version == a.version) {
                return Ok(functions.generation());
            }
        }
        let internal = |e: LoadError| ApiError::internal(e.to_string());
        let component = self.component(&a.digest).await.map_err(internal)?;
        let settings = Settings {
            name: a.function.clone(),
            version: a.version,
            env: a.env.clone().into_iter().collect(),
            memory_mib: a.memory_mib,
            timeout: Duration::from_millis(a.timeout_ms),
        };
        let function = match a.world {
            World::Http => {
                let pre = self.proxy_pre(&a.digest, &component).map_err(internal)?;
                Handler::Http(Arc::new(HttpFunction::new(settings, pre, self.body_limit)))
            }
            World::Event => {
                let pre = self.event_pre(&a.digest, &component).map_err(internal)?;
                Handler::Event(Arc::new(EventFunction::new(settings, pre)))
            }
        };

        {
            let mut functions = self.functions.lock().unwrap();
            if let Some(loaded) = functions.loaded.get_mut(&a.function) {
                *loaded.current.write().unwrap() = function;
                loaded.version = a.version;
                functions.changes += 1;
                tracing::info!(function = %a.function, version = a.version, "switched version");
                return Ok(functions.generation());
            }
        }
        let sub = self
            .bus
            .queue_subscribe(&subject::invoke(&a.function), &subject::invoke_queue_group(&a.function))
            .await
            .map_err(|e| ApiError::unavailable(format!("could not subscribe: {e}")))?;
        let current = Arc::new(RwLock::new(function));
        let load = Arc::new(LoadCounters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(self.bus.clone(), sub, stopped, current.clone(), load.clone()));
        let loaded = Loaded { version: a.version, current, load, _stop: stop };
        let generation = {
            let mut functions = self.functions.lock().unwrap();
            functions.loaded.insert(a.function.clone(), loaded);
            functions.changes += 1;
            functions.generation()
        };
        tracing::info!(function = %a.function, version = a.version, "loaded");
        Ok(generation)
    }

    fn unassign(&self, function: &str) -> Generation {
        let mut functions = self.functions.lock().unwrap();
        if functions.loaded.remove(function).is_some() {
            functions.changes += 1;
            tracing::info!(function, "unloaded");
        }
        functions.generation()
    }

    fn event_pre(&self, digest: &str, component: &Component) -> Result<EventFunctionPre<Host>, LoadError> {
        let link = |reason: String| LoadError::Link { digest: digest.to_string(), reason };
        let pre = self.runtime.linker.instantiate_pre(component).map_err(|e| link(format!("{e:#}")))?;
        EventFunctionPre::new(pre).map_err(|e| link(format!("{e:#}")))
    }

    fn proxy_pre(&self, digest: &str, component: &Component) -> Result<ProxyPre<Host>, LoadError> {
        let link = |reason: String| LoadError::Link { digest: digest.to_string(), reason };
        let pre = self.runtime.linker.instantiate_pre(component).map_err(|e| link(format!("{e:#}")))?;
        ProxyPre::new(pre).map_err(|e| link(format!("{e:#}")))
    }

    /// The compiled component: from the cache, or fetched by digest from the
    /// scheduler in chunks, checked, compiled and cached.
    async fn component(&self, digest: &str) -> Result<Component, LoadError> {
        let rt = self.runtime.clone();
        let d = digest.to_string();
        if let Some(c) = tokio::task::spawn_blocking(move || rt.cache.get(&d)).await.ok().flatten() {
            return Ok(c);
        }
        let bytes = self.fetch(digest).await?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(LoadError::DigestMismatch { digest: digest.to_string(), actual });
        }
        let rt = self.runtime.clone();
        let d = digest.to_string();
        let compile = |reason: String| LoadError::Compile { digest: digest.to_string(), reason };
        tokio::task::spawn_blocking(move || rt.cache.compile(&d, &bytes))
            .await
            .map_err(|e| compile(e.to_string()))?
            .map_err(compile)
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, LoadError> {
        let fail = |reason: String| LoadError::Fetch { digest: digest.to_string(), reason };
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let req =
                ArtifactRequest { digest: digest.to_string(), offset: bytes.len() as u64, max_len: CHUNK };
            let req = Bytes::from(serde_json::to_vec(&req).expect("serialise"));
            let msg = self
                .bus
                .request(&subject::artifact_get(), req, FETCH_TIMEOUT)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let frame =
                Frame::<Reply<ArtifactChunk>>::decode(msg.payload).map_err(|e| fail(e.to_string()))?;
            let chunk = frame.header.map_err(|e| fail(e.message))?;
            if chunk.total > tern_protocol::MAX_COMPONENT_BYTES as u64 {
                return Err(fail(format!("{} bytes is over the component size limit", chunk.total)));
            }
            if bytes.is_empty() {
                bytes.reserve_exact(chunk.total as usize);
            }
            bytes.extend_from_slice(&frame.body);
            if bytes.len() as u64 >= chunk.total {
                return Ok(bytes);
            }
            if frame.body.is_empty() {
                return Err(fail(format!("artifact ended at {} of {} bytes", bytes.len(), chunk.total)));
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Takes invoke requests off the function's queue group; each runs in its own
/// task against whichever version is current when it arrives. When `stop`
/// closes (the function is unloaded) the subscription is drained: requests
/// the bus already routed here are still served, none is dropped.
async fn serve(
    bus: Arc<dyn Bus>,
    mut sub: tern_bus::Subscription,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    current: Arc<RwLock<Handler>>,
    load: Arc<LoadCounters>,
) {
    let mut draining = false;
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stop, if !draining => {
                draining = true;
                sub.drain().await;
                continue;
            }
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        let function = current.read().unwrap().clone();
        let bus = bus.clone();
        let load = load.clone();
        tokio::spawn(async move {
            // Each arm counts its requests in `load` (a batch, one per event).
            let (reply, logs) = match &function {
                Handler::Http(f) => match Frame::<InvokeRequest>::decode(msg.payload.clone()) {
                    Ok(frame) => {
                        let started = load.started();
                        let outcome = f.invoke(frame.header, frame.body).await;
                        load.finished(started, outcome.failure.is_some());
                        (Frame::new(outcome.response, outcome.body).encode(), outcome.logs)
                    }
                    Err(e) => {
                        let head = InvokeResponse { status: 400, headers: vec![] };
                        let body = Bytes::from(format!("malformed invoke request: {e}\n"));
                        (Frame::new(head, body).encode(), Vec::new())
                    }
                },
                Handler::Event(f) => match Frame::<EventRequest>::decode(msg.payload.clone()) {
                    Ok(Frame { header: EventRequest::One(delivery), body }) => {
                        let started = load.started();
                        let outcome = f.deliver(delivery, body).await;
                        load.finished(started, outcome.result.error.is_some());
                        (Frame::new(outcome.result, Bytes::new()).encode(), outcome.logs)
                    }
                    Ok(Frame { header: EventRequest::Batch(batch), body }) => {
                        deliver_batch(f, batch, body, &load).await
                    }
                    Err(e) => {
                        let result = EventResult { error: Some(format!("malformed event delivery: {e}")) };
                        (Frame::new(result, Bytes::new()).encode(), Vec::new())
                    }
                },
            };
            if !logs.is_empty() {
                let logs = serde_json::to_vec(&logs).expect("serialise logs");
                let _ = bus.publish(&subject::logs(function.name()), logs.into()).await;
            }
            respond_or_warn(&*bus, &msg, reply, function.name()).await;
        });
    }
}

/// Runs a batch's events side by side, each in its own instance and
/// counted as its own request; replies with their results in order.
async fn deliver_batch(
    f: &crate::event::EventFunction,
    batch: EventBatch,
    body: Bytes,
    load: &LoadCounters,
) -> (Bytes, Vec<LogRecord>) {
    let mut offset = 0;
    let mut runs = Vec::with_capacity(batch.batch.len());
    for e in batch.batch {
        let end = (offset + e.len).min(body.len());
        let data = body.slice(offset.min(end)..end);
        offset = end;
        runs.push(async move {
            let started = load.started();
            let outcome = f.deliver(e.delivery, data).await;
            load.finished(started, outcome.result.error.is_some());
            outcome
        });
    }
    let outcomes = futures::future::join_all(runs).await;
    let mut logs = Vec::new();
    let mut results = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        logs.extend(o.logs);
        results.push(o.result);
    }
    (Frame::new(EventBatchResult { results }, Bytes::new()).encode(), logs)
}

async fn respond_or_warn(bus: &dyn Bus, msg: &Message, reply: Bytes, function: &str) {
    if let Err(e) = respond(bus, msg, reply).await {
        tracing::warn!(function, "could not send reply: {e}");
    }
}

/// 64 random bits, for this run's id.
fn rand_u64() -> u64 {
    use std::io::Read;
    let mut raw = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("/dev/urandom is readable");
    u64::from_le_bytes(raw)
}
