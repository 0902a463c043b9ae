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
    two_handles_on_one_consumer_share_its_deliveries(&*log).await;
    stats_count_what_waits_and_what_is_unacked(&*log).await;
    consumers_are_listed_and_deleted(&*log).await;
}

fn config(name: &str, filter: &str, ack_wait_ms: u64) -> ConsumerConfig {
    ConsumerConfig { name: name.into(), filter: filter.into(), ack_wait: Duration::from_millis(ack_wait_ms) }
}

async fn open(log: &dyn EventLog, config: ConsumerConfig) -> Box<dyn crate::Consumer> {
    log.create_consumer(&config).await.unwrap();
    log.create_consumer(&config).await.expect("creating an existing consumer is a no-op");
    log.consumer(&config.name).await.unwrap()
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
    let mut c = open(log, config("conf-order", "conf.order.*", 30_000)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let headers = vec![("k".to_string(), format!("v{i}"))];
        let e = log.publish("conf.order.a", headers, Bytes::from(vec![i as u8, 0, 255])).await.unwrap();
        ids.push(e.id);
    }
    let refused = log.publish("conf.other.a", vec![], Bytes::from_static(b"no one takes it")).await;
    assert!(
        matches!(refused, Err(crate::EventError::Unrouted(_))),
        "an event no consumer takes is refused, not stored: {:?}",
        refused.map(|e| e.id)
    );
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
    let _earlier = open(log, config("conf-late-earlier", "conf.late.>", 30_000)).await;
    log.publish("conf.late.x", vec![], Bytes::from_static(b"before")).await.unwrap();
    let mut c = open(log, config("conf-late", "conf.late.>", 30_000)).await;
    log.publish("conf.late.x", vec![], Bytes::from_static(b"after")).await.unwrap();
    let d = next(&mut c, "an event after the consumer").await;
    assert_eq!(d.event.data, "after", "a new consumer sees only what is published after it");
    d.ack().await.unwrap();
}

pub async fn every_consumer_gets_every_matching_event(log: &dyn EventLog) {
    let mut a = open(log, config("conf-fan-a", "conf.fan.*", 30_000)).await;
    let mut b = open(log, config("conf-fan-b", "conf.fan.>", 30_000)).await;
    log.publish("conf.fan.x", vec![], Bytes::from_static(b"1")).await.unwrap();
    for (c, what) in [(&mut a, "consumer a"), (&mut b, "consumer b")] {
        let d = next(c, what).await;
        assert_eq!(d.event.data, "1");
        d.ack().await.unwrap();
    }
}

pub async fn retry_waits_for_its_delay_then_counts_the_attempt(log: &dyn EventLog) {
    let mut c = open(log, config("conf-retry", "conf.retry", 30_000)).await;
    let e = log.publish("conf.retry", vec![], Bytes::from_static(b"r")).await.unwrap();
    let d = next(&mut c, "first delivery").await;
    // The consumer is already waiting when the retry is asked for, as a
    // trigger's is: the retry must still come at its delay, not later.
    let asked = std::sync::OnceLock::new();
    let retry = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        asked.set(Instant::now()).unwrap();
        d.retry_after(Duration::from_millis(400)).await.unwrap();
    };
    let (d, ()) = tokio::join!(next(&mut c, "retry"), retry);
    let after = asked.get().unwrap().elapsed();
    assert!(after >= Duration::from_millis(380), "redelivered before its delay: {after:?}");
    assert!(after < Duration::from_millis(900), "redelivered long after its 400ms delay: {after:?}");
    assert_eq!((d.event.id.as_str(), d.attempt), (e.id.as_str(), 2), "same event, second attempt");
    d.ack().await.unwrap();
}

pub async fn unsettled_deliveries_come_back_after_the_ack_wait(log: &dyn EventLog) {
    let mut c = open(log, config("conf-wait", "conf.wait", 500)).await;
    log.publish("conf.wait", vec![], Bytes::from_static(b"w")).await.unwrap();
    let first = next(&mut c, "first delivery").await;
    let d = next(&mut c, "redelivery after the ack wait").await;
    assert_eq!((d.event.id.as_str(), d.attempt), (first.event.id.as_str(), 2));
    d.ack().await.unwrap();
}

pub async fn in_progress_holds_a_slow_delivery(log: &dyn EventLog) {
    let mut c = open(log, config("conf-slow", "conf.slow", 600)).await;
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
    let mut c = open(log, config("conf-done", "conf.done.*", 300)).await;
    log.publish("conf.done.ack", vec![], Bytes::new()).await.unwrap();
    log.publish("conf.done.term", vec![], Bytes::new()).await.unwrap();
    next(&mut c, "to ack").await.ack().await.unwrap();
    next(&mut c, "to terminate").await.terminate().await.unwrap();
    assert_quiet(&mut c, Duration::from_millis(900), "settled deliveries").await;
}

