//! Worker membership: what each worker last said of itself (capacity,
//! labels, loaded functions, load), whether it is alive, and what the
//! scheduler's own commands changed since.

use crate::placement::NodeView;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tern_protocol::{
    Capacity, FunctionLoad, Generation, LOADED_FUNCTION_BYTES, NodeAnnounce, NodeMemory, NodeStatus,
    OutboundStatus,
};

/// Three missed one-second heartbeats and a node is dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(3500);
/// A node dead this long is forgotten (`tern status` stops listing it); if
/// it comes back it joins as new.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What the scheduler knows of one worker.
struct Node {
    last_seen: Instant,
    capacity: Capacity,
    labels: BTreeMap<String, String>,
    loaded: BTreeMap<String, u64>,
    artifacts: Vec<String>,
    load: BTreeMap<String, FunctionLoad>,
    outbound: BTreeMap<String, OutboundStatus>,
    memory: NodeMemory,
    /// Compiled code of its loaded components, by digest.
    code: BTreeMap<String, u64>,
    /// The newest generation heard, from a heartbeat or a command's reply.
    generation: Generation,
    /// Whether the last placement saw it alive (to log the change once).
    was_alive: bool,
    /// What functions placed on it since its last report will cost (its
    /// report's footprint does not count them yet).
    placed_bytes: u64,
}

impl Node {
    fn alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) < DEAD_AFTER
    }
}

/// What hearing from a node changed.
pub struct Heard {
    /// A new node, or one that was dead: placement should run now.
    pub returning: bool,
    /// The node's per-function counters in its previous state, if it was
    /// alive: the baseline for the autoscaler's samples.
    pub previous_load: Option<BTreeMap<String, FunctionLoad>>,
}

#[derive(Default)]
pub struct Nodes {
    nodes: Mutex<BTreeMap<String, Node>>,
}

impl Nodes {
    /// Takes in a worker's announce or heartbeat.
    pub fn observe(&self, state: NodeAnnounce) -> Heard {
        self.observe_at(state, Instant::now())
    }

    fn observe_at(&self, state: NodeAnnounce, now: Instant) -> Heard {
        let mut nodes = self.nodes.lock();
        let known = nodes.get(&state.node_id);
        let returning = known.is_none_or(|n| !n.alive(now));
        if returning {
            tracing::info!(node = %state.node_id, functions = state.loaded.len(), "node joined");
        }
        let previous_load = known.filter(|n| n.alive(now)).map(|n| n.load.clone());
        // A heartbeat sent before the node's latest assign or unassign was
        // answered says what it had loaded before: keep what the reply said.
        let stale = known.filter(|n| state.generation.older_than(&n.generation));
        let (loaded, artifacts, generation, placed_bytes) = match stale {
            Some(n) => (n.loaded.clone(), n.artifacts.clone(), n.generation.clone(), n.placed_bytes),
            None => (state.loaded, state.artifacts, state.generation, 0),
        };
        let node = Node {
            last_seen: now,
            capacity: state.capacity,
            labels: state.labels,
            loaded,
            artifacts,
            load: state.load,
            outbound: state.outbound,
            memory: state.memory,
            code: state.code,
            generation,
            was_alive: true,
            placed_bytes,
        };
        nodes.insert(state.node_id, node);
        Heard { returning, previous_load }
    }

