//! What every [`Registry`] must do, run against sled (unit tests) and
//! against JetStream key-value on a real nats-server (`tests/`).
//!
//! Each check gets a fresh registry from the caller as two handles on the
//! same store: for sled one handle twice, for a shared bucket two
//! schedulers' registries, so writes through one must be seen through the
//! other and concurrent writes through both must not both win.

use super::{Registry, RegistryError};
use std::any::Any;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use tern_protocol::{FunctionSpec, World};

/// A fresh registry: what keeps it alive, and two handles on it.
pub type Fresh = (Box<dyn Any + Send>, Arc<dyn Registry>, Arc<dyn Registry>);

/// Runs every check, each on a fresh registry from `make`.
pub async fn run<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Fresh>,
{
    versions_are_immutable_and_numbered(make().await).await;
    a_route_conflict_leaves_everything_as_it_was(make().await).await;
    a_route_spelled_differently_is_still_the_same_route(make().await).await;
    old_versions_are_forgotten_and_their_unshared_artifacts_named(make().await).await;
    delete_frees_routes_and_names_unshared_artifacts(make().await).await;
    every_handle_sees_every_change(make().await).await;
    a_cron_tick_is_claimed_once(make().await).await;
    secrets_are_kept_sealed_as_given(make().await).await;
    concurrent_deploys_of_one_route_one_wins(make().await).await;
    concurrent_deploys_never_share_a_version_number(make().await).await;
    a_table_read_during_deploys_holds_every_change_up_to_its_generation(make().await).await;
}

fn spec(name: &str, routes: &[&str]) -> FunctionSpec {
    let mut s = FunctionSpec::new(name);
    s.routes = routes.iter().map(|r| r.to_string()).collect();
    s
}

async fn patterns(reg: &dyn Registry) -> Vec<String> {
    reg.serving_table().await.unwrap().routes.into_iter().map(|r| r.pattern).collect()
}

async fn versions_are_immutable_and_numbered((_keep, reg, _): Fresh) {
    let v1 = reg.deploy(&spec("f", &["/a"]), "d1", World::Http, 3, 1).await.unwrap();
    let v2 = reg.deploy(&spec("f", &["/b"]), "d2", World::Http, 3, 2).await.unwrap();
    assert_eq!((v1.number, v2.number), (1, 2));
    let table = reg.serving_table().await.unwrap();
    assert_eq!(patterns(&*reg).await, ["/b"]);
    let change = reg.serving_change("f").await.unwrap();
    assert_eq!(change.generation, table.generation, "a change is sent at the generation it made");
    assert_eq!(reg.rollback_target("f", None).await.unwrap().number, 1);
    let back = reg.rollback("f", None).await.unwrap();
    assert_eq!(back.number, 1);
    assert_eq!(patterns(&*reg).await, ["/a"]);
    assert!(reg.serving_table().await.unwrap().generation > table.generation);
    let d = reg.describe("f").await.unwrap();
    assert_eq!((d.versions.len(), d.active_version), (2, 1));
    assert_eq!(reg.version("f", 2).await.unwrap().digest, "d2");
    assert!(matches!(reg.version("f", 3).await, Err(RegistryError::NotFound(_))));
    assert!(matches!(reg.rollback("nope", None).await, Err(RegistryError::NotFound(_))));
    let listed = reg.list().await.unwrap();
    assert_eq!((listed.len(), listed[0].active_version, listed[0].latest_version), (1, 1, 2));
}

async fn a_route_conflict_leaves_everything_as_it_was((_keep, reg, _): Fresh) {
    reg.deploy(&spec("a", &["/x"]), "da", World::Http, 1, 1).await.unwrap();
    let before = reg.serving_table().await.unwrap();
    let err = reg.deploy(&spec("b", &["/y", "/x"]), "db", World::Http, 1, 2).await.unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("\"a\""), "names the owner: {err}");
    assert_eq!(reg.serving_table().await.unwrap(), before);
    assert!(matches!(reg.describe("b").await, Err(RegistryError::NotFound(_))));
    // The route /y it would have taken is free.
    reg.deploy(&spec("c", &["/y"]), "dc", World::Http, 1, 3).await.unwrap();
}

