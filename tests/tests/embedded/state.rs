//! Functions with state in `tern up`: key-value buckets and config through
//! the public WASI interfaces, from a component built with `wit-bindgen`
//! (`tests/guests/kv-wit`), served through the real gateway.

use reqwest::Method;
use std::time::Duration;
use tern_tests::{Client, TernUp, burst_with, guest};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` requests at once; returns the statuses.
fn concurrently(client: &Client, n: usize, method: Method, path: &str) -> Vec<u16> {
    burst_with(method, &format!("{}{path}", client.url), n).into_iter().map(|(status, _, _)| status).collect()
}

#[test]
fn counters_buckets_grants_and_config_in_tern_up() {
    let (dir, up) = TernUp::start_temp();
    up.deploy(
        &guest("kv_wit"),
        "kv",
        &["--route", "/kv/*", "--kv", "counters", "--kv", "a", "--env", "GREETING=hi there"],
    );
    up.deploy(&guest("kv_wit"), "kv-b", &["--route", "/kvb/*", "--kv", "b"]);
    let described = up.describe("kv");
    assert_eq!(described["active"]["spec"]["kv"], serde_json::json!(["counters", "a"]), "{described}");
    assert!(up.tern_ok(&["describe", "kv"]).contains("buckets:  counters a"));

    // 200 concurrent increments: exactly 200.
    let statuses = concurrently(&up, 200, Method::POST, "/kv/incr?b=counters&k=hits");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(up.get("/kv/get?b=counters&k=hits").body, "200");

    // Set, get, exists, delete, with a binary value.
    let binary: Vec<u8> = (0..=255u8).collect();
    let r = up.request(Method::PUT, "/kv/set?b=a&k=bin", Some(binary.clone()));
    assert_eq!(r.status, 204, "{}", r.body);
    let r = up.post("/kv/get-many?b=a", "bin\nmissing\n");
    assert_eq!(r.body, format!("bin\t{}\nmissing\t-\n", hex(&binary)));
    assert_eq!(up.get("/kv/exists?b=a&k=bin").body, "true");
    assert_eq!(up.request(Method::DELETE, "/kv/del?b=a&k=bin", None).status, 204);
    assert_eq!(up.get("/kv/exists?b=a&k=bin").body, "false");
    assert_eq!(up.get("/kv/get?b=a&k=bin").status, 404);

    // Batches, and keys listed through list-keys cursors (past one page).
    for part in [0..750, 750..1500] {
        let many: String = part.map(|i| format!("k{i:04}\t{}\n", hex(&[i as u8, 0, 255]))).collect();
        let r = up.post("/kv/set-many?b=a", many);
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let too_many: String = (0..1001).map(|i| format!("x{i}\t00\n")).collect();
    let r = up.post("/kv/set-many?b=a", too_many);
    assert!(r.body.contains("the most is 1000"), "{}", r.body);
    let keys = up.get("/kv/keys?b=a").body;
    assert_eq!(keys.lines().count(), 1500, "every key, over two pages");
    assert!(keys.starts_with("k0000\nk0001\n") && keys.ends_with("k1499\n"));
    let got = up.post("/kv/get-many?b=a", "k0007\nk1499\n").body;
    assert_eq!(got, format!("k0007\t{}\nk1499\t{}\n", hex(&[7, 0, 255]), hex(&[1499u16 as u8, 0, 255])));
    let doomed: String = (0..1000).map(|i| format!("k{i:04}\n")).collect();
    assert_eq!(up.post("/kv/delete-many?b=a", doomed).status, 204);
    assert_eq!(up.get("/kv/keys?b=a").body.lines().count(), 500);

    // Limits: a value past 1 MiB is refused and nothing is stored.
    let r = up.request(Method::PUT, "/kv/set?b=a&k=huge", Some(vec![1; (1 << 20) + 1]));
    assert_eq!(r.status, 500);
    assert!(r.body.contains("over the 1048576 byte limit; nothing was stored"), "{}", r.body);
    assert_eq!(up.get("/kv/exists?b=a&k=huge").body, "false");
    let long_key = format!("x:{}", hex(&[b'k'; 257]));
    let r = up.request(Method::PUT, &format!("/kv/set?b=a&k={long_key}"), Some(b"v".to_vec()));
    assert!(r.body.contains("over the 256 byte limit"), "{}", r.body);

    // Grants: an ungranted bucket is access-denied, and a function granted
    // `b` cannot see `a`'s keys (nor `a`'s holder `b`'s).
    let r = up.get("/kv/get?b=b&k=k0001");
    assert_eq!((r.status, r.body.as_str()), (403, "access-denied"));
    assert_eq!(up.get("/kvb/get?b=a&k=k1499").status, 403);
    assert_eq!(up.request(Method::PUT, "/kvb/set?b=b&k=mine", Some(b"only b".to_vec())).status, 204);
    assert_eq!(up.get("/kvb/keys?b=b").body, "mine\n");
    assert_eq!(up.get("/kv/keys?b=counters").body, "hits\n", "buckets do not share keys");

    // Handles are host memory: an instance may hold 256 at once.
    let r = up.get("/kv/open-many?b=a&k=1000");
    assert!(
        r.body.starts_with("opened 256: Error::Other(") && r.body.contains("the most it may"),
        "{}",
        r.body
    );
    assert_eq!(up.get("/kv/open-many?b=a&k=256").body, "opened 256");

    // wasi:config: the function's --env values; keys not granted are absent.
    assert_eq!(up.get("/kv/config?k=GREETING").body, "hi there");
    assert_eq!(up.get("/kvb/config?k=GREETING").status, 404);
    assert_eq!(up.get("/kv/config-all").body, "GREETING=hi there\n");
    drop(up);
    drop(dir);
}

#[test]
fn a_bucket_past_its_quota_refuses_the_write_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), &["--kv-max-bytes", "3000000"]);
    up.deploy(&guest("kv_wit"), "kv", &["--route", "/kv/*", "--kv", "small"]);
    let mib = vec![9u8; 1 << 20];
    for k in ["one", "two"] {
        let r = up.request(Method::PUT, &format!("/kv/set?b=small&k={k}"), Some(mib.clone()));
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let r = up.request(Method::PUT, "/kv/set?b=small&k=three", Some(mib.clone()));
    assert_eq!(r.status, 500);
    assert!(r.body.contains("bucket small is full") && r.body.contains("nothing was stored"), "{}", r.body);
    assert_eq!(up.get("/kv/exists?b=small&k=three").body, "false");
    assert_eq!(up.get("/kv/keys?b=small").body, "one\ntwo\n");
}

#[test]
fn every_acknowledged_write_survives_kill_9_of_tern_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = TernUp::start(&data);
    up.deploy(&guest("kv_wit"), "kv", &["--route", "/kv/*", "--kv", "durable"]);
    // Writers increment while tern up is killed under them; every 200 they
    // saw is a write that must be there after the restart.
    let acked: Vec<_> = (0..8)
        .map(|_| {
            let client = (*up).clone();
            std::thread::spawn(move || {
                let mut highest = 0u64;
                for _ in 0..10_000 {
                    match client.try_request(Method::POST, "/kv/incr?b=durable&k=n", None) {
                        Ok(r) if r.status == 200 => highest = highest.max(r.body.parse().unwrap()),
                        _ => break,
                    }
                }
                highest
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    up.kill();
    let highest = acked.into_iter().map(|t| t.join().unwrap()).max().unwrap();
    assert!(highest > 50, "only {highest} increments before the kill");
    let up = TernUp::start(&data);
    let after: u64 = up.get("/kv/get?b=durable&k=n").body.parse().unwrap();
    assert!(
        after >= highest,
        "an acknowledged increment was lost: {highest} acknowledged, {after} after restart"
    );
}

#[test]
fn the_sdk_lock_serialises_writers_and_expires_when_its_holder_traps() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("kv_lock"), "locker", &["--route", "/lock/*", "--kv", "locks"]);
    // 50 read-modify-writes of a plain key, each under the lock: none lost.
    let statuses = concurrently(&up, 50, Method::POST, "/lock/rmw");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let r = up.post("/lock/rmw", "");
    assert_eq!(r.body, "51", "50 concurrent updates and this one, none lost");

    // A holder that traps leaves the lock held until its ttl passes.
    let r = up.post("/lock/trap?ttl_ms=1500", "");
    assert_eq!(r.status, 500, "{}", r.body);
    let trapped = std::time::Instant::now();
    assert_eq!(up.get("/lock/try").status, 409, "held by the trapped instance");
    let freed = tern_tests::eventually(Duration::from_secs(5), || up.get("/lock/try").status == 200);
    let after = trapped.elapsed();
    assert!(freed, "the lock never expired");
    assert!(after >= Duration::from_millis(1300), "expired after {after:?}, before its 1.5 s ttl");
}

#[test]
fn the_shortener_example_keeps_links_and_counts_visits() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("shortener"), "shortener", &["--route", "/s", "--route", "/s/*", "--kv", "links"]);
    let made = up.post("/s", "https://example.com/a/long/path");
    assert_eq!(made.status, 201, "{}", made.body);
    let link = made.json();
    let code = link["code"].as_str().unwrap();
    let no_redirects =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(format!("{}/s/{code}", up.url)).send().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://example.com/a/long/path");
    let stats = up.get(&format!("/s/{code}/stats")).json();
    assert_eq!(stats["visits"], 1, "{stats}");
    assert_eq!(up.post("/s", "not a url").status, 400);
    assert_eq!(up.get("/s/nope").status, 404);
}

#[test]
fn a_component_importing_what_tern_lacks_is_refused_at_deploy() {
    let (_dir, up) = TernUp::start_temp();
    let file = tern_tests::wat_component("imports-blobstore");
    let e = up.tern_err(&["deploy", file.to_str().unwrap(), "--name", "blob", "--route", "/blob"]);
    assert!(
        e.contains("the component needs something Tern does not provide")
            && e.contains("wasi:blobstore/blobstore"),
        "{e}"
    );
    assert!(up.tern_ok(&["list"]).lines().all(|l| !l.starts_with("blob")), "nothing was recorded");
}
