//! Per-invocation receipts, invocation ids and trace context end to end in
//! `tern up`: a response's `Tern-Invocation-Id` finds its receipt and its
//! log lines; receipts show peak memory, cold starts, and one receipt per
//! event attempt; a trace started by a client reaches the function and
//! the events it publishes; logs and receipts survive kill -9.

use std::time::Duration;
use tern_tests::{TernUp, eventually, guest};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn get_traced(up: &TernUp, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("{}{path}", up.url))
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .send()
        .unwrap()
}

fn invocation_id(r: &reqwest::blocking::Response) -> String {
    r.headers().get("tern-invocation-id").expect("Tern-Invocation-Id").to_str().unwrap().to_string()
}

fn receipts(up: &TernUp, function: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["invocations", function, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&up.tern_ok(&args)).unwrap()
}

/// The receipt of invocation `id`, once it is kept.
fn receipt(up: &TernUp, function: &str, id: &str) -> serde_json::Value {
    let mut found = None;
    let kept = eventually(Duration::from_secs(5), || {
        found = receipts(up, function, &["--limit", "1000"]).into_iter().find(|r| r["id"] == id);
        found.is_some()
    });
    assert!(kept, "no receipt for {id}: {:?}", receipts(up, function, &[]));
    found.unwrap()
}

#[test]
fn an_invocation_id_finds_its_receipt_and_its_log_lines() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("hostile"), "h", &["--route", "/h/*", "--memory", "64"]);

    let r = get_traced(&up, "/h/log");
    assert_eq!(r.status(), 200);
    let id = invocation_id(&r);
    assert_eq!(id.len(), 16, "{id}");
    let rec = receipt(&up, "h", &id);
    assert_eq!(rec["function"], "h");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["trigger"], "http");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["bytes_out"], "logged\n".len());
    assert_eq!(rec["node"], "local");
    assert_eq!(rec["trace_id"], TRACE, "the client's trace goes on");
    assert_eq!(rec["cold"], true, "the first request on the replica");
    assert!(rec["duration_us"].as_u64().unwrap() >= rec["guest_us"].as_u64().unwrap(), "{rec}");

    // Its log lines carry its id, and a REPORT line follows them.
    let logs = up.tern_ok(&["logs", "h", "--invocation", &id]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 4, "{logs}");
    assert!(lines.iter().all(|l| l.contains(&id)), "{logs}");
    assert!(lines[0].contains(&format!("traceparent 00-{TRACE}-")), "{logs}");
    assert!(!lines[0].contains("00f067aa0ba902b7"), "the function is a new span: {logs}");
    assert!(lines[3].contains(&format!("REPORT {id} http status 200")), "{logs}");

    // Another request is another invocation, and warm; without a
    // traceparent it starts a trace of its own.
    let other = up.get("/h/log");
    let other_id = other.headers["tern-invocation-id"].to_str().unwrap().to_string();
    assert_ne!(other_id, id);
    let rec = receipt(&up, "h", &other_id);
    assert_eq!(rec["cold"], false);
    assert_ne!(rec["trace_id"], TRACE);
    assert_eq!(rec["trace_id"].as_str().unwrap().len(), 32);
    assert!(!up.tern_ok(&["logs", "h", "--invocation", &id]).contains(&other_id));
    assert!(up.tern_ok(&["logs", "h", "--grep", "on stderr"]).lines().count() == 2);

    // A memory-hungry request: its receipt shows the memory it took, up to
    // the limit, and that it failed.
    let hog = up.get("/h/alloc");
    assert_eq!(hog.status, 500);
    let hog_id = hog.headers["tern-invocation-id"].to_str().unwrap().to_string();
    let rec = receipt(&up, "h", &hog_id);
    let peak = rec["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak > 60 << 20 && peak <= 64 << 20, "peak {peak}");
    assert_eq!(rec["status"], 500);
    assert!(rec["error"].as_str().unwrap().contains("memory limit"), "{rec}");
    let small = receipt(&up, "h", &other_id)["peak_memory_bytes"].as_u64().unwrap();
    assert!(small < 8 << 20, "a request that allocates little shows little: {small}");

    // --failed lists only the failures; the table form names them too.
    let failed = receipts(&up, "h", &["--failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["id"], hog_id);
    let table = up.tern_ok(&["invocations", "h"]);
    assert!(table.contains(&hog_id) && table.contains(&id) && table.contains("memory limit"), "{table}");

    // The same through the admin API.
    let api = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/functions/h/invocations?limit=2", up.url))
        .bearer_auth(&up.token)
        .send()
        .unwrap();
    assert_eq!(api.status(), 200);
    let listed: Vec<serde_json::Value> = api.json().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], hog_id, "newest first");
}

