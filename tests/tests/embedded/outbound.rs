//! Functions reaching out over HTTP in `tern up`, with a component built
//! from public WIT only (tests/guests/fetch, the `wasi` crate): denied
//! unless granted, private addresses only when named, TLS with a CA given
//! by `--outbound-ca`, the function's timeout and `--max-outbound-body`,
//! and the circuit breaker; upstreams are real servers on loopback that
//! count their connections.

use std::time::{Duration, Instant};
use tern_tests::{Answer, Cluster, ClusterOptions, TernUp, TestCa, Upstream, eventually, guest};

fn fetch(up: &TernUp, name: &str, extra: &[&str]) {
    let route = format!("/{name}");
    let env = format!("NAME={name}");
    let mut args = vec!["--route", route.as_str(), "--env", env.as_str()];
    args.extend_from_slice(extra);
    up.deploy(&guest("fetch"), name, &args);
}

/// `describe`'s outbound counters once `ready` holds of them (workers
/// report them in their once-a-second heartbeats).
fn outbound(
    up: &tern_tests::Client,
    name: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut o = serde_json::Value::Null;
    eventually(Duration::from_secs(5), || {
        o = up.describe(name)["outbound"].clone();
        ready(&o)
    });
    o
}

#[test]
fn requests_go_out_only_as_granted_and_private_addresses_only_when_named() {
    let upstream = Upstream::start();
    let other = Upstream::start();
    let (_dir, up) = TernUp::start_temp();
    let exact = format!("http://127.0.0.1:{}", upstream.addr.port());
    fetch(&up, "exact", &["--allow-outbound", &exact]);
    fetch(&up, "none", &[]);
    fetch(&up, "wild", &["--allow-outbound", "*://*:*"]);
    let other_port = format!("http://127.0.0.1:{}", other.addr.port());
    fetch(&up, "elsewhere", &["--allow-outbound", &other_port]);
    let target = format!("{}/hello", upstream.url("http"));

    // Granted exactly: the request goes out, its answer comes back.
    let r = up.get(&format!("/exact?url={target}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("upstream saw GET /hello HTTP/1.1"), "{}", r.body);
    assert!(r.body.ends_with("via exact\n"), "{}", r.body);
    assert_eq!(upstream.connections(), 1);

    // Not granted (no grant; another port): denied in the guest, nothing sent.
    for name in ["none", "elsewhere"] {
        let r = up.get(&format!("/{name}?url={target}"));
        assert_eq!(r.status, 502, "{name}: {}", r.body);
        assert!(r.body.contains("HttpRequestDenied"), "{name}: {}", r.body);
    }
    // A wildcard does not reach loopback, the metadata address, or
    // another function.
    for url in [target.clone(), format!("http://localhost:{}/", upstream.addr.port())] {
        let r = up.get(&format!("/wild?url={url}"));
        assert_eq!(r.status, 502, "{url}: {}", r.body);
        assert!(r.body.contains("DestinationIpProhibited"), "{url}: {}", r.body);
    }
    let r = up.get("/wild?url=http://169.254.169.254/latest/meta-data/");
    assert!(r.body.contains("DestinationIpProhibited"), "{}", r.body);
    let r = up.get("/wild?url=http://exact.tern.internal/");
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    assert_eq!(upstream.connections(), 1, "a denied request reached the upstream");
    assert_eq!(other.connections(), 0);

    // One log line names the host; describe counts it all.
    let logs = up.tern_ok(&["logs", "none"]);
    let line = format!("outbound request to http://127.0.0.1:{} denied", upstream.addr.port());
    assert!(logs.contains(&line), "{logs}");
    let o = outbound(&up, "exact", |o| o["calls"] == 1);
    assert_eq!((o["calls"].as_u64(), o["errors"].as_u64()), (Some(1), Some(0)), "{o}");
    assert!(o["bytes_in"].as_u64().unwrap() > 0, "{o}");
    assert_eq!(outbound(&up, "wild", |o| o["denied"] == 4)["denied"], 4);
    let text = up.tern_ok(&["describe", "wild"]);
    assert!(text.contains("outbound: *://*:*") && text.contains("denied 4"), "{text}");

    // Bad patterns are refused at deploy, saying why.
    for (bad, why) in
        [("https://example.com/path", "no path"), ("example.com", "scheme"), ("*://x.com", "port")]
    {
        let e = up.tern_err(&[
            "deploy",
            guest("fetch").to_str().unwrap(),
            "--name",
            "bad",
            "--allow-outbound",
            bad,
        ]);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn https_is_verified_against_the_platform_roots_and_outbound_ca() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let trusted = Upstream::start_tls(&ca);
    let untrusted = Upstream::start_tls(&stranger);
    let up = TernUp::start_with(&dir.path().join("data"), &["--outbound-ca", ca_file.to_str().unwrap()]);
    let grant = |u: &Upstream| format!("https://localhost:{}", u.addr.port());
    fetch(&up, "tls", &["--allow-outbound", &grant(&trusted), "--allow-outbound", &grant(&untrusted)]);

    let r = up.get(&format!("/tls?url={}/secure", grant(&trusted)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("upstream saw GET /secure"), "{}", r.body);
    // The connection is kept alive: a second call reuses it (no second
    // TCP and TLS handshake).
    assert_eq!(up.get(&format!("/tls?url={}/again", grant(&trusted))).status, 200);
    assert_eq!(trusted.connections(), 1, "a kept-alive connection was not reused");
    let r = up.get(&format!("/tls?url={}/secure", grant(&untrusted)));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("TlsCertificateError"), "{}", r.body);

    let other = dir.path().join("other").to_str().unwrap().to_string();
    let e = up.tern_err(&[
        "up",
        "--outbound-ca",
        "/nonexistent.pem",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &other,
    ]);
    assert!(e.contains("outbound CA file /nonexistent.pem"), "{e}");
}

#[test]
fn slow_and_huge_upstreams_are_cut_without_touching_other_functions() {
    let slow = Upstream::start();
    slow.set(Answer::Slow(Duration::from_secs(10)));
    let huge = Upstream::start();
    let (_dir, up) = TernUp::start_temp();
    let grant = |u: &Upstream| format!("http://127.0.0.1:{}", u.addr.port());
    fetch(&up, "patient", &["--allow-outbound", &grant(&slow), "--timeout", "1s"]);
    fetch(&up, "small", &["--allow-outbound", &grant(&huge), "--max-outbound-body", "1MiB"]);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);

    let started = Instant::now();
    let r = up.get(&format!("/patient?url={}/", grant(&slow)));
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(4), "cut after {:?}", started.elapsed());

    // Past the limit by its length, and by its bytes as they come.
    huge.set(Answer::Huge(4 << 20));
    let r = up.get(&format!("/small?url={}/", grant(&huge)));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("HttpResponseBodySize"), "{}", r.body);
    huge.set(Answer::Huge(1 << 20));
    let r = up.get(&format!("/small?url={}/", grant(&huge)));
    assert_eq!(r.status, 200, "exactly the limit is fine: {}", r.body);
    assert_eq!(up.get("/hello").status, 200);
    let logs = up.tern_ok(&["logs", "small"]);
    assert!(logs.contains("--max-outbound-body"), "{logs}");
}

