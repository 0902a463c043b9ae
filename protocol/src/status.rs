//! What the scheduler reports: `tern list`, `describe`, `status`, logs.

use crate::{Capacity, Version, World};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Outbound HTTP calls and circuit breakers, over its live workers.
    #[serde(default)]
    pub outbound: OutboundStatus,
}

/// One function's outbound HTTP (calls to other functions included), on
/// one worker or summed over several.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundStatus {
    /// Requests sent (a response came back, or the transport failed).
    pub calls: u64,
    /// Calls with no usable answer: a transport error, a timeout, a cut
    /// body, or a 5xx.
    pub errors: u64,
    /// Requests refused before sending: outside the grant, or to a private
    /// address the grant does not name.
    pub denied: u64,
    /// Requests failed fast by an open circuit breaker.
    pub short_circuited: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Breakers that are not closed, or have failures counted.
    #[serde(default)]
    pub breakers: Vec<BreakerStatus>,
}

impl OutboundStatus {
    /// Adds `other` (another worker's) into this one.
    pub fn add(&mut self, other: &OutboundStatus) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.denied += other.denied;
        self.short_circuited += other.short_circuited;
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
        self.breakers.extend(other.breakers.iter().cloned());
    }
}

/// A circuit breaker for one function's calls to one upstream (host:port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerStatus {
    /// `host:port`.
    pub upstream: String,
    pub state: BreakerState,
    /// Failures in a row counted toward opening.
    pub failures: u32,
    /// While open: milliseconds until a probe call is let through.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
    /// The worker it is on (filled by the scheduler).
    #[serde(default)]
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    /// Failing fast until the cool-down ends.
    Open,
    /// One probe call is through; its outcome closes or re-opens it.
    HalfOpen,
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
    /// Since its last invocation ended (or it was loaded): which idle
    /// function a full node unloads first.
    #[serde(default)]
    pub idle_ms: u64,
}

/// A worker's memory: its budget, and what is charged against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMemory {
    pub budget_bytes: u64,
    /// Loaded functions: their compiled code (once per component) and
    /// each one's own part.
    pub footprint_bytes: u64,
    /// Held by running instances, each its function's `--memory`.
    pub held_bytes: u64,
    /// Linear memory and tables those instances use now.
    pub in_use_bytes: u64,
    /// The worker process's resident memory.
    pub rss_bytes: u64,
}

impl NodeMemory {
    /// What is charged against the budget.
    pub fn charged_bytes(&self) -> u64 {
        self.footprint_bytes + self.held_bytes
    }
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
    /// Which scheduler leads, as the one that answered sees it.
    #[serde(default)]
    pub leader: Option<LeaderStatus>,
}

/// Scheduler leadership: only the leader places, scales and fires cron.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStatus {
    /// The scheduler that answered.
    pub me: String,
    /// Whether it leads.
    pub leading: bool,
    /// The scheduler holding the lease, as last seen (`None`: none yet).
    pub leader: Option<String>,
    /// When that leader took the lease (ms since the epoch).
    pub since_ms: u64,
    /// The lease (0: the only scheduler, no lease).
    pub lease_ms: u64,
    /// How many times the answering scheduler has become leader.
    pub terms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub alive: bool,
    pub last_seen_ms_ago: u64,
    pub capacity: Capacity,
    /// What is charged against its budget: loaded functions, and
    /// instances running (see `memory`).
    pub used_memory_mib: u64,
    /// What the worker last reported of its memory.
    #[serde(default)]
    pub memory: NodeMemory,
    pub labels: BTreeMap<String, String>,
    pub loaded: BTreeMap<String, u64>,
    pub load: BTreeMap<String, FunctionLoad>,
}

/// One line a function wrote, or a line the platform wrote about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub function: String,
    pub version: u64,
    pub ts_ms: u64,
    pub stream: LogStream,
    pub line: String,
    /// The invocation that wrote it (see [`crate::Receipt`]); empty for a
    /// line about the function rather than one invocation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub invocation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by Tern: traps, timeouts, limits.
    Tern,
    /// An invocation's receipt, as one line after its output.
    Report,
}
