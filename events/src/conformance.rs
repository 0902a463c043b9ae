//! The behaviour every [`EventLog`] must show: the sled log in this crate's
//! tests, the JetStream log against a real nats-server.
//!
//! Each check panics with a message that names the broken behaviour. Each
//! uses its own consumer names and subjects, so they can share one log.

use crate::{ConsumerConfig, DeadLetter, EventLog};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ARRIVE: Duration = Duration::from_secs(5);

pub async fn run_all(log: Arc<dyn EventLog>) {
    publish_then_consume_in_order(&*log).await;
    a_new_consumer_starts_after_existing_events(&*log).await;
    every_consumer_gets_every_matching_event(&*log).await;
    retry_waits_for_its_delay_then_counts_the_attempt(&*log).await;
    unsettled_deliveries_come_back_after_the_ack_wait(&*log).await;
    in_progress_holds_a_slow_delivery(&*log).await;
    acked_and_terminated_never_come_back(&*log).await;
    dead_letters_are_kept_listed_and_removed(&*log).await;
}

fn config(name: &str, filter: &str, ack_wait_ms: u64) -> ConsumerConfig {
    ConsumerConfig { name: name.into(), filter: filter.into(), ack_wait: Duration::from_millis(ack_wait_ms) }
}

async fn next(c: &mut Box<dyn crate::Consumer>, what: &str) -> crate::Delivery {
    tokio::time::timeout(ARRIVE, c.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no delivery within {ARRIVE:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn assert_quiet(c: &mut Box<dyn crate::Consumer>, for_: Duration, what: &str) {
    if let Ok(Ok(d)) = tokio::time::timeout(for_, c.next()).await {
        panic!("{what}: unexpected delivery of {} (attempt {})", d.event.subject, d.attempt);
    }
}

pub async fn publish_then_consume_in_order(log: &dyn EventLog) {
    let mut c = log.consumer(&config("conf-order", "conf.order.*", 30_000)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let headers = vec![("k".to_string(), format!("v{i}"))];
        let e = log.publish("conf.order.a", headers, Bytes::from(vec![i as u8, 0, 255])).await.unwrap();
        ids.push(e.id);
    }
    log.publish("conf.other.a", vec![], Bytes::from_static(b"not for it")).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let d = next(&mut c, "published events arrive").await;
        assert_eq!(&d.event.id, id, "in publish order");
        assert_eq!(d.attempt, 1);
        assert_eq!(d.event.data.as_ref(), &[i as u8, 0, 255], "binary data intact");
        assert_eq!(d.event.headers, vec![("k".to_string(), format!("v{i}"))]);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut c, Duration::from_millis(300), "a filter takes only matching subjects").await;
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 3, "ids are unique");
}

pub async fn a_new_consumer_starts_after_existing_events(log: &dyn EventLog) {
    log.publish("conf.late.x", vec![], Bytes::from_static(b"before")).await.unwrap();
    let mut c = log.consumer(&config("conf-late", "conf.late.>", 30_000)).await.unwrap();
    log.publish("conf.late.x", vec![], Bytes::from_static(b"after")).await.unwrap();
    let d = next(&mut c, "an event after the consumer").await;
    assert_eq!(d.event.data, "after", "a new consumer sees only what is published after it");
    d.ack().await.unwrap();
}

pub async fn every_consumer_gets_every_matching_event(log: &dyn EventLog) {
    let mut a = log.consumer(&config("conf-fan-a", "conf.fan.*", 30_000)).await.unwrap();
    let mut b = log.consumer(&config("conf-fan-b", "conf.fan.>", 30_000)).await.unwrap();
    log.publish("conf.fan.x", vec![], Bytes::from_static(b"1")).await.unwrap();
    for (c, what) in [(&mut a, "consumer a"), (&mut b, "consumer b")] {
        let d = next(c, what).await;
        assert_eq!(d.event.data, "1");
        d.ack().await.unwrap();
    }
}

pub async fn retry_waits_for_its_delay_then_counts_the_attempt(log: &dyn EventLog) {
    let mut c = log.consumer(&config("conf-retry", "conf.retry", 30_000)).await.unwrap();
    let e = log.publish("conf.retry", vec![], Bytes::from_static(b"r")).await.unwrap();
    let d = next(&mut c, "first delivery").await;
    let asked = Instant::now();
    d.retry_after(Duration::from_millis(400)).await.unwrap();
    let d = next(&mut c, "retry").await;
    assert!(
        asked.elapsed() >= Duration::from_millis(380),
        "redelivered before its delay: {:?}",
        asked.elapsed()
    );
    assert_eq!((d.event.id.as_str(), d.attempt), (e.id.as_str(), 2), "same event, second attempt");
    d.ack().await.unwrap();
}

pub async fn unsettled_deliveries_come_back_after_the_ack_wait(log: &dyn EventLog) {
    let mut c = log.consumer(&config("conf-wait", "conf.wait", 500)).await.unwrap();
    log.publish("conf.wait", vec![], Bytes::from_static(b"w")).await.unwrap();
    let first = next(&mut c, "first delivery").await;
    let d = next(&mut c, "redelivery after the ack wait").await;
    assert_eq!((d.event.id.as_str(), d.attempt), (first.event.id.as_str(), 2));
    d.ack().await.unwrap();
}

pub async fn in_progress_holds_a_slow_delivery(log: &dyn EventLog) {
    let mut c = log.consumer(&config("conf-slow", "conf.slow", 600)).await.unwrap();
    log.publish("conf.slow", vec![], Bytes::from_static(b"s")).await.unwrap();
    let d = next(&mut c, "first delivery").await;
    // Work for 1.5 ack waits, saying so every 300 ms: no redelivery.
    let quiet = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            d.in_progress().await.unwrap();
        }
    };
    tokio::select! {
        _ = quiet => {}
        r = c.next() => panic!("redelivered while in progress: attempt {}", r.unwrap().attempt),
    }
    d.ack().await.unwrap();
    assert_quiet(&mut c, Duration::from_millis(900), "acked after progress").await;
}

pub async fn acked_and_terminated_never_come_back(log: &dyn EventLog) {
    let mut c = log.consumer(&config("conf-done", "conf.done.*", 300)).await.unwrap();
    log.publish("conf.done.ack", vec![], Bytes::new()).await.unwrap();
    log.publish("conf.done.term", vec![], Bytes::new()).await.unwrap();
    next(&mut c, "to ack").await.ack().await.unwrap();
    next(&mut c, "to terminate").await.terminate().await.unwrap();
    assert_quiet(&mut c, Duration::from_millis(900), "settled deliveries").await;
}

pub async fn dead_letters_are_kept_listed_and_removed(log: &dyn EventLog) {
    let e = log.publish("conf.dlq", vec![], Bytes::from_static(b"bad")).await.unwrap();
    let letter = DeadLetter {
        event: e.clone(),
        function: "conf-dlq-fn".into(),
        attempts: 5,
        error: "boom".into(),
        failed_ms: 1,
    };
    log.dead_letter(letter.clone()).await.unwrap();
    assert_eq!(log.dead_letters("conf-dlq-fn").await.unwrap(), vec![letter]);
    assert!(log.dead_letters("conf-dlq").await.unwrap().is_empty(), "per function, not by prefix");
    assert!(log.remove_dead_letter("conf-dlq-fn", &e.id).await.unwrap());
    assert!(!log.remove_dead_letter("conf-dlq-fn", &e.id).await.unwrap());
    assert!(log.dead_letters("conf-dlq-fn").await.unwrap().is_empty());
}
