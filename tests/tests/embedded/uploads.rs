//! Request bodies stream from the client into the guest as the client sends
//! them (tests/guests/stream's `/echo` and `/count`), in `tern up` and
//! through a cluster on a real nats-server with its users: a 200 MiB upload
//! echoed back arrives intact (sha256) without the platform growing by it,
//! `--max-body` holds as bytes flow, content-length is honoured and
//! checked, and a guest that reads slowly for longer than its timeout is
//! not cut while its upload moves.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_tests::memory::{RssWatch, in_flight};
use tern_tests::{Client, Cluster, ClusterOptions, TernUp, eventually, guest};

const MIB: u64 = 1 << 20;

/// Pseudo-random bytes in a block whose size is no power of two, so a
/// chunk lost, doubled or reordered anywhere changes the hash.
fn block() -> Arc<Vec<u8>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes = (0..(MIB as usize + 7))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Arc::new(bytes)
}

/// `len` bytes of the block repeated, as a body stream in 64 KiB pieces.
fn source(block: Arc<Vec<u8>>, len: u64) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(0u64, move |sent| {
        let block = block.clone();
        async move {
            if sent >= len {
                return None;
            }
            let at = (sent % block.len() as u64) as usize;
            let n = (len - sent).min(64 * 1024).min((block.len() - at) as u64) as usize;
            Some((Ok(block[at..at + n].to_vec()), sent + n as u64))
        }
    })
}

fn expected_sha(block: &[u8], len: u64) -> String {
    let mut h = Sha256::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// POSTs `len` bytes to `url` (with a content-length, or chunked) while
/// reading the response: its status, size and sha256.
fn upload(url: &str, len: u64, declare: bool) -> (u16, u64, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().post(url).body(reqwest::Body::wrap_stream(source(block(), len)));
        if declare {
            req = req.header(reqwest::header::CONTENT_LENGTH, len);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let (mut n, mut h) = (0u64, Sha256::new());
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        (status, n, hex(&h.finalize()))
    })
}

/// A 200 MiB upload echoed back intact, the processes in `pids` growing by
/// less than 64 MiB while it passes.
fn a_large_upload_echoes_intact(c: &Client, pids: &[u32]) {
    let len = 200 * MIB;
    let watch = RssWatch::start(pids);
    let started = Instant::now();
    let (status, n, sha) = upload(&format!("{}/up/echo", c.url), len, true);
    let grew = watch.grew();
    assert_eq!((status, n), (200, len), "the echo came back whole");
    assert_eq!(sha, expected_sha(&block(), len), "the echo came back unchanged");
    for g in grew {
        assert!(g < 64 << 10, "the platform grew by {g} KiB echoing 200 MiB");
    }
    eprintln!("200 MiB echoed in {:?}", started.elapsed());
}

/// POSTs `body` over a raw connection with the given head lines; the
/// response's status line and the time it took.
fn raw_post(url: &str, path: &str, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n").unwrap();
    // The gateway may answer (and close) before all of it is sent.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string()
}

