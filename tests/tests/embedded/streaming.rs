//! Response bodies stream from the guest to the client as the guest writes
//! them (tests/guests/stream, public `wasi` crate only), in `tern up` and
//! through a cluster on a real nats-server: server-sent events arrive as
//! written, a large body passes without the platform growing, a slow
//! client pauses the guest, a client that leaves stops it, a stalled guest
//! is cut, and a dead worker ends the stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tern_tests::memory::{RssWatch, in_flight, rss_kib};
use tern_tests::{Client, Cluster, ClusterOptions, TernUp, eventually, guest};

/// Its routes, and room for large bodies (8 MiB by default).
const ROUTES: &[&str] =
    &["--route", "/lines", "--route", "/bytes", "--route", "/stall", "--max-body", "1GiB"];

/// GET `path` over a raw connection; each read with the time it came.
fn timed_get(url: &str, path: &str, until: &[u8]) -> Vec<(Duration, Vec<u8>)> {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (mut reads, mut all) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 65536];
    while !all.ends_with(until) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed early: {}", String::from_utf8_lossy(&all));
        reads.push((started.elapsed(), buf[..n].to_vec()));
        all.extend_from_slice(&buf[..n]);
    }
    reads
}

/// GETs 500 MiB and reads 1 KiB a second of it for 4 s; the connection,
/// still open.
fn read_slowly(url: &str) -> TcpStream {
    let mut slow = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    write!(slow, "GET /bytes?mib=500 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut kib = [0u8; 1024];
    for _ in 0..4 {
        slow.read_exact(&mut kib).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    slow
}

/// Six events 200 ms apart (`event(i)` is the i-th's text): the first
/// within 300 ms, each as written.
fn events_arrive_as_written(c: &Client, path: &str, event: impl Fn(usize) -> String) {
    let reads = timed_get(&c.url, path, b"0\r\n\r\n");
    let when = |i: usize| {
        let needle = event(i);
        let mut seen = Vec::new();
        for (t, bytes) in &reads {
            seen.extend_from_slice(bytes);
            if String::from_utf8_lossy(&seen).contains(&needle) {
                return *t;
            }
        }
        panic!("event {i} never came: {reads:?}");
    };
    let head = String::from_utf8_lossy(&reads[0].1).to_string();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(when(0) < Duration::from_millis(300), "first event after {:?}", when(0));
    for i in 1..6 {
        // Written 200 ms after the one before: here within 300 ms of that,
        // and not before it was written.
        let written = when(0) + Duration::from_millis(200 * i as u64);
        let got = when(i);
        assert!(got + Duration::from_millis(50) >= written, "event {i} at {got:?}, before it was written");
        assert!(got < written + Duration::from_millis(300), "event {i} at {got:?}, written at {written:?}");
    }
}

#[test]
fn in_tern_up_bodies_stream_with_backpressure_and_cancellation() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("stream"), "stream", ROUTES);
    up.deploy(&guest("stream"), "quick", &["--route", "/quick/*", "--timeout", "1s", "--max-body", "1GiB"]);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    events_arrive_as_written(&up, "/lines?n=6&ms=200", |i| format!("data: {i}\n"));
    // The same from the SDK's streaming writer (examples/ticker).
    up.deploy(&guest("ticker"), "ticker", &["--route", "/ticker"]);
    events_arrive_as_written(&up, "/ticker?n=6", |i| format!("data: tick {i}\n"));

    // 200 MiB through, without the platform growing by it.
    let before = rss_kib(up.pid());
    let mut r = reqwest::blocking::get(format!("{}/bytes?mib=200", up.url)).unwrap();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        assert!(buf[..k].iter().all(|b| *b == b'x'));
        n += k as u64;
    }
    assert_eq!(n, 200 << 20);
    let grew = rss_kib(up.pid()).saturating_sub(before);
    assert!(grew < 64 << 10, "tern up grew by {grew} KiB streaming 200 MiB");

    // A client reading 1 KiB/s from a guest writing 500 MiB: the guest is
    // paused, not buffered.
    let before = rss_kib(up.pid());
    let slow = read_slowly(&up.url);
    let grew = rss_kib(up.pid()).saturating_sub(before);
    assert!(grew < 16 << 10, "a slow client made tern up grow by {grew} KiB");
    assert_eq!(up.get("/hello").status, 200, "other functions serve meanwhile");

    // The client leaves after the first chunk: the guest is stopped.
    drop(slow);
    let mut early = TcpStream::connect(up.url.trim_start_matches("http://")).unwrap();
    write!(early, "GET /lines?n=1000&ms=100 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut kib = [0u8; 1024];
    assert!(early.read(&mut kib).unwrap() > 0, "the first chunk came");
    drop(early);
    assert!(
        eventually(Duration::from_secs(3), || in_flight(&up, "stream") == 0),
        "the guests of clients that left are still running"
    );
    let logs = up.tern_ok(&["logs", "stream"]);
    assert!(logs.contains("the client went away; the guest was stopped"), "{logs}");

    // A client that pauses longer than the function's timeout pauses the
    // guest; it is not at fault, and the body comes whole.
    let mut paused = reqwest::blocking::get(format!("{}/quick/bytes?mib=64", up.url)).unwrap();
    let mut first = [0u8; 1024];
    paused.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut rest = Vec::new();
    paused.read_to_end(&mut rest).expect("a paused client gets the whole body");
    assert_eq!(rest.len() + 1024, 64 << 20);

    // A guest that stalls past its timeout mid-stream is cut: the client
    // sees the response end in an error, not a hang and not a whole body.
    let started = Instant::now();
    let mut r = reqwest::blocking::get(format!("{}/quick/stall?ms=10000", up.url)).unwrap();
    let mut body = Vec::new();
    let read = r.read_to_end(&mut body);
    assert!(read.is_err(), "a cut stream read as complete: {:?}", String::from_utf8_lossy(&body));
    assert_eq!(String::from_utf8_lossy(&body), "first\n");
    assert!(started.elapsed() < Duration::from_secs(4), "cut after {:?}", started.elapsed());
    let logs = up.tern_ok(&["logs", "quick"]);
    assert!(logs.contains("streamed response cut: invocation failed: function timed out after 1s"), "{logs}");

    // A guest that traps mid-stream, right after a write: the client's
    // response ends in an error, never as complete (wasmtime ends such a
    // body as if finished, and may drop the write just before the trap).
    let mut r = reqwest::blocking::get(format!("{}/quick/trap?ms=50", up.url)).unwrap();
    let mut body = Vec::new();
    assert!(r.read_to_end(&mut body).is_err(), "a trapped stream read as complete");
    assert!(String::from_utf8_lossy(&body).starts_with("first\n"), "{:?}", String::from_utf8_lossy(&body));
    let logs = up.tern_ok(&["logs", "quick"]);
    assert!(logs.contains("streamed response cut: invocation failed: trap"), "{logs}");
    // One that traps right after writing, before its body could be seen
    // to stream, answers 500, not its part as a whole body. The worker
    // waits a few ms for a running guest before it decides the body
    // streams; on a loaded machine the guest's thread may be off its core
    // longer, and then the answer is a stream that breaks off. Either way
    // it never reads as complete, and most of the time it is a 500.
    let mut whole_500s = 0;
    for _ in 0..5 {
        let mut r = reqwest::blocking::get(format!("{}/quick/trap?ms=0", up.url)).unwrap();
        let status = r.status().as_u16();
        let mut body = Vec::new();
        let read = r.read_to_end(&mut body);
        match status {
            500 => whole_500s += 1,
            200 => assert!(
                read.is_err(),
                "a trapped stream read as complete: {:?}",
                String::from_utf8_lossy(&body)
            ),
            other => panic!("a guest that trapped answered {other}"),
        }
    }
    assert!(whole_500s >= 1, "a guest that trapped at once never answered 500, always a broken stream");
}

