//! Logic between the roles, checked with every role in this test's
//! process (`tern_tests::InProcess`: the in-process bus, the sled event
//! log, scheduler, worker and gateway as `tern up` composes them) over real
//! HTTP and the real CLI: deploy's two spec forms, retries and dead
//! letters, cron, and a function that cannot start. What needs a process
//! boundary (kill -9, restarts, NATS) stays in the process tests.

use std::time::{Duration, Instant};
use tern_tests::{Delivered, Deliveries, InProcess, eventually, guest, publish};

/// A deploy through the admin API's query form (what curl users send).
fn deploy_by_query(up: &InProcess, name: &str, query: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(format!("{}/api/v1/functions/{name}/versions?{query}", up.url))
        .bearer_auth(&up.token)
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or_default())
}

/// A deploy as multipart with a hand-written spec part.
fn deploy_by_multipart(
    up: &InProcess,
    name: &str,
    spec: &str,
    component: Vec<u8>,
) -> (u16, serde_json::Value) {
    let form = reqwest::blocking::multipart::Form::new()
        .part("spec", reqwest::blocking::multipart::Part::text(spec.to_string()))
        .part("component", reqwest::blocking::multipart::Part::bytes(component));
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/functions/{name}/versions", up.url))
        .bearer_auth(&up.token)
        .multipart(form)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or_default())
}

#[test]
fn deploy_takes_the_spec_as_multipart_or_query_parameters_alike() {
    let up = InProcess::start();
    let hello = guest("hello");
    let wasm = std::fs::read(&hello).unwrap();
    // The CLI sends multipart; curl users send query parameters.
    up.deploy(
        &hello,
        "by-cli",
        &["--route", "/cli", "--env", "GREETING=Hej", "--memory", "64", "--idle", "90s"],
    );
    let (status, body) = deploy_by_query(
        &up,
        "by-query",
        "route=/query&env=GREETING=Hej&memory_mib=64&idle_ms=90000",
        wasm.clone(),
    );
    assert_eq!(status, 201, "{body}");
    let spec = |name: &str| {
        let mut s = up.describe(name)["active"]["spec"].clone();
        s["name"] = "".into();
        s["routes"] = serde_json::json!([]);
        s
    };
    assert_eq!(spec("by-cli"), spec("by-query"), "one spec, whichever form carried it");
    assert_eq!(up.get("/cli").body, "Hej, world!\n");
    assert_eq!(up.get("/query").body, "Hej, world!\n");

    // Refusals name the problem and store nothing.
    let (status, body) = deploy_by_query(&up, "bad", "colour=red", wasm.clone());
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("unknown deploy parameter \"colour\""),
        "{body}"
    );
    let (status, body) = deploy_by_query(&up, "bad", "memory_mib=lots", wasm.clone());
    assert_eq!(status, 400, "{body}");
    let (status, body) = deploy_by_multipart(&up, "bad", r#"{"name":"other"}"#, wasm.clone());
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("URL names"), "{body}");
    let (status, body) = deploy_by_multipart(&up, "bad", r#"{"memroy_mib": 64}"#, wasm.clone());
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("memroy_mib"), "{body}");
    let (status, body) = deploy_by_multipart(&up, "bad", r#"{"routes": ["/ok"]}"#, b"not wasm".to_vec());
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("not a WebAssembly binary"), "{body}");
    // Past the component limit: 413, as for every other body.
    let (status, body) = deploy_by_query(&up, "bad", "route=/big", vec![0u8; 64 * 1024 * 1024 + 1]);
    assert_eq!(status, 413, "{body}");
    let (status, body) = deploy_by_multipart(&up, "ok-spec", r#"{"routes": ["/m"]}"#, wasm);
    assert_eq!(status, 201, "{body}");
    assert_eq!(up.get("/m").status, 200);
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&up.tern_ok(&["list", "--json"]))
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["by-cli", "by-query", "ok-spec"]);
}

#[test]
fn embedded_function_that_cannot_start_gets_503_not_a_hang() {
    let up = InProcess::start();
    // The embedded worker has no labels: nothing can run this.
    up.deploy(&guest("hello"), "nowhere", &["--route", "/nowhere", "--node-selector", "zone=mars"]);
    let started = Instant::now();
    let r = up.get("/nowhere");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("cannot start"), "{}", r.body);
    assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once, not at the timeout");
}

