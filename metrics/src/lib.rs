//! Tern's metrics: one registry per process (`tern up` shares it between
//! its roles), the metric list every role reports into, and the text a
//! scrape gets.
//!
//! Label values are bounded by what an operator deploys (function names,
//! versions, node ids, status codes, subjects' first token), never by what
//! a client sends (no paths, no event ids).
//!
//! A [`Metrics::disabled`] registry (`--no-metrics`) records nothing: each
//! method returns at once.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

mod process;
pub mod serve;
mod text;

pub use text::{Format, OPENMETRICS, PROMETHEUS_TEXT};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    version: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    version: String,
    trigger: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    function: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    function: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubjectLabel {
    subject_root: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    function: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    function: String,
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeMemoryLabels {
    node: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// Histograms of one bucket layout.
#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Request durations: 0.5 ms to 60 s.
const DURATION: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Cold starts: 1 ms to 30 s.
const COLD_START: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Instantiating a component: 5 µs to 50 ms.
const INSTANTIATE: &[f64] =
    &[0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

pub struct Metrics {
    enabled: bool,
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    duration: Family<CallLabels, Histogram, Buckets>,
    inflight: Family<FunctionLabel, Gauge>,
    cold_starts: Family<FunctionLabel, Counter>,
    cold_start_seconds: Family<FunctionLabel, Histogram, Buckets>,
    activator_held: Family<FunctionLabel, Gauge>,
    activator_rejected: Family<RejectedLabels, Counter>,
    replicas: Family<ReplicaLabels, Gauge>,
    desired: Family<FunctionLabel, Gauge>,
    panic: Family<FunctionLabel, Gauge>,
    published: Family<SubjectLabel, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    backlog: Family<TriggerLabels, Gauge>,
    dead_letters: Family<FunctionLabel, Gauge>,
    node_memory: Family<NodeMemoryLabels, Gauge>,
    node_instances: Family<NodeLabel, Gauge>,
    evictions: Family<NodeLabel, Counter>,
    instantiate: Histogram,
    process: process::ProcessMetrics,
}

fn label(f: &str) -> FunctionLabel {
    FunctionLabel { function: f.to_string() }
}

impl Metrics {
    /// A registry with every metric of the list, at zero.
    pub fn new() -> Self {
        Self::build(true)
    }

    /// One that records nothing and renders nothing (`--no-metrics`).
    pub fn disabled() -> Self {
        Self::build(false)
    }

    fn build(enabled: bool) -> Self {
        let mut r = Registry::default();
        let invocations = Family::default();
        r.register(
            "tern_function_invocations",
            "Invocations of a function by version, trigger (http, event, cron, invoke) and status code",
            invocations.clone(),
        );
        let duration = Family::new_with_constructor(Buckets(DURATION));
        r.register(
            "tern_function_duration_seconds",
            "Time from a worker taking an invocation to the end of its answer",
            duration.clone(),
        );
        let inflight = Family::default();
        r.register("tern_function_inflight", "Invocations running now", inflight.clone());
        let cold_starts = Family::default();
        r.register(
            "tern_function_cold_starts",
            "Times a function was started from zero for requests waiting on it",
            cold_starts.clone(),
        );
        let cold_start_seconds = Family::new_with_constructor(Buckets(COLD_START));
        r.register(
            "tern_function_cold_start_seconds",
            "Time from the first request finding no replica to a replica being ready",
            cold_start_seconds.clone(),
        );
        let activator_held = Family::default();
        r.register(
            "tern_activator_held",
            "Requests held while their function starts",
            activator_held.clone(),
        );
        let activator_rejected = Family::default();
        r.register(
            "tern_activator_rejected",
            "Requests for a function at zero that got 503, by reason (full, bytes_full, timeout, refused)",
            activator_rejected.clone(),
        );
        let replicas = Family::default();
        r.register(
            "tern_function_replicas",
            "Replicas of a function: ready, and wanted by placement",
            replicas.clone(),
        );
        let desired = Family::default();
        r.register("tern_autoscaler_desired_replicas", "Replicas the autoscaler decided on", desired.clone());
        let panic = Family::default();
        r.register(
            "tern_autoscaler_panic",
            "1 while the autoscaler is in panic mode for the function",
            panic.clone(),
        );
        let published = Family::default();
        r.register(
            "tern_event_published",
            "Events stored, by the first token of their subject",
            published.clone(),
        );
        let deliveries = Family::default();
        r.register(
            "tern_event_deliveries",
            "Event deliveries settled, by outcome (ack, retry, dead_letter)",
            deliveries.clone(),
        );
        let backlog = Family::default();
        r.register("tern_event_backlog", "Events a trigger has not delivered yet", backlog.clone());
        let dead_letters = Family::default();
        r.register("tern_event_dead_letters", "Dead letters kept for the function", dead_letters.clone());
        let node_memory = Family::default();
        r.register(
            "tern_node_memory_bytes",
            "A worker's memory: its budget; reserved: what is charged against it, loaded (functions loaded) \
             plus held (by running instances, each its --memory); in_use (instances' linear memory); rss",
            node_memory.clone(),
        );
        let evictions = Family::default();
        r.register(
            "tern_node_evictions",
            "Idle functions unloaded from a worker to make room for one a request waits for",
            evictions.clone(),
        );
        let node_instances = Family::default();
        r.register("tern_node_instances", "Instances running on a worker now", node_instances.clone());
        let instantiate = Histogram::new(INSTANTIATE.iter().copied());
        r.register(
            "tern_worker_instantiate_seconds",
            "Time to make a fresh instance of a component",
            instantiate.clone(),
        );
        let process = process::ProcessMetrics::register(&mut r);
        Metrics {
            enabled,
            registry: r,
            invocations,
            duration,
            inflight,
            cold_starts,
            cold_start_seconds,
            activator_held,
            activator_rejected,
            replicas,
            desired,
            panic,
            published,
            deliveries,
            backlog,
            dead_letters,
            node_memory,
            node_instances,
            evictions,
            instantiate,
            process,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The scrape: every metric in `format`, process metrics read now.
    /// None when disabled.
    pub fn render(&self, format: Format) -> Option<String> {
        if !self.enabled {
            return None;
        }
        self.process.refresh();
        Some(text::render(&self.registry, format))
    }
}

/// What the roles record: one method per thing that happened, each a no-op
/// when the registry is disabled.
impl Metrics {
    /// One finished invocation.
    #[allow(clippy::too_many_arguments)]
    pub fn invocation(
        &self,
        function: &str,
        version: u64,
        trigger: &str,
        status: u16,
        took: Duration,
        instantiate: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let call = CallLabels {
            function: function.to_string(),
            version: version.to_string(),
            trigger: trigger.to_string(),
        };
        self.duration.get_or_create(&call).observe(took.as_secs_f64());
        let labels = InvocationLabels {
            function: call.function,
            version: call.version,
            trigger: call.trigger,
            code: status.to_string(),
        };
        self.invocations.get_or_create(&labels).inc();
        if !instantiate.is_zero() {
            self.instantiate.observe(instantiate.as_secs_f64());
        }
    }

    /// Invocations of `function` running now (a worker reports what its
    /// load counters already count, once a second).
    pub fn inflight(&self, function: &str, running: u64) {
        if self.enabled {
            self.inflight.get_or_create(&label(function)).set(running as i64);
        }
    }

    /// A function at zero became ready after `took`.
    pub fn cold_start(&self, function: &str, took: Duration) {
        if self.enabled {
            let f = label(function);
            self.cold_starts.get_or_create(&f).inc();
            self.cold_start_seconds.get_or_create(&f).observe(took.as_secs_f64());
        }
    }

    pub fn held(&self, function: &str, delta: i64) {
        if self.enabled {
            self.activator_held.get_or_create(&label(function)).inc_by(delta);
        }
    }

    /// A held request was answered 503; `reason` is one of a fixed few.
    pub fn rejected(&self, function: &str, reason: &'static str) {
        if self.enabled {
            let labels = RejectedLabels { function: function.to_string(), reason: reason.to_string() };
            self.activator_rejected.get_or_create(&labels).inc();
        }
    }

    /// The scheduler's view of a function's scale.
    pub fn scale(&self, function: &str, ready: u32, wanted: u32, desired: u32, panicking: bool) {
        if !self.enabled {
            return;
        }
        for (state, n) in [("ready", ready), ("wanted", wanted)] {
            let labels = ReplicaLabels { function: function.to_string(), state: state.to_string() };
            self.replicas.get_or_create(&labels).set(n as i64);
        }
        self.desired.get_or_create(&label(function)).set(desired as i64);
        self.panic.get_or_create(&label(function)).set(panicking as i64);
    }

    /// `function` was deleted: its gauges go (its counters stay, as
    /// counters do, until the process restarts).
    pub fn forget(&self, function: &str) {
        let f = label(function);
        for state in ["ready", "wanted"] {
            self.replicas.remove(&ReplicaLabels { function: f.function.clone(), state: state.to_string() });
        }
        self.desired.remove(&f);
        self.panic.remove(&f);
        self.inflight.remove(&f);
        self.activator_held.remove(&f);
        self.dead_letters.remove(&f);
    }

    /// An event was stored on `subject`.
    pub fn published(&self, subject: &str) {
        if self.enabled {
            let root = subject.split('.').next().unwrap_or_default().to_string();
            self.published.get_or_create(&SubjectLabel { subject_root: root }).inc();
        }
    }

    /// A delivery was settled: `outcome` is ack, retry or dead_letter.
    pub fn delivery(&self, function: &str, outcome: &'static str) {
        if self.enabled {
            let labels = DeliveryLabels { function: function.to_string(), outcome: outcome.to_string() };
            self.deliveries.get_or_create(&labels).inc();
        }
    }

    /// What a trigger has not delivered yet, and the function's dead letters.
    pub fn backlog(&self, function: &str, trigger: &str, pending: u64) {
        if self.enabled {
            let labels = TriggerLabels { function: function.to_string(), trigger: trigger.to_string() };
            self.backlog.get_or_create(&labels).set(pending as i64);
        }
    }

    pub fn dead_letters(&self, function: &str, count: u64) {
        if self.enabled {
            self.dead_letters.get_or_create(&label(function)).set(count as i64);
        }
    }

    /// A worker's memory (bytes) and running instances.
    /// A worker's memory (`kind`, bytes) and instances running.
    pub fn node(&self, node: &str, memory: &[(&str, u64)], instances: u64) {
        if !self.enabled {
            return;
        }
        for &(kind, v) in memory {
            let labels = NodeMemoryLabels { node: node.to_string(), kind: kind.to_string() };
            self.node_memory.get_or_create(&labels).set(v as i64);
        }
        self.node_instances.get_or_create(&NodeLabel { node: node.to_string() }).set(instances as i64);
    }

    /// The scheduler unloaded an idle function from `node` to make room.
    pub fn evicted(&self, node: &str) {
        if self.enabled {
            self.evictions.get_or_create(&NodeLabel { node: node.to_string() }).inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// This process's resident set, in bytes (0 if it cannot be read).
pub fn rss_bytes() -> u64 {
    process::rss_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_rendered_with_their_labels() {
        let m = Metrics::new();
        m.invocation("hello", 3, "http", 200, Duration::from_millis(2), Duration::from_micros(40));
        m.invocation("hello", 3, "http", 500, Duration::from_millis(2), Duration::ZERO);
        m.scale("hello", 1, 2, 2, true);
        m.published("orders.created");
        m.delivery("audit", "dead_letter");
        let text = m.render(Format::Prometheus).unwrap();
        for want in [
            r#"tern_function_invocations_total{function="hello",version="3",trigger="http",code="200"} 1"#,
            r#"tern_function_invocations_total{function="hello",version="3",trigger="http",code="500"} 1"#,
            r#"tern_function_duration_seconds_count{function="hello",version="3",trigger="http"} 2"#,
            r#"tern_function_replicas{function="hello",state="wanted"} 2"#,
            r#"tern_autoscaler_panic{function="hello"} 1"#,
            r#"tern_event_published_total{subject_root="orders"} 1"#,
            r#"tern_event_deliveries_total{function="audit",outcome="dead_letter"} 1"#,
            "tern_worker_instantiate_seconds_count 1",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        m.forget("hello");
        let text = m.render(Format::Prometheus).unwrap();
        assert!(!text.contains(r#"tern_autoscaler_panic{function="hello"}"#));
    }

    #[test]
    fn a_disabled_registry_records_and_renders_nothing() {
        let m = Metrics::disabled();
        m.invocation("hello", 1, "http", 200, Duration::from_millis(1), Duration::ZERO);
        assert!(m.render(Format::Prometheus).is_none());
    }
}