#[test]
fn a_failing_upstream_trips_the_breaker_until_a_probe_succeeds() {
    let upstream = Upstream::start();
    upstream.set(Answer::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(
        &dir.path().join("data"),
        &["--breaker-failures", "3", "--breaker-cooldown", "1s"],
    );
    let url = format!("/flaky?url={}/", upstream.url("http"));
    fetch(&up, "flaky", &["--allow-outbound", &upstream.url("http")]);

    for _ in 0..3 {
        assert_eq!(up.get(&url).status, 500, "the upstream's own answer comes back");
    }
    assert_eq!(upstream.connections(), 3);
    // Open: fails fast in the guest without reaching the upstream.
    let r = up.get(&url);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("DestinationUnavailable"), "{}", r.body);
    assert_eq!(upstream.connections(), 3, "an open breaker let a call through");
    let o = outbound(&up, "flaky", |o| o["short_circuited"] == 1);
    assert_eq!(o["short_circuited"], 1, "{o}");
    let breaker = &o["breakers"][0];
    assert_eq!(breaker["state"], "open", "{o}");
    assert_eq!(breaker["upstream"], format!("127.0.0.1:{}", upstream.addr.port()));
    assert_eq!(breaker["node"], "local");

    // The upstream recovers; after the cool-down one probe goes through
    // and closes the breaker.
    upstream.set(Answer::Status(200));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(up.get(&url).status, 200);
    assert_eq!(upstream.connections(), 4);
    assert_eq!(up.get(&url).status, 200);
    let o = outbound(&up, "flaky", |o| o["breakers"].as_array().is_some_and(|b| b.is_empty()));
    assert!(o["breakers"].as_array().unwrap().is_empty(), "{o}");
}

