use super::conformance::{self, Fresh};
use super::*;
use tern_kv::{KvStore, SledKv};

fn spec(name: &str, routes: &[&str]) -> FunctionSpec {
    let mut s = FunctionSpec::new(name);
    s.routes = routes.iter().map(|r| r.to_string()).collect();
    s
}

async fn sled() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let reg: Arc<dyn Registry> = Arc::new(SledRegistry::open(&dir.path().join("db")).unwrap());
    (Box::new(dir), reg.clone(), reg)
}

/// The key-value registry over `tern up`'s own key-value store: the same
/// code a cluster runs over JetStream, two schedulers' handles on one
/// bucket.
async fn kv_over_sled() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let store = SledKv::open(dir.path(), 64 << 20).unwrap();
    let bucket = store.bucket("registry").await.unwrap();
    let one: Arc<dyn Registry> = Arc::new(KvRegistry::new(bucket.clone()));
    let two: Arc<dyn Registry> = Arc::new(KvRegistry::new(bucket));
    (Box::new((dir, store)), one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_passes_the_conformance_suite() {
    conformance::run(sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_value_registry_passes_the_conformance_suite() {
    conformance::run(kv_over_sled).await;
}

#[tokio::test]
async fn sled_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let reg = SledRegistry::open(&path).unwrap();
        reg.deploy(&spec("hello", &["/hello", "/users/:id"]), "d1", World::Http, 3, 1).await.unwrap();
        reg.deploy(&spec("hello", &["/hello/", "/users/:name"]), "d2", World::Http, 3, 2).await.unwrap();
        reg.deploy(&spec("b", &["/b"]), "d1", World::Http, 3, 3).await.unwrap();
        reg.delete("b").await.unwrap();
        reg.set_secret("s", vec![7]).await.unwrap();
    }
    let reg = SledRegistry::open(&path).unwrap();
    let names: Vec<(String, u64)> =
        reg.active_versions().await.unwrap().iter().map(|v| (v.spec.name.clone(), v.number)).collect();
    assert_eq!(names, [("hello".to_string(), 2)]);
    assert_eq!(reg.serving_table().await.unwrap().routes.len(), 2);
    assert_eq!(reg.version("hello", 1).await.unwrap().size, 3);
    assert_eq!(reg.secret("s").await.unwrap(), Some(vec![7]));
}

#[test]
fn registry_errors_keep_their_kind_for_clients() {
    use tern_protocol::ErrorKind;
    let e: ApiError = RegistryError::NotFound("no function named \"x\"".into()).into();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e: ApiError = RegistryError::Conflict("taken".into()).into();
    assert_eq!(e.kind, ErrorKind::Conflict);
}
