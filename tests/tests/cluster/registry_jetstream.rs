//! The cluster's registry (a key-value bucket in JetStream, written by
//! every scheduler) passes the same conformance suite as sled's, against a
//! real nats-server: each check gets a fresh bucket and two schedulers'
//! handles on it, each on its own connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tern_kv::JetStreamKv;
use tern_scheduler::registry::{KvRegistry, Registry, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_registry_passes_the_registry_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let url = nats.url();
    let fresh = AtomicUsize::new(0);
    conformance::run(|| {
        let (url, n) = (url.clone(), fresh.fetch_add(1, Ordering::Relaxed));
        async move {
            let name = format!("TERN_REGISTRY_{n}");
            let mut handles = Vec::new();
            for _ in 0..2 {
                let kv = JetStreamKv::new(async_nats::connect(&url).await.unwrap(), 1, 0);
                let bucket = kv.system_bucket(&name).await.unwrap();
                handles.push(Arc::new(KvRegistry::new(bucket)) as Arc<dyn Registry>);
            }
            let two = handles.pop().unwrap();
            let one = handles.pop().unwrap();
            (Box::new(()) as Box<dyn std::any::Any + Send>, one, two)
        }
    })
    .await;
    drop(nats);
}
