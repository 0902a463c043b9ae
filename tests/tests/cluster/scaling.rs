//! Autoscaling, scale to zero and the activator, end to end, in embedded
//! mode (`tern up`) and in cluster mode (separate processes on NATS).
//!
//! The autoscaler's windows are shortened (`--stable-window 6s
//! --panic-window 2s`) and functions get `--idle 2s`, so that scaling
//! happens within a test's patience; the decisions are the same as with the
//! defaults, which the scheduler's unit tests cover.

use serde_json::Value;
use std::time::Duration;
use tern_tests::{Cluster, Load, Role, TernUp, burst, eventually, guest};

const WINDOWS: &[&str] = &["--stable-window", "6s", "--panic-window", "2s"];

fn replicas(d: &Value) -> u64 {
    d["replicas"].as_u64().unwrap()
}

fn cold_starts(d: &Value) -> (u64, u64) {
    (d["scale"]["cold_starts"].as_u64().unwrap(), d["scale"]["wakes"].as_u64().unwrap())
}

/// Requests waiting for one function share its wake. The count is not
/// exactly one: a gateway asks the scheduler again when an answer is slow,
/// and a request sent just as the replica came up may find none and wake
/// it again (no cold start: the scheduler already has it). What a user sees
/// is the one cold start; what must not happen is a wake per request.
fn shared_wakes(wakes: u64) {
    assert!((1..=20).contains(&wakes), "{wakes} wakes for 200 waiting requests: they must share one");
}

#[test]
fn embedded_scales_to_zero_wakes_on_request_and_keeps_min_scale() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), WINDOWS);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello", "--idle", "2s"]);
    up.deploy(&guest("plain_wasi"), "warm", &["--route", "/warm", "--idle", "1s", "--min-scale", "1"]);
    let d = up.describe("hello");
    assert_eq!(replicas(&d), 1, "a new version starts with one replica: {d}");
    assert_eq!(d["active"]["spec"]["min_scale"], 0, "min-scale defaults to 0");

    // Idle for its window: unloaded everywhere.
    assert!(
        eventually(Duration::from_secs(10), || replicas(&up.describe("hello")) == 0),
        "hello never scaled to zero: {}",
        up.describe("hello")
    );
    let status: Value = serde_json::from_str(&up.tern_ok(&["status", "--json"])).unwrap();
    assert!(status["replicas"].get("hello").is_none(), "status still shows a replica: {status}");
    assert_eq!(status["scale"]["hello"]["desired"], 0);
    assert!(up.log_text().contains("unloaded"), "the worker logs the unload");

    // The next request succeeds: it waits while the function starts.
    let (before, _) = cold_starts(&up.describe("hello"));
    let r = up.get("/hello");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, world!\n"));
    let d = up.describe("hello");
    assert_eq!(replicas(&d), 1);
    assert_eq!(cold_starts(&d).0, before + 1, "{d}");
    let cold = &d["scale"]["cold_start_ms"];
    assert!(cold["p50"].as_f64().unwrap() > 0.0, "cold-start latency is reported: {d}");
    let human = up.tern_ok(&["describe", "hello"]);
    assert!(human.contains("cold:") && human.contains("replicas: 1 ready"), "{human}");

    // 200 concurrent requests to a function at zero all succeed, with one
    // wake and one cold start.
    assert!(eventually(Duration::from_secs(10), || replicas(&up.describe("hello")) == 0));
    let (cold_before, wakes_before) = cold_starts(&up.describe("hello"));
    let results = burst(&format!("{}/hello", up.url), 200);
    let failed: Vec<_> = results.iter().filter(|(s, ..)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of 200 failed, e.g. {:?}", failed.len(), failed.first());
    let (cold_after, wakes_after) = cold_starts(&up.describe("hello"));
    assert_eq!(cold_after, cold_before + 1, "one cold start for 200 waiting requests");
    shared_wakes(wakes_after - wakes_before);

    // min-scale 1, idle 1 s: never unloaded.
    let d = up.describe("warm");
    assert_eq!((replicas(&d), d["scale"]["desired"].as_u64()), (1, Some(1)), "{d}");
    assert_eq!(cold_starts(&d), (0, 0), "{d}");
    assert_eq!(up.get("/warm").status, 200);
    let status = up.tern_ok(&["status"]);
    assert!(status.contains("FUNCTIONS") && status.contains("warm  replicas 1/1"), "{status}");
}

