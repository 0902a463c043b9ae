//! Key-value operations per second, one way at a time:
//!
//! ```text
//! kv-bench tern URL OP REQUESTS OPS_PER_REQUEST CONCURRENCY
//! kv-bench sled DIR OP OPS CONCURRENCY
//! kv-bench jetstream NATS_URL BUCKET OP OPS CONCURRENCY
//! ```
//!
//! OP is `get` (of key `k`) or `incr` (of key `counter`). `tern` drives the
//! kv-guest function, which does OPS_PER_REQUEST operations per request;
//! `sled` and `jetstream` are what a plain client does for the same
//! operations: `sled` a get, or a read-modify-write (`fetch_and_update`)
//! then a flush so the write is durable before the next, from
//! CONCURRENCY threads; `jetstream` the key-value client's `get`, or
//! `entry` then a revision-checked `update`, retried on conflict, from
//! CONCURRENCY tasks. Prints operations per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument; see the source's header for usage");
    let num = |i: usize| -> Result<usize> { Ok(arg(i)?.parse()?) };
    let rate = match arg(0)?.as_str() {
        "tern" => tern(&arg(1)?, &arg(2)?, num(3)?, num(4)?, num(5)?)?,
        "sled" => sled_direct(&arg(1)?, &arg(2)?, num(3)?, num(4)?)?,
        "jetstream" => jetstream(&arg(1)?, &arg(2)?, &arg(3)?, num(4)?, num(5)?)?,
        other => return Err(format!("unknown mode {other}").into()),
    };
    println!("{rate:.0}");
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn tern(url: &str, op: &str, requests: usize, per: usize, concurrency: usize) -> Result<f64> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let target = format!("{url}/kvbench/{op}?n={per}");
        // Warm: the first request compiles nothing but loads the instance pool.
        client.post(&target).send().await?.error_for_status()?;
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, target, next) = (client.clone(), target.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < requests {
                        let r = client.post(&target).send().await?;
                        if !r.status().is_success() {
                            return Err(format!("{}: {}", r.status(), r.text().await?).into());
                        }
                        r.bytes().await?;
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        Ok((requests * per) as f64 / start.elapsed().as_secs_f64())
    })
}

fn sled_direct(dir: &str, op: &str, ops: usize, concurrency: usize) -> Result<f64> {
    let db = sled::open(dir)?;
    let tree = db.open_tree("bench")?;
    tree.insert("k", vec![7u8; 64])?;
    db.flush()?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (db, tree, next, op) = (db.clone(), tree.clone(), next.clone(), op.to_string());
            std::thread::spawn(move || -> sled::Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    if op == "get" {
                        std::hint::black_box(tree.get("k")?);
                    } else {
                        tree.fetch_and_update("counter", |old| {
                            let n: u64 =
                                old.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
                            Some((n + 1).to_string().into_bytes())
                        })?;
                        db.flush()?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a thread panicked")??;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn jetstream(url: &str, bucket: &str, op: &str, ops: usize, concurrency: usize) -> Result<f64> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let store = js.get_key_value(bucket).await?;
        store.put("k", vec![7u8; 64].into()).await?;
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (store, next, op) = (store.clone(), next.clone(), op.to_string());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < ops {
                        if op == "get" {
                            std::hint::black_box(store.get("k").await?);
                            continue;
                        }
                        loop {
                            let entry = store.entry("counter").await?;
                            let (n, rev) = match &entry {
                                Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                                    (std::str::from_utf8(&e.value)?.parse::<u64>()?, e.revision)
                                }
                                Some(e) => (0, e.revision),
                                None => (0, 0),
                            };
                            if store.update("counter", (n + 1).to_string().into(), rev).await.is_ok() {
                                break;
                            }
                        }
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        Ok(ops as f64 / start.elapsed().as_secs_f64())
    })
}
