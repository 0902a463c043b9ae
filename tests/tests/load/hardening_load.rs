//! Many slow clients against `tern up`: a latency bound, so it runs alone
//! (`crate::solo`): a flood beside it would measure the machine, not the
//! gateway. Failed on the code before its fix (no
//! `--max-connections`, no body timeouts).

use std::io::{Read, Write};
use std::time::Duration;
use tern_tests::{TernUp, guest};

#[test]
fn slow_and_many_clients_cannot_crowd_out_a_normal_one() {
    let _solo = crate::solo();
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), &["--max-connections", "2100"]);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    let addr = up.url.strip_prefix("http://").unwrap().to_string();
    // 2,000 clients trickle a body: a byte every second, never the end.
    let slow = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (slow, stop) = (slow.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in slow.lock().unwrap().iter_mut() {
                    let _ = s.write_all(b"x");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    for _ in 0..2000 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nx").unwrap();
        slow.lock().unwrap().push(s);
    }
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let r = client.get(format!("{}/hello", up.url)).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1), "a normal request took {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Past --max-connections, a connection is told so and closed: of 150
    // more, about 50 are past 2,100 (the normal client holds one or two).
    let extra: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for s in &extra {
        s.set_nonblocking(true).unwrap();
    }
    let mut turned_away = vec![false; extra.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while turned_away.iter().filter(|t| **t).count() < 45 && std::time::Instant::now() < deadline {
        for (s, t) in extra.iter().zip(turned_away.iter_mut()) {
            let mut b = [0u8; 256];
            if let Ok(n) = (&*s).read(&mut b)
                && n > 0
            {
                let head = String::from_utf8_lossy(&b[..n]);
                assert!(head.starts_with("HTTP/1.1 503") && head.contains("retry-after: 1"), "{head}");
                *t = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = turned_away.iter().filter(|t| **t).count();
    assert!((45..=52).contains(&n), "{n} of 150 extra connections were turned away");
    drop(extra);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    slow.lock().unwrap().clear();
    // A body that stops coming is given up on: 408 after the idle timeout.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stalled.write_all(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab").unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(up.wait_for("/hello", 200, Duration::from_secs(5)).status == 200);
}
