//! The SDK's lock under test, in bucket `locks`:
//! - `POST /lock/rmw`: take lock `L`, read key `plain`, add one, write it
//!   back, release; answers the new value. Without the lock, concurrent
//!   requests would lose updates.
//! - `POST /lock/trap?ttl_ms=N`: take `L` for N ms, then trap while
//!   holding it.
//! - `GET /lock/try`: 200 if `L` could be taken now (and releases it),
//!   409 if it is held.

use std::time::Duration;
use tern_sdk::{Request, Response, kv, text};

fn handle(req: Request) -> Response {
    match run(&req) {
        Ok(r) => r,
        Err(e) => text(500, format!("{e}\n")),
    }
}

fn run(req: &Request) -> Result<Response, kv::Error> {
    let bucket = kv::open("locks")?;
    let query = req.uri().query().unwrap_or_default();
    match req.uri().path() {
        "/lock/rmw" => {
            let lock = bucket.lock("L", Duration::from_secs(5), Duration::from_secs(30))?;
            let now: u64 = bucket.get_string("plain")?.map_or(0, |v| v.parse().unwrap_or(0));
            // Widen the window between read and write, as real work would.
            std::thread::sleep(Duration::from_millis(2));
            bucket.set("plain", (now + 1).to_string())?;
            lock.release()?;
            Ok(text(200, (now + 1).to_string()))
        }
        "/lock/trap" => {
            let ttl = query.strip_prefix("ttl_ms=").and_then(|v| v.parse().ok()).unwrap_or(1000);
            let _held = bucket.try_lock("L", Duration::from_millis(ttl))?.expect("L is free");
            panic!("trapping while holding the lock");
        }
        "/lock/try" => Ok(match bucket.try_lock("L", Duration::from_secs(5))? {
            Some(lock) => {
                lock.release()?;
                text(200, "free")
            }
            None => text(409, "held"),
        }),
        _ => Ok(text(404, "no such route")),
    }
}

tern_sdk::http_function!(handle);