#[test]
fn a_retried_event_has_a_receipt_per_attempt_in_its_publishers_trace() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("plain_event"), "sink", &["--on-event", "orders.>", "--backoff", "100ms"]);
    up.deploy(&guest("publisher"), "pub", &["--route", "/pub/*", "--allow-publish", "orders.*"]);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/pub/orders.flaky", up.url))
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut attempts = Vec::new();
    let all_three = eventually(Duration::from_secs(20), || {
        attempts = receipts(&up, "sink", &[]);
        attempts.len() >= 3
    });
    assert!(all_three, "{attempts:?}");
    attempts.reverse();
    let seen: Vec<_> =
        attempts.iter().map(|r| (r["attempt"].as_u64().unwrap(), r["status"].as_u64().unwrap())).collect();
    assert_eq!(seen, [(1, 500), (2, 500), (3, 200)], "{attempts:?}");
    for r in &attempts {
        assert_eq!(r["trigger"], "event");
        assert_eq!(r["trace_id"], TRACE, "the event carried the publisher's trace: {r}");
    }
    assert_eq!(receipts(&up, "sink", &["--failed"]).len(), 2);
    let logs = up.tern_ok(&["logs", "sink"]);
    assert_eq!(logs.matches("REPORT").count(), 3, "{logs}");
    assert!(logs.contains("attempt=2"), "{logs}");

    // `tern invoke` on an event function is an invoke.
    up.tern_ok(&["invoke", "sink", "--subject", "orders.created", "--data", "y"]);
    assert!(eventually(Duration::from_secs(5), || receipts(&up, "sink", &[])[0]["trigger"] == "invoke"));
}

#[test]
fn logs_and_receipts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = TernUp::start(&data);
    up.deploy(&guest("hostile"), "h", &["--route", "/h/*"]);
    let ids: Vec<String> = (0..20)
        .map(|_| up.get("/h/log").headers["tern-invocation-id"].to_str().unwrap().to_string())
        .collect();
    let last = ids.last().unwrap().clone();
    // What `tern invocations` and `tern logs` have shown is on disk: the
    // crash comes the moment both show the last invocation, no grace.
    receipt(&up, "h", &last);
    let shown = eventually(Duration::from_secs(5), || {
        let logs = up.tern_ok(&["logs", "h", "--invocation", &last]);
        logs.contains("a line on stdout") && logs.contains("REPORT")
    });
    assert!(shown, "the last invocation's lines were never shown");
    up.kill();

    let up = TernUp::start(&data);
    let kept: Vec<String> = receipts(&up, "h", &["--limit", "100"])
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(kept.contains(id), "receipt {id} lost in the crash: {kept:?}");
    }
    let logs = up.tern_ok(&["logs", "h", "--invocation", &last]);
    assert!(logs.contains("a line on stdout") && logs.contains("REPORT"), "{logs}");
    // The ring kept 2,000 lines in memory; the logbook keeps what its
    // retention allows.
    assert_eq!(up.tern_ok(&["logs", "h", "--grep", "on stdout", "--tail", "1000"]).lines().count(), 20);
    // --since: nothing from the future, everything from the last minute.
    assert_eq!(up.tern_ok(&["logs", "h", "--grep", "on stdout", "--since", "1m"]).lines().count(), 20);
}

#[test]
fn in_a_cluster_logs_and_receipts_are_in_jetstream_and_survive_the_scheduler() {
    use tern_tests::process::{Cluster, ClusterOptions};
    let mut c = Cluster::start_opts(ClusterOptions { nats_users: true, ..Default::default() });
    c.tern_ok(&["deploy", guest("hostile").to_str().unwrap(), "--name", "h", "--route", "/h/*"]);
    let ids: Vec<String> = (0..10)
        .map(|_| {
            let r = c.get("/h/log");
            assert_eq!(r.status, 200, "{}", r.body);
            r.headers["tern-invocation-id"].to_str().unwrap().to_string()
        })
        .collect();
    let listed = |c: &Cluster| -> Vec<String> {
        let out = c.tern(&["invocations", "h", "--json", "--limit", "100"]);
        if !out.status.success() {
            return Vec::new();
        }
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || ids.iter().all(|i| listed(&c).contains(i))),
        "{:?}",
        listed(&c)
    );

    // The scheduler is killed and started again: nothing was in its memory.
    c.scheduler.restart();
    assert!(
        eventually(Duration::from_secs(20), || ids.iter().all(|i| listed(&c).contains(i))),
        "receipts after the restart: {:?}",
        listed(&c)
    );
    let logs = c.tern_ok(&["logs", "h", "--invocation", &ids[3]]);
    assert!(logs.contains("a line on stdout") && logs.contains(&format!("REPORT {}", ids[3])), "{logs}");
    // Lines logged while the scheduler was down are kept too: NATS keeps
    // them, not the scheduler.
    c.scheduler.kill();
    let during = c.get("/h/log").headers["tern-invocation-id"].to_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    c.scheduler.restart();
    assert!(eventually(Duration::from_secs(20), || listed(&c).contains(&during)), "{:?}", listed(&c));
}
