//! The worker node on the bus: announces itself, heartbeats its state every
//! second, loads the function versions the scheduler assigns to it, serves
//! their invoke subjects, and publishes their logs.
//!
//! A request's way through: the function's queue subscription ([`serve`])
//! → the loaded version's world ([`crate::http`] or [`crate::event`]) →
//! a fresh instance ([`crate::instance`]) → the reply frame → the bus.

use crate::Runtime;
use crate::journal::Journal;
use crate::kind::Handler;
use crate::load::LoadCounters;
use crate::memory::NodeMemory;
use crate::outbound::{FunctionNet, Outbound, OutboundConfig, OutboundError};
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tern_artifacts::ArtifactStore;
use tern_bus::{Bus, BusError, Message, respond};
use tern_events::EventLog;
use tern_invoke::Streams;
use tern_invoke::{Activator, Invoker, SchedulerClient};
use tern_kv::KvStore;
use tern_metrics::Metrics;
use tern_protocol::{
    ApiError, Assign, Capacity, Generation, NodeAnnounce, Reply, SecretsUpdate, Unassign, encode_reply,
    subject,
};
use tern_task::guarded;
use tokio::task::JoinHandle;

mod assign;
mod serving;

pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Who a worker is and what it offers the scheduler.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_id: String,
    pub capacity: Capacity,
    pub labels: BTreeMap<String, String>,
    /// TLS trust, circuit breakers and limits for functions' outbound HTTP.
    pub outbound: OutboundConfig,
}

