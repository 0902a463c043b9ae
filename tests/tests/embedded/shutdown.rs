//! A stop on purpose (SIGTERM, as a service manager sends it): `tern up`
//! takes no new connection, lets the requests and streamed responses in
//! flight finish intact, settles or leaves for redelivery the events being
//! handled, and exits 0.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tern_tests::{Deliveries, TernUp, guest, publish};

/// What `/s/lines?n=11&ms=100` writes, over about a second.
fn eleven_lines() -> String {
    (0..11).map(|i| format!("data: {i}\n\n")).collect()
}

#[test]
fn sigterm_lets_twenty_streamed_responses_in_flight_finish_intact_then_exits_0() {
    let (_dir, mut up) = TernUp::start_temp();
    up.deploy(&guest("stream"), "s", &["--route", "/s/*"]);
    assert_eq!(up.get("/s/lines?n=1&ms=0").status, 200);

    // 20 clients, each with the head of its response (so in flight) when
    // the signal comes, each reading its body to the end.
    let heads = Arc::new(Barrier::new(21));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (url, heads) = (up.url.clone(), heads.clone());
            std::thread::spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let resp = client.get(format!("{url}/s/lines?n=11&ms=100")).send();
                heads.wait();
                let mut resp = resp.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let mut body = String::new();
                resp.read_to_string(&mut body).map_err(|e| format!("body broke off: {e}"))?;
                Ok::<_, String>((status, body))
            })
        })
        .collect();
    heads.wait();
    let signalled = Instant::now();
    let exit = up.terminate(Duration::from_secs(30));

    for (i, c) in clients.into_iter().enumerate() {
        let (status, body) = c.join().unwrap().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!((status, body), (200, eleven_lines()), "client {i}'s stream was not intact");
    }
    let exit = exit.expect("tern up still running 30 s after SIGTERM");
    assert!(exit.success(), "tern up exited with {exit:?}");
    // It waited for the streams (about a second each), not the timeout.
    assert!(signalled.elapsed() < Duration::from_secs(20), "took {:?}", signalled.elapsed());
    let log = up.log_text();
    assert!(log.contains("every connection and event in flight finished"), "{log}");
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(up.url.trim_start_matches("http://")).is_err());
}

#[test]
fn sigterm_while_events_are_handled_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = TernUp::start(&data);
    up.deploy(&guest("plain_event"), "ev", &["--on-event", "orders.>"]);
    // 200 ms each: some are being handled when the signal comes, the rest
    // wait in the log.
    let ids: HashSet<String> =
        (0..100).map(|i| publish(&up.url, &up.token, "orders.nap", &format!("{i}")).unwrap()).collect();
    let seen = Deliveries::follow(&up.url, &up.token, "ev");
    let started = seen.wait(Duration::from_secs(30), |d| !d.is_empty());
    assert!(!started.is_empty(), "no event was ever handled");
    let exit = up.terminate(Duration::from_secs(30)).expect("tern up still running 30 s after SIGTERM");
    assert!(exit.success(), "tern up exited with {exit:?}");
    drop(seen);

    // After the restart every event is handled: the settled ones were, the
    // others are delivered now.
    let up = TernUp::start(&data);
    let seen = Deliveries::follow(&up.url, &up.token, "ev");
    let all = seen.wait(Duration::from_secs(60), |d| {
        let handled: HashSet<&str> = d.iter().map(|d| d.id.as_str()).collect();
        ids.iter().all(|id| handled.contains(id.as_str()))
    });
    let handled: HashSet<String> = all.iter().map(|d| d.id.clone()).collect();
    let lost: Vec<&String> = ids.iter().filter(|id| !handled.contains(*id)).collect();
    assert!(lost.is_empty(), "{} of 100 events never handled, e.g. {:?}", lost.len(), lost.first());
}
