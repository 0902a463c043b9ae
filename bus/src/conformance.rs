//! The behaviour every [`Bus`] must show. Run against the in-process bus in
//! this crate's tests, and against a real nats-server for the NATS bus.
//!
//! Each check panics with a message that names the broken behaviour.

use crate::{Bus, BusError, respond};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for a message that should arrive.
const ARRIVE: Duration = Duration::from_secs(5);
/// How long a check waits to be sure a message does not arrive.
const QUIET: Duration = Duration::from_millis(200);

pub async fn run_all(bus: Arc<dyn Bus>) {
    publish_reaches_every_subscriber(&*bus).await;
    wildcards_match_like_nats(&*bus).await;
    queue_group_delivers_once(&*bus).await;
    request_reply_round_trip(bus.clone()).await;
    no_responders_is_immediate(&*bus).await;
    request_times_out(&*bus).await;
    dropped_subscription_stops_delivery(&*bus).await;
    drain_keeps_what_was_routed(&*bus).await;
    large_payloads(bus.clone(), 8 * 1024 * 1024).await;
    invalid_subjects_are_rejected(&*bus).await;
}

async fn next(sub: &mut crate::Subscription, what: &str) -> crate::Message {
    tokio::time::timeout(ARRIVE, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no message within {ARRIVE:?}"))
        .unwrap_or_else(|| panic!("{what}: subscription ended"))
}

async fn assert_quiet(sub: &mut crate::Subscription, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("{what}: unexpected message on {}", m.subject);
    }
}

pub async fn publish_reaches_every_subscriber(bus: &dyn Bus) {
    let mut a = bus.subscribe("conf.pub").await.unwrap();
    let mut b = bus.subscribe("conf.pub").await.unwrap();
    bus.publish("conf.pub", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(next(&mut a, "publish to a").await.payload, "x");
    assert_eq!(next(&mut b, "publish to b").await.payload, "x");
}

pub async fn wildcards_match_like_nats(bus: &dyn Bus) {
    let mut star = bus.subscribe("conf.wild.*").await.unwrap();
    let mut gt = bus.subscribe("conf.wild.>").await.unwrap();
    bus.publish("conf.wild.a.b", Bytes::from_static(b"deep")).await.unwrap();
    bus.publish("conf.wild.a", Bytes::from_static(b"one")).await.unwrap();
    let m = next(&mut star, "'*' matches one token").await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("conf.wild.a", &b"one"[..]));
    assert_quiet(&mut star, "'*' must not match two tokens").await;
    assert_eq!(next(&mut gt, "'>' matches many tokens").await.subject, "conf.wild.a.b");
    assert_eq!(next(&mut gt, "'>' matches one token").await.subject, "conf.wild.a");
}

pub async fn queue_group_delivers_once(bus: &dyn Bus) {
    let mut q1 = bus.queue_subscribe("conf.queue", "g").await.unwrap();
    let mut q2 = bus.queue_subscribe("conf.queue", "g").await.unwrap();
    let mut plain = bus.subscribe("conf.queue").await.unwrap();
    const N: usize = 40;
    for i in 0..N {
        bus.publish("conf.queue", Bytes::from(i.to_string())).await.unwrap();
    }
    for i in 0..N {
        let m = next(&mut plain, "plain subscriber beside a queue group").await;
        assert_eq!(m.payload, i.to_string());
    }
    let (mut n1, mut n2) = (0, 0);
    while n1 + n2 < N {
        tokio::select! {
            Some(_) = q1.next() => n1 += 1,
            Some(_) = q2.next() => n2 += 1,
            _ = tokio::time::sleep(ARRIVE) => panic!("queue group got {} of {N}", n1 + n2),
        }
    }
    assert_quiet(&mut q1, "queue group delivered a message twice").await;
    assert_quiet(&mut q2, "queue group delivered a message twice").await;
    assert!(n1 > 0 && n2 > 0, "queue group should spread load, got {n1}/{n2}");
}

