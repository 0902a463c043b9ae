//! `tern up` end to end: a real process, the real CLI, real components, real
//! HTTP.

use std::time::{Duration, Instant};
use tern_tests::{TernUp, guest};

use tern_tests::JSON_API_ROUTES as API_ROUTES;

fn start() -> (tempfile::TempDir, TernUp) {
    TernUp::start_temp()
}

#[test]
fn examples_deploy_serve_version_rollback_and_delete() {
    let (_dir, up) = start();
    let hello = guest("hello");

    let out = up.deploy(&hello, "hello", &["--route", "/hello"]);
    assert!(out.contains(&format!("{}/hello", up.url)), "deploy prints the URL it serves on: {out}");
    let r = up.get("/hello");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, world!\n"));
    assert_eq!(up.get("/hello?name=Tern").body, "Hello, Tern!\n");

    up.deploy(&guest("json_api"), "api", API_ROUTES);
    assert_eq!(up.get("/api/greet/ada").json()["greeting"], "Hello, ada!");
    let sum = up.get("/api/add/40/2").json();
    assert_eq!((sum["a"].as_i64(), sum["sum"].as_i64()), (Some(40), Some(42)));
    assert_eq!(up.get("/api/add/x/2").status, 400);
    let echo = up.post("/api/echo", r#"{"title":"héllo","tags":["a","b"]}"#);
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(echo.json()["title_length"], 5);
    assert_eq!(up.post("/api/echo", "not json").status, 400);
    // The function sees the path as the client sent it.
    let info = up.get("/api/info/deep/er?q=1").json();
    assert_eq!(
        (info["path"].as_str(), info["rest"].as_str(), info["query"].as_str()),
        (Some("/api/info/deep/er"), Some("deep/er"), Some("q=1"))
    );
    assert_eq!(up.get("/nothing/here").status, 404);

    // The CLI can call a function directly, without a route.
    assert_eq!(up.tern_ok(&["invoke", "api", "--path", "/api/add/1/2"]).trim(), r#"{"a":1,"b":2,"sum":3}"#);

    // A second version, with config, replaces the first…
    up.deploy(&hello, "hello", &["--route", "/hello", "--env", "GREETING=Bonjour"]);
    assert_eq!(up.get("/hello").body, "Bonjour, world!\n");
    let d: serde_json::Value = serde_json::from_str(&up.tern_ok(&["describe", "hello", "--json"])).unwrap();
    assert_eq!(d["active_version"], 2);
    assert_eq!(d["versions"].as_array().unwrap().len(), 2);
    // …and rolling back brings the old body again.
    assert!(up.tern_ok(&["rollback", "hello"]).contains("version 1"));
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
    up.tern_ok(&["rollback", "hello", "--to", "2"]);
    assert_eq!(up.get("/hello").body, "Bonjour, world!\n");

    let list: serde_json::Value = serde_json::from_str(&up.tern_ok(&["list", "--json"])).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "hello"]);
    assert!(up.tern_ok(&["list"]).contains("/api/greet/:name"));

    up.tern_ok(&["delete", "hello"]);
    assert_eq!(up.get("/hello").status, 404);
    assert!(up.tern_err(&["describe", "hello"]).contains("no function named"));
    assert_eq!(up.get("/api/greet/x").status, 200, "deleting one function leaves the others");
}

#[test]
fn plain_wasi_component_is_served_unchanged() {
    let (_dir, up) = start();
    up.deploy(&guest("plain_wasi"), "plain", &["--route", "/plain/*"]);
    let r = up.get("/plain/a?b=c");
    assert_eq!((r.status, r.body.as_str()), (200, "plain wasi component saw /plain/a?b=c\n"));
}

