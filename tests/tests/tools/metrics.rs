//! Prometheus metrics end to end: a real Prometheus scrapes `tern up` and
//! a 3-process cluster every second, and its query API finds the
//! invocations, errors by code, cold starts, replicas and event outcomes
//! the test caused; `promtool check metrics` passes on what every role
//! serves.

use std::time::Duration;
use tern_tests::process::{ClusterOptions, free_port};
use tern_tests::prometheus::{Prometheus, promtool_check};
use tern_tests::{Cluster, TernUp, eventually, guest};

fn expect(prom: &Prometheus, expr: &str, want: f64) {
    if let Err(got) = prom.wait_for(expr, want) {
        panic!("{expr}: want {want}, Prometheus has {got:?}; targets: {}", prom.targets());
    }
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[test]
fn prometheus_scrapes_tern_up_and_finds_what_happened() {
    let (_dir, up) = TernUp::start_temp();
    let prom = Prometheus::scrape(&[("tern", host_port(&up.url))]);
    // Idle for 3 s, it is scraped ready a few times before it scales to zero.
    up.deploy(&guest("hostile"), "h", &["--route", "/h/*", "--idle", "3s"]);
    up.deploy(
        &guest("plain_event"),
        "sink",
        &["--on-event", "orders.>", "--max-attempts", "2", "--backoff", "100ms"],
    );

    for _ in 0..5 {
        assert_eq!(up.get("/h/ok").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(up.get("/h/panic").status, 500);
    }
    let by_code = |code: u16| {
        format!(r#"sum(tern_function_invocations_total{{function="h",trigger="http",code="{code}"}})"#)
    };
    expect(&prom, &by_code(200), 5.0);
    expect(&prom, &by_code(500), 2.0);
    expect(&prom, r#"sum(tern_function_duration_seconds_count{function="h"})"#, 7.0);
    // Ready replicas went from 1 to 0 (scaled to zero after 3 s idle).
    let ready = r#"tern_function_replicas{function="h",state="ready"}[5m]"#;
    assert!(
        eventually(Duration::from_secs(15), || up.describe("h")["replicas"] == 0),
        "h never scaled to zero"
    );
    expect(&prom, &format!("max_over_time({ready})"), 1.0);
    expect(&prom, &format!("min_over_time({ready})"), 0.0);
    assert_eq!(up.get("/h/ok").status, 200);
    expect(&prom, r#"tern_function_cold_starts_total{function="h"}"#, 1.0);
    expect(&prom, r#"tern_function_cold_start_seconds_count{function="h"}"#, 1.0);
    expect(&prom, by_code(200).as_str(), 6.0);

    // Events: one handled, one retried once then dead-lettered.
    up.tern_ok(&["publish", "orders.created", "x"]);
    up.tern_ok(&["publish", "orders.fail", "y"]);
    expect(&prom, r#"tern_event_published_total{subject_root="orders"}"#, 2.0);
    for (outcome, n) in [("ack", 1.0), ("retry", 1.0), ("dead_letter", 1.0)] {
        expect(&prom, &format!(r#"tern_event_deliveries_total{{function="sink",outcome="{outcome}"}}"#), n);
    }
    expect(&prom, r#"tern_event_dead_letters{function="sink"}"#, 1.0);
    expect(&prom, r#"sum(tern_function_invocations_total{function="sink",trigger="event"})"#, 3.0);
    assert!(prom.value(r#"tern_node_memory_bytes{node="local",kind="rss"}"#).unwrap() > 1e6);
    assert!(prom.value("process_cpu_seconds_total").unwrap() > 0.0);

    // A request that takes 3 s is seen running.
    up.deploy(&guest("hostile"), "slow", &["--route", "/slow/*"]);
    let url = format!("{}/slow/nap?ms=3000", up.url);
    let slow = std::thread::spawn(move || reqwest::blocking::get(url).unwrap().status().as_u16());
    expect(&prom, r#"max_over_time(tern_function_inflight{function="slow"}[1m])"#, 1.0);
    expect(&prom, r#"max_over_time(tern_node_instances{node="local"}[1m])"#, 1.0);
    assert_eq!(slow.join().unwrap(), 200);
    expect(&prom, r#"tern_function_inflight{function="slow"}"#, 0.0);

    promtool_check(&format!("{}/metrics", up.url)).unwrap();
}

#[test]
fn metrics_can_be_closed_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("a"), &["--metrics-token", "s3cret"]);
    let get = |token: Option<&str>| {
        let mut r = reqwest::blocking::Client::new().get(format!("{}/metrics", up.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("wrong")), 401);
    assert_eq!(get(Some("s3cret")), 200);
    // The admin token is not the metrics token.
    assert_eq!(get(Some(&up.token)), 401);

    let off = TernUp::start_with(&dir.path().join("b"), &["--no-metrics"]);
    off.deploy(&guest("hostile"), "h", &["--route", "/h/*"]);
    assert_eq!(off.get("/h/ok").status, 200);
    assert_eq!(off.get("/metrics").status, 404);
    // No receipts either, but logs still.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(off.tern_ok(&["invocations", "h", "--json"]).trim(), "[]");
    assert_eq!(off.get("/h/log").status, 200);
    assert!(eventually(Duration::from_secs(5), || off.tern_ok(&["logs", "h"]).contains("a line on stdout")));
}

#[test]
fn prometheus_scrapes_every_role_of_a_cluster() {
    let (scheduler_port, worker_port) = (free_port(), free_port());
    let scheduler_listen = format!("127.0.0.1:{scheduler_port}");
    let worker_listen = format!("127.0.0.1:{worker_port}");
    let c = Cluster::start_opts(ClusterOptions {
        workers: 1,
        scheduler_args: &["--metrics-listen", &scheduler_listen],
        worker_args: &["--metrics-listen", &worker_listen],
        ..Default::default()
    });
    c.tern_ok(&["deploy", guest("hostile").to_str().unwrap(), "--name", "h", "--route", "/h/*"]);
    let prom = Prometheus::scrape(&[
        ("gateway", host_port(&c.url)),
        ("scheduler", &scheduler_listen),
        ("worker", &worker_listen),
    ]);
    for _ in 0..3 {
        assert_eq!(c.get("/h/ok").status, 200);
    }
    assert_eq!(c.get("/h/panic").status, 500);
    // Invocations are counted where they run, replicas where they are decided.
    let job = |job: &str, code: u16| {
        format!(r#"sum(tern_function_invocations_total{{job="{job}",function="h",code="{code}"}})"#)
    };
    expect(&prom, &job("worker", 200), 3.0);
    expect(&prom, &job("worker", 500), 1.0);
    expect(&prom, r#"tern_function_replicas{job="scheduler",function="h",state="ready"}"#, 1.0);
    expect(&prom, r#"tern_autoscaler_desired_replicas{job="scheduler",function="h"}"#, 1.0);
    let budget = format!(r#"tern_node_memory_bytes{{job="worker",node="{}",kind="budget"}}"#, c.node_id(0));
    expect(&prom, &budget, (2048u64 << 20) as f64);
    for job in ["gateway", "scheduler", "worker"] {
        expect(&prom, &format!(r#"up{{job="{job}"}}"#), 1.0);
    }
    for url in [
        format!("{}/metrics", c.url),
        format!("http://{scheduler_listen}/metrics"),
        format!("http://{worker_listen}/metrics"),
    ] {
        promtool_check(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