/// Requests for functions at zero one worker holds while they start
/// (calls between functions): per function, and their bytes in all.
const HELD_CALLS: usize = 1000;
const HELD_CALL_BYTES: usize = 64 << 20;
const COLD_START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Worker {
    config: WorkerConfig,
    bus: Arc<dyn Bus>,
    runtime: Arc<Runtime>,
    /// Where functions' buckets live; `None`: no function here may open one.
    kv: Arc<dyn KvStore>,
    /// Where functions publish events; `None`: none here may.
    events: Arc<dyn EventLog>,
    /// The cluster's artifacts, read directly; `None` (or a component not
    /// there): fetched from the scheduler over the bus.
    artifacts: Arc<dyn ArtifactStore>,
    /// Outbound HTTP and calls between functions.
    outbound: Arc<Outbound>,
    /// Where streamed bodies' chunks and credits arrive; set by `start`.
    streams: std::sync::OnceLock<Arc<Streams>>,
    body_limit: usize,
    functions: Mutex<Functions>,
    /// The memory budget that loaded functions and running instances share.
    memory: Arc<NodeMemory>,
    /// Logs and receipts on their way to the bus.
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What every function's serving task shares on this node.
struct Serving {
    bus: Arc<dyn Bus>,
    streams: Option<Arc<Streams>>,
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    node: String,
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

    /// Compiled code of the loaded functions, once per component.
    fn code(&self) -> BTreeMap<String, u64> {
        self.loaded.values().map(|l| (l.digest.clone(), l.code_bytes)).collect()
    }

    /// What the loaded functions cost the node's memory budget.
    fn footprint(&self) -> u64 {
        self.code().values().sum::<u64>() + self.loaded.len() as u64 * tern_protocol::LOADED_FUNCTION_BYTES
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
    /// Its component, and the bytes of that component's compiled code.
    digest: String,
    code_bytes: u64,
    current: Arc<RwLock<Arc<dyn Handler>>>,
    /// The current version's config, and which of its keys are secrets.
    config: Arc<RwLock<Arc<BTreeMap<String, String>>>>,
    secret_names: Vec<String>,
    load: Arc<LoadCounters>,
    /// Outbound counters and breakers, across versions.
    net: Arc<FunctionNet>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        bus: Arc<dyn Bus>,
        runtime: Arc<Runtime>,
        kv: Arc<dyn KvStore>,
        events: Arc<dyn EventLog>,
        artifacts: Arc<dyn ArtifactStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, OutboundError> {
        // Calls between functions take the invoke path a gateway's do,
        // with an activator of the worker's own.
        let scheduler = SchedulerClient::new(bus.clone());
        let activator = Arc::new(Activator::new(scheduler, HELD_CALLS, COLD_START_TIMEOUT, metrics.clone()));
        let invoker = Arc::new(Invoker::new(bus.clone(), activator, HELD_CALL_BYTES));
        let outbound = Outbound::new(config.outbound.clone(), invoker)?;
        let memory = NodeMemory::new(config.capacity.memory_mib << 20);
        Ok(Arc::new(Worker {
            config,
            runtime,
            kv,
            events,
            artifacts,
            outbound,
            streams: Default::default(),
            body_limit: tern_protocol::body_limit(bus.max_payload()),
            functions: Mutex::new(Functions {
                boot: format!("{:016x}", tern_protocol::id::random_u64()),
                changes: 0,
                loaded: HashMap::new(),
            }),
            memory,
            journal: Arc::default(),
            metrics,
            tasks: Mutex::new(Vec::new()),
            bus,
        }))
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
        let mut secrets = self.bus.subscribe(&subject::worker_secrets(node)).await?;
        let streams = Streams::open(self.bus.clone()).await?;
        self.outbound.set_streams(streams.clone());
        let _ = self.streams.set(streams);

        let me = self.clone();
        // Control messages are handled one at a time, so two versions of a
        // function are never loaded concurrently out of order.
        let control = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(msg) = assign.next() => {
                        let reply: Reply<Generation> = match serde_json::from_slice::<Assign>(&msg.payload) {
                            Ok(a) => guarded("worker-control", me.assign(a)).await.unwrap_or_else(|| Err(
                                ApiError::internal("the worker failed to load it; see its log"))),
                            Err(e) => Err(ApiError::bad_request(format!("malformed assign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(msg) = unassign.next() => {
                        let reply: Reply<Generation> = match serde_json::from_slice::<Unassign>(&msg.payload) {
                            Ok(u) => guarded("worker-control", async { me.unassign(&u.function) }).await.ok_or_else(||
                                ApiError::internal("the worker failed to unload it; see its log")),
                            Err(e) => Err(ApiError::bad_request(format!("malformed unassign: {e}"))),
                        };
                        me.reply(&msg, &reply).await;
                    }
                    Some(msg) = secrets.next() => {
                        let reply: Reply<()> = match serde_json::from_slice::<SecretsUpdate>(&msg.payload) {
                            Ok(u) => me.update_secrets(u),
                            Err(_) => Err(ApiError::bad_request("malformed secrets update")),
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
                guarded("heartbeat", me.publish_state(&subject::node_heartbeat())).await;
                me.report_node();
            }
        });
        let journal = tokio::spawn(self.journal.clone().run(self.bus.clone()));
        self.tasks.lock().extend([control, heartbeat, journal]);
        Ok(())
    }

    /// This node as the scheduler should see it now.
    pub fn state(&self) -> NodeAnnounce {
        // Listing the cache reads a directory: not while holding the lock
        // that assign, unassign and every heartbeat share.
        let artifacts = self.runtime.cache.digests();
        let functions = self.functions.lock();
        NodeAnnounce {
            node_id: self.config.node_id.clone(),
            capacity: self.config.capacity.clone(),
            labels: self.config.labels.clone(),
            loaded: functions.loaded.iter().map(|(k, l)| (k.clone(), l.version)).collect(),
            artifacts,
            load: functions.loaded.iter().map(|(k, l)| (k.clone(), l.load.snapshot())).collect(),
            generation: functions.generation(),
            outbound: functions
                .loaded
                .iter()
                .filter_map(|(k, l)| Some((k.clone(), l.net.status()?)))
                .collect(),
            memory: self.memory.report(),
            code: functions.code(),
        }
    }

    /// This node's memory and instances, and each function's invocations
    /// running, for its metrics.
    fn report_node(&self) {
        if !self.metrics.enabled() {
            return;
        }
        let mut instances = 0;
        for (name, l) in self.functions.lock().loaded.iter() {
            let running = l.load.in_flight();
            self.metrics.inflight(name, running);
            instances += running;
        }
        let m = self.memory.report();
        let memory = [
            ("budget", m.budget_bytes),
            ("reserved", m.charged_bytes()),
            ("loaded", m.footprint_bytes),
            ("held", m.held_bytes),
            ("in_use", m.in_use_bytes),
            ("rss", m.rss_bytes),
        ];
        self.metrics.node(&self.config.node_id, &memory, instances);
    }

    async fn publish_state(&self, subject: &str) {
        let body = serde_json::to_vec(&self.state()).expect("serialise");
        if let Err(e) = self.bus.publish(subject, body.into()).await {
            tracing::warn!("could not publish node state: {e}");
        }
    }

    async fn reply<T: serde::Serialize>(&self, msg: &Message, reply: &Reply<T>) {
        if let Err(e) = respond(&*self.bus, msg, encode_reply(reply)).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    /// Functions loaded on this node, with their versions.
    pub fn loaded(&self) -> Vec<(String, u64)> {
        let f = self.functions.lock();
        let mut v: Vec<_> = f.loaded.iter().map(|(k, l)| (k.clone(), l.version)).collect();
        v.sort();
        v
    }

    /// Stops taking invocations and lets those in flight finish, for up to
    /// `within`: every function is unloaded (its subscription drained, so
    /// a request already routed here is still answered), then the last
    /// receipts go out. What is still running after `within` is cut.
    pub async fn shutdown(&self, within: Duration) {
        let loads: Vec<Arc<LoadCounters>> = {
            let mut functions = self.functions.lock();
            let loads = functions.loaded.values().map(|l| l.load.clone()).collect();
            functions.loaded.clear();
            functions.changes += 1;
            loads
        };
        let deadline = tokio::time::Instant::now() + within;
        while loads.iter().any(|l| l.in_flight() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let running: u64 = loads.iter().map(|l| l.in_flight()).sum();
        if running > 0 {
            tracing::warn!(running, "invocations still running after {within:?}; cut");
        }
        self.journal.flush(&*self.bus).await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}