#[test]
fn restart_keeps_every_function_version_and_route() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = TernUp::start(&data);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello", "--route", "/hi", "--env", "GREETING=Hej"]);
    up.deploy(&guest("json_api"), "api", API_ROUTES);
    let before = up.tern_ok(&["list", "--json"]);
    // kill -9: whatever was acknowledged must already be on disk.
    up.kill();

    let up = TernUp::start(&data);
    // Served from the first request after the restart, no warm-up.
    assert_eq!(up.get("/hi").body, "Hej, world!\n");
    assert_eq!(up.get("/hello").body, "Hej, world!\n");
    assert_eq!(up.get("/api/add/1/1").json()["sum"], 2);
    assert_eq!(up.tern_ok(&["list", "--json"]), before);
    // Version 1 is still there to roll back to.
    up.tern_ok(&["rollback", "hello"]);
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
    assert_eq!(up.get("/hi").status, 404, "routes follow the active version");
    assert!(!up.log_text().contains("compil"), "restart should load compiled artifacts from the cache");
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let (dir, mut up) = start();
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    let list_before = up.tern_ok(&["list", "--json"]);

    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let deploy_err = |path: &std::path::Path, name: &str, extra: &[&str]| {
        let mut args = vec!["deploy", path.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        up.tern_err(&args)
    };
    let garbage = file("garbage.wasm", b"this is not wasm at all, just text");
    assert!(deploy_err(&garbage, "g", &["--route", "/g"]).contains("not a WebAssembly binary"));
    // The smallest valid core module: header only.
    let core = file("core.wasm", b"\0asm\x01\0\0\0");
    assert!(deploy_err(&core, "g", &["--route", "/g"]).contains("core WebAssembly module, not a component"));
    let empty = file("empty.wasm", b"");
    assert!(deploy_err(&empty, "g", &["--route", "/g"]).contains("file is empty"));
    // The smallest valid component: exports nothing.
    let bare = file("bare.wasm", b"\0asm\x0d\0\x01\0");
    let err = deploy_err(&bare, "g", &["--route", "/g"]);
    assert!(
        err.contains("exports neither wasi:http/incoming-handler")
            && err.contains("nor tern:function/event-handler"),
        "{err}"
    );
    let truncated = std::fs::read(guest("hello")).unwrap();
    let truncated = file("truncated.wasm", &truncated[..truncated.len() / 2]);
    assert!(deploy_err(&truncated, "g", &["--route", "/g"]).contains("not valid"));

    let err = deploy_err(&guest("plain_wasi"), "thief", &["--route", "/hello"]);
    assert!(
        err.contains(r#"route "/hello" matches the same requests as a route of function "hello""#),
        "{err}"
    );
    assert!(deploy_err(&guest("plain_wasi"), "Bad.Name", &["--route", "/x"]).contains("not valid"));
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--route", "no-slash"]).contains("must start with '/'"));
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--memory", "0"]).contains("memory"));
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--timeout", "soon"]).contains("500ms"));
    let err = deploy_err(&guest("plain_wasi"), "x", &["--min-scale", "3", "--max-scale", "1"]);
    assert!(err.contains("min scale 3 is more than max scale 1"), "{err}");
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--concurrency", "0"]).contains("target concurrency"));
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--idle", "10ms"]).contains("idle window"));
    assert!(deploy_err(&guest("plain_wasi"), "x", &["--idle", "never"]).contains("500ms"));
    assert!(deploy_err(&dir.path().join("missing.wasm"), "x", &[]).contains("cannot read"));
    assert!(up.tern_err(&["rollback", "hello"]).contains("no version before 1"));
    assert!(up.tern_err(&["rollback", "hello", "--to", "9"]).contains("no version 9"));
    assert!(up.tern_err(&["delete", "nobody"]).contains("no function named"));

    // Nothing above changed what was stored or served.
    assert_eq!(up.tern_ok(&["list", "--json"]), list_before);
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
    assert_eq!(up.get("/g").status, 404);

    // Admin API without, or with a wrong, token.
    let client = reqwest::blocking::Client::new();
    let status = |req: reqwest::blocking::RequestBuilder| req.send().unwrap().status().as_u16();
    assert_eq!(status(client.get(format!("{}/api/v1/functions", up.url))), 401);
    assert_eq!(status(client.get(format!("{}/api/v1/functions", up.url)).bearer_auth("wrong")), 401);
    assert_eq!(status(client.delete(format!("{}/api/v1/functions/hello", up.url))), 401);
    assert_eq!(status(client.get(format!("{}/api/v1/functions", up.url)).bearer_auth(&up.token)), 200);
    let out = std::process::Command::new(tern_tests::tern_bin())
        .args(["list", "--url", &up.url, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin token"));
    assert_eq!(up.get("/hello").status, 200, "a rejected admin call deleted nothing");

    // Oversized and malformed requests.
    up.deploy(&guest("json_api"), "api", API_ROUTES);
    let big = vec![b'x'; 8 * 1024 * 1024 + 1];
    assert_eq!(up.post("/api/echo", big).status, 413);
    let huge_header = "h".repeat(70 * 1024);
    let client = reqwest::blocking::Client::new();
    let r = client.get(format!("{}/hello", up.url)).header("x-big", huge_header).send().unwrap();
    assert_eq!(r.status().as_u16(), 431, "oversized headers are refused");
    raw_garbage(&up.url);
    assert!(up.is_alive());
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
}

/// Bytes that are not HTTP get a 400 and a closed connection.
fn raw_garbage(url: &str) {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01 this is no request\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[test]
fn hostile_guests_are_stopped_and_the_worker_lives_on() {
    let (_dir, mut up) = start();
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    up.deploy(&guest("hostile"), "hostile", &["--route", "/h/*", "--timeout", "1s", "--memory", "32"]);
    let healthy = |up: &TernUp| assert_eq!(up.get("/hello").body, "Hello, world!\n");

    let cases: &[(&str, u16, &str)] = &[
        ("/h/loop", 504, "timed out after 1s"),
        ("/h/sleep", 504, "timed out after 1s"),
        ("/h/alloc", 500, "memory limit of 32 MiB"),
        ("/h/recurse", 500, "overflowed its stack"),
        ("/h/panic", 500, "failed (trap)"),
        ("/h/noresponse", 502, "without sending a response"),
    ];
    for (path, status, message) in cases {
        let started = Instant::now();
        let r = up.get(path);
        assert_eq!(r.status, *status, "{path}: {}", r.body);
        assert!(r.body.contains(message), "{path}: {}", r.body);
        assert!(started.elapsed() < Duration::from_secs(5), "{path} took {:?}", started.elapsed());
        healthy(&up);
    }
    // Details go to the function's log, not to the client.
    assert!(!up.get("/h/panic").body.contains("panics on purpose"));
    let logs = up.tern_ok(&["logs", "hostile"]);
    for needle in [
        "timed out after 1s",
        "memory limit of 32 MiB",
        "this function panics on purpose",
        "call stack exhausted",
    ] {
        assert!(logs.contains(needle), "logs lack {needle:?}:\n{logs}");
    }
    assert!(logs.lines().count() < 400, "a stack overflow must not flood the log");

    // Spinning guests yield: while several spin on this 2-core machine, a
    // healthy function still answers. Were the runtime's threads starved,
    // it would answer only when the spinners time out, after 5 s; other
    // tests share the machine, hence the 2 s allowance.
    up.deploy(&guest("hostile"), "spinner", &["--route", "/spin/*", "--timeout", "5s"]);
    let url = up.url.clone();
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap()
                    .get(format!("{url}/spin/loop"))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    healthy(&up);
    let latency = started.elapsed();
    for s in spinners {
        assert_eq!(s.join().unwrap(), 504);
    }
    assert!(latency < Duration::from_secs(2), "healthy request took {latency:?} beside spinning guests");
    assert!(up.is_alive());
}

#[test]
fn functions_get_only_what_they_are_granted_and_their_output_is_logged() {
    let (_dir, up) = start();
    up.deploy(&guest("hostile"), "bare", &["--route", "/bare/*"]);
    up.deploy(
        &guest("hostile"),
        "configured",
        &["--route", "/conf/*", "--env", "COLOUR=teal", "--env", "SIZE=3"],
    );
    // No inherited environment, no files.
    assert_eq!(up.get("/bare/env").body.trim(), "");
    assert_eq!(up.get("/conf/env").body.trim(), "COLOUR=teal\nSIZE=3");
    assert!(up.get("/bare/files").body.starts_with("Err("));

    assert_eq!(up.get("/bare/log").body, "logged\n");
    let logs = up.tern_ok(&["logs", "bare"]);
    assert!(logs.contains("stdout: a line on stdout") && logs.contains("stderr: a line on stderr"), "{logs}");
    assert!(!up.tern_ok(&["logs", "configured"]).contains("a line on stdout"), "logs are per function");
    let json = up.tern_ok(&["logs", "bare", "--json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["function"], "bare");
}

#[test]
fn logs_follow_streams_new_lines() {
    let (_dir, up) = start();
    up.deploy(&guest("hostile"), "talker", &["--route", "/t/*"]);
    let mut follow = std::process::Command::new(tern_tests::tern_bin())
        .args(["logs", "talker", "--follow", "--url", &up.url, "--token", &up.token])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    up.get("/t/log");
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("a line on stderr"))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let found = reader.join().unwrap();
    assert!(found.is_some(), "a follower saw the new line");
}
