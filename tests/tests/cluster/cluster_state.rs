//! Functions' buckets in a cluster: JetStream key-value on a real
//! nats-server (with the shipped users and permissions), shared by every
//! worker, surviving the worker that wrote.

use reqwest::Method;
use std::time::Duration;
use tern_tests::{Cluster, ClusterOptions, Deliveries, burst_with, eventually, guest, nats_password};

#[test]
fn buckets_are_shared_across_workers_and_outlive_the_worker_that_wrote() {
    let mut c = Cluster::start_opts(ClusterOptions { workers: 2, nats_users: true, ..Default::default() });
    let file = guest("kv_wit");
    let file = file.to_str().unwrap();
    c.tern_ok(&["deploy", file, "--name", "kv", "--route", "/kv/*", "--kv", "counters", "--min-scale", "2"]);
    assert_eq!(c.replicas("kv").len(), 2);

    // 200 concurrent increments, served by both workers: exactly 200.
    let statuses: Vec<u16> = burst_with(Method::POST, &format!("{}/kv/incr?b=counters&k=hits", c.url), 200)
        .into_iter()
        .map(|(status, _, _)| status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(c.get("/kv/get?b=counters&k=hits").body, "200");
    let served_by = |c: &Cluster| -> usize {
        c.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["load"]["kv"]["completed"].as_u64().unwrap_or(0) > 0)
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || served_by(&c) == 2),
        "one worker served all: {}",
        c.status()
    );

    // Any NATS client sees the bucket: it is JetStream key-value.
    let url = c.nats.url();
    let seen = tokio::runtime::Runtime::new().unwrap().block_on(async move {
        let client = async_nats::ConnectOptions::with_user_and_password(
            "scheduler".into(),
            nats_password("scheduler"),
        )
        .custom_inbox_prefix("_TERN.scheduler")
        .connect(url)
        .await
        .unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("KV_tern_counters").await.unwrap();
        stream.direct_get_last_for_subject("$KV.tern_counters.hits").await.unwrap().payload
    });
    assert_eq!(&seen[..], b"200");

    // Written through one worker, killed with kill -9: the other has it.
    c.tern_ok(&[
        "deploy",
        file,
        "--name",
        "one",
        "--route",
        "/one/*",
        "--kv",
        "counters",
        "--min-scale",
        "1",
    ]);
    let writer_id = c.replicas("one")[0].clone();
    let writer = (0..2).find(|i| c.node_id(*i) == writer_id).unwrap();
    let r = c.request(Method::PUT, "/one/set?b=counters&k=written-by", Some(writer_id.clone().into_bytes()));
    assert_eq!(r.status, 204, "{}", r.body);
    c.workers[writer].kill();
    let moved = eventually(Duration::from_secs(30), || {
        c.try_get("/one/get?b=counters&k=written-by").is_ok_and(|r| r.status == 200 && r.body == writer_id)
    });
    assert!(moved, "the value written through the killed worker is not served by the other");
    assert_eq!(c.get("/one/get?b=counters&k=hits").body, "200");

    // A secret over the bus: read by the granted function on the worker
    // running it, rotated without a redeploy, and sent to no other worker.
    // A spy with the worker user's rights sees every worker's commands.
    c.workers[writer].restart();
    c.wait_for_nodes(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let url = c.nats.url();
    let (client, mut sub) = rt.block_on(async move {
        let client =
            async_nats::ConnectOptions::with_user_and_password("worker".into(), nats_password("worker"))
                .custom_inbox_prefix("_TERN.worker")
                .connect(url)
                .await
                .unwrap();
        let sub = client.subscribe("tern.v1.worker.>").await.unwrap();
        client.flush().await.unwrap();
        (client, sub)
    });
    let spy = {
        let seen = seen.clone();
        rt.spawn(async move {
            use futures::StreamExt;
            let _client = client;
            while let Some(m) = sub.next().await {
                seen.lock().unwrap().push((m.subject.to_string(), m.payload.to_vec()));
            }
        })
    };
    let out = c.tern_with_stdin(&["secret", "set", "token"], b"cluster-secret-1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.tern_ok(&[
        "deploy",
        file,
        "--name",
        "reader",
        "--route",
        "/reader/*",
        "--secret",
        "token",
        "--min-scale",
        "1",
        "--max-scale",
        "1",
    ]);
    assert_eq!(c.get("/reader/config?k=token").body, "cluster-secret-1");
    let out = c.tern_with_stdin(&["secret", "set", "token"], b"cluster-secret-2");
    assert!(out.status.success());
    assert_eq!(c.get("/reader/config?k=token").body, "cluster-secret-2");
    let runs_it = c.replicas("reader");
    assert_eq!(runs_it.len(), 1, "{runs_it:?}");
    spy.abort();
    let carried: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, payload)| payload.windows(14).any(|w| w == b"cluster-secret"))
        .map(|(subject, _)| subject.clone())
        .collect();
    let to_it = format!("tern.v1.worker.{}.", runs_it[0]);
    assert!(carried.iter().any(|s| s.ends_with(".assign")), "the assign carried the value: {carried:?}");
    assert!(carried.iter().any(|s| s.ends_with(".secrets")), "the rotation was pushed: {carried:?}");
    assert!(
        carried.iter().all(|s| s.starts_with(&to_it)),
        "a secret went to a worker not running it: {carried:?}"
    );
    assert_eq!(c.get("/one/config?k=token").status, 404, "not granted");
    // A function publishes an event from its worker into JetStream; the
    // event function triggered by it gets it.
    let sink = guest("plain_event");
    c.tern_ok(&["deploy", sink.to_str().unwrap(), "--name", "sink", "--on-event", "orders.>"]);
    let publisher = guest("publisher");
    c.tern_ok(&[
        "deploy",
        publisher.to_str().unwrap(),
        "--name",
        "pub",
        "--route",
        "/pub/*",
        "--allow-publish",
        "orders.*",
    ]);
    let deliveries = Deliveries::follow(&c.url, &c.token, "sink");
    let r = c.post("/pub/orders.created", "from a function");
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = deliveries.wait(Duration::from_secs(20), |d| d.iter().any(|d| d.id == r.body));
    assert!(seen.iter().any(|d| d.id == r.body && d.data == "from a function"), "{seen:?}");
    assert_eq!(c.post("/pub/invoices.created", "x").status, 403);

    // Operators reach the cluster's buckets through the gateway.
    assert_eq!(c.tern_ok(&["kv", "get", "counters", "hits"]), "200");
}
