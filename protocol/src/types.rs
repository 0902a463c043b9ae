use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_MEMORY_MIB: u32 = 128;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest memory a function may ask for: wasm32's whole address space.
pub const MAX_MEMORY_MIB: u32 = 4096;
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Request and response bodies past this get 413 / 502.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Target in-flight requests per replica when the deploy names none.
pub const DEFAULT_CONCURRENCY: u32 = 100;
/// A function with no request for this long is unloaded (unless min-scale).
pub const DEFAULT_IDLE_MS: u64 = 60_000;
/// The shortest idle window: the scheduler decides once a second.
pub const MIN_IDLE_MS: u64 = 1_000;
/// Tries an event gets before it becomes a dead letter, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Delay before the first retry of a failed event; each next one doubles.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// Retry delays stop growing here.
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Largest component accepted by deploy.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// What a user asks for on deploy. Immutable once stored as a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    #[serde(default)]
    pub routes: Vec<String>,
    /// Config values, visible to the guest as `wasi:cli/environment`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Replicas kept loaded even when idle (each on its own worker). 0 lets
    /// the function scale to zero after `idle_ms` without requests.
    #[serde(default)]
    pub min_scale: u32,
    /// Most replicas the autoscaler may run; 0 means no limit but the
    /// number of workers.
    #[serde(default)]
    pub max_scale: u32,
    /// Target in-flight requests per replica: the autoscaler adds replicas
    /// when observed concurrency exceeds this.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Scale-to-zero window: with no request for this long, and min-scale
    /// 0, the function is unloaded everywhere.
    #[serde(default = "default_idle")]
    pub idle_ms: u64,
    /// Only workers with all these labels may run the function.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Event subjects (NATS wildcards allowed) that trigger the function,
    /// each through its own durable consumer.
    #[serde(default)]
    pub on_event: Vec<String>,
    /// A cron expression (UTC): the scheduler publishes one event per tick
    /// for this function.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Tries per event, the first included; after the last failure the
    /// event goes to the function's dead letters.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles with each further one.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_backoff() -> u64 {
    DEFAULT_BACKOFF_MS
}

fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_idle() -> u64 {
    DEFAULT_IDLE_MS
}

fn default_memory() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl FunctionSpec {
    pub fn new(name: impl Into<String>) -> Self {
        FunctionSpec {
            name: name.into(),
            routes: Vec::new(),
            env: BTreeMap::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            min_scale: 0,
            max_scale: 0,
            concurrency: DEFAULT_CONCURRENCY,
            idle_ms: DEFAULT_IDLE_MS,
            node_selector: BTreeMap::new(),
            on_event: Vec::new(),
            schedule: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_ms: DEFAULT_BACKOFF_MS,
        }
    }

    /// The durable consumers this spec asks for: one per event subject, and
    /// one for its schedule.
    pub fn triggers(&self) -> Vec<Trigger> {
        let mut out: Vec<Trigger> = self
            .on_event
            .iter()
            .map(|filter| Trigger { consumer: trigger_consumer(&self.name, filter), filter: filter.clone() })
            .collect();
        if self.schedule.is_some() {
            out.push(Trigger {
                consumer: format!("{}-cron", self.name),
                filter: crate::subject::cron(&self.name),
            });
        }
        out
    }

    /// How long to wait before try number `attempt + 1`, after try
    /// `attempt` failed: the backoff, doubled per earlier retry.
    pub fn retry_delay_ms(backoff_ms: u64, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(40);
        backoff_ms.saturating_mul(1u64 << doublings).min(MAX_BACKOFF_MS)
    }

    /// Checks everything that does not need the component or the registry.
    pub fn validate(&self) -> Result<(), String> {
        validate_function_name(&self.name)?;
        for r in &self.routes {
            crate::route::RoutePattern::parse(r).map_err(|e| format!("route {r:?}: {e}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.routes {
            if !seen.insert(r) {
                return Err(format!("route {r:?} is given twice"));
            }
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "memory limit {} MiB is out of range (1..={MAX_MEMORY_MIB} MiB)",
                self.memory_mib
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "timeout {} ms is out of range (1 ms ..= {} min)",
                self.timeout_ms,
                MAX_TIMEOUT_MS / 60_000
            ));
        }
        if self.min_scale > 1000 || self.max_scale > 1000 {
            return Err(format!(
                "scale bounds {}..{} are out of range (at most 1000 replicas)",
                self.min_scale, self.max_scale
            ));
        }
        if self.max_scale != 0 && self.min_scale > self.max_scale {
            return Err(format!("min scale {} is more than max scale {}", self.min_scale, self.max_scale));
        }
        if self.concurrency == 0 || self.concurrency > 100_000 {
            return Err(format!(
                "target concurrency {} is out of range (1..=100000 in-flight requests per replica)",
                self.concurrency
            ));
        }
        if self.idle_ms < MIN_IDLE_MS || self.idle_ms > 7 * 24 * 3_600_000 {
            return Err(format!("idle window {} ms is out of range (1 s ..= 7 days)", self.idle_ms));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.on_event {
            crate::nats_subject::check_trigger(s)?;
            if !seen.insert(s) {
                return Err(format!("event subject {s:?} is given twice"));
            }
        }
        if let Some(cron) = &self.schedule {
            crate::cron::Schedule::parse(cron)?;
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(format!("max attempts {} is out of range (1..=100)", self.max_attempts));
        }
        if self.backoff_ms == 0 || self.backoff_ms > MAX_BACKOFF_MS {
            return Err(format!("backoff {} ms is out of range (1 ms ..= 1 h)", self.backoff_ms));
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("config key {k:?} is not valid (empty, or contains '=' or NUL)"));
            }
        }
        Ok(())
    }
}

