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
