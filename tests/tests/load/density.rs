//! Density: a node is charged by what its functions use, not by their
//! memory limits, so it holds many; when it is full, the least recently
//! used idle function makes room for one a request waits for, and the
//! request never fails; `--min-scale` keeps a function loaded; and the
//! memory budget bounds how many instances run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tern_tests::{Client, TernUp, burst, eventually, guest};

/// Runs `job(i)` for every i in 0..n, four at a time.
fn parallel(n: usize, job: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    job(i);
                }
            });
        }
    });
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Deploys `component` as `f0..fN` (route `/fI`) through the admin API,
/// with `query` added to each deploy.
fn deploy_many(c: &Client, component: &[u8], n: usize, query: &str) {
    let client = http();
    parallel(n, |i| {
        let r = client
            .post(format!("{}/api/v1/functions/f{i}/versions?routes=/f{i}{query}", c.url))
            .bearer_auth(&c.token)
            .body(component.to_vec())
            .send()
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "deploy f{i}: {status} {}", r.text().unwrap_or_default());
    });
}

/// GETs `/fI` for each i in `which`; every answer must be hello's 200.
fn request_all(c: &Client, which: &[usize]) {
    let client = http();
    parallel(which.len(), |k| {
        let i = which[k];
        let r = client.get(format!("{}/f{i}?name=f{i}", c.url)).send().unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert_eq!((status, body.as_str()), (200, format!("Hello, f{i}!\n").as_str()), "GET /f{i}");
    });
}

fn node(up: &TernUp) -> serde_json::Value {
    up.status()["nodes"][0].clone()
}

#[test]
fn a_thousand_functions_share_one_node_and_three_hundred_answer_round_robin() {
    let _solo = crate::solo();
    let (_dir, up) = TernUp::start_temp();
    let hello = std::fs::read(guest("hello")).unwrap();
    deploy_many(&up, &hello, 1000, "&idle_ms=600000");
    // Each loaded function costs its node its own small part, the
    // component's code once: all of them fit (each asks for 128 MiB, and
    // the node's budget is far below 1,000 x 128 MiB).
    let n = node(&up);
    let budget_mib = n["capacity"]["memory_mib"].as_u64().unwrap();
    assert!(budget_mib < 1000 * 128, "this machine's budget would hold them all anyway: {budget_mib} MiB");
    let loaded = n["loaded"].as_object().unwrap().len();
    assert_eq!(loaded, 1000, "functions loaded after deploying 1,000: {loaded}");
    let charged = n["memory"]["footprint_bytes"].as_u64().unwrap();
    assert!(charged < 256 << 20, "1,000 loaded functions are charged {} MiB", charged >> 20);

    let round_robin: Vec<usize> = (0..300).chain(0..300).collect();
    request_all(&up, &round_robin);
}

#[test]
fn a_full_node_unloads_its_least_recently_used_idle_function_for_a_cold_request() {
    let _solo = crate::solo();
    // A 24 MiB node: functions of 16 MiB leave it a few MiB for loaded
    // functions (96 KiB each and hello's code once): a few dozen.
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), &["--memory-budget", "24"]);
    let hello = std::fs::read(guest("hello")).unwrap();
    up.deploy(&guest("hello"), "kept", &["--route", "/kept", "--memory", "16", "--min-scale", "1"]);
    let functions = 120;
    deploy_many(&up, &hello, functions, "&memory_mib=16&idle_ms=600000");
    let loaded = node(&up)["loaded"].as_object().unwrap().len();
    assert!(loaded < functions, "the node was never full: {loaded} loaded");

    // Every one of them answers, twice over, though they do not all fit:
    // each cold one unloads the one used longest ago.
    let all: Vec<usize> = (0..functions).chain(0..functions).collect();
    request_all(&up, &all);
    let log = up.log_text();
    let evictions = log.lines().filter(|l| l.contains("unloaded an idle function to make room")).count();
    assert!(
        evictions >= functions,
        "{evictions} idle functions unloaded for {} cold requests",
        2 * functions
    );
    let metrics = up.get("/metrics").body;
    assert!(
        metrics.lines().any(|l| l.starts_with("tern_node_evictions_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The one kept by --min-scale never was.
    assert!(
        !log.lines().any(|l| l.contains("make room") && l.contains(" function=\"kept\"")),
        "kept was evicted"
    );
    assert_eq!(up.describe("kept")["replicas"], 1);
    assert_eq!(up.get("/kept?name=k").body, "Hello, k!\n");
}

#[test]
fn the_memory_budget_bounds_the_instances_running_at_once() {
    let _solo = crate::solo();
    // Room for one 16 MiB instance at a time, and 8 requests of 300 ms at
    // once: they take their turns (none fails), which takes >= 2.4 s.
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), &["--memory-budget", "24"]);
    up.deploy(&guest("hostile"), "slow", &["--route", "/slow/*", "--memory", "16"]);
    let started = Instant::now();
    for (status, body, _) in burst(&format!("{}/slow/nap?ms=300", up.url), 8) {
        assert_eq!((status, body.as_str()), (200, "rested\n"));
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2400), "8 x 300 ms took {took:?}: instances ran side by side");
    // Once the worker reports again, they have given their memory back.
    assert!(eventually(Duration::from_secs(5), || node(&up)["memory"]["held_bytes"] == 0), "{}", node(&up));
}