#[test]
fn a_failing_event_gets_max_attempts_spaced_by_backoff_then_one_dead_letter() {
    let up = InProcess::start();
    let plain = guest("plain_event");
    up.deploy(&plain, "jobs", &["--on-event", "jobs.>", "--max-attempts", "3", "--backoff", "400ms"]);
    let seen = Deliveries::follow(&up.url, &up.token, "jobs");

    let fail = publish(&up.url, &up.token, "jobs.report.fail", "bad").unwrap();
    let flaky = publish(&up.url, &up.token, "jobs.report.flaky", "twice").unwrap();
    let got = seen.wait(Duration::from_secs(15), |s| s.iter().filter(|d| d.id == fail).count() >= 3);
    let tries: Vec<&Delivered> = got.iter().filter(|d| d.id == fail).collect();
    assert_eq!(tries.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 2, 3], "{got:?}");
    // Exponential: 400 ms, then 800 ms (a little slack below for clocks).
    let gaps: Vec<u64> = tries.windows(2).map(|w| w[1].ts_ms - w[0].ts_ms).collect();
    assert!(gaps[0] >= 380 && gaps[0] < 1000, "first retry after {}ms, backoff 400ms", gaps[0]);
    assert!(gaps[1] >= 780 && gaps[1] < 1600, "second retry after {}ms, backoff 800ms", gaps[1]);

    // Then exactly one dead letter, with the last error, and no more tries.
    let list = || -> Vec<serde_json::Value> {
        serde_json::from_str(&up.tern_ok(&["dlq", "list", "jobs", "--json"])).unwrap()
    };
    assert!(eventually(Duration::from_secs(5), || list().len() == 1), "{:?}", list());
    std::thread::sleep(Duration::from_secs(2));
    let letters = list();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], fail.as_str());
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["error"], "always fails (attempt 3)");
    assert_eq!(letters[0]["data"], "bad");
    assert_eq!(seen.all().iter().filter(|d| d.id == fail).count(), 3, "no try after the last");
    // The flaky one succeeded on its third try: no dead letter.
    let flaky_tries: Vec<u32> = seen.all().iter().filter(|d| d.id == flaky).map(|d| d.attempt).collect();
    assert_eq!(flaky_tries, vec![1, 2, 3]);
    let d = up.describe("jobs");
    assert_eq!(d["dead_letters"], 1, "{d}");
    assert_eq!(d["triggers"][0]["filter"], "jobs.>");
    assert_eq!(
        (d["triggers"][0]["waiting"].as_u64(), d["triggers"][0]["unacked"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(up.tern_ok(&["describe", "jobs"]).contains("dead:     1"));
    let table = up.tern_ok(&["dlq", "list", "jobs"]);
    assert!(table.contains(&fail) && table.contains("always fails"), "{table}");

    // Replay delivers it again (as attempt 4); it fails again, so it stays.
    let out = up.tern(&["dlq", "replay", "jobs"]);
    assert!(!out.status.success(), "a failed replay exits 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed again, kept"));
    let again = seen.wait(Duration::from_secs(5), |s| s.iter().any(|d| d.id == fail && d.attempt == 4));
    assert!(again.iter().any(|d| d.id == fail && d.attempt == 4 && d.data == "bad"), "{again:?}");
    assert_eq!(list().len(), 1);

    // A flaky event that ran out of attempts succeeds on replay and is removed.
    up.deploy(&plain, "jobs", &["--on-event", "jobs.>", "--max-attempts", "2", "--backoff", "100ms"]);
    let flaky = publish(&up.url, &up.token, "jobs.x.flaky", "third time lucky").unwrap();
    assert!(eventually(Duration::from_secs(10), || list().len() == 2));
    for cmd in ["list", "replay"] {
        let err = up.tern_err(&["dlq", cmd, "nosuch"]);
        assert!(err.contains("no function named \"nosuch\""), "dlq {cmd}: {err}");
    }
    let out = up.tern_err(&["dlq", "replay", "jobs", "nope"]);
    assert!(out.contains("no dead letter nope"), "{out}");
    let out = up.tern_ok(&["dlq", "replay", "jobs", &flaky]);
    assert!(out.contains(&format!("replayed {flaky}: handled")), "{out}");
    assert!(seen.all().iter().any(|d| d.id == flaky && d.attempt == 3 && d.data == "third time lucky"));
    let left = list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], fail.as_str(), "only the replayed one is removed");
}

#[test]
fn a_cron_trigger_fires_on_schedule() {
    let up = InProcess::start();
    up.deploy(&guest("plain_event"), "tick", &["--schedule", "*/2 * * * * *"]);
    let seen = Deliveries::follow(&up.url, &up.token, "tick");
    let got = seen.wait(Duration::from_secs(12), |s| s.len() >= 3);
    assert!(got.len() >= 3, "three ticks in 12 s: {got:?}");
    let ticks: Vec<u64> = got
        .iter()
        .map(|d| {
            assert_eq!(d.subject, "tern.cron.tick");
            let v: serde_json::Value = serde_json::from_str(&d.data).unwrap();
            assert_eq!(v["schedule"], "*/2 * * * * *");
            v["tick"].as_u64().unwrap()
        })
        .collect();
    for w in ticks.windows(2) {
        assert_eq!(w[1] - w[0], 2, "one event per tick, none skipped or repeated: {ticks:?}");
    }
    for (d, tick) in got.iter().zip(&ticks) {
        // Fired within a second of its time (the loop looks twice a second).
        assert!(d.ts_ms / 1000 >= *tick && d.ts_ms < (tick + 2) * 1000, "{d:?} for tick {tick}");
    }
    assert!(up.describe("tick")["active"]["spec"]["schedule"] == "*/2 * * * * *");
}