#[test]
fn through_a_cluster_bodies_stream_and_a_dead_worker_ends_the_stream() {
    let mut c = Cluster::start_opts(ClusterOptions { workers: 2, nats_users: true, ..Default::default() });
    c.deploy(
        &guest("stream"),
        "stream",
        &[&["--min-scale", "1", "--node-selector", "zone=w0"][..], ROUTES].concat(),
    );
    c.deploy(&guest("hello"), "hello", &["--route", "/hello", "--node-selector", "zone=w1"]);
    events_arrive_as_written(&c, "/lines?n=6&ms=200", |i| format!("data: {i}\n"));

    let mut r = reqwest::blocking::get(format!("{}/bytes?mib=50", c.url)).unwrap();
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), 50 << 20);

    // A client reading 1 KiB/s: neither the gateway nor the worker grows.
    let watch = RssWatch::start(&[c.gateway.pid(), c.workers[0].pid()]);
    let slow = read_slowly(&c.url);
    // (A 500 MiB body: what grows is the window and the roles' own
    // buffers, not the body.)
    for grew in watch.grew() {
        assert!(grew < 32 << 10, "a slow client made a role grow by {grew} KiB");
    }
    // It leaves: the guest is stopped.
    drop(slow);
    assert!(
        eventually(Duration::from_secs(5), || in_flight(&c, "stream") == 0),
        "the guest of a client that left is still running"
    );

    // A guest that stalls past its timeout is cut; the client sees an error.
    c.deploy(
        &guest("stream"),
        "quick",
        &["--route", "/quick/*", "--timeout", "1s", "--node-selector", "zone=w0"],
    );
    let mut r = reqwest::blocking::get(format!("{}/quick/stall?ms=10000", c.url)).unwrap();
    let mut body = Vec::new();
    assert!(r.read_to_end(&mut body).is_err(), "a cut stream read as complete");
    assert_eq!(String::from_utf8_lossy(&body), "first\n");

    // kill -9 the worker mid-stream: the client's stream ends promptly.
    let mut s = TcpStream::connect(c.url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "GET /lines?n=1000&ms=100 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).unwrap() > 0, "the first chunk came");
    c.workers[0].kill();
    let killed = Instant::now();
    let mut all = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "the stream ended {:?} after the kill",
        killed.elapsed()
    );
    assert!(!all.ends_with(b"0\r\n\r\n"), "a cut stream ended as if complete");
    assert_eq!(c.get("/hello").status, 200, "other functions are unaffected");

    // kill -9 the gateway while its client is not reading: the worker,
    // waiting for credits, hears nothing and stops the guest.
    c.deploy(
        &guest("stream"),
        "stream",
        &[&["--min-scale", "1", "--node-selector", "zone=w1"][..], ROUTES].concat(),
    );
    let mut s = TcpStream::connect(c.url.trim_start_matches("http://")).unwrap();
    write!(s, "GET /bytes?mib=500 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(s.read(&mut buf).unwrap() > 0, "the first chunk came");
    std::thread::sleep(Duration::from_millis(500));
    c.gateway.restart();
    // It listens on a new port.
    let fresh = Client { url: c.gateway.url.clone().unwrap(), token: c.token.clone() };
    assert!(
        eventually(Duration::from_secs(10), || in_flight(&fresh, "stream") == 0),
        "the guest of a gateway that died is still running: {}\n{}",
        fresh.status()["nodes"],
        c.workers[1].log_text().lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    drop(s);
}