pub async fn request_reply_round_trip(bus: Arc<dyn Bus>) {
    let mut sub = bus.queue_subscribe("conf.echo", "echo").await.unwrap();
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&msg.payload);
            respond(&*responder, &msg, out.into()).await.unwrap();
        }
    });
    // Concurrent requests each get their own reply.
    let replies = futures::future::join_all((0..50).map(|i| {
        let bus = bus.clone();
        async move { bus.request("conf.echo", Bytes::from(i.to_string()), ARRIVE).await }
    }))
    .await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.expect("request/reply").payload, format!("echo:{i}"));
    }
    task.abort();
}

pub async fn no_responders_is_immediate(bus: &dyn Bus) {
    let started = std::time::Instant::now();
    let err = bus.request("conf.nobody", Bytes::new(), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, BusError::NoResponders(_)), "expected no responders, got {err}");
    assert!(started.elapsed() < Duration::from_secs(2), "no responders must not wait for the timeout");
}

pub async fn request_times_out(bus: &dyn Bus) {
    let _silent = bus.subscribe("conf.silent").await.unwrap();
    let err = bus.request("conf.silent", Bytes::new(), Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "expected timeout, got {err}");
}

pub async fn dropped_subscription_stops_delivery(bus: &dyn Bus) {
    let sub = bus.subscribe("conf.drop").await.unwrap();
    drop(sub);
    // Unsubscription may travel to a server: give it a moment.
    let deadline = std::time::Instant::now() + ARRIVE;
    loop {
        match bus.request("conf.drop", Bytes::new(), Duration::from_millis(200)).await {
            Err(BusError::NoResponders(_)) => break,
            _ if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("dropped subscription still receives: {other:?}"),
        }
    }
}

pub async fn large_payloads(bus: Arc<dyn Bus>, size: usize) {
    assert!(bus.max_payload() >= size, "bus must carry {size} bytes, max is {}", bus.max_payload());
    let mut sub = bus.subscribe("conf.large").await.unwrap();
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        let msg = sub.next().await.unwrap();
        respond(&*responder, &msg, msg.payload.clone()).await.unwrap();
    });
    let payload: Bytes = (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let reply = bus.request("conf.large", payload.clone(), ARRIVE * 2).await.unwrap();
    assert!(reply.payload == payload, "large payload came back altered");
    task.await.unwrap();
    let too_big = Bytes::from(vec![0u8; bus.max_payload() + 1]);
    let err = bus.publish("conf.large", too_big).await.unwrap_err();
    assert!(matches!(err, BusError::PayloadTooLarge { .. }), "got {err}");
}

pub async fn invalid_subjects_are_rejected(bus: &dyn Bus) {
    assert!(bus.publish("conf.*", Bytes::new()).await.is_err(), "publish to a wildcard");
    assert!(bus.subscribe("conf..x").await.is_err(), "empty token");
    assert!(bus.subscribe("conf.>.x").await.is_err(), "'>' not last");
}

/// A drained queue subscriber answers what was routed to it before the
/// drain, then its stream ends, and new requests find no responders.
pub async fn drain_keeps_what_was_routed(bus: &dyn Bus) {
    let mut sub = bus.queue_subscribe("conf.drain", "g").await.unwrap();
    for i in 0..100u32 {
        bus.publish("conf.drain", Bytes::from(i.to_string())).await.unwrap();
    }
    sub.drain().await;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(ARRIVE, sub.next()).await {
            Ok(Some(m)) => got.push(String::from_utf8(m.payload.to_vec()).unwrap()),
            Ok(None) => break,
            Err(_) => panic!("drain: the stream did not end after {} messages", got.len()),
        }
    }
    let want: Vec<String> = (0..100u32).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "drain: messages published before the drain must all arrive, in order");
    match bus.request("conf.drain", Bytes::new(), Duration::from_secs(2)).await {
        Err(BusError::NoResponders(_)) => {}
        other => panic!("drain: after a drain, a request must find no responders, got {other:?}"),
    }
}
