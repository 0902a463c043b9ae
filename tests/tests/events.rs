//! Event functions end to end: components written against sdk/wit (one with
//! plain wit-bindgen, one with the SDK), deployed, and delivered events
//! through the gateway's invoke path. Durable triggers (`--on-event`, retries,
//! dead letters, cron) are not built yet; see issue 5.

use std::time::Duration;
use tern_tests::{TernUp, eventually, guest};

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