#[test]
fn in_tern_up_uploads_stream_within_their_limits() {
    let (_dir, up) = TernUp::start_temp();
    let routes = ["--route", "/up/*"];
    up.deploy(&guest("stream"), "up", &[&routes[..], &["--max-body", "256MiB", "--timeout", "2s"]].concat());
    up.deploy(&guest("stream"), "small", &["--route", "/small/*"]);

    a_large_upload_echoes_intact(&up, &[up.pid()]);

    // Chunked (no content-length), read whole before the answer: 30 MiB,
    // slower in debug builds than the 2 s timeout would allow were each
    // chunk not progress.
    let (status, _, _) = upload(&format!("{}/up/count", up.url), 30 * MIB, false);
    assert_eq!(status, 200);
    let r = up.post("/up/count", vec![b'a'; 100_000]);
    assert_eq!((r.status, r.body.trim()), (200, "100000"), "a body over one chunk, with a length");
    let r = up.post("/up/count", vec![b'a'; 1000]);
    assert_eq!((r.status, r.body.trim()), (200, "1000"), "a small body travels whole");

    // `tern invoke` streams both ways: a file or stdin up, the answer out.
    let file = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = block().iter().cycle().take(20 * MIB as usize).copied().collect();
    std::fs::write(file.path(), &data).unwrap();
    let at = format!("@{}", file.path().display());
    let out = up.tern(&["invoke", "up", "--path", "/echo", "--data", &at]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == data, "tern invoke echoed {} bytes, not the file's 20 MiB", out.stdout.len());
    let out = up.tern_with_stdin(&["invoke", "up", "--path", "/count", "--data", "-"], &data);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", 20 * MIB));
    let lines = up.tern_ok(&["invoke", "up", "--path", "/lines?n=3&ms=10"]);
    assert_eq!(lines, "data: 0\n\ndata: 1\n\ndata: 2\n\n");

    // A call between functions streams both ways too: 20 MiB up to `up`
    // and 20 MiB back, past what one message holds (8 MiB here).
    up.deploy(
        &guest("fetch"),
        "caller",
        &[
            "--route",
            "/caller",
            "--allow-outbound",
            "http://up.tern.internal",
            "--max-outbound-body",
            "64MiB",
            "--max-body",
            "64MiB",
            "--memory",
            "256",
            "--env",
            "NAME=caller",
        ],
    );
    let r = up.post("/caller?url=http://up.tern.internal/count", vec![b'q'; 20 * MIB as usize]);
    assert_eq!((r.status, r.body.as_str()), (200, "20971520\nvia caller\n"), "the upload reached up whole");
    let r = reqwest::blocking::get(format!("{}/caller?url=http://up.tern.internal/bytes?mib=20", up.url))
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().unwrap();
    assert!(body.starts_with(&vec![b'x'; 20 * MIB as usize]), "{} bytes came back", body.len());

    // --max-body (8 MiB by default): a declared length past it is refused
    // before the function is called; a chunked body is cut as it passes it.
    let line = raw_post(&up.url, "/small/count", &format!("Content-Length: {}\r\n", 9 * MIB), &[]);
    assert!(line.contains("413"), "{line}");
    let (status, _, _) = upload(&format!("{}/small/count", up.url), 9 * MIB, false);
    assert_eq!(status, 413, "a chunked body past the limit");
    let (status, n, _) = upload(&format!("{}/small/count", up.url), 8 * MIB, false);
    assert_eq!((status, n), (200, 8), "8 MiB is within the limit: the answer is 8388608 and a newline");

    // A guest's content-length is honoured (the client gets it, not
    // chunked) and checked (a body shorter than it ends in an error).
    let r = reqwest::blocking::get(format!("{}/up/length?n=100000&lie=100000", up.url)).unwrap();
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(r.bytes().unwrap().len(), 100_000);
    let mut r = reqwest::blocking::get(format!("{}/up/length?n=100000&lie=70000", up.url)).unwrap();
    let mut body = Vec::new();
    assert!(r.read_to_end(&mut body).is_err(), "a body shorter than its length read as complete");

    // A response past --max-body is cut as it passes the limit.
    let mut r = reqwest::blocking::get(format!("{}/small/bytes?mib=9", up.url)).unwrap();
    let mut body = Vec::new();
    assert!(r.read_to_end(&mut body).is_err(), "a response past --max-body read as complete");
    assert!(body.len() as u64 <= 8 * MIB, "{} bytes passed the limit", body.len());
    let logs = up.tern_ok(&["logs", "small"]);
    assert!(logs.contains("response is larger than the 8388608 byte limit"), "{logs}");

    // Trailers the guest sends reach a client that takes them.
    let mut s = TcpStream::connect(up.url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /up/trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.contains("body\n") && raw.to_lowercase().contains("x-checksum: abc123"), "{raw}");

    // --max-duration bounds a stream however steadily it goes: a guest
    // writing every 200 ms (well within its 1 s timeout) is cut at 2 s.
    up.deploy(&guest("stream"), "brief", &["--route", "/brief/*", "--timeout", "1s", "--max-duration", "2s"]);
    let started = Instant::now();
    let mut r = reqwest::blocking::get(format!("{}/brief/lines?n=100&ms=200", up.url)).unwrap();
    let mut body = Vec::new();
    assert!(r.read_to_end(&mut body).is_err(), "a stream past --max-duration read as complete");
    let took = started.elapsed();
    assert!(took > Duration::from_millis(1800) && took < Duration::from_secs(5), "cut after {took:?}");
    assert!(String::from_utf8_lossy(&body).contains("data: 5\n"), "{}", String::from_utf8_lossy(&body));

    // HEAD: the head, no body.
    let r = reqwest::blocking::Client::new().head(format!("{}/up/bytes?mib=1", up.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().unwrap().is_empty());

    // A client that leaves mid-upload stops the guest.
    let mut s = TcpStream::connect(up.url.trim_start_matches("http://")).unwrap();
    write!(s, "POST /up/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 100 * MIB).unwrap();
    s.write_all(&vec![b'z'; MIB as usize]).unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).unwrap() > 0, "the echo began");
    drop(s);
    assert!(
        eventually(Duration::from_secs(3), || in_flight(&up, "up") == 0),
        "the guest of a client that left mid-upload is still running"
    );
}

#[test]
fn through_a_cluster_uploads_stream() {
    let c = Cluster::start_opts(ClusterOptions { workers: 1, nats_users: true, ..Default::default() });
    c.deploy(&guest("stream"), "up", &["--route", "/up/*", "--max-body", "256MiB"]);
    c.deploy(&guest("stream"), "small", &["--route", "/small/*"]);
    a_large_upload_echoes_intact(&c, &[c.gateway.pid(), c.workers[0].pid()]);
    let (status, _, _) = upload(&format!("{}/small/count", c.url), 9 * MIB, false);
    assert_eq!(status, 413, "a chunked body past the limit");
    let r = c.post("/up/count", vec![b'a'; 300_000]);
    assert_eq!((r.status, r.body.trim()), (200, "300000"));
}