async fn a_route_spelled_differently_is_still_the_same_route((_keep, reg, _): Fresh) {
    reg.deploy(&spec("hello", &["/hello", "/users/:id", "/static/*"]), "h", World::Http, 1, 1).await.unwrap();
    for taken in ["/hello/", "//hello", "/users/:zz", "/static//*"] {
        let err = reg.deploy(&spec("b", &[taken]), "b", World::Http, 1, 2).await.unwrap_err();
        assert!(matches!(err, RegistryError::Conflict(_)), "{taken}: {err}");
    }
    assert!(matches!(reg.describe("b").await, Err(RegistryError::NotFound(_))));
    // More specific routes are not the same requests: allowed.
    reg.deploy(&spec("me", &["/users/me"]), "m", World::Http, 1, 3).await.unwrap();
    // The owner may respell its own route.
    reg.deploy(&spec("hello", &["/hello/", "/users/:name"]), "h", World::Http, 1, 4).await.unwrap();
    assert_eq!(patterns(&*reg).await, ["/hello", "/users/:name", "/users/me"]);
    // The route it dropped is free.
    reg.deploy(&spec("files", &["/static/*"]), "s", World::Http, 1, 5).await.unwrap();
}

async fn old_versions_are_forgotten_and_their_unshared_artifacts_named((_keep, reg, _): Fresh) {
    for n in 1..=5u8 {
        reg.deploy(&spec("f", &["/f"]), &format!("d{n}"), World::Http, 1, n as u64).await.unwrap();
    }
    reg.rollback("f", Some(2)).await.unwrap();
    reg.deploy(&spec("g", &["/g"]), "d1", World::Http, 1, 9).await.unwrap(); // shares d1
    let (gone, unused) = reg.prune_versions("f", 2).await.unwrap();
    let mut gone = gone;
    gone.sort();
    assert_eq!(gone, vec![1, 3], "the newest two and the active one stay");
    assert_eq!(unused, ["d3"], "d1 is unused by f now, but g still uses it");
    let kept: Vec<u64> = reg.describe("f").await.unwrap().versions.iter().map(|v| v.number).collect();
    assert_eq!(kept, vec![2, 4, 5]);
    assert_eq!(reg.prune_versions("f", 2).await.unwrap(), (vec![], vec![]));
}

async fn delete_frees_routes_and_names_unshared_artifacts((_keep, reg, _): Fresh) {
    reg.deploy(&spec("a", &["/x"]), "shared", World::Http, 1, 1).await.unwrap();
    reg.deploy(&spec("b", &["/y"]), "shared", World::Http, 1, 1).await.unwrap();
    reg.deploy(&spec("b", &["/y"]), "own", World::Http, 1, 1).await.unwrap();
    assert_eq!(reg.delete("b").await.unwrap(), ["own"], "a still uses the shared one");
    assert_eq!(patterns(&*reg).await, ["/x"]);
    reg.deploy(&spec("c", &["/y"]), "c", World::Http, 1, 1).await.unwrap();
    assert!(matches!(reg.delete("nope").await, Err(RegistryError::NotFound(_))));
    // A function deleted and made again starts from version 1.
    reg.delete("c").await.unwrap();
    assert_eq!(reg.deploy(&spec("c", &["/y"]), "c", World::Http, 1, 1).await.unwrap().number, 1);
}

async fn every_handle_sees_every_change((_keep, one, two): Fresh) {
    let active = |reg: Arc<dyn Registry>| async move {
        let mut v: Vec<(String, u64)> =
            reg.active_versions().await.unwrap().iter().map(|v| (v.spec.name.clone(), v.number)).collect();
        v.sort();
        v
    };
    one.deploy(&spec("a", &["/a"]), "d1", World::Http, 3, 1).await.unwrap();
    two.deploy(&spec("a", &["/a"]), "d2", World::Http, 3, 2).await.unwrap();
    one.deploy(&spec("b", &["/b"]), "d1", World::Http, 3, 3).await.unwrap();
    assert_eq!(active(one.clone()).await, [("a".into(), 2), ("b".into(), 1)]);
    assert_eq!(active(two.clone()).await, [("a".into(), 2), ("b".into(), 1)]);
    two.rollback("a", None).await.unwrap();
    assert_eq!(active(one.clone()).await, [("a".into(), 1), ("b".into(), 1)]);
    one.delete("b").await.unwrap();
    assert_eq!(active(two.clone()).await, [("a".into(), 1)]);
    let names = BTreeSet::from(["a".to_string(), "b".to_string()]);
    assert_eq!(two.active_of(&names).await.unwrap().len(), 1);
    assert_eq!(two.list().await.unwrap().len(), 1);
    assert_eq!(one.serving_table().await.unwrap(), two.serving_table().await.unwrap());
    two.refresh("a").await.unwrap();
}