    /// What the live nodes' workers measured of each loaded component's
    /// compiled code, by digest: the smallest report, so one worker that
    /// claims a huge size cannot keep a component off every node.
    pub fn code_sizes(&self) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for n in nodes.values().filter(|n| n.alive(now)) {
            for (digest, bytes) in &n.code {
                let size = sizes.entry(digest.clone()).or_insert(*bytes);
                *size = (*size).min(*bytes);
            }
        }
        sizes
    }

    /// [`Nodes::code_sizes`] of one component.
    pub fn code_size(&self, digest: &str) -> Option<u64> {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes.values().filter(|n| n.alive(now)).filter_map(|n| n.code.get(digest).copied()).min()
    }

    /// Functions loaded on any live node.
    pub fn loaded_anywhere(&self) -> std::collections::BTreeSet<String> {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes.values().filter(|n| n.alive(now)).flat_map(|n| n.loaded.keys().cloned()).collect()
    }

    /// Live nodes serving `function` at `version`.
    pub fn ready(&self, function: &str, version: u64) -> u32 {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes.values().filter(|n| n.alive(now) && n.loaded.get(function) == Some(&version)).count() as u32
    }

    /// Live nodes serving any version of `function`.
    pub fn ready_any(&self, function: &str) -> u32 {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes.values().filter(|n| n.alive(now) && n.loaded.contains_key(function)).count() as u32
    }

    /// `function`'s outbound calls and breakers, over the live nodes.
    pub fn outbound(&self, function: &str) -> OutboundStatus {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        let mut total = OutboundStatus::default();
        for (id, n) in nodes.iter().filter(|(_, n)| n.alive(now)) {
            if let Some(o) = n.outbound.get(function) {
                let mut o = o.clone();
                o.breakers.iter_mut().for_each(|b| b.node = id.clone());
                total.add(&o);
            }
        }
        total
    }

    /// Live nodes serving any version of `function`, by id.
    pub fn serving(&self, function: &str) -> Vec<String> {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .filter(|(_, n)| n.alive(now) && n.loaded.contains_key(function))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every node as placement sees it. Logs a node that died since the
    /// last call, once.
    pub fn views(&self) -> Vec<NodeView> {
        self.views_at(Instant::now())
    }

    fn views_at(&self, now: Instant) -> Vec<NodeView> {
        let mut nodes = self.nodes.lock();
        nodes.retain(|id, n| {
            let keep = now.saturating_duration_since(n.last_seen) < FORGET_AFTER;
            if !keep {
                tracing::info!(node = %id, "forgetting a node dead for {} min", FORGET_AFTER.as_secs() / 60);
            }
            keep
        });
        nodes
            .iter_mut()
            .map(|(id, n)| {
                let alive = n.alive(now);
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
                    load: n.load.clone(),
                }
            })
            .collect()
    }

    /// A live node matching `selector` with room, by its last report and
    /// what was placed on it since, for one more function of component
    /// `digest` (`code_bytes` of compiled code, unless the node has it) and
    /// one instance of `memory_bytes`: as [`crate::placement::plan`] ranks
    /// them, nodes with the artifact first, then the fullest.
    pub fn with_room(
        &self,
        selector: &BTreeMap<String, String>,
        digest: &str,
        code_bytes: u64,
        memory_bytes: u64,
    ) -> Option<String> {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        nodes
            .iter()
            .filter(|(_, n)| n.alive(now) && selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .filter_map(|(id, n)| {
                let has_code = n.code.contains_key(digest);
                let need = LOADED_FUNCTION_BYTES + if has_code { 0 } else { code_bytes } + memory_bytes;
                let charged = n.memory.footprint_bytes + n.placed_bytes;
                let free = (n.capacity.memory_mib << 20).saturating_sub(charged);
                let has_artifact = has_code || n.artifacts.iter().any(|a| a == digest);
                (need <= free).then_some((!has_artifact, free, id))
            })
            .min()
            .map(|(_, _, id)| id.clone())
    }

    /// A worker answered an assign: it serves `function` at `version`.
    pub fn placed(&self, node: &str, function: &str, version: u64, digest: &str, generation: Generation) {
        if let Some(n) = self.nodes.lock().get_mut(node) {
            if !n.loaded.contains_key(function) {
                n.placed_bytes += LOADED_FUNCTION_BYTES;
            }
            n.loaded.insert(function.to_string(), version);
            if !n.artifacts.iter().any(|a| a == digest) {
                n.artifacts.push(digest.to_string());
            }
            n.generation = generation;
        }
    }

    /// A worker answered an unassign.
    pub fn unplaced(&self, node: &str, function: &str, generation: Generation) {
        if let Some(n) = self.nodes.lock().get_mut(node) {
            n.loaded.remove(function);
            n.generation = generation;
        }
    }

    /// `tern status`'s nodes, and the live nodes serving each function.
    pub fn status(&self) -> (Vec<NodeStatus>, BTreeMap<String, Vec<String>>) {
        let now = Instant::now();
        let nodes = self.nodes.lock();
        let mut replicas: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut out = Vec::new();
        for (id, n) in nodes.iter() {
            let alive = n.alive(now);
            if alive {
                for f in n.loaded.keys() {
                    replicas.entry(f.clone()).or_default().push(id.clone());
                }
            }
            out.push(NodeStatus {
                node_id: id.clone(),
                alive,
                last_seen_ms_ago: now.saturating_duration_since(n.last_seen).as_millis() as u64,
                capacity: n.capacity.clone(),
                used_memory_mib: n.memory.charged_bytes() >> 20,
                memory: n.memory.clone(),
                labels: n.labels.clone(),
                loaded: n.loaded.clone(),
                load: n.load.clone(),
            });
        }
        (out, replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(node: &str, changes: u64, loaded: &[(&str, u64)]) -> NodeAnnounce {
        NodeAnnounce {
            node_id: node.into(),
            loaded: loaded.iter().map(|(f, v)| (f.to_string(), *v)).collect(),
            generation: Generation { boot: "b1".into(), changes },
            ..Default::default()
        }
    }

    #[test]
    fn a_heartbeat_older_than_a_command_reply_does_not_undo_it() {
        let nodes = Nodes::default();
        assert!(nodes.observe(state("n1", 1, &[])).returning);
        nodes.placed("n1", "f", 3, "d", Generation { boot: "b1".into(), changes: 2 });
        assert_eq!(nodes.ready("f", 3), 1);
        // Sent before the assign was answered: says nothing is loaded.
        let heard = nodes.observe(state("n1", 1, &[]));
        assert!(!heard.returning);
        assert_eq!(nodes.ready("f", 3), 1, "the stale heartbeat is ignored");
        // A newer one is believed.
        nodes.observe(state("n1", 3, &[]));
        assert_eq!(nodes.ready_any("f"), 0);
    }

    #[test]
    fn a_node_with_room_is_found_from_its_report_and_what_was_placed_since() {
        const MIB: u64 = 1 << 20;
        let nodes = Nodes::default();
        let with = |id: &str, changes: u64, footprint_mib: u64, code: &[&str]| {
            let mut s = state(id, changes, &[]);
            s.capacity.memory_mib = 100;
            s.memory.footprint_bytes = footprint_mib * MIB;
            s.code = code.iter().map(|d| (d.to_string(), 10 * MIB)).collect();
            nodes.observe(s);
        };
        with("empty", 1, 0, &[]);
        with("fuller", 1, 40, &["d"]);
        let pick = |code_mib: u64, memory_mib: u64| {
            nodes.with_room(&BTreeMap::new(), "d", code_mib * MIB, memory_mib * MIB)
        };
        assert_eq!(pick(10, 45).as_deref(), Some("fuller"), "the node with the component's code first");
        assert_eq!(pick(10, 60).as_deref(), Some("empty"), "where it fits, with its code");
        assert_eq!(pick(10, 95).as_deref(), None, "nowhere without unloading");
        // Placed since the last report: counted until the next one.
        for i in 0..200 {
            nodes.placed("fuller", &format!("f{i}"), 1, "d", Generation { boot: "b1".into(), changes: 2 });
        }
        assert_eq!(pick(10, 45).as_deref(), Some("empty"), "200 x 96 KiB more: no room for 45 MiB");
        with("fuller", 3, 40, &["d"]);
        assert_eq!(pick(10, 45).as_deref(), Some("fuller"), "the next report counts them itself");
    }

    #[test]
    fn a_silent_node_is_dead_and_comes_back_as_returning() {
        let nodes = Nodes::default();
        let start = Instant::now();
        nodes.observe_at(state("n1", 1, &[("f", 1)]), start);
        let later = start + DEAD_AFTER + Duration::from_millis(1);
        let heard = nodes.observe_at(state("n1", 1, &[("f", 1)]), later);
        assert!(heard.returning, "silent past DEAD_AFTER");
        assert!(heard.previous_load.is_none(), "a dead node's counters are no baseline");
        let heard = nodes.observe_at(state("n1", 1, &[("f", 1)]), later + Duration::from_millis(900));
        assert!(!heard.returning && heard.previous_load.is_some());
    }

    #[test]
    fn a_long_dead_node_is_forgotten() {
        let nodes = Nodes::default();
        let start = Instant::now();
        nodes.observe_at(state("gone", 1, &[]), start);
        nodes.observe_at(state("here", 1, &[]), start + FORGET_AFTER);
        let ids = |v: Vec<NodeView>| v.into_iter().map(|n| (n.id, n.alive)).collect::<Vec<_>>();
        assert_eq!(ids(nodes.views_at(start + FORGET_AFTER)), vec![("here".into(), true)]);
    }

    #[test]
    fn status_counts_memory_and_replicas_of_live_nodes() {
        let nodes = Nodes::default();
        let mut n1 = state("n1", 1, &[("f", 1), ("g", 2)]);
        n1.memory = NodeMemory { footprint_bytes: 3 << 20, held_bytes: 128 << 20, ..Default::default() };
        nodes.observe(n1);
        nodes.observe(state("n2", 1, &[("f", 1)]));
        let (status, replicas) = nodes.status();
        assert_eq!(status.iter().map(|n| n.used_memory_mib).collect::<Vec<_>>(), vec![131, 0]);
        assert_eq!(replicas["f"], vec!["n1", "n2"]);
        assert_eq!(nodes.views().len(), 2);
    }
}
