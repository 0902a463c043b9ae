//! The NATS bus passes the same conformance suite as the in-process bus,
//! against a real nats-server.

use std::sync::Arc;
use tern_bus::{Bus, NatsBus, NatsOptions, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let bus = NatsBus::connect(&NatsOptions { url: nats.url(), ..Default::default() }).await.unwrap();
    conformance::run_all(Arc::new(bus)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_bus_survives_a_server_restart() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path());
    let bus =
        Arc::new(NatsBus::connect(&NatsOptions { url: nats.url(), ..Default::default() }).await.unwrap());
    let mut sub = bus.subscribe("restart.check").await.unwrap();
    let nats = tokio::task::spawn_blocking(move || {
        nats.restart(std::time::Duration::from_millis(300));
        nats
    })
    .await
    .unwrap();
    // The client reconnects and re-subscribes by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let _ = bus.publish("restart.check", bytes::Bytes::from_static(b"again")).await;
        if let Ok(Some(m)) = tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await {
            assert_eq!(m.payload, "again");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no message after the restart");
    }
    drop(nats);
}
