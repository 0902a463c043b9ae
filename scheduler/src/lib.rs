//! The Tern scheduler: owns the registry, validates deploys, tracks worker
//! membership from heartbeats, places function versions on workers, keeps
//! recent function logs, and pushes route changes to gateways.
//!
//! It answers control requests on `tern.v1.scheduler.*` (see
//! [`tern_protocol::subject::SchedulerOp`]). Placement decisions come from
//! [`placement::plan`]; this module only gathers the state it needs and
//! carries out the commands it returns.

pub mod autoscale;
pub mod placement;
pub mod registry;
pub mod triggers;

use autoscale::{Decision, Observed, PanicState, Policy, Sample};
use bytes::Bytes;
use futures::StreamExt;
use placement::{Command, NodeView, Want};
use registry::{Registry, RegistryError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tern_bus::{Bus, BusError, Message, respond};
use tern_events::EventLog;
use tern_protocol::subject::{self, SchedulerOp};
use tern_protocol::{
    ApiError, ArtifactChunk, ArtifactRequest, Assign, Capacity, ChangeReply, ClusterStatus, DeployReply,
    DeployRequest, ErrorKind, Frame, FunctionDetail, FunctionLoad, Generation, LatencySummary, LogRecord,
    LogsRequest, NameRequest, NodeAnnounce, NodeStatus, Reply, RollbackRequest, RouteTable, ScaleStatus,
    TriggerStatus, Unassign, Version, WakeReply, WakeRequest, World,
};
use tern_runtime::Runtime;

/// Records kept per function for `tern logs`.
const LOG_RING: usize = 2000;
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// Three missed one-second heartbeats and a node is dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(3500);
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Cold-start latencies kept per function for `tern describe`.
const COLD_START_RING: usize = 1000;

/// The autoscaler's windows, the same for every function (as Knative's
/// cluster-wide defaults).
#[derive(Debug, Clone, Copy)]
pub struct ScaleConfig {
    pub stable_window: Duration,
    pub panic_window: Duration,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig { stable_window: Duration::from_secs(60), panic_window: Duration::from_secs(6) }
    }
}

/// What the scheduler tracks of one function for scaling.
struct Scaling {
    seen: Observed,
    panic: PanicState,
    last: Option<Decision>,
    wakes: u64,
    cold_starts: u64,
    cold_start_ms: VecDeque<f64>,
}

impl Scaling {
    fn new(now_ms: u64) -> Self {
        Scaling {
            seen: Observed::new(now_ms),
            panic: PanicState::default(),
            last: None,
            wakes: 0,
            cold_starts: 0,
            cold_start_ms: VecDeque::new(),
        }
    }

    fn status(&self, now_ms: u64) -> ScaleStatus {
        let d = self.last;
        ScaleStatus {
            desired: d.map_or(0, |d| d.desired),
            stable_concurrency: d.map_or(0.0, |d| d.stable_concurrency),
            panic_concurrency: d.map_or(0.0, |d| d.panic_concurrency),
            panicking: d.is_some_and(|d| d.panicking),
            idle_for_ms: self.seen.last_active_ms.map(|t| now_ms.saturating_sub(t)),
            wakes: self.wakes,
            cold_starts: self.cold_starts,
            cold_start_ms: summarise(&self.cold_start_ms),
        }
    }
}

fn summarise(samples: &VecDeque<f64>) -> Option<LatencySummary> {
    let last = *samples.back()?;
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some(LatencySummary { samples: sorted.len() as u64, p50: at(0.5), p95: at(0.95), max: at(1.0), last })
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("event triggers: {0}")]
    Triggers(#[from] tern_events::EventError),
}

/// What the scheduler knows of one worker.
struct Node {
    last_seen: Instant,
    capacity: Capacity,
    labels: BTreeMap<String, String>,
    loaded: BTreeMap<String, u64>,
    artifacts: Vec<String>,
    load: BTreeMap<String, FunctionLoad>,
    /// The newest generation heard, from a heartbeat or a command's reply.
    generation: Generation,
    /// Whether the last reconcile saw it alive (to log the transition once).
    was_alive: bool,
}

