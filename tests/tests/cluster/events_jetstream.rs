//! The JetStream event log passes the same conformance suite as the sled
//! log (cluster mode's durable triggers), against a real nats-server.

use std::sync::Arc;
use tern_events::{EventLog, JetStreamLog, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_log_passes_the_event_log_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let log = JetStreamLog::open(client, 1).await.unwrap();
    conformance::run_all(Arc::new(log.clone())).await;

    // Opening again finds the streams and consumers as they were.
    let again = JetStreamLog::open(async_nats::connect(nats.url()).await.unwrap(), 1).await.unwrap();
    assert!(again.consumers().await.unwrap().iter().any(|c| c.name == "conf-order"));
}
