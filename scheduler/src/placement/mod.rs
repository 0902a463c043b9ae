//! Placement: from the observed cluster and the desired functions to the
//! commands that close the gap. Pure: no I/O, no clock; the scheduler's loop
//! gathers the state and carries the commands out.
//!
//! Rules, in order:
//! - a replica is a function loaded on one worker, so a function has at most
//!   one replica per node (its replicas spread across nodes);
//! - only live nodes whose labels match the function's selector are used;
//!   replicas on dead nodes do not count, so they are replaced elsewhere;
//! - a loaded function costs its node what loading it takes ([`room`]):
//!   its compiled code (once per component) and a small part of its own.
//!   A node takes a replica if that, and room for one instance of it
//!   (`--memory`), fit in its budget; how many instances run at once is
//!   the worker's to bound, by the same budget;
//! - among the nodes that fit, those that already hold the artifact come
//!   first, then the fullest (pack, so large functions still find room);
//! - a function being woken (a request waits for it) that fits nowhere
//!   makes room: the least recently used idle functions (none running, not
//!   kept by `--min-scale`) are unloaded from one node until it fits;
//! - replicas beyond the wanted count, or of functions no longer wanted, are
//!   unloaded; a replica of an older version is told the new one.

mod room;
#[cfg(test)]
mod tests;

use room::Room;
use std::collections::{BTreeMap, BTreeSet};
use tern_protocol::FunctionLoad;

#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub id: String,
    pub alive: bool,
    pub memory_budget_mib: u64,
    pub labels: BTreeMap<String, String>,
    /// Function → loaded version.
    pub loaded: BTreeMap<String, u64>,
    pub artifacts: BTreeSet<String>,
    /// Per loaded function: its invocations running, and how long idle.
    pub load: BTreeMap<String, FunctionLoad>,
}

#[derive(Debug, Clone)]
pub struct Want {
    pub function: String,
    pub version: u64,
    pub digest: String,
    pub memory_mib: u32,
    pub replicas: u32,
    pub selector: BTreeMap<String, String>,
    /// What its compiled code takes in a worker's memory (measured by a
    /// worker that has it loaded, else estimated from its size).
    pub code_bytes: u64,
    /// `--min-scale` keeps it loaded: never unloaded to make room.
    pub kept: bool,
    /// A request waits for it: it may unload idle functions to fit.
    pub waking: bool,
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
    /// Unload idle `function` from `node` to make room for `for_function`.
    Evict {
        node: String,
        function: String,
        for_function: String,
    },
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn plan(nodes: &[NodeView], wants: &[Want]) -> Vec<Command> {
    let by_name: BTreeMap<&str, &Want> = wants.iter().map(|w| (w.function.as_str(), w)).collect();
    let mut cmds = Vec::new();
    // What each live node's loaded functions cost, as this plan changes it.
    let mut rooms: BTreeMap<&str, Room> = BTreeMap::new();

    for node in nodes.iter().filter(|n| n.alive) {
        let mut room = Room::new(node.memory_budget_mib << 20);
        for function in node.loaded.keys() {
            match by_name.get(function.as_str()) {
                Some(w) if matches(&w.selector, &node.labels) => room.load(w),
                _ => cmds.push(Command::Unassign { node: node.id.clone(), function: function.clone() }),
            }
        }
        rooms.insert(&node.id, room);
    }

    // A function being woken goes first: the room it needs is there before
    // functions that are only wanted take it.
    let mut order: Vec<&Want> = wants.iter().collect();
    order.sort_by_key(|w| !w.waking);
    for want in order {
        let eligible = |n: &&NodeView| n.alive && matches(&want.selector, &n.labels);
        let mut current: Vec<&NodeView> =
            nodes.iter().filter(eligible).filter(|n| n.loaded.contains_key(&want.function)).collect();
        let wanted = want.replicas as usize;

        if current.len() > wanted {
            // Keep the replicas on the nodes with the most room.
            current.sort_by_key(|n| std::cmp::Reverse(rooms[n.id.as_str()].free()));
            for n in current.split_off(wanted) {
                rooms.get_mut(n.id.as_str()).unwrap().unload(want);
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
                .filter(|n| rooms[n.id.as_str()].fits(want))
                .collect();
            candidates.sort_by_key(|n| {
                (!n.artifacts.contains(&want.digest), rooms[n.id.as_str()].free(), n.id.clone())
            });
            let mut chosen: Vec<&NodeView> = candidates.into_iter().take(wanted - current.len()).collect();
            if chosen.is_empty() && current.is_empty() && want.waking {
                chosen.extend(make_room(nodes, want, &by_name, &mut rooms, &mut cmds));
            }
            for n in chosen {
                rooms.get_mut(n.id.as_str()).unwrap().load(want);
                cmds.push(Command::Assign { node: n.id.clone(), function: want.function.clone() });
            }
        }
    }
    cmds
}

/// For `want`, which fits on no node: the node where unloading the fewest
/// least recently used idle functions makes it fit, with those unloads
/// added to `cmds`. None if no node can make room.
fn make_room<'a>(
    nodes: &'a [NodeView],
    want: &Want,
    by_name: &BTreeMap<&str, &Want>,
    rooms: &mut BTreeMap<&str, Room>,
    cmds: &mut Vec<Command>,
) -> Option<&'a NodeView> {
    let unloaded: BTreeSet<(&str, &str)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Unassign { node, function } | Command::Evict { node, function, .. } => {
                Some((node.as_str(), function.as_str()))
            }
            Command::Assign { .. } => None,
        })
        .collect();
    let mut best: Option<(&NodeView, Vec<&Want>)> = None;
    for node in nodes.iter().filter(|n| n.alive && matches(&want.selector, &n.labels)) {
        if node.loaded.contains_key(&want.function) {
            continue;
        }
        // Idle, not kept, not being woken, not already going: oldest first.
        let mut idle: Vec<(&Want, u64)> = node
            .loaded
            .keys()
            .filter(|f| !unloaded.contains(&(node.id.as_str(), f.as_str())))
            .filter_map(|f| {
                let w = by_name.get(f.as_str())?;
                // Loaded since the node last reported: idle since just now.
                let (in_flight, idle_ms) =
                    node.load.get(f.as_str()).map_or((0, 0), |l| (l.in_flight, l.idle_ms));
                (!w.kept && !w.waking && in_flight == 0).then_some((*w, idle_ms))
            })
            .collect();
        idle.sort_by_key(|(w, idle_ms)| (std::cmp::Reverse(*idle_ms), w.function.clone()));
        let mut room = rooms[node.id.as_str()].clone();
        let mut evict = Vec::new();
        for (w, _) in idle {
            if room.fits(want) {
                break;
            }
            room.unload(w);
            evict.push(w);
        }
        if room.fits(want) && best.as_ref().is_none_or(|(_, e)| evict.len() < e.len()) {
            best = Some((node, evict));
        }
    }
    let (node, evict) = best?;
    let room = rooms.get_mut(node.id.as_str()).unwrap();
    for w in evict {
        room.unload(w);
        cmds.push(Command::Evict {
            node: node.id.clone(),
            function: w.function.clone(),
            for_function: want.function.clone(),
        });
    }
    Some(node)
}
