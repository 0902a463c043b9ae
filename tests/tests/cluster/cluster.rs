//! Cluster mode end to end: a real nats-server, and the scheduler, workers
//! and gateway as separate `tern` processes.

use std::time::{Duration, Instant};
use tern_tests::{Cluster, Load, eventually, guest};

fn deploy(c: &Cluster, file: &str, name: &str, extra: &[&str]) -> String {
    let path = guest(file);
    let mut args = vec!["deploy", path.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    c.tern_ok(&args)
}

#[test]
fn cluster_deploys_serves_places_and_reports() {
    let c = Cluster::start(2);
    let (w0, w1) = (c.node_id(0), c.node_id(1));

    let out = deploy(&c, "hello", "hello", &["--route", "/hello", "--min-scale", "2"]);
    assert!(out.contains("2 replicas ready"), "{out}");
    assert_eq!(c.get("/hello").body, "Hello, world!\n");
    let mut on = c.replicas("hello");
    on.sort();
    let mut both = vec![w0.clone(), w1.clone()];
    both.sort();
    assert_eq!(on, both, "replicas of one function spread across nodes");

    // A node selector pins a function to the workers that match it.
    deploy(
        &c,
        "json_api",
        "api",
        &["--route", "/api/echo", "--route", "/api/add/:a/:b", "--node-selector", "zone=w1"],
    );
    assert_eq!(c.replicas("api"), std::slice::from_ref(&w1));
    assert_eq!(c.get("/api/add/2/3").body, r#"{"a":2,"b":3,"sum":5}"#);
    let out = deploy(&c, "plain_wasi", "nowhere", &["--route", "/nowhere", "--node-selector", "zone=mars"]);
    assert!(out.contains("0 replicas ready"), "{out}");

    // Bodies near the 8 MiB limit cross NATS both ways.
    let title = "x".repeat(8 * 1024 * 1024 - 1024);
    let body = format!(r#"{{"title":"{title}"}}"#);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let r = client.post(format!("{}/api/echo", c.url)).body(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["title_length"].as_u64(), Some(title.len() as u64));

    let list: serde_json::Value = serde_json::from_str(&c.tern_ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let status = c.tern_ok(&["status"]);
    assert!(status.contains(&w0) && status.contains(&w1) && status.contains("alive"), "{status}");
    // Heartbeats carry per-function load (a second behind at most).
    let served = || -> u64 {
        c.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["load"].as_object().unwrap().values().map(|l| l["completed"].as_u64().unwrap()))
            .sum()
    };
    assert!(eventually(Duration::from_secs(5), || served() >= 3), "load not reported: {}", c.status());
}

#[test]
fn killing_a_worker_under_load_only_fails_its_in_flight_requests() {
    let mut c = Cluster::start(2);
    deploy(&c, "hello", "hello", &["--route", "/hello", "--min-scale", "2", "--timeout", "2s"]);
    deploy(&c, "plain_wasi", "solo", &["--route", "/solo", "--min-scale", "1"]);
    let victim_id = c.replicas("solo")[0].clone();
    let victim = (0..2).find(|i| c.node_id(*i) == victim_id).unwrap();
    let survivor_id = c.node_id(1 - victim);

    let load = Load::start(&c.url, "/hello", 4);
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    c.workers[victim].kill();
    std::thread::sleep(Duration::from_secs(8));
    let results = load.finish();

    // Only requests that were in flight on the victim when it died fail
    // (each load thread has one in flight at a time); requests started 5 s
    // after the kill all succeed.
    let in_flight_failures = results.iter().filter(|(t, ok)| *t < killed_at && !ok).count();
    assert!(in_flight_failures <= 4, "{in_flight_failures} requests started before the kill failed");
    let late: Vec<_> = results.iter().filter(|(t, _)| *t > killed_at + Duration::from_secs(5)).collect();
    assert!(!late.is_empty(), "load went on after the kill");
    assert!(late.iter().all(|(_, ok)| *ok), "requests succeed again within 5 s of the kill");
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    eprintln!("{} requests, {failed} failed ({in_flight_failures} in flight at the kill)", results.len());

    // The victim's only-replica function is placed on the survivor.
    assert!(
        eventually(Duration::from_secs(15), || c.replicas("solo") == [survivor_id.clone()]),
        "solo was not re-placed: {:?}",
        c.replicas("solo")
    );
    assert_eq!(c.get("/solo").status, 200);
    let status = c.status();
    let dead =
        status["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == victim_id.as_str()).unwrap();
    assert_eq!(dead["alive"], false);

    // A worker that comes back is taken in again.
    c.workers[victim].restart();
    c.wait_for_nodes(2);
}

#[test]
fn the_gateway_serves_while_the_scheduler_is_down_and_nothing_is_lost() {
    let mut c = Cluster::start(1);
    deploy(&c, "hello", "hello", &["--route", "/hello"]);
    deploy(&c, "hello", "hello", &["--route", "/hello", "--env", "GREETING=Hej"]);
    deploy(&c, "json_api", "api", &["--route", "/api/add/:a/:b"]);
    let before = c.tern_ok(&["list", "--json"]);

    let load = Load::start(&c.url, "/hello", 2);
    std::thread::sleep(Duration::from_millis(500));
    c.scheduler.kill();
    std::thread::sleep(Duration::from_secs(3));
    // Admin calls need the scheduler and say so…
    let out = c.tern(&["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheduler"));
    // …but traffic does not.
    assert_eq!(c.get("/api/add/1/1").status, 200);
    c.scheduler.restart();
    std::thread::sleep(Duration::from_secs(1));
    let results = load.finish();
    assert!(results.len() > 20);
    assert!(results.iter().all(|(_, ok)| *ok), "every request succeeded while the scheduler was down");

    assert!(eventually(Duration::from_secs(10), || c.tern(&["list", "--json"]).status.success()));
    assert_eq!(c.tern_ok(&["list", "--json"]), before, "no function, version or route lost");
    let d: serde_json::Value = serde_json::from_str(&c.tern_ok(&["describe", "hello", "--json"])).unwrap();
    assert_eq!(d["versions"].as_array().unwrap().len(), 2);
    assert_eq!(c.get("/hello").body, "Hej, world!\n");
    // And it places again: a rollback reaches the worker.
    c.tern_ok(&["rollback", "hello"]);
    assert_eq!(c.get("/hello").body, "Hello, world!\n");
}

#[test]
fn every_role_reconnects_after_nats_restarts() {
    let mut c = Cluster::start(1);
    deploy(&c, "hello", "hello", &["--route", "/hello"]);
    assert_eq!(c.get("/hello").status, 200);

    c.nats.restart(Duration::from_secs(1));
    assert!(
        eventually(Duration::from_secs(20), || c.try_get("/hello").is_ok_and(|r| r.status == 200)),
        "serving did not resume after the NATS restart"
    );
    // Gateway → scheduler → worker all work again: a new deploy is served.
    assert!(eventually(Duration::from_secs(20), || c.tern(&["status"]).status.success()));
    c.wait_for_nodes(1);
    deploy(&c, "plain_wasi", "after", &["--route", "/after"]);
    assert_eq!(c.get("/after").status, 200);
}

#[test]
fn tern_up_runs_every_role_over_nats() {
    let dir = tempfile::tempdir().unwrap();
    let nats = tern_tests::NatsServer::start(&dir.path().join("nats"));
    let up = tern_tests::TernUp::start_with(&dir.path().join("data"), &["--nats", &nats.url()]);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
    let status: serde_json::Value = serde_json::from_str(&up.tern_ok(&["status", "--json"])).unwrap();
    assert_eq!(status["replicas"]["hello"].as_array().unwrap().len(), 1);
    // The roles really talk over NATS: a second worker joins through it.
    let _worker = tern_tests::Role::start("worker", &nats.url(), &dir.path().join("w2"), &[]);
    let two = || {
        let s: serde_json::Value = serde_json::from_str(&up.tern_ok(&["status", "--json"])).unwrap();
        s["nodes"].as_array().unwrap().len() == 2
    };
    assert!(
        eventually(Duration::from_secs(20), two),
        "a separate worker joined the tern up cluster over NATS"
    );
}
