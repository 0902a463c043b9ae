//! Placement: from the observed cluster and the desired functions to the
//! commands that close the gap. Pure: no I/O, no clock; the scheduler's loop
//! gathers the state and carries the commands out.
//!
//! Rules, in order:
//! - a replica is a function loaded on one worker, so a function has at most
//!   one replica per node (its replicas spread across nodes);
//! - only live nodes whose labels match the function's selector are used;
//!   replicas on dead nodes do not count, so they are replaced elsewhere;
//! - a node takes a replica only if the function's memory limit fits in
//!   what its other replicas leave of its budget;
//! - among the nodes that fit, those that already hold the artifact come
//!   first, then the fullest (pack, so large functions still find room);
//! - replicas beyond the wanted count, or of functions no longer wanted, are
//!   unloaded; a replica of an older version is told the new one.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub id: String,
    pub alive: bool,
    pub memory_budget_mib: u64,
    pub labels: BTreeMap<String, String>,
    /// Function → loaded version.
    pub loaded: BTreeMap<String, u64>,
    pub artifacts: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct Want {
    pub function: String,
    pub version: u64,
    pub digest: String,
    pub memory_mib: u32,
    pub replicas: u32,
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// Load (or switch to) the wanted version of `function` on `node`.
    Assign {
        node: String,
        function: String,
    },
    Unassign {
        node: String,
        function: String,
    },
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn plan(nodes: &[NodeView], wants: &[Want]) -> Vec<Command> {
    let by_name: BTreeMap<&str, &Want> = wants.iter().map(|w| (w.function.as_str(), w)).collect();
    let mut cmds = Vec::new();
    // Memory each live node has promised to the replicas it keeps.
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();

    for node in nodes.iter().filter(|n| n.alive) {
        let u = used.entry(&node.id).or_default();
        for function in node.loaded.keys() {
            match by_name.get(function.as_str()) {
                Some(w) if matches(&w.selector, &node.labels) => *u += w.memory_mib as u64,
                _ => cmds.push(Command::Unassign { node: node.id.clone(), function: function.clone() }),
            }
        }
    }

    for want in wants {
        let eligible = |n: &&NodeView| n.alive && matches(&want.selector, &n.labels);
        let mut current: Vec<&NodeView> =
            nodes.iter().filter(eligible).filter(|n| n.loaded.contains_key(&want.function)).collect();
        let wanted = want.replicas as usize;

        if current.len() > wanted {
            // Keep the replicas on the nodes with the most room.
            current
                .sort_by_key(|n| std::cmp::Reverse(n.memory_budget_mib.saturating_sub(used[n.id.as_str()])));
            for n in current.split_off(wanted) {
                *used.get_mut(n.id.as_str()).unwrap() -= want.memory_mib as u64;
                cmds.push(Command::Unassign { node: n.id.clone(), function: want.function.clone() });
            }
        }
        for n in &current {
            if n.loaded[&want.function] != want.version {
                cmds.push(Command::Assign { node: n.id.clone(), function: want.function.clone() });
            }
        }
        if current.len() < wanted {
            let mut candidates: Vec<&NodeView> = nodes
                .iter()
                .filter(eligible)
                .filter(|n| !n.loaded.contains_key(&want.function))
                .filter(|n| n.memory_budget_mib.saturating_sub(used[n.id.as_str()]) >= want.memory_mib as u64)
                .collect();
            candidates.sort_by_key(|n| {
                let free = n.memory_budget_mib.saturating_sub(used[n.id.as_str()]);
                (!n.artifacts.contains(&want.digest), free, n.id.clone())
            });
            for n in candidates.into_iter().take(wanted - current.len()) {
                *used.get_mut(n.id.as_str()).unwrap() += want.memory_mib as u64;
                cmds.push(Command::Assign { node: n.id.clone(), function: want.function.clone() });
            }
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, budget: u64) -> NodeView {
        NodeView { id: id.into(), alive: true, memory_budget_mib: budget, ..Default::default() }
    }

    fn want(f: &str, replicas: u32, memory: u32) -> Want {
        Want {
            function: f.into(),
            version: 1,
            digest: format!("d-{f}"),
            memory_mib: memory,
            replicas,
            selector: BTreeMap::new(),
        }
    }

    fn assigns(cmds: &[Command]) -> Vec<(String, String)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Assign { node, function } => Some((node.clone(), function.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replicas_of_one_function_spread_across_nodes() {
        let nodes = [node("a", 1024), node("b", 1024), node("c", 1024)];
        let cmds = plan(&nodes, &[want("f", 2, 128)]);
        let a = assigns(&cmds);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].0, a[1].0, "two replicas on one node: {a:?}");
    }

    #[test]
    fn more_replicas_than_nodes_places_one_per_node() {
        let cmds = plan(&[node("a", 1024), node("b", 1024)], &[want("f", 5, 128)]);
        assert_eq!(assigns(&cmds).len(), 2);
    }

    #[test]
    fn packs_onto_the_fullest_node_that_fits() {
        let mut a = node("a", 1024);
        a.loaded.insert("big".into(), 1);
        let cmds = plan(&[a, node("b", 1024)], &[want("big", 1, 512), want("small", 1, 128)]);
        assert_eq!(assigns(&cmds), [("a".to_string(), "small".to_string())]);
    }

    #[test]
    fn respects_memory_budget() {
        let mut a = node("a", 256);
        a.loaded.insert("big".into(), 1);
        let cmds = plan(&[a, node("b", 100)], &[want("big", 1, 200), want("other", 1, 128)]);
        assert!(assigns(&cmds).is_empty(), "nothing fits: {cmds:?}");
    }

    #[test]
    fn prefers_nodes_that_hold_the_artifact() {
        let mut b = node("b", 1024);
        b.artifacts.insert("d-f".into());
        let mut a = node("a", 1024);
        a.loaded.insert("other".into(), 1); // fuller, but without the artifact
        let cmds = plan(&[a, b], &[want("f", 1, 128), want("other", 1, 128)]);
        assert_eq!(assigns(&cmds), [("b".to_string(), "f".to_string())]);
    }

    #[test]
    fn honours_the_node_selector() {
        let mut gpu = node("gpu", 1024);
        gpu.labels.insert("accel".into(), "yes".into());
        let mut w = want("f", 1, 128);
        w.selector.insert("accel".into(), "yes".into());
        assert_eq!(
            assigns(&plan(&[node("plain", 4096), gpu.clone()], std::slice::from_ref(&w))),
            [("gpu".to_string(), "f".to_string())]
        );
        assert!(assigns(&plan(&[node("plain", 4096)], &[w.clone()])).is_empty());
        // A replica on a node that no longer matches is removed.
        let mut plain = node("plain", 4096);
        plain.loaded.insert("f".into(), 1);
        let cmds = plan(&[plain, gpu], &[w]);
        assert!(cmds.contains(&Command::Unassign { node: "plain".into(), function: "f".into() }));
    }

    #[test]
    fn replaces_replicas_of_dead_nodes() {
        let mut dead = node("dead", 1024);
        dead.alive = false;
        dead.loaded.insert("f".into(), 1);
        let cmds = plan(&[dead, node("live", 1024)], &[want("f", 1, 128)]);
        assert_eq!(cmds, [Command::Assign { node: "live".into(), function: "f".into() }]);
    }

    #[test]
    fn steady_state_needs_no_commands() {
        let mut a = node("a", 1024);
        a.loaded.insert("f".into(), 1);
        assert!(plan(&[a], &[want("f", 1, 128)]).is_empty());
    }

    #[test]
    fn new_versions_extra_replicas_and_unwanted_functions() {
        let mut a = node("a", 1024);
        a.loaded.insert("f".into(), 1);
        a.loaded.insert("gone".into(), 3);
        let mut b = node("b", 2048);
        b.loaded.insert("f".into(), 1);
        let mut w = want("f", 1, 128);
        w.version = 2;
        let mut cmds = plan(&[a, b], &[w]);
        cmds.sort();
        assert_eq!(
            cmds,
            [
                // b has more room, so it keeps the replica and gets version 2.
                Command::Assign { node: "b".into(), function: "f".into() },
                Command::Unassign { node: "a".into(), function: "f".into() },
                Command::Unassign { node: "a".into(), function: "gone".into() },
            ]
        );
    }
}
