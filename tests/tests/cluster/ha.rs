//! Several schedulers on one registry (JetStream's TERN_REGISTRY): one
//! leads by a lease; kill -9 of the leader under deploy and cold-request
//! traffic loses no acknowledged deploy, uses no version number twice,
//! doubles no cron tick, and the other one leads within the lease; two
//! schedulers taking deploys of one route at once let exactly one win.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_tests::{Client, Deliveries, NatsServer, Role, eventually, guest};

const LEASE: Duration = Duration::from_secs(2);

struct Ha {
    client: Client,
    schedulers: Vec<Role>,
    _gateway: Role,
    _worker: Role,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

fn start() -> Ha {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let args = ["--lease", "2s", "--keep-versions", "1000"];
    let schedulers: Vec<Role> = (0..2)
        .map(|i| Role::start("scheduler", &nats.url(), &dir.path().join(format!("scheduler{i}")), &args))
        .collect();
    let worker = Role::start("worker", &nats.url(), &dir.path().join("worker"), &["--memory-budget", "2048"]);
    let gateway =
        Role::start("gateway", &nats.url(), &dir.path().join("gateway"), &["--listen", "127.0.0.1:0"]);
    let url = gateway.url.clone().unwrap();
    let token = std::fs::read_to_string(gateway.data_dir.join("admin-token")).unwrap().trim().to_string();
    let client = Client { url, token };
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = client.tern(&["status", "--json"]);
            out.status.success() && {
                let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                s["nodes"].as_array().is_some_and(|n| n.len() == 1) && s["leader"]["leader"].is_string()
            }
        }),
        "no leader and worker within 30 s"
    );
    Ha { client, schedulers, _gateway: gateway, _worker: worker, _nats: nats, _dir: dir }
}

