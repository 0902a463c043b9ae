//! The JetStream logbook (a cluster's `TERN_LOGS`) passes the same
//! conformance suite as the sled one, against a real nats-server; and it
//! keeps what workers publish on the bus with nobody appending it.

use std::time::Duration;
use tern_logbook::{JetStreamLogbook, LogQuery, Logbook, conformance};
use tern_tests::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_passes_the_logbook_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let book = JetStreamLogbook::open(client.clone(), 1, conformance::RETENTION).await.unwrap();
    conformance::run(&book).await;
    // One stream, so the bytes bound covers both functions' batches.
    book.forget("g").await.unwrap();
    conformance::bytes_are_bounded(&book).await;

    // A plain publish on a function's log subject (what a worker does) is
    // kept: no scheduler is needed for logs to be kept.
    assert!(book.keeps_bus_subjects());
    let line = conformance::record("w", "i9", "from a worker");
    client.publish("tern.v1.logs.w", serde_json::to_vec(&[line]).unwrap().into()).await.unwrap();
    client.flush().await.unwrap();
    let q = LogQuery { name: "w".into(), tail: 10, ..Default::default() };
    let mut got = Vec::new();
    for _ in 0..50 {
        got = book.logs(&q).await.unwrap();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line, "from a worker");

    // Opening it again with other limits sets them (--log-retention).
    let wider = tern_logbook::Retention { max_age: Duration::from_secs(7200), max_bytes: 1 << 20 };
    JetStreamLogbook::open(client.clone(), 1, wider).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TERN_LOGS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
    assert_eq!(info.config.max_bytes, 1 << 20);
}
