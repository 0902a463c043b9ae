//! What a user deploys: the function spec, its limits and defaults, and
//! the immutable versions the registry keeps.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_MEMORY_MIB: u32 = 128;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest memory a function may ask for: wasm32's whole address space.
pub const MAX_MEMORY_MIB: u32 = 4096;
/// What one loaded function costs a worker beside its compiled code: its
/// pre-instantiated component, bus subscription, counters and settings.
/// Estimated from RSS: `tern up` grew by 63 to 186 KiB per function from
/// none to 3,000 and 1,000 loaded (BENCHMARKS.md, "Density").
pub const LOADED_FUNCTION_BYTES: u64 = 96 << 10;
/// A component's compiled code, per byte of the component, as estimated
/// before any worker has compiled it (then its measured size is used).
pub const COMPILED_BYTES_PER_COMPONENT_BYTE: u64 = 3;
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Request and response bodies past this get 413 / 502.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Room left in a bus message for a frame's header beside its body.
pub const FRAME_HEADER_ROOM: usize = 64 * 1024;

/// The body limit on a bus that carries at most `max_payload` bytes per
/// message: a body travels in one message with its header.
pub fn body_limit(max_payload: usize) -> usize {
    DEFAULT_BODY_LIMIT.min(max_payload.saturating_sub(FRAME_HEADER_ROOM))
}
/// Replicas kept loaded when idle, by default: none (scale to zero).
pub const DEFAULT_MIN_SCALE: u32 = 0;
/// Most replicas by default: 0 means no limit but the number of workers.
pub const DEFAULT_MAX_SCALE: u32 = 0;
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
/// An outbound response body past this is cut (`--max-outbound-body`).
pub const DEFAULT_OUTBOUND_BODY: u64 = 8 * 1024 * 1024;
pub const MAX_OUTBOUND_BODY: u64 = 1024 * 1024 * 1024;
/// A request or response body past this is refused or cut (`--max-body`):
/// what a buffered platform allowed, so nothing changed for those who
/// never set it.
pub const DEFAULT_MAX_BODY: u64 = 8 * 1024 * 1024;
/// The largest `--max-body`: bodies stream, so this bounds what a client
/// may send or a guest may write, not memory.
pub const MAX_MAX_BODY: u64 = 4 * 1024 * 1024 * 1024;
/// How long a streamed response (or upload) may take in all, by default.
pub const DEFAULT_MAX_DURATION_MS: u64 = 15 * 60 * 1000;
/// The longest `--max-duration`.
pub const MAX_MAX_DURATION_MS: u64 = 24 * 3_600_000;
/// The most requests one instance may serve (`--instance-reuse`): past a
/// million, a leak in the guest would have had too long to grow.
pub const MAX_INSTANCE_REUSE: u32 = 1_000_000;

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
    /// Key-value buckets the function may open (`wasi:keyvalue/store.open`);
    /// any other is access-denied. Functions granted a name share it.
    #[serde(default)]
    pub kv: Vec<String>,
    /// Secrets the function may read, each as the `wasi:config` key of its
    /// name. The version keeps the names; the values are looked up when an
    /// instance is made, so a rotated secret needs no redeploy.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Event subjects the function may publish on (`tern:events/publisher`),
    /// NATS wildcards allowed; any other subject is denied.
    #[serde(default)]
    pub allow_publish: Vec<String>,
    /// Hosts the function may send HTTP requests to
    /// ([`crate::outbound::OutboundPattern`]); any other is denied.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Largest response body one outbound request may bring back.
    #[serde(default = "default_outbound_body_bytes")]
    pub max_outbound_body: u64,
    /// Largest request body a client may send and response body the
    /// function may write, enforced as bytes flow.
    #[serde(default = "default_max_body")]
    pub max_body: u64,
    /// How long one request may take in all, a streamed body included;
    /// `timeout_ms` bounds the time to the response head and between chunks.
    #[serde(default = "default_max_duration")]
    pub max_duration_ms: u64,
    /// Requests one instance serves one after another before it is
    /// dropped (`--instance-reuse N`); 0 or 1: a fresh instance for every
    /// request. A reused instance keeps its memory (globals, caches)
    /// between requests, never serves two at once, and is dropped after a
    /// trap, a timeout or a limit.
    #[serde(default)]
    pub instance_reuse: u32,
}

