//! The JetStream artifact store (a cluster's `TERN_ARTIFACTS`) passes the
//! same conformance suite as the sled one, against a real nats-server
//! whose `max_payload` is the default 1 MiB, smaller than the artifacts.

use tern_artifacts::{ArtifactStore, JetStreamArtifacts, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_passes_the_artifact_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with(dir.path(), "1MB");
    let client = async_nats::connect(nats.url()).await.unwrap();
    assert!(client.server_info().max_payload <= 1 << 20, "the suite's 3 MiB must not fit one message");
    let store = JetStreamArtifacts::open(client.clone(), 1).await.unwrap();
    conformance::run(&store).await;

    // Opening it again (another role starting) finds what is there.
    let again = JetStreamArtifacts::open(client, 1).await.unwrap();
    assert!(again.get(&conformance::digest(2)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_nats_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_cluster(dir.path(), 3);
    let addrs: Vec<async_nats::ServerAddr> = nats.iter().map(|n| n.url().parse().unwrap()).collect();
    let client = async_nats::connect(addrs).await.unwrap();
    let store = loop {
        match JetStreamArtifacts::open(client.clone(), 3).await {
            Ok(s) => break s,
            Err(e) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    };
    eprintln!("open");
    conformance::run(&store).await;
}