impl Node {
    fn alive(&self) -> bool {
        self.last_seen.elapsed() < DEAD_AFTER
    }
}

pub struct Scheduler {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    /// Validates and precompiles components at deploy.
    runtime: Arc<Runtime>,
    nodes: Mutex<BTreeMap<String, Node>>,
    logs: Mutex<HashMap<String, VecDeque<LogRecord>>>,
    /// Registry changes and placement run one at a time, so workers and
    /// gateways see them in the order they were recorded.
    changes: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    scale_config: ScaleConfig,
    scaling: Mutex<HashMap<String, Scaling>>,
    /// Time zero of the autoscaler's clock.
    epoch: Instant,
    /// Where triggers' durable consumers live and cron ticks go.
    events: Arc<dyn EventLog>,
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Conflict(m) => ApiError::conflict(m),
        RegistryError::NotFound(m) => ApiError::not_found(m),
        other => ApiError::internal(other.to_string()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Scheduler {
    pub fn open(
        data_dir: &Path,
        bus: Arc<dyn Bus>,
        runtime: Arc<Runtime>,
        scale_config: ScaleConfig,
        events: Arc<dyn EventLog>,
    ) -> Result<Arc<Self>, SchedulerError> {
        let registry = Registry::open(&data_dir.join("registry"))?;
        Ok(Arc::new(Scheduler {
            registry: Arc::new(registry),
            bus,
            runtime,
            nodes: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            scale_config,
            scaling: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            events,
        }))
    }

    fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Notes that `function` has (or will at once have) requests.
    fn mark_active(&self, function: &str) {
        let now = self.clock_ms();
        let mut scaling = self.scaling.lock().unwrap();
        scaling.entry(function.to_string()).or_insert_with(|| Scaling::new(now)).seen.active(now);
    }

    /// Turns the change between a node's last two heartbeats into autoscaler
    /// samples. The first state seen of a node is only a baseline.
    fn record_load(&self, previous: Option<&Node>, state: &NodeAnnounce) {
        let now = self.clock_ms();
        let window = self.scale_config.stable_window.as_millis() as u64;
        let mut scaling = self.scaling.lock().unwrap();
        for (function, load) in &state.load {
            let entry = scaling.entry(function.clone()).or_insert_with(|| Scaling::new(now));
            let Some(node) = previous else {
                if load.in_flight > 0 {
                    entry.seen.active(now);
                }
                continue;
            };
            // Counters start at zero when a function is (re)loaded.
            let prev = node
                .load
                .get(function)
                .filter(|p| p.busy_us <= load.busy_us && p.completed <= load.completed);
            let (busy_us, completed) = match prev {
                Some(p) => (load.busy_us - p.busy_us, load.completed - p.completed),
                None => (load.busy_us, load.completed),
            };
            entry.seen.record(Sample { at_ms: now, busy_ms: busy_us as f64 / 1000.0 }, window);
            if completed > 0 || load.in_flight > 0 {
                entry.seen.active(now);
            }
        }
    }

    /// Replicas each active function should have now, from the autoscaler.
    fn desired_replicas(&self, versions: &[Version], ready: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let now = self.clock_ms();
        let cfg = self.scale_config;
        let mut scaling = self.scaling.lock().unwrap();
        scaling.retain(|f, _| versions.iter().any(|v| &v.spec.name == f));
        let mut out = BTreeMap::new();
        for v in versions {
            let spec = &v.spec;
            let policy = Policy {
                min_scale: spec.min_scale,
                max_scale: spec.max_scale,
                target: spec.concurrency as f64,
                idle_ms: spec.idle_ms,
                stable_window_ms: cfg.stable_window.as_millis() as u64,
                panic_window_ms: cfg.panic_window.as_millis() as u64,
            };
            let s = scaling.entry(spec.name.clone()).or_insert_with(|| Scaling::new(now));
            let ready = ready.get(&spec.name).copied().unwrap_or(0);
            let d = autoscale::decide(&policy, &s.seen, ready, now, &mut s.panic);
            if s.last.is_none_or(|l| l.desired != d.desired) {
                tracing::info!(
                    function = %spec.name,
                    from = ready,
                    to = d.desired,
                    concurrency = format!("{:.2}", d.stable_concurrency),
                    panicking = d.panicking,
                    "scale"
                );
            }
            s.last = Some(d);
            out.insert(spec.name.clone(), d.desired);
        }
        out
    }

    fn scale_status(&self, function: &str) -> ScaleStatus {
        let now = self.clock_ms();
        self.scaling.lock().unwrap().get(function).map(|s| s.status(now)).unwrap_or_default()
    }

    /// Subscribes to every control subject, asks workers to announce, and
    /// starts the placement loop.
    pub async fn start(self: &Arc<Self>) -> Result<(), SchedulerError> {
        for op in SchedulerOp::ALL {
            let sub = self.bus.queue_subscribe(&subject::scheduler(op), "scheduler").await?;
            let me = self.clone();
            tokio::spawn(sub.for_each_concurrent(None, move |msg| {
                let me = me.clone();
                async move { me.handle(op, msg).await }
            }));
        }
        let artifacts = self.bus.queue_subscribe(&subject::artifact_get(), "scheduler").await?;
        let me = self.clone();
        tokio::spawn(artifacts.for_each_concurrent(None, move |msg| {
            let me = me.clone();
            async move { me.serve_artifact(msg).await }
        }));
        for (subject, announce) in [(subject::node_announce(), true), (subject::node_heartbeat(), false)] {
            let mut sub = self.bus.subscribe(&subject).await?;
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    match serde_json::from_slice::<NodeAnnounce>(&msg.payload) {
                        Ok(state) => me.observe(state, announce),
                        Err(e) => tracing::warn!("ignoring malformed node state on {subject}: {e}"),
                    }
                }
            });
        }
        let mut logs = self.bus.subscribe(&subject::logs_all()).await?;
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = logs.next().await {
                if let Ok(records) = serde_json::from_slice::<Vec<LogRecord>>(&msg.payload) {
                    me.keep_logs(records);
                }
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = me.upgrade() else { break };
                tokio::select! {
                    _ = s.wake.notified() => {}
                    _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                }
                s.reconcile().await;
            }
        });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut parsed = HashMap::new();
            loop {
                // Twice a second: a tick fires within half a second of its time.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(s) = me.upgrade() else { break };
                triggers::fire_due(s.registry.clone(), &*s.events, &mut parsed).await;
            }
        });
        // Consumers of versions deployed before an upgrade, or left by a
        // crash between a deploy's steps.
        let order = self.changes.lock().await;
        let registry = self.registry.clone();
        let active = tokio::task::spawn_blocking(move || registry.active_versions())
            .await
            .expect("the registry task does not panic")?;
        let wanted: Vec<_> = active.iter().flat_map(|v| v.spec.triggers()).collect();
        triggers::create(&*self.events, &wanted).await?;
        triggers::remove_unwanted(&*self.events, &active).await?;
        drop(order);
        self.bus.publish(&subject::node_discover(), Bytes::new()).await?;
        Ok(())
    }

    /// After a change: drop the consumers no active version wants. A
    /// failure leaves an idle consumer behind, never a missing one, so it
    /// is logged, not returned.
    async fn remove_unwanted_triggers(&self) {
        let active = match self.blocking(|r| r.active_versions()).await {
            Ok(a) => a,
            Err(e) => return tracing::warn!("cannot list versions to tidy triggers: {}", e.message),
        };
        if let Err(e) = triggers::remove_unwanted(&*self.events, &active).await {
            tracing::warn!("cannot remove unused triggers: {e}");
        }
    }

    /// Takes in a worker's announce or heartbeat. A new or returning node, or
    /// an announce (a restarted worker), triggers placement at once.
    pub fn observe(&self, state: NodeAnnounce, announce: bool) {
        let mut nodes = self.nodes.lock().unwrap();
        let returning = nodes.get(&state.node_id).is_none_or(|n| !n.alive());
        if returning {
            tracing::info!(node = %state.node_id, functions = state.loaded.len(), "node joined");
        }
        let previous = nodes.get(&state.node_id).filter(|n| n.alive());
        self.record_load(previous, &state);
        // A heartbeat sent before the node's latest assign or unassign was
        // answered says what it had loaded before: keep what the reply said.
        let stale = nodes.get(&state.node_id).filter(|n| state.generation.older_than(&n.generation));
        let (loaded, artifacts, generation) = match stale {
            Some(n) => (n.loaded.clone(), n.artifacts.clone(), n.generation.clone()),
            None => (state.loaded, state.artifacts, state.generation),
        };
        nodes.insert(
            state.node_id.clone(),
            Node {
                last_seen: Instant::now(),
                capacity: state.capacity,
                labels: state.labels,
                loaded,
                artifacts,
                load: state.load,
                generation,
                was_alive: true,
            },
        );
        if returning || announce {
            self.wake.notify_one();
        }
    }

    /// Runs placement once: plan from the current state, then carry the
    /// commands out. Returns the failures, by function.
    pub async fn reconcile(&self) -> BTreeMap<String, ApiError> {
        let _order = self.changes.lock().await;
        self.reconcile_locked().await
    }

    async fn reconcile_locked(&self) -> BTreeMap<String, ApiError> {
        let versions: Vec<Version> = match self.blocking(|r| r.active_versions()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot read the registry for placement: {}", e.message);
                return BTreeMap::new();
            }
        };
        let ready: BTreeMap<String, u32> =
            versions.iter().map(|v| (v.spec.name.clone(), self.ready_any(&v.spec.name))).collect();
        let desired = self.desired_replicas(&versions, &ready);
        let wants: Vec<Want> = versions
            .iter()
            .map(|v| Want {
                function: v.spec.name.clone(),
                version: v.number,
                digest: v.digest.clone(),
                memory_mib: v.spec.memory_mib,
                replicas: desired[&v.spec.name],
                selector: v.spec.node_selector.clone(),
            })
            .collect();
        let views: Vec<NodeView> = {
            let mut nodes = self.nodes.lock().unwrap();
            nodes
                .iter_mut()
                .map(|(id, n)| {
                    let alive = n.alive();
                    if n.was_alive && !alive {
                        tracing::warn!(node = %id, "missed 3 heartbeats: node is dead, replacing its replicas");
                    }
                    n.was_alive = alive;
                    NodeView {
                        id: id.clone(),
                        alive,
                        memory_budget_mib: n.capacity.memory_mib,
                        labels: n.labels.clone(),
                        loaded: n.loaded.clone(),
                        artifacts: n.artifacts.iter().cloned().collect(),
                    }
                })
                .collect()
        };
        let commands = placement::plan(&views, &wants);
        let by_name: BTreeMap<&str, &Version> = versions.iter().map(|v| (v.spec.name.as_str(), v)).collect();
        let results = futures::future::join_all(commands.iter().map(|c| self.carry_out(c, &by_name))).await;
        let mut failures = BTreeMap::new();
        for (command, result) in commands.iter().zip(results) {
            if let Err(e) = result {
                let (Command::Assign { node, function } | Command::Unassign { node, function }) = command;
                tracing::warn!(node, function, "placement command failed: {}", e.message);
                failures.insert(function.clone(), e);
            }
        }
        failures
    }

    async fn carry_out(
        &self,
        command: &Command,
        versions: &BTreeMap<&str, &Version>,
    ) -> Result<(), ApiError> {
        match command {
            Command::Assign { node, function } => {
                let v = versions[function.as_str()];
                let body = serde_json::to_vec(&Assign::for_version(v)).expect("serialise");
                let generation = self.ask(&subject::worker_assign(node), body.into()).await?;
                if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
                    n.loaded.insert(function.clone(), v.number);
                    n.artifacts.push(v.digest.clone());
                    n.generation = generation;
                }
                tracing::info!(node, function, version = v.number, "placed");
            }
            Command::Unassign { node, function } => {
                let body = serde_json::to_vec(&Unassign { function: function.clone() }).expect("serialise");
                let generation = self.ask(&subject::worker_unassign(node), body.into()).await?;
                if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
                    n.loaded.remove(function);
                    n.generation = generation;
                }
                tracing::info!(node, function, "unloaded");
            }
        }
        Ok(())
    }

    /// Sends a command to a worker; its reply is the node's generation
    /// after the change.
    async fn ask(&self, subject: &str, body: Bytes) -> Result<Generation, ApiError> {
        let msg = self
            .bus
            .request(subject, body, ASSIGN_TIMEOUT)
            .await
            .map_err(|e| ApiError::unavailable(format!("worker did not answer on {subject}: {e}")))?;
        serde_json::from_slice::<Reply<Generation>>(&msg.payload)
            .map_err(|e| ApiError::internal(format!("worker sent a malformed reply: {e}")))?
    }

    /// Live nodes serving `function` at `version`.
    fn ready(&self, function: &str, version: u64) -> u32 {
        let nodes = self.nodes.lock().unwrap();
        nodes.values().filter(|n| n.alive() && n.loaded.get(function) == Some(&version)).count() as u32
    }

    /// Live nodes serving any version of `function`.
    fn ready_any(&self, function: &str) -> u32 {
        let nodes = self.nodes.lock().unwrap();
        nodes.values().filter(|n| n.alive() && n.loaded.contains_key(function)).count() as u32
    }

    /// A gateway holds requests for `function` and nothing serves it: load
    /// a replica and answer once it is ready. Each call is one cold start at
    /// most; concurrent wakes for one function share the placement.
    async fn wake(&self, req: WakeRequest) -> Reply<WakeReply> {
        let started = Instant::now();
        let function = req.function;
        self.mark_active(&function);
        if let Some(s) = self.scaling.lock().unwrap().get_mut(&function) {
            s.wakes += 1;
        }
        let ready = self.ready_any(&function);
        if ready > 0 {
            return Ok(WakeReply { ready });
        }
        let failures = {
            let _order = self.changes.lock().await;
            // Another wake may have placed it while this one waited.
            let ready = self.ready_any(&function);
            if ready > 0 {
                return Ok(WakeReply { ready });
            }
            self.reconcile_locked().await
        };
        let ready = self.ready_any(&function);
        if ready == 0 {
            let n = function.clone();
            let detail = self.blocking(move |r| r.describe(&n)).await?;
            let why = match failures.get(&function) {
                Some(e) => format!("no worker could load it: {}", e.message),
                None => "no live worker can take it (none running, none matching its node selector, or no memory left)"
                    .to_string(),
            };
            tracing::warn!(function, version = detail.active_version, "wake failed: {why}");
            return Err(ApiError::unavailable(format!("function {function} cannot start: {why}")));
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(s) = self.scaling.lock().unwrap().get_mut(&function) {
            s.cold_starts += 1;
            if s.cold_start_ms.len() == COLD_START_RING {
                s.cold_start_ms.pop_front();
            }
            s.cold_start_ms.push_back(ms);
        }
        tracing::info!(function, waiting = req.waiting, ms = format!("{ms:.2}"), "cold start");
        Ok(WakeReply { ready })
    }

    async fn describe(&self, name: String) -> Reply<FunctionDetail> {
        let mut d = self.blocking(move |r| r.describe(&name)).await?;
        d.replicas = self.ready(&d.name, d.active_version);
        d.scale = self.scale_status(&d.name);
        // The event log's view: best effort, a describe never fails on it.
        for t in d.active.spec.triggers() {
            match self.events.stats(&t.consumer).await {
                Ok(s) => d.triggers.push(TriggerStatus {
                    filter: t.filter,
                    consumer: t.consumer,
                    waiting: s.waiting,
                    unacked: s.unacked,
                }),
                Err(e) => tracing::debug!("no stats for {}: {e}", t.consumer),
            }
        }
        if let Ok(letters) = self.events.dead_letters(&d.name).await {
            d.dead_letters = letters.len() as u64;
        }
        Ok(d)
    }

    async fn push_routes(&self) -> Result<RouteTable, ApiError> {
        let table = self.blocking(|r| r.route_table()).await?;
        let body = serde_json::to_vec(&table).expect("serialise");
        if let Err(e) = self.bus.publish(&subject::routes_changed(), body.into()).await {
            tracing::warn!("could not push routes: {e}");
        }
        Ok(table)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))?
            .map_err(registry_error)
    }

    async fn handle(&self, op: SchedulerOp, msg: Message) {
        let reply = match op {
            SchedulerOp::Deploy => match Frame::<DeployRequest>::decode(msg.payload.clone()) {
                Ok(f) => encode(self.deploy(f.header, f.body).await),
                Err(e) => encode::<()>(Err(ApiError::bad_request(format!("malformed deploy request: {e}")))),
            },
            SchedulerOp::List => encode(self.blocking(|r| r.list()).await),
            SchedulerOp::Describe => match parse::<NameRequest>(&msg) {
                Ok(req) => encode(self.describe(req.name).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Wake => match parse::<WakeRequest>(&msg) {
                Ok(req) => encode(self.wake(req).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Delete => match parse::<NameRequest>(&msg) {
                Ok(req) => encode(self.delete(req.name).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Rollback => match parse::<RollbackRequest>(&msg) {
                Ok(req) => encode(self.rollback(req).await),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Logs => match parse::<LogsRequest>(&msg) {
                Ok(req) => encode(self.recent_logs(&req)),
                Err(e) => encode::<()>(Err(e)),
            },
            SchedulerOp::Routes => encode(self.blocking(|r| r.route_table()).await),
            SchedulerOp::Status => encode(self.status().await),
        };
        if let Err(e) = respond(&*self.bus, &msg, reply).await {
            tracing::warn!("could not answer {}: {e}", msg.subject);
        }
    }

    /// Records the version, places it, and answers once it is served (or
    /// could not be).
    async fn deploy(&self, req: DeployRequest, component: Bytes) -> Reply<DeployReply> {
        let spec = req.spec;
        spec.validate().map_err(ApiError::bad_request)?;
        if component.len() > tern_protocol::MAX_COMPONENT_BYTES {
            return Err(ApiError::bad_request(format!(
                "component is {} bytes; the limit is {} bytes",
                component.len(),
                tern_protocol::MAX_COMPONENT_BYTES
            )));
        }
        let world = self
            .runtime
            .validate(component.clone())
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if world == World::Event && !spec.routes.is_empty() {
            return Err(ApiError::bad_request(
                "this component is an event function (it exports tern:function/event-handler); it cannot serve HTTP routes",
            ));
        }
        if world == World::Http && (!spec.on_event.is_empty() || spec.schedule.is_some()) {
            return Err(ApiError::bad_request(
                "this component is an HTTP function (it exports wasi:http/incoming-handler); event and cron \
                 triggers need an event function (tern:function/event-handler, see sdk/wit)",
            ));
        }
        let digest = tern_runtime::digest_of(&component);

        let _order = self.changes.lock().await;
        triggers::create(&*self.events, &spec.triggers()).await.map_err(|e| {
            ApiError::unavailable(format!("cannot create the function's event triggers: {e}"))
        })?;
        // A new version starts with one replica (or min-scale), so a bad
        // component fails here rather than on the first request; it scales
        // to zero after its idle window like any other.
        self.mark_active(&spec.name);
        let version = {
            let (spec, digest) = (spec.clone(), digest.clone());
            self.blocking(move |r| r.deploy(&spec, &digest, world, &component, now_ms())).await?
        };
        let ready_replicas = self.place_version(&version).await?;
        let routes = self.push_routes().await?;
        self.remove_unwanted_triggers().await;
        tracing::info!(function = %spec.name, version = version.number, %digest, ready_replicas, "deployed");
        Ok(DeployReply { version, ready_replicas, routes })
    }

    /// Places a newly active version; an error only if it could be placed
    /// nowhere although a worker tried.
    async fn place_version(&self, version: &Version) -> Result<u32, ApiError> {
        let failures = self.reconcile_locked().await;
        let ready = self.ready(&version.spec.name, version.number);
        match failures.get(&version.spec.name) {
            Some(e) if ready == 0 => Err(ApiError::new(
                e.kind,
                format!("version {} is recorded but no worker could load it: {}", version.number, e.message),
            )),
            _ => Ok(ready),
        }
    }

    async fn rollback(&self, req: RollbackRequest) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        self.mark_active(&req.name);
        let target = {
            let (name, to) = (req.name.clone(), req.to);
            self.blocking(move |r| r.rollback_target(&name, to)).await?
        };
        triggers::create(&*self.events, &target.spec.triggers())
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot create the version's event triggers: {e}")))?;
        let version = self.blocking(move |r| r.rollback(&req.name, req.to)).await?;
        self.place_version(&version).await?;
        let routes = self.push_routes().await?;
        self.remove_unwanted_triggers().await;
        Ok(ChangeReply { active_version: Some(version.number), routes })
    }

    async fn delete(&self, name: String) -> Reply<ChangeReply> {
        let _order = self.changes.lock().await;
        let n = name.clone();
        self.blocking(move |r| r.delete(&n)).await?;
        // Routes go first so no new request is sent to unloading replicas.
        let routes = self.push_routes().await?;
        self.reconcile_locked().await;
        self.remove_unwanted_triggers().await;
        let n = name.clone();
        let _ = self.blocking(move |r| r.forget_cron(&n)).await;
        self.logs.lock().unwrap().remove(&name);
        Ok(ChangeReply { active_version: None, routes })
    }

    async fn status(&self) -> Reply<ClusterStatus> {
        let versions = self.blocking(|r| r.active_versions()).await?;
        let memory: BTreeMap<String, u64> =
            versions.iter().map(|v| (v.spec.name.clone(), v.spec.memory_mib as u64)).collect();
        let mut status = ClusterStatus::default();
        for v in &versions {
            status.scale.insert(v.spec.name.clone(), self.scale_status(&v.spec.name));
        }
        let nodes = self.nodes.lock().unwrap();
        for (id, n) in nodes.iter() {
            let alive = n.alive();
            if alive {
                for f in n.loaded.keys() {
                    status.replicas.entry(f.clone()).or_default().push(id.clone());
                }
            }
            status.nodes.push(NodeStatus {
                node_id: id.clone(),
                alive,
                last_seen_ms_ago: n.last_seen.elapsed().as_millis() as u64,
                capacity: n.capacity.clone(),
                used_memory_mib: n.loaded.keys().filter_map(|f| memory.get(f)).sum(),
                labels: n.labels.clone(),
                loaded: n.loaded.clone(),
                load: n.load.clone(),
            });
        }
        Ok(status)
    }

    async fn serve_artifact(&self, msg: Message) {
        let reply = match parse::<ArtifactRequest>(&msg) {
            Ok(req) => self.artifact_chunk(req).await,
            Err(e) => Err(e),
        };
        let reply = match reply {
            Ok((chunk, bytes)) => Frame::new(Reply::Ok(chunk), bytes).encode(),
            Err(e) => encode::<ArtifactChunk>(Err(e)),
        };
        let _ = respond(&*self.bus, &msg, reply).await;
    }

    async fn artifact_chunk(&self, req: ArtifactRequest) -> Result<(ArtifactChunk, Bytes), ApiError> {
        let digest = req.digest.clone();
        let bytes = self
            .blocking(move |r| r.artifact(&digest))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no artifact {}", req.digest)))?;
        let start = (req.offset as usize).min(bytes.len());
        let end = start.saturating_add(req.max_len as usize).min(bytes.len());
        Ok((ArtifactChunk { total: bytes.len() as u64 }, Bytes::copy_from_slice(&bytes[start..end])))
    }

    fn keep_logs(&self, records: Vec<LogRecord>) {
        let mut logs = self.logs.lock().unwrap();
        for r in records {
            let ring = logs.entry(r.function.clone()).or_default();
            if ring.len() == LOG_RING {
                ring.pop_front();
            }
            ring.push_back(r);
        }
    }

    fn recent_logs(&self, req: &LogsRequest) -> Reply<Vec<LogRecord>> {
        let logs = self.logs.lock().unwrap();
        let ring = logs.get(&req.name);
        Ok(ring
            .map(|r| r.iter().skip(r.len().saturating_sub(req.tail)).cloned().collect())
            .unwrap_or_default())
    }
}

fn parse<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, ApiError> {
    serde_json::from_slice(&msg.payload)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("malformed request: {e}")))
}

/// Control replies are frames whose header is the `Reply` and body empty.
fn encode<T: serde::Serialize>(reply: Reply<T>) -> Bytes {
    Frame::new(reply, Bytes::new()).encode()
}
