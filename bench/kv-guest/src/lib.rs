//! `/kvbench/get?n=N`: N gets of key `k`; `/kvbench/incr?n=N`: N increments
//! of key `counter`; both in bucket `bench`. Answers the last result.

use tern_sdk::{Request, Response, kv, text};

fn handle(req: Request) -> Response {
    let n: u32 =
        req.uri().query().and_then(|q| q.strip_prefix("n=")).and_then(|v| v.parse().ok()).unwrap_or(1);
    let bucket = match kv::open("bench") {
        Ok(b) => b,
        Err(e) => return text(500, e.to_string()),
    };
    let get = match req.uri().path() {
        "/kvbench/get" => true,
        "/kvbench/incr" => false,
        _ => return text(404, "no such route"),
    };
    // Only the operations themselves in the loop: bytes read, or the last
    // counter value.
    let mut last = 0u64;
    for _ in 0..n {
        let r = if get {
            bucket.get("k").map(|v| last += v.map_or(0, |v| v.len() as u64))
        } else {
            bucket.increment("counter", 1).map(|v| last = v)
        };
        if let Err(e) = r {
            return text(500, e.to_string());
        }
    }
    text(200, last.to_string())
}

tern_sdk::http_function!(handle);
