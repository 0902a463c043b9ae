//! A function that misbehaves on request, to show a worker survives it.
//! The last path segment selects the misbehaviour; anything else answers
//! "ok".

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Requests this instance has served through `count`, and whether one is
/// in it now: with `--instance-reuse` they show what an instance keeps.
static COUNT: AtomicU32 = AtomicU32::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hostile;

fn reply(out: ResponseOutparam, status: u16, text: &str) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).unwrap();
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().unwrap();
    stream.blocking_write_and_flush(text.as_bytes()).unwrap();
    drop(stream);
    OutgoingBody::finish(body, None).unwrap();
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    black_box(recurse(black_box(n + 1))) + 1
}

impl wasi::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // Functions see the path the client sent; the last segment decides.
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let what = path.rsplit('/').next().unwrap_or("");
        match what {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => {
                black_box(recurse(0));
            }
            "panic" => panic!("this function panics on purpose"),
            "noresponse" => drop(out),
            "sleep" => {
                // Blocked on the host, not spinning: only the host-side
                // timeout can stop this one.
                wasi::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
                reply(out, 200, "woke up\n");
            }
            "nap" => {
                // A well-behaved slow request (?ms=N, default 100), to hold
                // concurrency up for the autoscaler.
                let ms: u64 =
                    query.split('&').find_map(|kv| kv.strip_prefix("ms=")?.parse().ok()).unwrap_or(100);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                reply(out, 200, "rested\n");
            }
            "count" => {
                // This instance's request number, after ?ms=N of rest (0).
                if BUSY.swap(true, Ordering::SeqCst) {
                    return reply(out, 500, "two requests in one instance at once\n");
                }
                let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
                let ms: u64 =
                    query.split('&').find_map(|kv| kv.strip_prefix("ms=")?.parse().ok()).unwrap_or(0);
                if ms > 0 {
                    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                }
                println!("count {n}");
                BUSY.store(false, Ordering::SeqCst);
                reply(out, 200, &format!("{n}\n"));
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                reply(out, 200, &format!("{}\n", vars.join("\n")));
            }
            "files" => {
                let seen = std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.to_string());
                reply(out, 200, &format!("{seen:?}\n"));
            }
            "flood" => {
                // Empty lines, the most records per byte: ?kb=N on each stream.
                let kb: usize =
                    query.split('&').find_map(|kv| kv.strip_prefix("kb=")?.parse().ok()).unwrap_or(256);
                let lines = "\n".repeat(1024);
                for _ in 0..kb {
                    print!("{lines}");
                    eprint!("{lines}");
                }
                reply(out, 200, "flooded\n");
            }
            "log" => {
                // The trace context the gateway passed on, if any.
                for v in request.headers().get(&"traceparent".to_string()) {
                    println!("traceparent {}", String::from_utf8_lossy(&v));
                }
                println!("a line on stdout");
                eprintln!("a line on stderr");
                reply(out, 200, "logged\n");
            }
            _ => reply(out, 200, "ok\n"),
        }
    }
}

wasi::http::proxy::export!(Hostile);
