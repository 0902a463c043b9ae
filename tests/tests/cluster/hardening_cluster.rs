//! What another client of the cluster's NATS server can do to Tern. With
//! the shipped users (deploy/nats-users.conf) each role connects as its
//! own user, and a `publisher` can publish events and nothing else: no
//! scheduler operations, no serving tables, no joining a function's queue
//! group. Without users, a forged serving table still cannot freeze
//! routing. Real nats-server, real processes; failed before the fix.

use std::time::Duration;
use tern_tests::{Cluster, ClusterOptions, Deliveries, eventually, guest, nats_password};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn with_the_shipped_users_a_publisher_publishes_events_and_nothing_else() {
    let c = Cluster::start_opts(ClusterOptions { nats_users: true, ..Default::default() });
    // The cluster works with every role on its own user.
    c.deploy(&guest("hello"), "hello", &["--route", "/hello", "--min-scale", "1"]);
    assert_eq!(c.get("/hello").body, "Hello, world!\n");
    c.deploy(&guest("plain_event"), "orders", &["--on-event", "orders.>"]);
    let seen = Deliveries::follow(&c.url, &c.token, "orders");

    let url = c.nats.url();
    let (stolen, deleted) = rt().block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password(
            "publisher".into(),
            nats_password("publisher"),
        )
        .connect(&url)
        .await
        .expect("the publisher user connects");
        // It may publish events, stored and acknowledged by JetStream.
        let js = async_nats::jetstream::new(client.clone());
        js.publish("orders.eu.created", "from a publisher".into()).await.unwrap().await.unwrap();
        // It may not call the scheduler...
        let delete = serde_json::json!({ "name": "hello" }).to_string();
        let deleted = client.request("tern.v1.scheduler.delete", delete.into()).await.is_ok();
        // ...push a serving table...
        let table = serde_json::json!({ "generation": u64::MAX, "routes": [], "triggers": [] }).to_string();
        let _ = client.publish("tern.v1.routes.changed", table.into()).await;
        // ...or take requests meant for a function.
        let mut rogue =
            client.queue_subscribe("tern.v1.invoke.hello", "replicas.hello".into()).await.unwrap();
        let _ = client.flush().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stolen = tokio::time::timeout(Duration::from_secs(3), futures::StreamExt::next(&mut rogue)).await;
        (stolen.is_ok_and(|m| m.is_some()), deleted)
    });
    // Meanwhile every request reached the real function.
    let got = seen.wait(Duration::from_secs(10), |s| s.iter().any(|d| d.data == "from a publisher"));
    assert!(got.iter().any(|d| d.subject == "orders.eu.created"), "{got:?}");
    assert!(!deleted, "the publisher got an answer from the scheduler");
    assert!(!stolen, "the publisher received an invocation");
    for _ in 0..20 {
        assert_eq!(c.get("/hello").body, "Hello, world!\n");
    }
    assert_eq!(c.describe("hello")["name"], "hello", "hello was not deleted");
}

#[test]
fn a_forged_serving_table_cannot_freeze_routing() {
    let c = Cluster::start(1);
    c.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    assert_eq!(c.get("/hello").status, 200);
    // Any client of an unprotected server pushes a table that is empty and
    // as new as a table can be.
    let url = c.nats.url();
    rt().block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let table = serde_json::json!({ "generation": u64::MAX, "routes": [], "triggers": [] }).to_string();
        client.publish("tern.v1.routes.changed", table.into()).await.unwrap();
        client.flush().await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get("/hello").status, 200, "the forged table was taken");
    // And later changes still arrive.
    c.deploy(&guest("hello"), "later", &["--route", "/later"]);
    assert!(eventually(Duration::from_secs(5), || c.get("/later").status == 200));
}

#[test]
fn js_replicas_reaches_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let nats = tern_tests::NatsServer::start(&dir.path().join("nats"));
    // Three copies of each stream need a three-node NATS cluster: one
    // server refuses, and the scheduler says why and stops.
    let mut child = std::process::Command::new(tern_tests::tern_bin())
        .args(["scheduler", "--nats", &nats.url(), "--js-replicas", "3", "--data-dir"])
        .arg(dir.path().join("scheduler"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let exited = eventually(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "the scheduler went on with streams it could not create");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(err.contains("--js-replicas"), "{err}");
}

/// Workers may wake functions for calls between functions, and no other
/// scheduler operation: a new operation must be denied to them by name
/// (NATS wildcards cannot say "all but wake").
#[test]
fn the_shipped_worker_user_may_ask_the_scheduler_only_to_wake() {
    use tern_protocol::subject::{SchedulerOp, scheduler};
    let conf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nats-users.conf")).unwrap();
    let worker = &conf[conf.find("user: worker").unwrap()..];
    let deny = &worker[worker.find("deny:").unwrap()..worker.find("subscribe:").unwrap()];
    for op in SchedulerOp::ALL {
        let quoted = format!("\"{}\"", scheduler(op));
        assert_eq!(deny.contains(&quoted), op != SchedulerOp::Wake, "{quoted} in the worker's deny list");
    }
    assert!(!deny.contains("\"tern.v1.invoke.>\""), "workers call functions");
}

/// The registry (`TERN_REGISTRY`: functions, routes, secrets' ciphertext,
/// the schedulers' lease) is the schedulers' only: a worker or a gateway
/// user can neither read an entry nor write one (a forged lease or
/// record). The scheduler user reading the same entry shows the check
/// can fail.
#[test]
fn with_the_shipped_users_only_schedulers_reach_the_registry() {
    let c = Cluster::start_opts(ClusterOptions { nats_users: true, ..Default::default() });
    c.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    let url = c.nats.url();
    let read = "$JS.API.DIRECT.GET.KV_TERN_REGISTRY.$KV.TERN_REGISTRY.fn/hello";
    let outcomes: Vec<(String, bool, bool)> = rt().block_on(async {
        let mut out = Vec::new();
        for user in ["scheduler", "worker", "gateway"] {
            let client = async_nats::ConnectOptions::with_user_and_password(user.into(), nats_password(user))
                .custom_inbox_prefix(format!("_TERN.{user}"))
                .connect(&url)
                .await
                .expect("the user connects");
            let got = tokio::time::timeout(Duration::from_secs(3), client.request(read, "".into())).await;
            let read_it =
                matches!(got, Ok(Ok(m)) if String::from_utf8_lossy(&m.payload).contains("\"hello\""));
            // A forged record: the function's active version made 99.
            let forged = serde_json::json!({
                "name": "hello", "active_version": 99, "latest_version": 99, "versions": {}
            });
            let js = async_nats::jetstream::new(client.clone());
            let wrote = match user {
                // The scheduler's write is not tried: it would break hello.
                "scheduler" => false,
                _ => match js.publish("$KV.TERN_REGISTRY.fn/hello", forged.to_string().into()).await {
                    Ok(ack) => matches!(tokio::time::timeout(Duration::from_secs(3), ack).await, Ok(Ok(_))),
                    Err(_) => false,
                },
            };
            out.push((user.to_string(), read_it, wrote));
        }
        out
    });
    assert_eq!(
        outcomes,
        [
            ("scheduler".to_string(), true, false),
            ("worker".to_string(), false, false),
            ("gateway".to_string(), false, false)
        ]
    );
    assert_eq!(c.describe("hello")["active_version"], 1, "the record is as deployed");
    assert_eq!(c.get("/hello").status, 200);
}
