//! Server-sent events: a streamed response, one event every 200 ms.
//!
//! ```text
//! tern deploy ticker.wasm --name ticker --route /ticker
//! curl -N 'localhost:8080/ticker?n=5'      # data: tick 0 … data: tick 4, as they happen
//! ```
//!
//! Each event reaches the client when it is written: Tern streams the body
//! instead of waiting for its end. A client that reads slowly makes
//! `write_all` wait; one that goes away stops the function.

use std::io::Write;
use std::time::Duration;
use tern_sdk::Request;
use tern_sdk::stream::{Responder, sleep};

/// Events sent at most, whatever the query asks.
const MAX_EVENTS: u32 = 1000;

fn handle(req: Request, out: Responder) {
    let n = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")?.parse::<u32>().ok()))
        .unwrap_or(10)
        .min(MAX_EVENTS);
    let mut body = out.start(200, &[("content-type", "text/event-stream"), ("cache-control", "no-cache")]);
    for i in 0..n {
        if i > 0 {
            sleep(Duration::from_millis(200));
        }
        if body.write_all(format!("data: tick {i}\n\n").as_bytes()).is_err() {
            return;
        }
    }
    body.finish();
}

tern_sdk::streaming_function!(handle);
