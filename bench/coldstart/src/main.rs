//! `coldstart URL TOKEN FUNCTION PATH N`
//!
//! N times: wait until the gateway's scheduler reports FUNCTION at zero
//! replicas, send one request to PATH (a cold start: the activator holds it
//! while a replica loads from the worker's artifact cache), then one more
//! (warm). Prints p50/p95/max of both, and of the scheduler's own
//! wake-to-ready time. One keep-alive connection throughout, so no request
//! pays for a TCP handshake.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, token, function, path, n] = &args[..] else {
        eprintln!("usage: coldstart URL TOKEN FUNCTION PATH N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let describe = || -> serde_json::Value {
        client
            .get(format!("{url}/api/v1/functions/{function}"))
            .bearer_auth(token)
            .send()
            .and_then(|r| r.json())
            .expect("describe")
    };
    let get = |what: &str| -> Duration {
        let started = Instant::now();
        let r = client.get(format!("{url}{path}")).send().expect("request");
        let status = r.status();
        let _ = r.bytes();
        let took = started.elapsed();
        assert!(status.is_success(), "{what} request answered {status}");
        took
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut not_cold = 0;
    while cold.len() < n {
        let deadline = Instant::now() + Duration::from_secs(30);
        let before = loop {
            let d = describe();
            if d["replicas"] == 0 {
                break d["scale"]["cold_starts"].as_u64().unwrap_or(0);
            }
            assert!(Instant::now() < deadline, "{function} never scaled to zero: {d}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let c = get("cold");
        let w = get("warm");
        if describe()["scale"]["cold_starts"].as_u64().unwrap_or(0) == before + 1 {
            cold.push(c);
            warm.push(w);
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprint!("\r{} of {n} cold starts", cold.len());
            }
        } else {
            // Another client woke it between the check and the request.
            not_cold += 1;
        }
    }
    eprintln!();
    let server = &describe()["scale"]["cold_start_ms"];
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        format!("p50 {:7.3} ms   p95 {:7.3} ms   max {:7.3} ms", at(0.5), at(0.95), at(1.0))
    };
    println!("cold request (client)   {}   n={}", summary(&mut cold.iter().map(ms).collect()), cold.len());
    println!("warm request (client)   {}   n={}", summary(&mut warm.iter().map(ms).collect()), warm.len());
    println!(
        "wake to ready (sched.)  p50 {:7.3} ms   p95 {:7.3} ms   max {:7.3} ms   n={}",
        server["p50"].as_f64().unwrap_or(f64::NAN),
        server["p95"].as_f64().unwrap_or(f64::NAN),
        server["max"].as_f64().unwrap_or(f64::NAN),
        server["samples"]
    );
    if not_cold > 0 {
        println!("({not_cold} attempts found a replica already woken and were not counted)");
    }
}
