//! Functions publishing events (`tern:events/publisher`, granted with
//! `--allow-publish`) in `tern up`: an HTTP function's event reaches the
//! event function triggered by it, with the same retries as any event; an
//! ungranted, reserved or unrouted subject is refused in the guest and
//! nothing is stored.

use std::time::Duration;
use tern_tests::{Deliveries, TernUp, guest};

#[test]
fn an_http_function_publishes_events_that_trigger_an_event_function() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("plain_event"), "sink", &["--on-event", "orders.>", "--backoff", "100ms"]);
    up.deploy(&guest("plain_event"), "other-sink", &["--on-event", "invoices.>"]);
    let out = up.deploy(
        &guest("publisher"),
        "pub",
        &["--route", "/pub/*", "--allow-publish", "orders.*", "--allow-publish", "nobody.*"],
    );
    assert!(out.contains("publishes on: orders.*, nobody.*"), "{out}");
    let sink = Deliveries::follow(&up.url, &up.token, "sink");
    let other = Deliveries::follow(&up.url, &up.token, "other-sink");

    // Granted: durable when the guest hears back, then delivered.
    let r = up.post("/pub/orders.created", "order 7");
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body.clone();
    let seen = sink.wait(Duration::from_secs(10), |d| d.iter().any(|d| d.id == id));
    let got = seen.iter().find(|d| d.id == id).expect("the published event was delivered");
    assert_eq!((got.subject.as_str(), got.data.as_str(), got.attempt), ("orders.created", "order 7", 1));

    // Retried like any event: flaky succeeds on its third attempt.
    let id = up.post("/pub/orders.flaky", "again").body;
    let seen = sink.wait(Duration::from_secs(10), |d| d.iter().any(|d| d.id == id && d.attempt == 3));
    assert!(seen.iter().any(|d| d.id == id && d.attempt == 3), "{seen:?}");

    // Refused in the guest, nothing stored: a subject outside the grant,
    // one the pattern does not match (one token for `*`), a reserved one,
    // a wildcard, and one no function is triggered by.
    let r = up.post("/pub/invoices.created", "not mine");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("--allow-publish invoices.created"), "{}", r.body);
    assert_eq!(up.post("/pub/orders.created.late", "x").status, 403);
    let r = up.post("/pub/tern.v1.invoke.pub", "x");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("reserved"), "{}", r.body);
    assert_eq!(up.post("/pub/orders.*", "x").status, 400);
    let r = up.post("/pub/nobody.home", "x");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no function is triggered by"), "{}", r.body);
    std::thread::sleep(Duration::from_millis(800));
    assert!(other.all().is_empty(), "a denied event was stored and delivered: {:?}", other.all());

    // A grant that could reach everything, or Tern's own subjects, is
    // refused at deploy.
    for bad in [">", "*.created", "tern.>", "$JS.API.>"] {
        let e = up.tern_err(&[
            "deploy",
            guest("publisher").to_str().unwrap(),
            "--name",
            "bad",
            "--allow-publish",
            bad,
        ]);
        assert!(e.contains("--allow-publish"), "{bad}: {e}");
    }
}
