//! `density URL TOKEN WASM PID [--functions N] [--warm W] [--cold C] [--threads T] [--query Q]`
//!
//! Against a running `tern up` (PID is its process, for RSS):
//! 1. deploys WASM as N functions `f0..fN` (route `/fI`) through the admin
//!    API, T at a time (Q added to each deploy's query, e.g.
//!    `&memory_mib=16`), and times it;
//! 2. requests the first W round-robin until each answered 200 twice (they
//!    are loaded and recently used: warm), then reads PID's RSS;
//! 3. times one request to each of C functions never requested before (a
//!    cold start; on a full node, one that evicts an idle function).
//!
//! Every request must answer 200; any other answer is counted and printed,
//! and makes the exit code 1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    token: String,
    wasm: Vec<u8>,
    pid: u32,
    functions: usize,
    warm: usize,
    cold: usize,
    threads: usize,
    query: String,
}

fn args() -> Args {
    let mut v: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str, default: usize| -> usize {
        match v.iter().position(|a| a == name) {
            Some(i) => {
                let n = v.remove(i + 1).parse().unwrap_or_else(|_| panic!("{name} takes a number"));
                v.remove(i);
                n
            }
            None => default,
        }
    };
    let (functions, warm, cold, threads) =
        (flag("--functions", 10_000), flag("--warm", 1000), flag("--cold", 200), flag("--threads", 8));
    let query = match v.iter().position(|a| a == "--query") {
        Some(i) => {
            let q = v.remove(i + 1);
            v.remove(i);
            q
        }
        None => String::new(),
    };
    let [url, token, wasm, pid] = &v[..] else {
        eprintln!(
            "usage: density URL TOKEN WASM PID [--functions N] [--warm W] [--cold C] [--threads T] [--query Q]"
        );
        std::process::exit(2);
    };
    Args {
        url: url.clone(),
        token: token.clone(),
        wasm: std::fs::read(wasm).expect("read the component"),
        pid: pid.parse().expect("PID is a number"),
        functions,
        warm,
        cold,
        threads,
        query,
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the tern process");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// Runs `job(i)` for every i in 0..n on `threads` threads.
fn parallel(n: usize, threads: usize, job: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    job(i);
                }
            });
        }
    });
}

fn summary(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:7.2} ms   p95 {:7.2} ms   max {:7.2} ms   n={}", at(0.5), at(0.95), at(1.0), v.len())
}

fn main() {
    let a = args();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let errors = AtomicUsize::new(0);
    let fail = |what: String| {
        if errors.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("{what}");
        }
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let rss_idle = rss_mib(a.pid);

    let started = Instant::now();
    let done = AtomicUsize::new(0);
    parallel(a.functions, a.threads, |i| {
        let r = client
            .post(format!("{}/api/v1/functions/f{i}/versions?routes=/f{i}{}", a.url, a.query))
            .bearer_auth(&a.token)
            .body(a.wasm.clone())
            .send();
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => fail(format!("deploy f{i}: {} {}", r.status(), r.text().unwrap_or_default())),
            Err(e) => fail(format!("deploy f{i}: {e}")),
        }
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if tty && n % 100 == 0 {
            eprint!("\rdeployed {n} of {}", a.functions);
        }
    });
    let deploy = started.elapsed();
    if tty {
        eprintln!();
    }
    let rss_deployed = rss_mib(a.pid);

    let get = |i: usize| -> Option<f64> {
        let started = Instant::now();
        match client.get(format!("{}/f{i}", a.url)).send() {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes();
                Some(started.elapsed().as_secs_f64() * 1000.0)
            }
            Ok(r) => {
                fail(format!("GET /f{i}: {} {}", r.status(), r.text().unwrap_or_default()));
                None
            }
            Err(e) => {
                fail(format!("GET /f{i}: {e}"));
                None
            }
        }
    };
    let warm = a.warm.min(a.functions);
    let started = Instant::now();
    parallel(warm * 2, a.threads, |i| {
        get(i % warm);
    });
    let warmed = started.elapsed();
    let rss_warm = rss_mib(a.pid);

    // One at a time, so each is a cold start alone, as a user would see it.
    let mut cold: Vec<f64> = (warm..a.functions)
        .step_by(((a.functions - warm) / a.cold.max(1)).max(1))
        .take(a.cold)
        .filter_map(get)
        .collect();
    let rss_after = rss_mib(a.pid);
    let evictions: f64 = client
        .get(format!("{}/metrics", a.url))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("tern_node_evictions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b);

    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| deploy {} functions ({} at a time) | {:.1} s ({:.0}/s) |",
        a.functions,
        a.threads,
        deploy.as_secs_f64(),
        a.functions as f64 / deploy.as_secs_f64()
    );
    println!("| RSS before deploying | {rss_idle:.0} MiB |");
    println!("| RSS with {} deployed | {rss_deployed:.0} MiB |", a.functions);
    println!("| {} requests round-robin over {warm} functions | {:.1} s |", warm * 2, warmed.as_secs_f64());
    println!("| RSS with {warm} warm | {rss_warm:.0} MiB |");
    if !cold.is_empty() {
        println!("| cold request, never requested before | {} |", summary(&mut cold));
    }
    println!("| RSS after the cold requests | {rss_after:.0} MiB |");
    println!("| idle functions evicted to make room (tern_node_evictions_total) | {evictions:.0} |");
    let errors = errors.load(Ordering::Relaxed);
    println!("| errors (any answer not 2xx) | {errors} |");
    if errors > 0 {
        std::process::exit(1);
    }
}