/// Names become one token of a bus subject and one segment of admin URLs.
pub fn validate_function_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "function name {name:?} is not valid: use 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
        ))
    }
}

/// One durable consumer a function's spec asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Durable consumer name: stable for the same function and subject
    /// across versions, so redeploying keeps the consumer's position.
    pub consumer: String,
    pub filter: String,
}

/// `<function>-<hash of the subject>`: a valid JetStream durable name (no
/// dots or wildcards), stable across processes and releases (FNV-1a).
pub fn trigger_consumer(function: &str, filter: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in filter.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{function}-{h:016x}")
}

/// Which world a component exports; decided at deploy by inspecting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `wasi:http/incoming-handler`
    Http,
    /// `tern:function/event-handler`
    Event,
}

/// One immutable version of a function, as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub number: u64,
    /// sha256 of the component, hex.
    pub digest: String,
    pub size: u64,
    pub world: World,
    pub spec: FunctionSpec,
    pub created_at_ms: u64,
}

/// A row of `tern list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    pub active_version: u64,
    pub latest_version: u64,
    pub routes: Vec<String>,
    pub digest: String,
    pub world: World,
}

/// `tern describe`: the active version's settings and every version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDetail {
    pub name: String,
    pub active_version: u64,
    pub active: Version,
    pub versions: Vec<Version>,
    /// Live workers serving the active version now.
    #[serde(default)]
    pub replicas: u32,
    /// The autoscaler's view; filled by the scheduler, not stored.
    #[serde(default)]
    pub scale: ScaleStatus,
    /// Each event trigger's backlog, from the event log.
    #[serde(default)]
    pub triggers: Vec<TriggerStatus>,
    /// Events kept after failing every attempt (`tern dlq list`).
    #[serde(default)]
    pub dead_letters: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerStatus {
    /// The subject pattern (`tern.cron.<name>` for a schedule).
    pub filter: String,
    pub consumer: String,
    /// Published and not yet delivered.
    pub waiting: u64,
    /// Delivered and not yet acknowledged: being handled, or waiting for
    /// a retry.
    pub unacked: u64,
}

/// What the autoscaler sees of one function and what it decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleStatus {
    /// Replicas the autoscaler wants now.
    pub desired: u32,
    /// Mean in-flight requests over the stable and the panic window.
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    pub panicking: bool,
    /// Milliseconds since the last request was seen (none yet: null).
    pub idle_for_ms: Option<u64>,
    /// Wake requests from gateways' activators (each stands for any number
    /// of waiting requests).
    pub wakes: u64,
    /// Wakes that found the function at zero and loaded a replica.
    pub cold_starts: u64,
    /// Time from a wake to a ready replica, over the recent cold starts.
    pub cold_start_ms: Option<LatencySummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub last: f64,
}

/// A gateway's activator asks the scheduler to make `function` ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WakeRequest {
    pub function: String,
    /// Requests held at the gateway when the wake was sent.
    #[serde(default)]
    pub waiting: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WakeReply {
    /// Live replicas of the active version after the wake.
    pub ready: u32,
}

/// Deploy request header; the body of the frame is the component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub spec: FunctionSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReply {
    pub version: Version,
    /// Workers serving the new version when the deploy was acknowledged.
    #[serde(default)]
    pub ready_replicas: u32,
    /// The route table after the deploy, so the gateway that relayed the
    /// deploy serves the new routes before it answers the client.
    pub routes: RouteTable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub name: String,
    /// None: the version before the active one.
    pub to: Option<u64>,
}

/// Reply to delete and rollback: what is active now and the new routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeReply {
    pub active_version: Option<u64>,
    pub routes: RouteTable,
}

