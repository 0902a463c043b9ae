//! Messages between the roles on the bus: control requests and replies,
//! invocations, node state, artifacts.

use crate::{FunctionLoad, FunctionSpec, NodeMemory, OutboundStatus, SecretValue, Trigger, Version, World};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// The component's digest when it was put in the cluster's artifact
    /// store (`TERN_ARTIFACTS`) instead of coming in this message's body:
    /// a component may be larger than one NATS message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReply {
    pub version: Version,
    /// Workers serving the new version when the deploy was acknowledged.
    #[serde(default)]
    pub ready_replicas: u32,
    /// The route table after the deploy, so the gateway that relayed the
    /// deploy serves the new routes before it answers the client.
    pub routes: ServingTable,
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
    pub routes: ServingTable,
}

/// What every gateway serves: the HTTP routes and the event triggers of the
/// active versions, the two ways outside input becomes an invocation. The
/// scheduler makes it (`Registry::serving_table`) and pushes it on every
/// change; a gateway installs it in `gateway::serving`, which swaps the
/// router and starts or stops trigger consumers to match. The generation
/// makes sure a late push never replaces a newer table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingTable {
    pub generation: u64,
    pub routes: Vec<RouteEntry>,
    /// The event triggers of active versions; gateways consume them.
    #[serde(default)]
    pub triggers: Vec<TriggerEntry>,
    /// Set when this is one change rather than the whole table (what a
    /// deploy, rollback or delete pushes): `routes` and `triggers` are then
    /// this function's alone (none: it was deleted), to replace its old
    /// ones in the table of `generation - 1`. At thousands of functions a
    /// whole table per change is megabytes to send and parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
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
    /// Largest request body the gateway takes for it.
    #[serde(default = "crate::spec::default_max_body")]
    pub max_body: u64,
    /// How long an upload to it may take in all.
    #[serde(default = "crate::spec::default_max_duration")]
    pub max_duration_ms: u64,
}

/// Header of an invoke request; the frame body is the HTTP request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub method: String,
    /// Path and query exactly as the client sent them.
    pub uri: String,
    /// Header values that are not UTF-8 are dropped by the gateway.
    pub headers: Vec<(String, String)>,
    /// Calls between functions this request has come through: 0 from a
    /// client, one more for each `NAME.tern.internal` call. Past
    /// [`MAX_HOPS`] the call is answered 508, so a cycle ends.
    #[serde(default)]
    pub hops: u32,
    /// Where the caller takes a response body that does not fit the reply:
    /// its chunks ([`StreamChunk`]) go to this subject. Absent: the caller
    /// wants the whole body in the reply (events, calls between functions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Set when more of the request body follows the frame's: the worker
    /// that takes the request sends a [`StreamCredit`] naming its chunk
    /// mailbox to this subject, and the caller streams the rest there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// The invocation's id, made by the gateway so it can answer with it
    /// (`Tern-Invocation-Id`); empty: the worker makes one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub invocation: String,
    /// What started it; absent: an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::TriggerKind>,
}

/// The deepest chain of calls between functions.
pub const MAX_HOPS: u32 = 10;

/// One event as delivered to an event function (inside an [`EventBatch`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDelivery {
    pub id: String,
    pub subject: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// What started it; absent: an event trigger (a cron tick when its
    /// subject is a cron subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::TriggerKind>,
}

/// Header of the event deliveries in one invoke request, on the same
/// invoke subject as HTTP requests. A trigger sends what it has ready at
/// once (one bus round trip for many events); a single event (`tern
/// invoke`, a dead-letter replay) is a batch of one. The frame body is
/// their data, one after another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBatch {
    pub batch: Vec<BatchedEvent>,
}

impl EventBatch {
    pub fn of_one(delivery: EventDelivery, len: usize) -> Self {
        EventBatch { batch: vec![BatchedEvent { delivery, len }] }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchedEvent {
    #[serde(flatten)]
    pub delivery: EventDelivery,
    /// Bytes of the frame body that are this event's data.
    pub len: usize,
}

/// The reply to an [`EventBatch`] (a frame with an empty body): one result
/// per event, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatchResult {
    pub results: Vec<EventResult>,
}

/// One event's outcome in an [`EventBatchResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventResult {
    /// None: handled, acknowledge it. Some: why it failed (the handler's
    /// error, or a trap, timeout or limit), retry it.
    pub error: Option<String>,
    /// The worker could not run it at all (every instance slot busy): send
    /// it again without counting an attempt.
    #[serde(default)]
    pub transient: bool,
}

/// The longest error text an event result carries: a handler's error
/// string is the guest's to choose, and the reply must fit one message.
pub const MAX_ERROR_TEXT: usize = 4096;

/// `text` cut to [`MAX_ERROR_TEXT`] bytes (on a character boundary), with a
/// note that it was cut.
pub fn cap_error_text(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let total = text.len();
        text.truncate(end);
        text.push_str(&format!("… ({total} bytes, cut)"));
    }
    text
}

/// Header of an invoke reply; the frame body is the HTTP response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Set when more of the body follows as [`StreamChunk`]s on the
    /// request's `stream` subject: where the worker takes the caller's
    /// [`StreamCredit`]s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// Bytes of body one stream chunk carries, at most.
