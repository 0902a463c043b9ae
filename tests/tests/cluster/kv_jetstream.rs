//! The JetStream key-value store passes the same conformance suite as the
//! sled one (cluster mode's buckets), against a real nats-server.

use tern_kv::{JetStreamKv, KvStore, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_kv_passes_the_kv_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let store = JetStreamKv::new(client, 1, conformance::QUOTA);
    conformance::run(&store).await;

    // Two clients (two workers) incrementing one counter: each sees its
    // own bucket handle, the server orders the writes.
    let other = JetStreamKv::new(async_nats::connect(nats.url()).await.unwrap(), 1, conformance::QUOTA);
    let (a, b) = (store.bucket("two").await.unwrap(), other.bucket("two").await.unwrap());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.increment("n", 1).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(&a.get("n").await.unwrap().unwrap().value[..], b"100");
    conformance::concurrent_increments(&other).await;
}