#[test]
fn cluster_scales_out_under_load_back_in_and_to_zero() {
    let c = Cluster::start_with(2, WINDOWS);
    // 100 ms requests; target 2 in flight per replica.
    c.tern_ok(&[
        "deploy",
        guest("hostile").to_str().unwrap(),
        "--name",
        "slow",
        "--route",
        "/slow/*",
        "--concurrency",
        "2",
        "--idle",
        "2s",
    ]);
    c.tern_ok(&[
        "deploy",
        guest("hello").to_str().unwrap(),
        "--name",
        "pinned",
        "--route",
        "/pinned",
        "--idle",
        "1s",
        "--min-scale",
        "1",
    ]);
    assert_eq!(c.replicas("slow").len(), 1);

    // About 8 in flight against a target of 2 on one replica: out to both.
    let load = Load::start(&c.url, "/slow/nap?ms=100", 8);
    let out = eventually(Duration::from_secs(20), || c.replicas("slow").len() == 2);
    let during = c.describe("slow");
    std::thread::sleep(Duration::from_secs(2));
    let results = load.finish();
    assert!(out, "never scaled out to both workers: {during}");
    assert!(during["scale"]["stable_concurrency"].as_f64().unwrap() > 2.0, "{during}");
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed while scaling", results.len());

    // The burst stops; a trickle (one request at a time, under the target)
    // keeps it from going idle: back in to one replica.
    let trickle = Load::start(&c.url, "/slow/nap?ms=20", 1);
    let back_in = eventually(Duration::from_secs(25), || c.replicas("slow").len() == 1);
    let after = c.describe("slow");
    let results = trickle.finish();
    assert!(back_in, "never scaled back in: {after}");
    assert!(results.iter().all(|(_, ok)| *ok), "a request failed while scaling in");
    // No requests for the idle window: zero.
    assert!(
        eventually(Duration::from_secs(10), || c.replicas("slow").is_empty()),
        "never scaled to zero: {}",
        c.describe("slow")
    );
    assert_eq!(c.replicas("pinned").len(), 1, "min-scale 1 stays loaded");

    // 200 concurrent requests at zero, over NATS: all succeed, one wake.
    let (cold_before, wakes_before) = cold_starts(&c.describe("slow"));
    let results = burst(&format!("{}/slow/nap?ms=10", c.url), 200);
    let failed: Vec<_> = results.iter().filter(|(s, ..)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of 200 failed, e.g. {:?}", failed.len(), failed.first());
    let d = c.describe("slow");
    assert_eq!(cold_starts(&d).0, cold_before + 1, "one cold start for 200 waiting requests: {d}");
    shared_wakes(cold_starts(&d).1 - wakes_before);
    assert_eq!(c.replicas("pinned").len(), 1, "min-scale 1 never went to zero: {}", c.describe("pinned"));
}

#[test]
fn cluster_activator_bounds_its_buffer_and_times_out() {
    let mut c = Cluster::start_with(1, WINDOWS);
    // A second gateway with a small buffer and a short cold-start timeout.
    let gw = Role::start(
        "gateway",
        &c.nats.url(),
        &c.dir.path().join("gateway2"),
        &["--listen", "127.0.0.1:0", "--cold-start-buffer", "5", "--cold-start-timeout", "2s"],
    );
    let url = gw.url.clone().unwrap();
    c.tern_ok(&[
        "deploy",
        guest("hello").to_str().unwrap(),
        "--name",
        "hello",
        "--route",
        "/hello",
        "--idle",
        "1s",
    ]);
    assert!(eventually(Duration::from_secs(10), || c.replicas("hello").is_empty()));

    // With the scheduler down nothing can wake the function: five requests
    // wait the timeout, the rest are refused at once.
    c.scheduler.kill();
    let results = burst(&format!("{url}/hello"), 10);
    let full: Vec<_> = results.iter().filter(|(_, b, _)| b.contains("already wait")).collect();
    let timed_out: Vec<_> = results.iter().filter(|(_, b, _)| b.contains("did not start within")).collect();
    assert!(results.iter().all(|(s, ..)| *s == 503), "{results:?}");
    assert_eq!((full.len(), timed_out.len()), (5, 5), "{results:?}");
    assert!(full.iter().all(|(.., t)| *t < Duration::from_secs(1)), "refused at once: {full:?}");
    assert!(timed_out.iter().all(|(.., t)| *t >= Duration::from_millis(1900)), "{timed_out:?}");

    // Once the scheduler is back, the same request wakes the function.
    c.scheduler.restart();
    let client = reqwest::blocking::Client::new();
    let ok = eventually(Duration::from_secs(20), || {
        client.get(format!("{url}/hello")).send().is_ok_and(|r| r.status().as_u16() == 200)
    });
    assert!(ok, "hello never answered after the scheduler came back");
}