pub(crate) fn default_outbound_body_bytes() -> u64 {
    DEFAULT_OUTBOUND_BODY
}
pub(crate) fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}
pub(crate) fn default_max_duration() -> u64 {
    DEFAULT_MAX_DURATION_MS
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
            min_scale: DEFAULT_MIN_SCALE,
            max_scale: DEFAULT_MAX_SCALE,
            concurrency: DEFAULT_CONCURRENCY,
            idle_ms: DEFAULT_IDLE_MS,
            node_selector: BTreeMap::new(),
            on_event: Vec::new(),
            schedule: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_ms: DEFAULT_BACKOFF_MS,
            kv: Vec::new(),
            secrets: Vec::new(),
            allow_publish: Vec::new(),
            allow_outbound: Vec::new(),
            max_outbound_body: DEFAULT_OUTBOUND_BODY,
            max_body: DEFAULT_MAX_BODY,
            max_duration_ms: DEFAULT_MAX_DURATION_MS,
            instance_reuse: 0,
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

    /// Writes every route in its normal form (`/hello/` is `/hello`), as the
    /// registry stores them. Unparsable routes are left for `validate`.
    pub fn normalise_routes(&mut self) {
        for r in &mut self.routes {
            if let Ok(p) = crate::route::RoutePattern::parse(r) {
                *r = p.normal();
            }
        }
    }

    /// Checks everything that does not need the component or the registry.
    pub fn validate(&self) -> Result<(), String> {
        validate_function_name(&self.name)?;
        let mut seen = std::collections::HashMap::new();
        for r in &self.routes {
            let pattern = crate::route::RoutePattern::parse(r).map_err(|e| format!("route {r:?}: {e}"))?;
            if pattern.reaches_gateway() {
                return Err(format!(
                    "route {r:?} would reach a path the gateway keeps for itself: {} (the admin API), {} or {} (the dashboard)",
                    crate::route::ADMIN_PREFIX,
                    crate::route::METRICS_PATH,
                    crate::route::UI_PREFIX,
                ));
            }
            if let Some(other) = seen.insert(pattern.shape(), r) {
                if other == r {
                    return Err(format!("route {r:?} is given twice"));
                }
                return Err(format!("routes {other:?} and {r:?} match the same requests; give one"));
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
        if self.max_body == 0 || self.max_body > MAX_MAX_BODY {
            return Err(format!("max body {} bytes is out of range (1 byte ..= 4 GiB)", self.max_body));
        }
        if self.max_duration_ms < self.timeout_ms || self.max_duration_ms > MAX_MAX_DURATION_MS {
            return Err(format!(
                "max duration {} ms is out of range (the timeout, {} ms, ..= 24 h)",
                self.max_duration_ms, self.timeout_ms
            ));
        }
        if self.instance_reuse > MAX_INSTANCE_REUSE {
            return Err(format!(
                "instance reuse {} is out of range (0..={MAX_INSTANCE_REUSE} requests per instance)",
                self.instance_reuse
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
        for b in &self.kv {
            validate_bucket_name(b)?;
            if !seen.insert(b) {
                return Err(format!("bucket {b:?} is granted twice"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.secrets {
            validate_secret_name(s)?;
            if !seen.insert(s) {
                return Err(format!("secret {s:?} is granted twice"));
            }
            if self.env.contains_key(s) {
                return Err(format!("config key {s:?} is both an --env value and a --secret; rename one"));
            }
        }
        for p in &self.allow_publish {
            crate::nats_subject::check_trigger(p).map_err(|e| format!("--allow-publish {p:?}: {e}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.allow_outbound {
            crate::outbound::OutboundPattern::parse(p)?;
            if !seen.insert(p) {
                return Err(format!("--allow-outbound {p:?} is given twice"));
            }
        }
        if self.max_outbound_body == 0 || self.max_outbound_body > MAX_OUTBOUND_BODY {
            return Err(format!(
                "max outbound body {} bytes is out of range (1 byte ..= 1 GiB)",
                self.max_outbound_body
            ));
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

/// Whether `digest` is a sha256 as Tern writes it: 64 lowercase hex
/// characters. Digests arrive in messages and become file names and keys,
/// so nothing else is let near the filesystem.
pub fn valid_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

/// A key-value bucket's name: the same rule as a function's, so it is safe
/// in a sled tree name and a JetStream bucket name.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    validate_function_name(name).map_err(|_| {
        format!(
            "bucket name {name:?} is not valid: use 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )
    })
}

/// A secret's name, which is also its config key: 1-128 characters of
/// letters, digits, '_', '-' and '.', starting with a letter or '_'.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && (name.as_bytes()[0].is_ascii_alphabetic() || name.as_bytes()[0] == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name {name:?} is not valid: use 1-128 letters, digits, '_', '-' and '.', starting with a letter or '_'"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex_is_a_digest() {
        assert!(valid_digest(&"ab12".repeat(16)));
        for bad in ["", "../../etc/passwd", &"A".repeat(64), &"a".repeat(63), &format!("{}/", "a".repeat(63))]
        {
            assert!(!valid_digest(bad), "{bad}");
        }
    }

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
        s.max_body = 0;
        assert!(s.validate().unwrap_err().contains("max body 0 bytes is out of range"));
        s.max_body = MAX_MAX_BODY + 1;
        assert!(s.validate().unwrap_err().contains("max body"));
        s.max_body = MAX_MAX_BODY;
        s.max_duration_ms = 999;
        assert!(
            s.validate().unwrap_err().contains("max duration 999 ms is out of range (the timeout, 1000 ms")
        );
        s.max_duration_ms = MAX_MAX_DURATION_MS + 1;
        assert!(s.validate().unwrap_err().contains("max duration"));
        s.max_duration_ms = 1000;
        s.instance_reuse = MAX_INSTANCE_REUSE + 1;
        assert!(s.validate().unwrap_err().contains("instance reuse"));
        s.instance_reuse = MAX_INSTANCE_REUSE;
        assert!(s.validate().is_ok());
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