/// The lease holder `tern status` names: a scheduler's node id.
fn leader(c: &Client) -> Option<String> {
    let out = c.tern(&["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    s["leader"]["leader"].as_str().map(str::to_string)
}

fn holder_of(role: &Role) -> String {
    std::fs::read_to_string(role.data_dir.join("node-id")).unwrap().trim().to_string()
}

fn deploy_json(c: &Client, file: &Path, name: &str, extra: &[&str]) -> Result<u64, String> {
    let mut args = vec!["deploy", file.to_str().unwrap(), "--name", name, "--json"];
    args.extend_from_slice(extra);
    let out = c.tern(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    reply["number"].as_u64().ok_or_else(|| format!("no version number in {reply}"))
}

#[test]
fn kill_9_of_the_leading_scheduler_loses_no_deploy_and_doubles_no_cron_tick() {
    let mut ha = start();
    let c = ha.client.clone();
    let hello = guest("hello");
    // Ticks every 3 s: the failover (about the 2 s lease) sees at most one
    // fall due, which the new leader fires late.
    let plain_event = guest("plain_event");
    c.deploy(&plain_event, "tick", &["--schedule", "*/3 * * * * *"]);
    let ticks = Deliveries::follow(&c.url, &c.token, "tick");
    // Scales to zero after a second idle, and is not asked for until the
    // leader is dead: its first request after the kill is a cold start the
    // new leader places.
    c.deploy(&hello, "cold", &["--route", "/cold", "--idle", "1s"]);
    c.deploy(&hello, "busy", &["--route", "/busy"]);
    ticks.wait(Duration::from_secs(10), |s| s.len() >= 2);

    // A new version of `busy` every 200 ms, through the whole failover.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let deployer = {
        let (c, stop, acked, hello) = (c.clone(), stop.clone(), acked.clone(), hello.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                match deploy_json(&c, &hello, "busy", &["--route", "/busy"]) {
                    Ok(v) => acked.lock().unwrap().push(v),
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            failed
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let replicas = |f: &str| c.status()["replicas"][f].as_array().map_or(0, |a| a.len());
    assert!(eventually(Duration::from_secs(10), || replicas("cold") == 0), "cold never went to zero");

    let holder = leader(&c).expect("a leader");
    let index = ha.schedulers.iter().position(|s| holder_of(s) == holder).expect("the leader is one of ours");
    let other = holder_of(&ha.schedulers[1 - index]);
    ha.schedulers[index].kill();
    let killed = Instant::now();
    // Requests to the function at zero, every 100 ms from the kill on.
    let cold = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                answers.push((sent, c.try_get("/cold").map(|r| r.status)));
                std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
            }
            answers
        })
    };
    let mut led_at = None;
    while killed.elapsed() < LEASE + Duration::from_secs(5) {
        if leader(&c).as_deref() == Some(other.as_str()) {
            let out = c.tern_ok(&["status", "--json"]);
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            if s["leader"]["leading"] == true {
                led_at = Some(killed.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let led_at = led_at.expect("the other scheduler never led");
    assert!(led_at <= LEASE + Duration::from_secs(2), "led {led_at:?} after the kill");
    eprintln!("failover: the other scheduler led {led_at:?} after the kill");

    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let failed = deployer.join().unwrap();
    let answers = cold.join().unwrap();

    // Every acknowledged deploy is there, once, with its number.
    let acked = acked.lock().unwrap().clone();
    let distinct: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(distinct.len(), acked.len(), "a version number acknowledged twice: {acked:?}");
    assert!(acked.len() >= 20, "only {} deploys acknowledged ({failed} failed)", acked.len());
    let kept: BTreeSet<u64> = c.describe("busy")["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert!(kept.is_superset(&distinct), "acknowledged but missing: {:?}", distinct.difference(&kept));
    let list: serde_json::Value = serde_json::from_str(&c.tern_ok(&["list", "--json"])).unwrap();
    let busy = list.as_array().unwrap().iter().find(|f| f["name"] == "busy").unwrap();
    assert_eq!(busy["latest_version"].as_u64(), distinct.last().copied(), "{busy}");
    assert_eq!(c.get("/busy").status, 200);

    // Cold requests after the failover are served.
    let after: Vec<_> = answers.iter().filter(|(t, _)| t.duration_since(killed) > led_at).collect();
    assert!(after.len() >= 10, "{} requests after the failover", after.len());
    assert!(after.iter().all(|(_, r)| r.as_ref().is_ok_and(|s| *s == 200)), "{after:?}");

    // Cron: never doubled; at most one tick lost across the failover.
    std::thread::sleep(Duration::from_secs(4));
    let got = ticks.wait(Duration::from_secs(1), |_| false);
    let mut fired: Vec<u64> = got
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(&d.data).unwrap()["tick"].as_u64().unwrap())
        .collect();
    let n = fired.len();
    fired.sort();
    fired.dedup();
    assert_eq!(fired.len(), n, "a tick fired twice: {got:?}");
    let gaps: Vec<u64> = fired.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 3 || *g == 6), "{fired:?}");
    assert!(gaps.iter().filter(|g| **g == 6).count() <= 1, "more than one tick lost: {fired:?}");
    assert!(fired.len() >= 5, "{fired:?}");
}

#[test]
fn concurrent_deploys_of_one_route_through_two_schedulers_let_one_win() {
    let ha = start();
    let c = ha.client.clone();
    let hello = guest("hello");
    // The two deploys of a round go to a queue group of two, which picks at
    // random; rounds go on (at least 6) until each scheduler has decided
    // some contest, so the check below does not hang on a coin.
    let took_part = |s: &Role| {
        let log = s.log_text();
        log.contains("deployed") || log.contains("deploy refused")
    };
    for round in 0..30 {
        if round >= 6 && ha.schedulers.iter().all(took_part) {
            break;
        }
        let route = format!("/contested{round}");
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|f| {
                let (c, hello, route) = (c.clone(), hello.clone(), route.clone());
                let name = format!("{f}{round}");
                std::thread::spawn(move || deploy_json(&c, &hello, &name, &["--route", &route]))
            })
            .collect();
        let results: Vec<Result<u64, String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(lost.contains("409") || lost.contains("matches the same requests"), "{lost}");
        assert_eq!(c.get(&route).status, 200);
    }
    // Both schedulers decided contests: the deploys went to a queue group of two.
    for s in &ha.schedulers {
        assert!(took_part(s), "a scheduler took no deploy:\n{}", s.log_text());
    }
}