pub async fn dead_letters_are_kept_listed_and_removed(log: &dyn EventLog) {
    let _c = open(log, config("conf-dlq", "conf.dlq", 30_000)).await;
    let e = log.publish("conf.dlq", vec![], Bytes::from_static(b"bad")).await.unwrap();
    let letter = DeadLetter {
        event: e.clone(),
        function: "conf-dlq-fn".into(),
        attempts: 5,
        error: "boom".into(),
        failed_ms: 1,
    };
    log.dead_letter(letter.clone()).await.unwrap();
    assert_eq!(log.dead_letters("conf-dlq-fn").await.unwrap(), vec![letter.clone()]);
    assert!(log.dead_letters("conf-dlq").await.unwrap().is_empty(), "per function, not by prefix");
    assert_eq!(log.dead_letter_count("conf-dlq-fn").await.unwrap(), 1);
    assert_eq!(log.dead_letter_count("conf-dlq").await.unwrap(), 0);
    // Written again (a retry after a lost answer): still one.
    log.dead_letter(letter.clone()).await.unwrap();
    assert_eq!(
        log.dead_letter_count("conf-dlq-fn").await.unwrap(),
        1,
        "a repeated dead letter is stored once"
    );
    assert!(log.remove_dead_letter("conf-dlq-fn", &e.id).await.unwrap());
    assert!(!log.remove_dead_letter("conf-dlq-fn", &e.id).await.unwrap());
    assert!(log.dead_letters("conf-dlq-fn").await.unwrap().is_empty());
    assert_eq!(log.dead_letter_count("conf-dlq-fn").await.unwrap(), 0);
    // A deleted function's dead letters go with it, and only its own.
    for f in ["conf-dlq-gone", "conf-dlq-gone-not"] {
        log.dead_letter(DeadLetter { function: f.into(), ..letter.clone() }).await.unwrap();
    }
    assert_eq!(log.delete_dead_letters("conf-dlq-gone").await.unwrap(), 1);
    assert_eq!(log.dead_letter_count("conf-dlq-gone").await.unwrap(), 0);
    assert_eq!(log.dead_letter_count("conf-dlq-gone-not").await.unwrap(), 1);
}

/// Every gateway opens the same durable consumer: each event goes to one.
pub async fn two_handles_on_one_consumer_share_its_deliveries(log: &dyn EventLog) {
    let cfg = config("conf-share", "conf.share", 30_000);
    let a = open(log, cfg.clone()).await;
    let b = log.consumer(&cfg.name).await.unwrap();
    let mut published = std::collections::HashSet::new();
    for i in 0..20u8 {
        published.insert(log.publish("conf.share", vec![], Bytes::from(vec![i])).await.unwrap().id);
    }
    // Each handle in its own task, as in two gateways: a `next` is never
    // dropped half way.
    let (tx, mut rx) = tokio::sync::mpsc::channel(32);
    let takers: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok(d) = c.next().await {
                    d.ack().await.unwrap();
                    if tx.send((i, d.event.id.clone())).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < published.len() {
        let (_, id) = tokio::time::timeout(ARRIVE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("shared consumer: only {} of 20 arrived", seen.len()))
            .unwrap();
        assert!(seen.insert(id.clone()), "delivered twice within the ack wait: {id}");
    }
    for t in takers {
        t.abort();
    }
    assert_eq!(seen, published);
}

pub async fn consumers_are_listed_and_deleted(log: &dyn EventLog) {
    let _c = open(log, config("conf-gone", "conf.gone.*", 30_000)).await;
    let listed = log.consumers().await.unwrap();
    let mine = listed.iter().find(|c| c.name == "conf-gone").expect("a created consumer is listed");
    assert_eq!(mine.filter, "conf.gone.*");
    log.delete_consumer("conf-gone").await.unwrap();
    assert!(!log.consumers().await.unwrap().iter().any(|c| c.name == "conf-gone"));
    assert!(matches!(log.consumer("conf-gone").await.err(), Some(crate::EventError::NoConsumer(_))));
    assert!(
        matches!(log.publish("conf.gone.x", vec![], Bytes::new()).await, Err(crate::EventError::Unrouted(_))),
        "after its only consumer is deleted, a subject takes no events"
    );
    log.delete_consumer("conf-gone").await.expect("deleting twice is a no-op");
}

pub async fn stats_count_what_waits_and_what_is_unacked(log: &dyn EventLog) {
    let mut c = open(log, config("conf-stats", "conf.stats", 30_000)).await;
    let stats = || log.stats("conf-stats");
    assert_eq!(stats().await.unwrap(), crate::ConsumerStats { waiting: 0, unacked: 0 });
    for _ in 0..3 {
        log.publish("conf.stats", vec![], Bytes::new()).await.unwrap();
    }
    let first = next(&mut c, "first").await;
    let second = next(&mut c, "second").await;
    first.ack().await.unwrap();
    second.retry_after(Duration::from_secs(30)).await.unwrap();
    // Two not done: the third (waiting, or already pulled into a JetStream
    // client's buffer, which counts as unacked) and the retried one. The
    // server counts acks asynchronously; allow it a moment.
    let deadline = Instant::now() + ARRIVE;
    let mut got = stats().await.unwrap();
    while (got.waiting + got.unacked != 2 || got.unacked == 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = stats().await.unwrap();
    }
    assert_eq!(got.waiting + got.unacked, 2, "one published not delivered, one awaiting its retry: {got:?}");
    assert!(got.unacked >= 1, "{got:?}");
    assert!(matches!(log.stats("conf-nope").await, Err(crate::EventError::NoConsumer(_))));
    log.delete_consumer("conf-stats").await.unwrap();
}