async fn a_cron_tick_is_claimed_once((_keep, one, two): Fresh) {
    assert_eq!(one.cron_fired("t").await.unwrap(), None);
    assert!(one.claim_cron("t", None, 10).await.unwrap());
    assert!(!two.claim_cron("t", None, 10).await.unwrap(), "the same tick twice");
    assert!(two.claim_cron("t", Some(10), 20).await.unwrap());
    assert!(!one.claim_cron("t", Some(10), 20).await.unwrap(), "claimed from a stale last tick");
    assert_eq!(one.cron_fired("t").await.unwrap(), Some(20));
    one.forget_cron("t").await.unwrap();
    assert_eq!(two.cron_fired("t").await.unwrap(), None);
}

async fn secrets_are_kept_sealed_as_given((_keep, one, two): Fresh) {
    assert_eq!(one.secret("db.password").await.unwrap(), None);
    one.set_secret("db.password", vec![1, 2, 3]).await.unwrap();
    one.set_secret("api-key", vec![0; 4096]).await.unwrap();
    assert_eq!(two.secret("db.password").await.unwrap(), Some(vec![1, 2, 3]));
    let mut names = two.secret_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["api-key", "db.password"]);
    assert!(two.remove_secret("api-key").await.unwrap());
    assert!(!one.remove_secret("api-key").await.unwrap());
    assert_eq!(one.secret_names().await.unwrap(), ["db.password"]);
}

async fn concurrent_deploys_of_one_route_one_wins((_keep, one, two): Fresh) {
    for round in 0..5 {
        let route = format!("/race{round}");
        let (sa, sb) = (spec(&format!("a{round}"), &[&route]), spec(&format!("b{round}"), &[&route]));
        let (a, b) =
            tokio::join!(one.deploy(&sa, "da", World::Http, 1, 1), two.deploy(&sb, "db", World::Http, 1, 1),);
        let won = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(won, 1, "round {round}: {a:?} / {b:?}");
        for r in [a, b] {
            if let Err(e) = r {
                assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
            }
        }
        let owners: Vec<String> = one
            .serving_table()
            .await
            .unwrap()
            .routes
            .into_iter()
            .filter(|r| r.pattern == route)
            .map(|r| r.function)
            .collect();
        assert_eq!(owners.len(), 1, "{owners:?}");
    }
}

async fn concurrent_deploys_never_share_a_version_number((_keep, one, two): Fresh) {
    let mut deploys = Vec::new();
    for i in 0..12u64 {
        let reg = if i % 2 == 0 { one.clone() } else { two.clone() };
        deploys
            .push(async move { reg.deploy(&spec("f", &["/f"]), &format!("d{i}"), World::Http, 1, i).await });
    }
    let results = futures::future::join_all(deploys).await;
    let mut numbers: Vec<u64> = results.into_iter().map(|r| r.unwrap().number).collect();
    numbers.sort();
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(distinct.len(), 12, "a number used twice: {numbers:?}");
    let described: BTreeSet<u64> =
        one.describe("f").await.unwrap().versions.iter().map(|v| v.number).collect();
    assert_eq!(described, distinct, "every acknowledged version is kept");
    let latest = one.list().await.unwrap()[0].latest_version;
    assert_eq!(latest, *numbers.last().unwrap());
}

/// A gateway installs a whole table and then skips every change at or
/// below its generation as one it has, so a table must never be labelled
/// with a generation whose changes it lacks: that was a 404 for a function
/// whose deploy had answered 201. Tables are read through the other handle
/// while deploys go on through the first.
async fn a_table_read_during_deploys_holds_every_change_up_to_its_generation((_keep, one, two): Fresh) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tables = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tables.push(two.serving_table().await.unwrap());
                tokio::task::yield_now().await;
            }
            tables
        })
    };
    let mut changes = Vec::new();
    for i in 0..40 {
        let name = format!("f{i}");
        one.deploy(&spec(&name, &[&format!("/{name}")]), "d", World::Http, 1, i).await.unwrap();
        changes.push((one.serving_change(&name).await.unwrap().generation, format!("/{name}")));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let tables = reader.await.unwrap();
    assert!(!tables.is_empty());
    for t in &tables {
        let has: BTreeSet<&str> = t.routes.iter().map(|r| r.pattern.as_str()).collect();
        for (generation, route) in &changes {
            assert!(
                *generation > t.generation || has.contains(route.as_str()),
                "a table at generation {} lacks {route}, deployed at generation {generation}",
                t.generation
            );
        }
    }
}
