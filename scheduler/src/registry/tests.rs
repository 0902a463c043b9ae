use super::*;

fn spec(name: &str, routes: &[&str]) -> FunctionSpec {
    let mut s = FunctionSpec::new(name);
    s.routes = routes.iter().map(|r| r.to_string()).collect();
    s
}

fn open() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(&dir.path().join("db")).unwrap();
    (dir, reg)
}

#[test]
fn versions_are_immutable_and_numbered() {
    let (_d, reg) = open();
    let v1 = reg.deploy(&spec("f", &["/a"]), "d1", World::Http, 3, 1).unwrap();
    let v2 = reg.deploy(&spec("f", &["/b"]), "d2", World::Http, 3, 2).unwrap();
    assert_eq!((v1.number, v2.number), (1, 2));
    let table = reg.serving_table().unwrap();
    assert_eq!(table.routes.iter().map(|r| r.pattern.as_str()).collect::<Vec<_>>(), ["/b"]);
    let back = reg.rollback("f", None).unwrap();
    assert_eq!(back.number, 1);
    assert_eq!(reg.serving_table().unwrap().routes[0].pattern, "/a");
    assert!(reg.serving_table().unwrap().generation > table.generation);
    assert_eq!(reg.describe("f").unwrap().versions.len(), 2);
    assert_eq!(reg.version("f", 2).unwrap().digest, "d2");
}

#[test]
fn route_conflict_leaves_everything_as_it_was() {
    let (_d, reg) = open();
    reg.deploy(&spec("a", &["/x"]), "da", World::Http, 1, 1).unwrap();
    let before = reg.serving_table().unwrap();
    let err = reg.deploy(&spec("b", &["/y", "/x"]), "db", World::Http, 1, 2).unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert_eq!(reg.serving_table().unwrap(), before);
    assert!(matches!(reg.describe("b"), Err(RegistryError::NotFound(_))));
}

#[test]
fn a_route_spelled_differently_is_still_the_same_route() {
    let (_d, reg) = open();
    reg.deploy(&spec("hello", &["/hello", "/users/:id", "/static/*"]), "h", World::Http, 1, 1).unwrap();
    for taken in ["/hello/", "//hello", "/users/:zz", "/static//*"] {
        let err = reg.deploy(&spec("b", &[taken]), "b", World::Http, 1, 2).unwrap_err();
        assert!(matches!(err, RegistryError::Conflict(_)), "{taken}: {err}");
    }
    assert!(matches!(reg.describe("b"), Err(RegistryError::NotFound(_))));
    // More specific routes are not the same requests: allowed.
    reg.deploy(&spec("me", &["/users/me"]), "m", World::Http, 1, 3).unwrap();
    // The owner may respell its own route.
    reg.deploy(&spec("hello", &["/hello/", "/users/:name"]), "h", World::Http, 1, 4).unwrap();
    let patterns: Vec<String> = reg.serving_table().unwrap().routes.into_iter().map(|r| r.pattern).collect();
    assert_eq!(patterns, ["/hello", "/users/:name", "/users/me"]);
    // Reopening keeps the index as it was.
    let path = _d.path().join("db");
    drop(reg);
    let reg = Registry::open(&path).unwrap();
    assert_eq!(reg.serving_table().unwrap().routes.len(), 3);
}

#[test]
fn old_versions_are_forgotten_and_their_unshared_artifacts_named() {
    let (_d, reg) = open();
    for n in 1..=5u8 {
        let digest = format!("d{n}");
        reg.deploy(&spec("f", &["/f"]), &digest, World::Http, 1, n as u64).unwrap();
    }
    reg.rollback("f", Some(2)).unwrap();
    reg.deploy(&spec("g", &["/g"]), "d1", World::Http, 1, 9).unwrap(); // shares d1
    let (gone, unused) = reg.prune_versions("f", 2).unwrap();
    assert_eq!(gone, vec![3, 1], "the newest two and the active one stay");
    assert_eq!(unused, ["d3"], "d1 is unused by f now, but g still uses it");
    let kept: Vec<u64> = reg.describe("f").unwrap().versions.iter().map(|v| v.number).collect();
    assert_eq!(kept, vec![2, 4, 5]);
    assert_eq!(reg.prune_versions("f", 2).unwrap(), (vec![], vec![]));
}

#[test]
fn delete_frees_routes_and_names_unshared_artifacts() {
    let (_d, reg) = open();
    reg.deploy(&spec("a", &["/x"]), "shared", World::Http, 1, 1).unwrap();
    reg.deploy(&spec("b", &["/y"]), "shared", World::Http, 1, 1).unwrap();
    reg.deploy(&spec("b", &["/y"]), "own", World::Http, 1, 1).unwrap();
    assert_eq!(reg.delete("b").unwrap(), ["own"], "a still uses the shared one");
    reg.deploy(&spec("c", &["/y"]), "c", World::Http, 1, 1).unwrap();
    assert!(matches!(reg.delete("nope"), Err(RegistryError::NotFound(_))));
}

#[test]
fn the_active_versions_kept_in_memory_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(&dir.path().join("db")).unwrap();
    let active = |reg: &Registry| -> Vec<(String, u64)> {
        reg.active_versions().unwrap().iter().map(|v| (v.spec.name.clone(), v.number)).collect()
    };
    reg.deploy(&spec("a", &["/a"]), "d1", World::Http, 3, 1).unwrap();
    reg.deploy(&spec("a", &["/a"]), "d2", World::Http, 3, 2).unwrap();
    reg.deploy(&spec("b", &["/b"]), "d1", World::Http, 3, 3).unwrap();
    assert_eq!(active(&reg), [("a".into(), 2), ("b".into(), 1)]);
    reg.rollback("a", None).unwrap();
    assert_eq!(active(&reg), [("a".into(), 1), ("b".into(), 1)]);
    reg.delete("b").unwrap();
    assert_eq!(active(&reg), [("a".into(), 1)]);
    drop(reg);
    // What was kept in memory is what was written.
    let reg = Registry::open(&dir.path().join("db")).unwrap();
    assert_eq!(active(&reg), [("a".into(), 1)]);
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Registry::open(&dir.path().join("db")).unwrap();
        reg.deploy(&spec("f", &["/a"]), "d1", World::Http, 3, 1).unwrap();
    }
    let reg = Registry::open(&dir.path().join("db")).unwrap();
    assert_eq!(reg.list().unwrap().len(), 1);
    assert_eq!(reg.version("f", 1).unwrap().size, 3);
}
