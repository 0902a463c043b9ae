//! A three-node NATS cluster on loopback (routes between three local
//! nats-servers, every stream, bucket and the artifact store with three
//! replicas): kill -9 of one node under event load and deploy traffic loses
//! no confirmed event and no acknowledged deploy, and every role
//! reconnects to a surviving node by itself.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_tests::{Client, Deliveries, NatsServer, Role, eventually, guest};

/// Waits until the cluster's JetStream can keep a stream on all three.
async fn wait_for_jetstream(url: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let config = async_nats::jetstream::stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe".into()],
            num_replicas: 3,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "JetStream never came up on the cluster: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    js.delete_stream("PROBE").await.unwrap();
}

#[test]
fn kill_9_of_one_of_three_nats_nodes_loses_no_confirmed_event_and_no_acknowledged_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start_cluster(&dir.path().join("nats"), 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_for_jetstream(&nats[1].url()));

    // The roles are told of the node that will die only: they find the
    // others from the cluster itself, as a client of a NATS cluster does.
    let first = nats[0].url();
    let r3 = ["--js-replicas", "3"];
    let _scheduler = Role::start("scheduler", &first, &dir.path().join("scheduler"), &r3);
    let _worker = Role::start(
        "worker",
        &first,
        &dir.path().join("worker"),
        &["--js-replicas", "3", "--memory-budget", "2048"],
    );
    let gateway = Role::start(
        "gateway",
        &first,
        &dir.path().join("gateway"),
        &["--js-replicas", "3", "--listen", "127.0.0.1:0"],
    );
    let token = std::fs::read_to_string(gateway.data_dir.join("admin-token")).unwrap().trim().to_string();
    let c = Client { url: gateway.url.clone().unwrap(), token };
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = c.tern(&["status", "--json"]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 1)
        }),
        "the worker never joined"
    );
    let event_fn = guest("plain_event");
    let hello = guest("hello");
    c.deploy(
        &event_fn,
        "sink",
        &[
            "--on-event",
            "load.*",
            "--min-scale",
            "1",
            "--timeout",
            "2s",
            "--backoff",
            "200ms",
            "--max-attempts",
            "30",
        ],
    );
    let seen = Deliveries::follow(&c.url, &c.token, "sink");

    // Deploys every 300 ms, through the kill.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let deployer = {
        let (c, stop, acked, hello) = (c.clone(), stop.clone(), acked.clone(), hello.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = c.tern(&[
                    "deploy",
                    hello.to_str().unwrap(),
                    "--name",
                    "web",
                    "--route",
                    "/web",
                    "--json",
                ]);
                if out.status.success()
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                {
                    acked.lock().unwrap().push(v["number"].as_u64().unwrap());
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // 10,000 events, each confirmed by JetStream (retried until it is),
    // from a client of the two nodes that stay.
    let n = 10_000;
    let survivors = format!("{},{}", nats[1].url(), nats[2].url());
    let published = Arc::new(Mutex::new(0usize));
    let publisher = {
        let published = published.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let addrs: Vec<async_nats::ServerAddr> =
                    survivors.split(',').map(|u| u.parse().unwrap()).collect();
                let js = async_nats::jetstream::new(async_nats::connect(addrs).await.unwrap());
                let mut confirmed = Vec::new();
                for i in 0..n {
                    loop {
                        let sent = js.publish("load.item", i.to_string().into()).await;
                        let ack = match sent {
                            Ok(a) => tokio::time::timeout(Duration::from_secs(5), a).await,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        if let Ok(Ok(ack)) = ack {
                            confirmed.push(ack.sequence);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    *published.lock().unwrap() = i + 1;
                }
                confirmed
            })
        })
    };
    assert!(eventually(Duration::from_secs(60), || *published.lock().unwrap() > 3000), "publishing stalled");
    assert!(eventually(Duration::from_secs(60), || seen.all().len() > 1000), "events are not being handled");
    let acked_before = acked.lock().unwrap().len();
    assert!(acked_before > 0, "no deploy acknowledged before the kill");
    nats[0].stop();
    let killed = Instant::now();
    let at_kill = *published.lock().unwrap();

    let confirmed: HashSet<String> =
        publisher.join().unwrap().into_iter().map(|s| format!("js-{s}")).collect();
    assert_eq!(confirmed.len(), n);
    let got = seen.wait(Duration::from_secs(120), |s| {
        s.iter().map(|d| d.id.clone()).collect::<HashSet<_>>().is_superset(&confirmed)
    });
    let handled: HashSet<String> = got.iter().map(|d| d.id.clone()).collect();
    let lost = confirmed.difference(&handled).count();
    assert_eq!(lost, 0, "{lost} of {n} confirmed events never handled");
    assert!(at_kill < n, "the node died after every event was published; the test proves nothing");

    // Deploys go on after the kill: the roles found the other nodes.
    assert!(
        eventually(Duration::from_secs(30), || acked.lock().unwrap().len() > acked_before + 3),
        "no deploy acknowledged after the kill"
    );
    stop.store(true, Ordering::Relaxed);
    deployer.join().unwrap();
    let acked: HashSet<u64> = acked.lock().unwrap().iter().copied().collect();
    let kept: HashSet<u64> = c.describe("web")["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    let newest: Vec<u64> = {
        let mut a: Vec<u64> = acked.iter().copied().collect();
        a.sort();
        a.into_iter().rev().take(10).collect()
    };
    // Ten versions are kept per function (the default): the newest ten
    // acknowledged are those.
    assert!(newest.iter().all(|v| kept.contains(v)), "acknowledged {newest:?}, kept {kept:?}");
    assert_eq!(c.get("/web").status, 200);
    c.deploy(&hello, "after", &["--route", "/after"]);
    assert!(eventually(Duration::from_secs(30), || c.get("/after").status == 200));
    eprintln!(
        "node killed after {at_kill} of {n} events: all handled {:?} after the kill, {} deliveries ({} duplicates), {} deploys acknowledged",
        killed.elapsed(),
        got.len(),
        got.len() - handled.len(),
        acked.len()
    );
}
