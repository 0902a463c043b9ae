//! `--instance-reuse N`: one instance serves up to N requests one after
//! another (its memory persists between them), never two at once; one that
//! trapped or timed out is dropped, not served again. Without the flag,
//! every request gets a fresh instance. The hostile guest's `/count` says
//! which request of its instance it is.

use std::collections::BTreeMap;
use tern_tests::{TernUp, burst, guest};

fn counts(up: &TernUp, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = up.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            r.body.trim().to_string()
        })
        .collect()
}

#[test]
fn an_instance_serves_up_to_n_requests_and_one_that_failed_is_dropped() {
    let (_dir, up) = TernUp::start_temp();
    let hostile = guest("hostile");
    up.deploy(&hostile, "fresh", &["--route", "/fresh/*"]);
    up.deploy(&hostile, "kept", &["--route", "/kept/*", "--instance-reuse", "3"]);
    up.deploy(&hostile, "failing", &["--route", "/failing/*", "--instance-reuse", "100", "--timeout", "1s"]);

    assert_eq!(counts(&up, "/fresh/count", 3), ["1", "1", "1"], "a fresh instance per request");
    assert_eq!(
        counts(&up, "/kept/count", 7),
        ["1", "2", "3", "1", "2", "3", "1"],
        "each instance serves 3 requests, then a new one starts"
    );

    assert_eq!(counts(&up, "/failing/count", 2), ["1", "2"]);
    assert_eq!(up.get("/failing/panic").status, 500);
    assert_eq!(counts(&up, "/failing/count", 2), ["1", "2"], "the instance that trapped was dropped");
    assert_eq!(up.get("/failing/loop").status, 504);
    assert_eq!(counts(&up, "/failing/count", 1), ["1"], "the instance that timed out was dropped");

    // Each request's output is its own, though the instance is the same.
    let logs = up.tern_ok(&["logs", "kept", "--json"]);
    let lines: Vec<serde_json::Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut by_invocation: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l["stream"] == "stdout") {
        by_invocation
            .entry(l["invocation"].as_str().unwrap().to_string())
            .or_default()
            .push(l["line"].as_str().unwrap().to_string());
    }
    assert_eq!(by_invocation.len(), 7, "one invocation per request: {by_invocation:?}");
    assert!(by_invocation.values().all(|v| v.len() == 1), "one line each: {by_invocation:?}");

    assert_eq!(up.describe("kept")["versions"][0]["spec"]["instance_reuse"], 3);
    let refused = up.tern_err(&[
        "deploy",
        hostile.to_str().unwrap(),
        "--name",
        "too-many",
        "--instance-reuse",
        "2000000",
    ]);
    assert!(refused.contains("instance reuse 2000000 is out of range"), "{refused}");
}

#[test]
fn concurrent_requests_never_share_an_instance() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("hostile"), "kept", &["--route", "/kept/*", "--instance-reuse", "1000"]);
    let url = format!("{}/kept/count?ms=30", up.url);
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..4 {
        for (status, body, _) in burst(&url, 16) {
            assert_eq!(status, 200, "{body}");
            *seen.entry(body.trim().parse().unwrap()).or_default() += 1;
        }
    }
    // Instance i answered 1, 2, ..., k_i: every number is seen no more
    // often than the one before it, and the 1s are the instances made.
    let made = seen[&1];
    let mut previous = made;
    for (n, times) in &seen {
        assert!(
            *times <= previous,
            "request number {n} seen {times} times, more than the one before: {seen:?}"
        );
        previous = *times;
    }
    assert!(made < 64, "64 requests made {made} instances: none was reused ({seen:?})");
}