pub const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks a sender may send ahead of its receiver's credits: with
/// [`STREAM_CHUNK_BYTES`], at most 1 MiB in flight per stream.
pub const STREAM_WINDOW: u32 = 16;
/// A side of a stream with nothing to say sends an empty message this
/// often (the sender of chunks to the receiver's mailbox, the receiver to
/// the sender's credit subject), so the other tells a quiet stream from a
/// dead peer. Empty messages are never queued, so they cannot crowd a
/// mailbox however long a stream waits.
pub const STREAM_KEEPALIVE_MS: u64 = 1_000;
/// A side that hears nothing from the other for this long ends the stream.
pub const STREAM_SILENCE_MS: u64 = 3_500;

/// Header of one chunk of a streamed body, from its sender to its receiver
/// (the frame body is the bytes): a response from worker to caller, or an
/// upload from gateway to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamChunk {
    /// 1 for the first chunk after the message that opened the stream.
    pub seq: u64,
    /// The body is complete after this chunk.
    #[serde(default)]
    pub end: bool,
    /// The body broke off (a trap, a timeout, a client gone): the receiver
    /// ends it with an error, never as if complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `end`: trailer fields that follow the body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
}

/// From a stream's receiver to its sender.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamCredit {
    /// More chunks the receiver has room for.
    #[serde(default)]
    pub grant: u32,
    /// The receiver wants no more (its client went away, the guest
    /// dropped the body): stop.
    #[serde(default)]
    pub cancel: bool,
    /// In the first credit for an upload: where the worker that took the
    /// request receives its chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
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
    /// Buckets the function may open.
    #[serde(default)]
    pub kv: Vec<String>,
    /// Names of the secrets it may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Their current values (one absent: deleted since the deploy). Only
    /// the worker that will run the function is sent them.
    #[serde(default)]
    pub secret_values: BTreeMap<String, SecretValue>,
    /// Subjects it may publish events on.
    #[serde(default)]
    pub allow_publish: Vec<String>,
    /// Hosts it may send HTTP requests to.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    #[serde(default = "crate::spec::default_outbound_body_bytes")]
    pub max_outbound_body: u64,
    #[serde(default = "crate::spec::default_max_body")]
    pub max_body: u64,
    #[serde(default = "crate::spec::default_max_duration")]
    pub max_duration_ms: u64,
    /// Requests one instance serves before it is dropped; 0 or 1: fresh.
    #[serde(default)]
    pub instance_reuse: u32,
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
            kv: v.spec.kv.clone(),
            secrets: v.spec.secrets.clone(),
            secret_values: BTreeMap::new(),
            allow_publish: v.spec.allow_publish.clone(),
            allow_outbound: v.spec.allow_outbound.clone(),
            max_outbound_body: v.spec.max_outbound_body,
            max_body: v.spec.max_body,
            max_duration_ms: v.spec.max_duration_ms,
            instance_reuse: v.spec.instance_reuse,
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
    /// Per-function outbound calls and circuit breakers, for functions
    /// that made any.
    #[serde(default)]
    pub outbound: BTreeMap<String, OutboundStatus>,
    /// Its memory budget and what is charged against it.
    #[serde(default)]
    pub memory: NodeMemory,
    /// Compiled code in memory for the functions loaded, by component
    /// digest: what loading another function of one of them costs less.
    #[serde(default)]
    pub code: BTreeMap<String, u64>,
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

/// `tern logs NAME`: what to read of a function's log, the newest `tail`
/// that match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsRequest {
    pub name: String,
    /// At most this many of the newest records.
    pub tail: usize,
    /// Only records at or after this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Only lines containing this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grep: Option<String>,
    /// Only lines (and the report) of this invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
}

impl LogsRequest {
    /// Whether `r` is one of the lines asked for (of whatever function).
    pub fn matches(&self, r: &crate::LogRecord) -> bool {
        self.since_ms.is_none_or(|s| r.ts_ms >= s)
            && self.grep.as_ref().is_none_or(|g| r.line.contains(g.as_str()))
            && self.invocation.as_ref().is_none_or(|i| &r.invocation == i)
    }
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
    fn generations_order_within_one_run_only() {
        let g = |boot: &str, changes| Generation { boot: boot.into(), changes };
        assert!(g("a", 1).older_than(&g("a", 2)));
        assert!(!g("a", 2).older_than(&g("a", 2)));
        assert!(!g("a", 3).older_than(&g("a", 2)));
        // A restarted worker starts counting again: never "older".
        assert!(!g("b", 0).older_than(&g("a", 9)));
    }

    #[test]
    fn a_batch_carries_each_event_with_its_length() {
        let one =
            EventDelivery { id: "a".into(), subject: "s".into(), headers: vec![], attempt: 2, trigger: None };
        let batch = EventBatch::of_one(one, 3);
        let json = serde_json::to_string(&batch).unwrap();
        let back: EventBatch = serde_json::from_str(&json).unwrap();
        assert_eq!((back.batch[0].len, back.batch[0].delivery.id.as_str()), (3, "a"));
        assert_eq!(back.batch[0].delivery.attempt, 2);
    }
}
