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
        code_bytes: 1 << 20,
        kept: false,
        waking: false,
    }
}

/// Functions evicted, and where.
fn evicted(cmds: &[Command]) -> Vec<(String, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Evict { node, function, .. } => Some((node.clone(), function.clone())),
            _ => None,
        })
        .collect()
}

/// `node` with `functions` loaded, each idle that many ms (or running).
fn loaded(mut node: NodeView, functions: &[(&str, Option<u64>)]) -> NodeView {
    for (f, idle) in functions {
        node.loaded.insert(f.to_string(), 1);
        let load = match idle {
            Some(ms) => FunctionLoad { idle_ms: *ms, ..Default::default() },
            None => FunctionLoad { in_flight: 1, ..Default::default() },
        };
        node.load.insert(f.to_string(), load);
    }
    node
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
    // Loaded, `big` costs its 200 MiB of code; `other` needs its code and
    // room for one instance (128 MiB), which neither node has.
    let mut a = node("a", 256);
    a.loaded.insert("big".into(), 1);
    let mut big = want("big", 1, 16);
    big.code_bytes = 200 << 20;
    let cmds = plan(&[a, node("b", 100)], &[big, want("other", 1, 128)]);
    assert!(assigns(&cmds).is_empty(), "nothing fits: {cmds:?}");
}

#[test]
fn loaded_functions_cost_their_code_not_their_memory_limit() {
    // 1,000 functions of one component, 128 MiB each, on a 1 GiB node:
    // each costs its own small part, and the code is counted once.
    let wants: Vec<Want> =
        (0..1000).map(|i| Want { digest: "same".into(), ..want(&format!("f{i}"), 1, 128) }).collect();
    let cmds = plan(&[node("a", 1024)], &wants);
    assert_eq!(assigns(&cmds).len(), 1000);
    // Once loaded, they leave room for more than one instance of 128 MiB.
    let mut a = node("a", 1024);
    for w in &wants {
        a.loaded.insert(w.function.clone(), 1);
    }
    let mut room = room::Room::new(1024 << 20);
    wants.iter().for_each(|w| room.load(w));
    assert!(room.free() > 800 << 20, "{} MiB free", room.free() >> 20);
    assert!(plan(&[a], &wants).is_empty());
}

#[test]
fn a_woken_function_unloads_the_least_recently_used_idle_one() {
    // Room for the four loaded (each 1 MiB of code and 96 KiB of its own)
    // and not for a fifth with room for its 32 MiB instance.
    let full = loaded(
        node("a", 5 + 32),
        &[("old", Some(9_000)), ("older", Some(60_000)), ("busy", None), ("kept", Some(99_000))],
    );
    let mut kept = want("kept", 1, 32);
    kept.kept = true;
    let mut wants =
        vec![want("old", 1, 32), want("older", 1, 32), want("busy", 1, 32), kept, want("new", 1, 32)];
    // Only wanted, `new` waits for room.
    assert!(plan(std::slice::from_ref(&full), &wants).is_empty());
    // Woken, it takes the room of the idle function used longest ago:
    // not the running one, not the one kept by --min-scale.
    wants[4].waking = true;
    let cmds = plan(std::slice::from_ref(&full), &wants);
    assert_eq!(evicted(&cmds), [("a".to_string(), "older".to_string())]);
    assert_eq!(assigns(&cmds), [("a".to_string(), "new".to_string())]);
    // Needing more room, it takes the next idle one too.
    wants[4].code_bytes = 2 << 20;
    let cmds = plan(std::slice::from_ref(&full), &wants);
    assert_eq!(evicted(&cmds).len(), 2, "{cmds:?}");
    assert_eq!(assigns(&cmds), [("a".to_string(), "new".to_string())]);
}

#[test]
fn running_and_kept_functions_are_never_unloaded_for_room() {
    let full = loaded(node("a", 2 + 32), &[("busy", None), ("kept", Some(99_000))]);
    let mut kept = want("kept", 1, 32);
    kept.kept = true;
    let mut new = want("new", 1, 32);
    new.waking = true;
    let cmds = plan(&[full], &[want("busy", 1, 32), kept, new]);
    assert!(cmds.is_empty(), "{cmds:?}");
}

#[test]
fn room_is_made_on_the_node_that_unloads_fewest() {
    let a = loaded(node("a", 4 + 32), &[("a1", Some(50_000)), ("a2", Some(40_000)), ("a3", Some(30_000))]);
    let b = loaded(node("b", 4 + 32), &[("b1", Some(1_000)), ("b2", Some(2_000)), ("b3", None)]);
    let mut wants: Vec<Want> = ["a1", "a2", "a3", "b1", "b2", "b3"].iter().map(|f| want(f, 1, 32)).collect();
    let mut new = want("new", 1, 32);
    new.waking = true;
    new.code_bytes = 2 << 20;
    wants.push(new);
    let cmds = plan(&[a, b], &wants);
    // Either node makes room with two unloads (b's third is running): the
    // first found with the fewest.
    assert_eq!(evicted(&cmds).len(), 2, "{cmds:?}");
    assert_eq!(assigns(&cmds).len(), 1);
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

#[test]
fn a_node_full_of_one_component_makes_room_for_another_function_of_it() {
    let names: Vec<String> = (0..82).map(|i| format!("f{i}")).collect();
    let idle: Vec<(&str, Option<u64>)> = names.iter().map(|n| (n.as_str(), Some(1000))).collect();
    let full = loaded(node("a", 24), &idle);
    let same = |f: &str| Want { digest: "d".into(), code_bytes: 512 << 10, ..want(f, 1, 16) };
    let mut wants: Vec<Want> = names.iter().map(|n| same(n)).collect();
    let mut new = same("new");
    new.waking = true;
    wants.push(new);
    // 82 x 96 KiB and the code leave 15.8 MiB; 16 MiB and 96 KiB are
    // needed: three go.
    let cmds = plan(&[full], &wants);
    assert_eq!(evicted(&cmds).len(), 3, "{cmds:?}");
    assert_eq!(assigns(&cmds), [("a".to_string(), "new".to_string())]);
}