/// Every route the gateway serves, with a generation so that a late push
/// never replaces a newer table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub generation: u64,
    pub routes: Vec<RouteEntry>,
    /// The event triggers of active versions; gateways consume them.
    #[serde(default)]
    pub triggers: Vec<TriggerEntry>,
}

/// A trigger as a gateway runs it: which consumer to pull, and how to
/// retry what its function fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerEntry {
    pub function: String,
    pub trigger: Trigger,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub pattern: String,
    pub function: String,
    /// The gateway waits this long (plus a margin) for the reply.
    pub timeout_ms: u64,
}

/// Header of an invoke request; the frame body is the HTTP request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub method: String,
    /// Path and query exactly as the client sent them.
    pub uri: String,
    /// Header values that are not UTF-8 are dropped by the gateway.
    pub headers: Vec<(String, String)>,
}

/// Header of an event delivery to an event function, on the same invoke
/// subject as HTTP requests; the frame body is the event's data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDelivery {
    pub id: String,
    pub subject: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// 1 on the first delivery.
    pub attempt: u32,
}

/// Header of several event deliveries in one invoke request (a trigger
/// sends what it has ready at once: one bus round trip for many events).
/// The frame body is their data, one after another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBatch {
    pub batch: Vec<BatchedEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchedEvent {
    #[serde(flatten)]
    pub delivery: EventDelivery,
    /// Bytes of the frame body that are this event's data.
    pub len: usize,
}

/// The reply to an [`EventBatch`]: one result per event, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatchResult {
    pub results: Vec<EventResult>,
}

/// What an event function's invoke subject takes: one delivery, or a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventRequest {
    Batch(EventBatch),
    One(EventDelivery),
}

/// The reply to an [`EventDelivery`] (a frame with an empty body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// None: handled, acknowledge it. Some: why it failed (the handler's
    /// error, or a trap, timeout or limit), retry it.
    pub error: Option<String>,
}

/// Header of an invoke reply; the frame body is the HTTP response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// A worker is told to serve a function version (load it if needed, swap to
/// it atomically if it serves another version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub function: String,
    pub version: u64,
    pub digest: String,
    pub world: World,
    pub env: BTreeMap<String, String>,
    pub memory_mib: u32,
    pub timeout_ms: u64,
}

impl Assign {
    pub fn for_version(v: &Version) -> Self {
        Assign {
            function: v.spec.name.clone(),
            version: v.number,
            digest: v.digest.clone(),
            world: v.world,
            env: v.spec.env.clone(),
            memory_mib: v.spec.memory_mib,
            timeout_ms: v.spec.timeout_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unassign {
    pub function: String,
}

/// What a worker offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Memory the scheduler may fill with replicas (each counts its limit).
    pub memory_mib: u64,
    /// Instances that can run at once on the node.
    pub slots: u32,
}

/// A worker's self-description and state: sent on start, when the scheduler
/// asks, and every second as its heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeAnnounce {
    pub node_id: String,
    #[serde(default)]
    pub capacity: Capacity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Functions loaded, with their versions.
    #[serde(default)]
    pub loaded: BTreeMap<String, u64>,
    /// Digests of components this worker has compiled and cached.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Per-function counters since the worker started.
    #[serde(default)]
    pub load: BTreeMap<String, FunctionLoad>,
    /// Which run of the worker this is, and how many times its set of
    /// loaded functions has changed in that run: a heartbeat that was on
    /// its way while the scheduler placed a function is older than the
    /// placement's reply, and must not undo it.
    #[serde(default)]
    pub generation: Generation,
}

/// A worker's run (random per start) and the count of changes to its loaded
/// functions; sent in heartbeats and in the replies to assign and unassign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub boot: String,
    pub changes: u64,
}

impl Generation {
    /// Whether `self` is older than `other` (same run, fewer changes).
    pub fn older_than(&self, other: &Generation) -> bool {
        self.boot == other.boot && self.changes < other.changes
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLoad {
    pub in_flight: u64,
    pub completed: u64,
    pub errors: u64,
    /// Sum of completed invocations' latency, for a mean.
    pub latency_us_total: u64,
    /// In-flight requests integrated over time (µs): its change between
    /// two heartbeats over their interval is the mean concurrency.
    #[serde(default)]
    pub busy_us: u64,
}

/// `tern status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    /// Function → nodes serving it.
    pub replicas: BTreeMap<String, Vec<String>>,
    /// Function → the autoscaler's view of it.
    #[serde(default)]
    pub scale: BTreeMap<String, ScaleStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub alive: bool,
    pub last_seen_ms_ago: u64,
    pub capacity: Capacity,
    pub used_memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    pub loaded: BTreeMap<String, u64>,
    pub load: BTreeMap<String, FunctionLoad>,
}

/// A slice of a component, by digest: artifacts travel in chunks so that
/// no message exceeds the bus's payload limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRequest {
    pub digest: String,
    #[serde(default)]
    pub offset: u64,
    pub max_len: u64,
}

