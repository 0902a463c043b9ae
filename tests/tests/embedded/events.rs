//! Event functions end to end in embedded mode (`tern up`, sled event log):
//! components written against sdk/wit (one with plain wit-bindgen, one with
//! the SDK); `--on-event` triggers fed by `tern publish` and the publish
//! API; 10,000 events; and kill -9 of `tern up` losing no acknowledged
//! event. Retries, dead letters, replay and cron are checked in
//! in_process.rs; the cluster (JetStream) side is in cluster_events.rs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tern_tests::{Delivered, Deliveries, TernUp, eventually, guest, publish};

#[test]
fn event_functions_deploy_and_handle_delivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start(&dir.path().join("data"));

    // Written with plain wit-bindgen against sdk/wit, no SDK.
    up.deploy(&guest("plain_event"), "plain", &["--idle", "1s", "--timeout", "1s"]);
    let d = up.describe("plain");
    assert_eq!(d["active"]["world"], "event", "{d}");
    assert_eq!(d["replicas"], 1, "{d}");

    let ok = up.tern_ok(&["invoke", "plain", "--subject", "orders.created", "--data", "hi"]);
    let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
    assert!(v["error"].is_null(), "{v}");
    let id = v["event_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let logs = up.tern_ok(&["logs", "plain"]);
    assert!(
        logs.contains(&format!("delivery id={id} subject=orders.created attempt=1 data=hi")),
        "the handler saw the event: {logs}"
    );

    // An error from the handler is a failed delivery, with its message.
    let out = up.tern(&["invoke", "plain", "--subject", "orders.fail", "--data", "x"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "always fails (attempt 1)");

    // A spinning handler is stopped at its timeout; the worker goes on.
    let out = up.tern(&["invoke", "plain", "--subject", "x.loop"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("timed out"), "{v}");
    assert!(up.tern(&["invoke", "plain", "--subject", "x.ok"]).status.success());

    // Event functions scale to zero like HTTP ones, and a delivery wakes them.
    assert!(eventually(Duration::from_secs(10), || up.describe("plain")["replicas"] == 0));
    assert!(up.tern(&["invoke", "plain", "--subject", "x.ok"]).status.success());
    assert_eq!(up.describe("plain")["scale"]["cold_starts"], 1);

    // Written with the SDK: the example in examples/audit.
    up.deploy(&guest("audit"), "audit", &[]);
    let out =
        up.tern_ok(&["invoke", "audit", "--subject", "orders.created", "--data", r#"{"id":7,"total":12.5}"#]);
    assert!(out.contains("\"error\": null"), "{out}");
    assert!(up.tern_ok(&["logs", "audit"]).contains("orders.created order 7 total 12.50"));
    let out = up.tern(&["invoke", "audit", "--data", "not json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not the expected JSON"));

    // Event functions take no routes.
    let err = up.tern_err(&["deploy", guest("audit").to_str().unwrap(), "--name", "bad", "--route", "/x"]);
    assert!(err.contains("event function"), "{err}");
}

fn ids(seen: &[Delivered]) -> HashSet<String> {
    seen.iter().map(|d| d.id.clone()).collect()
}

#[test]
fn published_events_reach_their_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start(&dir.path().join("data"));
    let plain = guest("plain_event");
    let out = up.deploy(&plain, "orders", &["--on-event", "orders.*", "--on-event", "refunds.>"]);
    assert!(out.contains("on events orders.*") && out.contains("on events refunds.>"), "{out}");
    let seen = Deliveries::follow(&up.url, &up.token, "orders");

    // The CLI, and the API with a bearer token: 202 once durable.
    let out = up.tern_ok(&["publish", "orders.created", "hello"]);
    let cli_id = out.trim().strip_prefix("Published ").unwrap().split(' ').next().unwrap().to_string();
    let api_id = publish(&up.url, &up.token, "refunds.eu.issued", "money back").unwrap();
    let got = seen.wait(Duration::from_secs(10), |s| s.len() >= 2);
    let by_id: HashMap<_, _> = got.iter().map(|d| (d.id.clone(), d.clone())).collect();
    assert_eq!(by_id[&cli_id].subject, "orders.created");
    assert_eq!((by_id[&cli_id].data.as_str(), by_id[&cli_id].attempt), ("hello", 1));
    assert_eq!(by_id[&api_id].data, "money back");
    assert_eq!(by_id[&api_id].subject, "refunds.eu.issued");

    // No trigger takes it: refused, not stored.
    let err = publish(&up.url, &up.token, "orders.created.late", "x").unwrap_err();
    assert_eq!(err.0, 404, "{err:?}");
    assert!(err.1.contains("no function is triggered by"), "{err:?}");
    let err = up.tern_err(&["publish", "nobody.listens", "x"]);
    assert!(err.contains("no function is triggered"), "{err}");
    // Wildcards and Tern's own subjects cannot be published on.
    assert_eq!(publish(&up.url, &up.token, "orders.*", "x").unwrap_err().0, 400);
    assert_eq!(publish(&up.url, &up.token, "tern.v1.invoke.orders", "x").unwrap_err().0, 400);
    // The token is required.
    assert_eq!(publish(&up.url, "wrong", "orders.created", "x").unwrap_err().0, 401);

    // Bad triggers are refused at deploy, and nothing is stored.
    for (args, says) in [
        (vec!["--on-event", ">"], "first token"),
        (vec!["--on-event", "tern.>"], "reserved"),
        (vec!["--on-event", "a..b"], "empty token"),
        (vec!["--on-event", "a", "--on-event", "a"], "twice"),
        (vec!["--schedule", "61 * * * *"], "minute"),
        (vec!["--on-event", "a", "--max-attempts", "0"], "max attempts"),
    ] {
        let mut full = vec!["deploy", plain.to_str().unwrap(), "--name", "bad"];
        full.extend(args.iter().copied());
        let err = up.tern_err(&full);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let err =
        up.tern_err(&["deploy", guest("hello").to_str().unwrap(), "--name", "bad", "--on-event", "a.b"]);
    assert!(err.contains("HTTP function"), "{err}");
    assert!(!up.tern_ok(&["list"]).contains("bad"));

    // Only its events, each once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(seen.all().len(), 2, "{:?}", seen.all());

    // A redeploy keeps the trigger's position; a deleted function's
    // trigger takes no more events.
    up.deploy(&plain, "orders", &["--on-event", "orders.*"]);
    let id = publish(&up.url, &up.token, "orders.again", "v2").unwrap();
    seen.wait(Duration::from_secs(10), |s| s.iter().any(|d| d.id == id));
    assert_eq!(publish(&up.url, &up.token, "refunds.x", "gone").unwrap_err().0, 404, "trigger removed in v2");
    up.tern_ok(&["delete", "orders"]);
    assert_eq!(publish(&up.url, &up.token, "orders.created", "x").unwrap_err().0, 404);
}

#[test]
fn ten_thousand_events_none_lost() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start(&dir.path().join("data"));
    up.deploy(&guest("plain_event"), "bulk", &["--on-event", "bulk.*"]);
    let seen = Deliveries::follow(&up.url, &up.token, "bulk");
    let n = 10_000;
    let started = Instant::now();
    let published: Vec<String> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let up = &up;
                s.spawn(move || {
                    (t..n)
                        .step_by(8)
                        .map(|i| publish(&up.url, &up.token, "bulk.item", &i.to_string()).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let publish_time = started.elapsed();
    let published: HashSet<String> = published.into_iter().collect();
    assert_eq!(published.len(), n, "ids are unique");
    let got = seen.wait(Duration::from_secs(120), |s| ids(s).len() >= n);
    let handled = ids(&got);
    let missing: Vec<_> = published.difference(&handled).take(5).collect();
    assert!(missing.is_empty(), "{} of {n} never handled, e.g. {missing:?}", n - handled.len());
    eprintln!(
        "10,000 events: published in {publish_time:?}, all handled after {:?}, {} duplicates",
        started.elapsed(),
        got.len() - handled.len()
    );
}

#[test]
fn kill_9_and_restart_of_tern_up_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = TernUp::start(&data);
    // 200 ms per event: many are still in the log, or in flight, at the kill.
    up.deploy(
        &guest("plain_event"),
        "slow",
        &["--on-event", "slow.*", "--concurrency", "4", "--max-scale", "1"],
    );
    let before = Deliveries::follow(&up.url, &up.token, "slow");
    let (url, token) = (up.url.clone(), up.token.clone());
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..5000 {
                    match publish(&url, &token, "slow.nap", &format!("{t}-{i}")) {
                        Ok(id) => acked.push(id),
                        Err(_) => break, // tern up is gone: not acknowledged
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    up.kill();
    let acked: HashSet<String> = publishers.into_iter().flat_map(|p| p.join().unwrap()).collect();
    let seen_before = ids(&before.all());
    drop(before);
    assert!(acked.len() > 50, "only {} events acknowledged before the kill", acked.len());
    assert!(
        seen_before.len() < acked.len(),
        "the kill came after everything was handled; test proves nothing"
    );

    let up = TernUp::start(&data);
    let after = Deliveries::follow(&up.url, &up.token, "slow");
    let got = after.wait(Duration::from_secs(120), |s| {
        acked.iter().all(|id| seen_before.contains(id) || s.iter().any(|d| &d.id == id))
    });
    let handled: HashSet<String> = seen_before.union(&ids(&got)).cloned().collect();
    let lost: Vec<_> = acked.difference(&handled).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {lost:?}",
        acked.difference(&handled).count()
    );
    eprintln!(
        "{} acknowledged before kill -9; {} handled before, {} after the restart ({} handled twice)",
        acked.len(),
        seen_before.len(),
        ids(&got).len(),
        seen_before.intersection(&ids(&got)).count()
    );
}

#[test]
fn an_event_wakes_a_function_at_zero_and_bad_publishes_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start(&dir.path().join("data"));
    up.deploy(&guest("plain_event"), "sleepy", &["--on-event", "wake.*", "--idle", "1s"]);
    assert!(eventually(Duration::from_secs(10), || up.describe("sleepy")["replicas"] == 0), "scaled to zero");
    let seen = Deliveries::follow(&up.url, &up.token, "sleepy");
    let id = publish(&up.url, &up.token, "wake.up", "ring").unwrap();
    let got = seen.wait(Duration::from_secs(10), |s| s.iter().any(|d| d.id == id));
    assert!(got.iter().any(|d| d.id == id && d.attempt == 1), "delivered on the first try: {got:?}");
    let scale = &up.describe("sleepy")["scale"];
    assert_eq!(scale["cold_starts"], 1, "the event woke it through the activator: {scale}");

    // Past the 8 MiB body limit: 413, nothing stored or delivered.
    let big = "x".repeat(9 * 1024 * 1024);
    let err = publish(&up.url, &up.token, "wake.big", &big).unwrap_err();
    assert_eq!(err.0, 413, "{}", &err.1[..err.1.len().min(200)]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!seen.all().iter().any(|d| d.subject == "wake.big"));
    assert!(up.tern_ok(&["dlq", "list", "sleepy"]).contains("no dead letters"));
}