/// a → b → c over `NAME.tern.internal`, each granted only the next.
fn deploy_chain(c: &tern_tests::Client) {
    let f = guest("fetch");
    c.deploy(&f, "c", &["--env", "NAME=c", "--idle", "1s"]);
    c.deploy(
        &f,
        "b",
        &[
            "--env",
            "NAME=b",
            "--env",
            "NEXT=http://c.tern.internal/from-b",
            "--allow-outbound",
            "http://c.tern.internal",
            "--idle",
            "1s",
        ],
    );
    c.deploy(
        &f,
        "a",
        &[
            "--route",
            "/a",
            "--env",
            "NAME=a",
            "--env",
            "NEXT=http://b.tern.internal/from-a",
            "--allow-outbound",
            "http://b.tern.internal",
        ],
    );
    c.deploy(
        &f,
        "loop",
        &[
            "--route",
            "/loop",
            "--env",
            "NAME=loop",
            "--env",
            "NEXT=http://loop.tern.internal/",
            "--allow-outbound",
            "http://loop.tern.internal",
        ],
    );
}

/// b and c at zero; one request to a wakes both and comes back through
/// them; a → a → … ends with 508; a may call only b.
fn check_chain(c: &tern_tests::Client) {
    for f in ["b", "c"] {
        assert!(
            eventually(Duration::from_secs(10), || c.describe(f)["replicas"] == 0),
            "{f} did not scale to zero"
        );
    }
    let r = c.get("/a");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "end from c\nvia b\nvia a\n");
    for f in ["b", "c"] {
        assert!(c.describe(f)["scale"]["cold_starts"].as_u64().unwrap() >= 1, "{f} was not woken");
    }
    let o = outbound(c, "a", |o| o["calls"] == 1);
    assert_eq!(o["errors"], 0, "{o}");

    let r = c.get("/loop");
    assert_eq!(r.status, 508, "{}", r.body);
    assert!(r.body.starts_with("loop detected: calls between functions went 10 deep"), "{}", r.body);
    assert!(r.body.ends_with("via loop\n".repeat(10).as_str()), "{}", r.body);

    let r = c.get("/a?url=http://c.tern.internal/");
    assert!(r.body.contains("HttpRequestDenied"), "{}", r.body);
    let r = c.get("/a?url=http://b.tern.internal/?url=http://nobody.tern.internal/");
    assert!(r.body.contains("HttpRequestDenied"), "b may call only c: {}", r.body);
}

#[test]
fn functions_call_functions_through_the_invoke_path() {
    let dir = tempfile::tempdir().unwrap();
    // Short autoscaler windows: b and c reach zero in seconds.
    let up = TernUp::start_with(&dir.path().join("data"), &["--stable-window", "2s", "--panic-window", "1s"]);
    deploy_chain(&up);
    check_chain(&up);
}

#[test]
fn in_a_cluster_workers_reach_out_and_call_functions_with_their_own_permissions() {
    let c = Cluster::start_opts(ClusterOptions {
        workers: 2,
        scheduler_args: &["--stable-window", "2s", "--panic-window", "1s"],
        nats_users: true,
        ..Default::default()
    });
    deploy_chain(&c);
    check_chain(&c);

    let upstream = Upstream::start();
    let grant = upstream.url("http");
    c.deploy(&guest("fetch"), "out", &["--route", "/out", "--allow-outbound", &grant]);
    let r = c.get(&format!("/out?url={grant}/x"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("upstream saw GET /x"), "{}", r.body);
}

#[test]
fn the_checkout_example_calls_the_shortener_and_publishes_an_order() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("shortener"), "shortener", &["--route", "/s", "--route", "/s/*", "--kv", "links"]);
    up.deploy(&guest("audit"), "audit", &["--on-event", "orders.>"]);
    let grants = ["--allow-outbound", "http://shortener.tern.internal", "--allow-publish", "orders.created"];
    let out = up.deploy(&guest("checkout"), "checkout", &[&["--route", "/checkout"][..], &grants].concat());
    assert!(out.contains("reaches: http://shortener.tern.internal"), "{out}");

    let r = up.post("/checkout", r#"{"total": 12.5}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let placed = r.json();
    let id = placed["id"].as_u64().unwrap();
    let receipt = placed["receipt"].as_str().unwrap();
    let stats = up.get(&format!("{receipt}/stats")).json();
    assert_eq!(stats["url"], format!("https://shop.example/orders/{id}"));
    let line = format!("orders.created order {id} total 12.50");
    assert!(
        eventually(Duration::from_secs(10), || up.tern_ok(&["logs", "audit"]).contains(&line)),
        "audit never logged the order: {}",
        up.tern_ok(&["logs", "audit"])
    );
    assert_eq!(up.post("/checkout", "not json").status, 400);
}