/// Header of an artifact chunk reply; the frame body is the bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactChunk {
    pub total: u64,
}

/// One line a function wrote, or a line the platform wrote about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub function: String,
    pub version: u64,
    pub ts_ms: u64,
    pub stream: LogStream,
    pub line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by Tern: traps, timeouts, limits.
    Tern,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsRequest {
    pub name: String,
    /// At most this many of the newest records.
    pub tail: usize,
}

/// The error half of every control reply, mapped to an HTTP status by the
/// gateway and to an exit code by the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    Conflict,
    Unavailable,
    Internal,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into() }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, m)
    }
}

/// Control replies are `Result`s serialised as JSON frame headers.
pub type Reply<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_safe() {
        assert!(validate_function_name("hello-world_2").is_ok());
        for bad in ["", "a.b", "a*", "a>", "A", "-x", "a b", &"x".repeat(64)] {
            assert!(validate_function_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let mut s = FunctionSpec::new("f");
        s.routes = vec!["/a".into(), "/a".into()];
        assert!(s.validate().unwrap_err().contains("twice"));
        s.routes = vec!["nope".into()];
        assert!(s.validate().unwrap_err().contains("nope"));
        s.routes = vec![];
        s.memory_mib = 0;
        assert!(s.validate().unwrap_err().contains("memory"));
        s.memory_mib = 64;
        s.timeout_ms = 0;
        assert!(s.validate().unwrap_err().contains("timeout"));
        s.timeout_ms = 1000;
        s.min_scale = 3;
        s.max_scale = 1;
        assert!(s.validate().unwrap_err().contains("min scale 3 is more than max scale 1"));
        s.max_scale = 0; // no limit
        assert!(s.validate().is_ok());
        s.concurrency = 0;
        assert!(s.validate().unwrap_err().contains("concurrency"));
        s.concurrency = 1;
        s.idle_ms = 999;
        assert!(s.validate().unwrap_err().contains("idle window"));
    }

    #[test]
    fn generations_order_within_one_run_only() {
        let g = |boot: &str, changes| Generation { boot: boot.into(), changes };
        assert!(g("a", 1).older_than(&g("a", 2)));
        assert!(!g("a", 2).older_than(&g("a", 2)));
        assert!(!g("a", 3).older_than(&g("a", 2)));
        // A restarted worker starts counting again: never "older".
        assert!(!g("b", 0).older_than(&g("a", 9)));
    }

    #[test]
    fn an_event_request_is_one_delivery_or_a_batch() {
        let one = EventDelivery { id: "a".into(), subject: "s".into(), headers: vec![], attempt: 2 };
        let json = serde_json::to_string(&one).unwrap();
        assert!(matches!(serde_json::from_str(&json).unwrap(), EventRequest::One(d) if d.attempt == 2));
        let batch = EventBatch { batch: vec![BatchedEvent { delivery: one, len: 3 }] };
        let json = serde_json::to_string(&batch).unwrap();
        match serde_json::from_str(&json).unwrap() {
            EventRequest::Batch(b) => assert_eq!((b.batch[0].len, b.batch[0].delivery.id.as_str()), (3, "a")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn event_settings_are_validated_and_retries_double() {
        let mut s = FunctionSpec::new("f");
        s.on_event = vec!["orders.*".into()];
        s.schedule = Some("*/5 * * * *".into());
        assert!(s.validate().is_ok());
        assert_eq!(s.triggers().len(), 2);
        assert_eq!(s.triggers()[0].consumer, trigger_consumer("f", "orders.*"));
        assert_ne!(trigger_consumer("f", "a"), trigger_consumer("f", "b"));
        assert_eq!(s.triggers()[1].filter, "tern.cron.f");
        s.backoff_ms = 0;
        assert!(s.validate().unwrap_err().contains("backoff"));
        s.backoff_ms = 500;
        s.max_attempts = 101;
        assert!(s.validate().unwrap_err().contains("max attempts"));
        assert_eq!(
            (1..=4).map(|a| FunctionSpec::retry_delay_ms(500, a)).collect::<Vec<_>>(),
            vec![500, 1000, 2000, 4000]
        );
        assert_eq!(FunctionSpec::retry_delay_ms(500, 60), MAX_BACKOFF_MS);
    }

    #[test]
    fn spec_defaults_apply_when_missing() {
        let s: FunctionSpec = serde_json::from_str(r#"{"name":"f"}"#).unwrap();
        assert_eq!((s.min_scale, s.max_scale, s.concurrency, s.idle_ms), (0, 0, 100, 60_000));
        assert_eq!(s.memory_mib, DEFAULT_MEMORY_MIB);
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
    }
}
