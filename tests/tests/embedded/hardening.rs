//! What a hostile client can try against `tern up` (real process, real
//! components, real sockets), and what it must get: refused clearly, with
//! every other function untouched. Each test here failed on the code before
//! its fix.

use std::io::{Read, Write};
use std::time::Duration;
use tern_tests::{TernUp, guest};

use tern_tests::JSON_API_ROUTES as API_ROUTES;

fn start() -> (tempfile::TempDir, TernUp) {
    TernUp::start_temp()
}

/// Sends `head` (request line and headers, no final blank line) as it is,
/// bytes the HTTP client libraries would refuse to send; returns the status
/// and the body.
fn raw(url: &str, head: &str) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    // A body the worker streamed (a guest that wrote it in parts, seen on
    // a loaded machine) comes chunked: the same bytes, framed.
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { unchunk(body) } else { body.to_string() };
    (status, body)
}

/// The data of a chunked HTTP/1.1 body (ASCII bodies only: the tests').
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

#[test]
fn the_host_header_cannot_change_the_path_a_function_sees() {
    let (_dir, up) = start();
    up.deploy(&guest("json_api"), "api", API_ROUTES);
    // Routed to /api/greet/:name; the guest used to read /api/info/INJECTED.
    let (status, body) = raw(&up.url, "GET /api/greet/ada HTTP/1.1\r\nHost: x/api/info/INJECTED?");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Host header"), "{body}");
    for bad in ["user@x", "x y", "x#y", "[::1"] {
        let (status, body) = raw(&up.url, &format!("GET /api/greet/ada HTTP/1.1\r\nHost: {bad}"));
        assert_eq!(status, 400, "Host {bad:?}: {body}");
    }
    let (status, body) = raw(&up.url, "GET /api/greet/ada HTTP/1.1\r\nHost: a\r\nHost: b");
    assert_eq!(status, 400, "two Host headers: {body}");
    // A good Host is served, and the guest reads the path that was routed.
    let (status, body) = raw(&up.url, "GET /api/info/x HTTP/1.1\r\nHost: example.com:8080");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""path":"/api/info/x""#), "{body}");
    let (status, body) = raw(&up.url, "GET /api/greet/ada HTTP/1.1\r\nHost: example.com");
    assert_eq!(status, 200);
    assert!(body.contains("Hello, ada!"), "{body}");
}

#[test]
fn a_function_cannot_take_over_another_functions_route() {
    let (_dir, up) = start();
    let hello = guest("hello");
    up.deploy(&hello, "hello", &["--route", "/hello", "--route", "/users/:id", "--route", "/static/*"]);
    for taken in ["/hello/", "//hello", "/users/:zz", "/static//*"] {
        let err = up.tern_err(&["deploy", hello.to_str().unwrap(), "--name", "b", "--route", taken]);
        assert!(err.contains("the same requests") && err.contains("HTTP 409"), "{taken}: {err}");
    }
    // Nothing was stored, and hello still answers every one of its routes.
    assert!(!up.tern_ok(&["list"]).contains("\nb "), "{}", up.tern_ok(&["list"]));
    for path in ["/hello", "/hello/", "/users/7", "/static/a.css"] {
        assert_eq!(up.get(path).body, "Hello, world!\n", "{path}");
    }
    // One function may not give the same route twice in two spellings.
    let err =
        up.tern_err(&["deploy", hello.to_str().unwrap(), "--name", "c", "--route", "/c", "--route", "/c/"]);
    assert!(err.contains("match the same requests"), "{err}");
    // Routes are stored and shown in their normal form.
    up.deploy(&hello, "d", &["--route", "//d//x/"]);
    assert_eq!(up.describe("d")["active"]["spec"]["routes"][0], "/d/x");
    // A more specific route is another set of requests: allowed.
    up.deploy(&guest("plain_wasi"), "me", &["--route", "/users/me"]);
    assert!(up.get("/users/me").body.starts_with("plain wasi component saw /users/me"));
    assert_eq!(up.get("/users/you").body, "Hello, world!\n");
}

#[test]
fn the_admin_api_and_its_token_never_reach_a_function() {
    let (_dir, up) = start();
    let plain = guest("plain_wasi");
    up.deploy(&plain, "catchall", &["--route", "/*"]);
    let auth = format!("Authorization: Bearer {}", up.token);
    // Every spelling of an admin path is the admin API, never the function.
    for path in ["//api/v1/functions", "/api%2Fv1/functions", "/./api/v1/functions", "/x/../api/v1/functions"]
    {
        let (status, body) = raw(&up.url, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains(r#""name": "catchall""#), "{path} went to the function: {body}");
        let (status, _) = raw(&up.url, &format!("GET {path} HTTP/1.1\r\nHost: t"));
        assert_eq!(status, 401, "{path} without the token");
    }
    // The function sees the path the gateway routed, normalised.
    let (_, body) = raw(&up.url, "GET //a/./b/../c?q=1 HTTP/1.1\r\nHost: t");
    assert_eq!(body, "plain wasi component saw /a/c?q=1\n");
    // The admin token is stripped before a function sees the request;
    // other credentials are the function's own and pass.
    let (_, body) = raw(&up.url, &format!("GET /x HTTP/1.1\r\nHost: t\r\n{auth}"));
    assert_eq!(body, "plain wasi component saw /x\n", "the admin token reached the function");
    let (_, body) = raw(&up.url, "GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer users-own");
    assert_eq!(body, "plain wasi component saw /x\nauthorization: Bearer users-own\n");
    // Routes under the admin API are refused at deploy.
    for r in ["/api/v1/functions", "/api/*", "/api/:v/x"] {
        let err = up.tern_err(&["deploy", plain.to_str().unwrap(), "--name", "sneaky", "--route", r]);
        assert!(err.contains("admin API"), "{r}: {err}");
    }
}

#[test]
fn the_admin_token_is_kept_from_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A fresh data dir is the owner's alone.
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    let up = TernUp::start(&fresh);
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("admin-token")), 0o600);
    drop(up);
    // A token file someone loosened is tightened; its token is kept.
    let loose = dir.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    std::fs::write(loose.join("admin-token"), "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(loose.join("admin-token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let up = TernUp::start(&loose);
    assert_eq!(mode(&loose.join("admin-token")), 0o600);
    assert_eq!(up.token, "0123456789abcdef");
    drop(up);
    // A token "file" that is a link is refused: tern up says why and stops.
    let linked = dir.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", linked.join("admin-token")).unwrap();
    let out = std::process::Command::new(tern_tests::tern_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&linked)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_function_that_floods_its_log_answers_and_costs_the_platform_little() {
    let (_dir, up) = start();
    up.deploy(&guest("hostile"), "flood", &["--route", "/flood/*"]);
    let before = up.peak_rss();
    let started = std::time::Instant::now();
    // 256 KiB of empty lines on stdout and on stderr, 200 times, 64 at once.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 200 {
                    let r = client.get(format!("{}/flood/flood?kb=256", up.url)).send();
                    let status = r.map(|r| (r.status().as_u16(), r.text().unwrap_or_default()));
                    statuses.lock().unwrap().push(status.unwrap_or((0, String::new())));
                }
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    assert_eq!(statuses.len(), 200);
    let failed: Vec<_> = statuses.iter().filter(|(s, b)| *s != 200 || b != "flooded\n").collect();
    assert!(failed.is_empty(), "{} of 200 failed, e.g. {:?}", failed.len(), failed.first());
    let peak = up.peak_rss();
    eprintln!(
        "200 floods in {:?}; peak RSS {} MiB (before {} MiB)",
        started.elapsed(),
        peak >> 20,
        before >> 20
    );
    assert!(peak < 300 << 20, "peak RSS {} MiB (was {} MiB before the flood)", peak >> 20, before >> 20);
    // The log says what was dropped, in a line, and stays small.
    let logs = up.tern_ok(&["logs", "flood", "--tail", "2000"]);
    assert!(logs.contains("output truncated"), "{}", &logs[logs.len().saturating_sub(500)..]);
    assert!(logs.len() < 1 << 20, "the kept log is {} bytes", logs.len());
}

#[test]
fn memory_is_limited_per_function_not_per_linear_memory() {
    let (_dir, up) = start();
    let wasm = tern_tests::wat_component("three-memories");
    let file = wasm.to_str().unwrap();
    // Three memories of 100 MiB each: more than 128 MiB together.
    up.deploy(&wasm, "three", &["--memory", "128"]);
    let out = up.tern(&["invoke", "three", "--data", "x"]);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "300 MiB in three memories under --memory 128: {answer}");
    assert!(answer.contains("exceeded its memory limit of 128 MiB"), "{answer}");
    // With room for all three, the same component runs: the limit is the
    // only thing that stopped it.
    up.tern_ok(&["deploy", file, "--name", "three", "--memory", "400"]);
    let answer = up.tern_ok(&["invoke", "three", "--data", "x"]);
    assert!(answer.contains(r#""error": null"#), "{answer}");
}

#[test]
fn stores_stay_bounded_old_versions_and_dead_letters_go() {
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_with(&dir.path().join("data"), &["--keep-versions", "2"]);
    // Versions: the newest two stay (the active one always does).
    let hello = guest("hello");
    for greeting in ["A", "B", "C", "D"] {
        up.deploy(&hello, "hello", &["--route", "/hello", "--env", &format!("GREETING={greeting}")]);
    }
    let numbers = |d: serde_json::Value| -> Vec<u64> {
        d["versions"].as_array().unwrap().iter().map(|v| v["number"].as_u64().unwrap()).collect()
    };
    assert_eq!(numbers(up.describe("hello")), vec![3, 4]);
    assert_eq!(up.get("/hello").body, "D, world!\n");

    // Dead letters go with their function: a new one of the same name
    // starts with none.
    let plain = guest("plain_event");
    up.deploy(&plain, "jobs", &["--on-event", "jobs.>", "--max-attempts", "1"]);
    tern_tests::publish(&up.url, &up.token, "jobs.x.fail", "bad").unwrap();
    let count = || up.describe("jobs")["dead_letters"].as_u64().unwrap();
    assert!(tern_tests::eventually(Duration::from_secs(10), || count() == 1));
    up.tern_ok(&["delete", "jobs"]);
    up.deploy(&plain, "jobs", &["--on-event", "jobs.>"]);
    assert_eq!(count(), 0);
    assert!(up.tern_ok(&["dlq", "list", "jobs"]).contains("no dead letters"));
}

#[test]
fn a_panic_in_any_loop_costs_one_unit_of_work_not_the_loop() {
    // Debug builds panic once in each named place (tern-task's guard).
    let loops = [
        "observer",
        "reconcile",
        "cron",
        "heartbeat",
        "serving-table",
        "scheduler-op",
        "worker-control",
        "activator-wake",
    ];
    let dir = tempfile::tempdir().unwrap();
    let up = TernUp::start_env(
        &dir.path().join("data"),
        &["--stable-window", "4s", "--panic-window", "1s"],
        &[("TERN_TEST_PANIC", &loops.join(","))],
    );
    // The first load fails on the worker's panic; placement tries again.
    let _ = up.tern(&[
        "deploy",
        guest("hello").to_str().unwrap(),
        "--name",
        "hello",
        "--route",
        "/hello",
        "--idle",
        "1s",
    ]);
    assert_eq!(up.wait_for("/hello", 200, Duration::from_secs(10)).status, 200);
    // Scaled to zero, woken by a request: the first wake panics, and the
    // next request wakes it (the function is not stuck at 503).
    assert!(tern_tests::eventually(Duration::from_secs(20), || up.describe("hello")["replicas"] == 0));
    assert!(tern_tests::eventually(Duration::from_secs(10), || up.get("/hello").status == 200));
    // Cron goes on after its panic.
    up.deploy(&guest("plain_event"), "tick", &["--schedule", "* * * * * *"]);
    let seen = tern_tests::Deliveries::follow(&up.url, &up.token, "tick");
    assert!(seen.wait(Duration::from_secs(8), |s| s.len() >= 2).len() >= 2);
    let log = up.log_text();
    for name in loops {
        assert!(
            log.contains(&format!("TERN_TEST_PANIC asked {name} to panic once")),
            "{name} never panicked"
        );
    }
    assert!(log.matches("the loop goes on").count() >= loops.len(), "{log}");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as
/// `NAME.pem` and `NAME.key`; the certificate is also its own CA.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn https_client(ca: &std::path::Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn https_serves_functions_and_the_admin_api_and_takes_a_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "first");
    // Where the served files live, so a renewal can replace them.
    let (live_cert, live_key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let up = TernUp::start_with(
        &dir.path().join("data"),
        &["--tls-cert", live_cert.to_str().unwrap(), "--tls-key", live_key.to_str().unwrap()],
    );
    assert!(up.url.starts_with("https://"), "{}", up.url);
    let tern = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(tern_tests::tern_bin());
        c.args(args).env("TERN_URL", &up.url).env("TERN_TOKEN", &up.token);
        if let Some(ca) = ca {
            c.env("TERN_CA", ca);
        }
        c.output().unwrap()
    };
    // The CLI over HTTPS, trusting the certificate with TERN_CA (--ca).
    let out = tern(
        &["deploy", guest("hello").to_str().unwrap(), "--name", "hello", "--route", "/hello"],
        Some(&cert),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tern(&["list"], None);
    assert!(!out.status.success(), "a certificate nobody trusts is refused");
    assert!(String::from_utf8_lossy(&out.stderr).to_lowercase().contains("certificate"));
    // Functions over HTTPS.
    let client = https_client(&cert);
    let r = client.get(format!("{}/hello", up.url)).send().unwrap();
    assert_eq!((r.status().as_u16(), r.text().unwrap().as_str()), (200, "Hello, world!\n"));
    // Plain HTTP on the HTTPS port is answered, plainly, with why.
    let http_url = up.url.replacen("https://", "http://", 1);
    let (status, body) = raw(&http_url, "GET /hello HTTP/1.1\r\nHost: t");
    assert_eq!(status, 400);
    assert!(body.contains("speaks HTTPS"), "{body}");

    // A renewal: new files, then SIGHUP. New connections get the new
    // certificate; the connection already open goes on.
    let (new_cert, new_key) = certificate(dir.path(), "second");
    std::fs::copy(&new_key, &live_key).unwrap();
    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::process::Command::new("kill").args(["-HUP", &up.pid().to_string()]).status().unwrap();
    let renewed = https_client(&new_cert);
    assert!(
        tern_tests::eventually(Duration::from_secs(5), || renewed
            .get(format!("{}/hello", up.url))
            .send()
            .is_ok_and(|r| r.status() == 200)),
        "the new certificate is served"
    );
    let r = client.get(format!("{}/hello", up.url)).send().unwrap();
    assert_eq!(r.status(), 200, "the open connection was not dropped");
    assert!(
        https_client(&cert).get(format!("{}/hello", up.url)).send().is_err(),
        "new connections get the new one"
    );
}

/// A small tmpfs, unmounted when dropped (after whatever used it).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_reads_go_on() {
    let disk = Tmpfs::mount("160m");
    let data = disk.0.path().join("data");
    let up = TernUp::start(&data);
    up.deploy(&guest("hello"), "hello", &["--route", "/hello"]);
    up.deploy(&guest("plain_event"), "ev", &["--on-event", "e.>"]);
    // Fill the disk until less than the stores' reserve is left.
    let filler = disk.0.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while tern_events::disk::free_bytes(disk.0.path()).unwrap() > 32 << 20 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    // Writes are refused, saying why, and nothing changes.
    let err =
        up.tern_err(&["deploy", guest("json_api").to_str().unwrap(), "--name", "api", "--route", "/api/x"]);
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!up.tern_ok(&["list"]).contains("api"), "a refused deploy is not visible");
    let refused = tern_tests::publish(&up.url, &up.token, "e.x", "data").unwrap_err();
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.contains("not stored"), "{refused:?}");
    assert_eq!(up.describe("ev")["triggers"][0]["waiting"], 0, "nothing half-published");
    // Reads and requests go on.
    assert_eq!(up.get("/hello").body, "Hello, world!\n");
    assert_eq!(up.describe("hello")["active_version"], 1);
    // With room again, writes work again.
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    // The room comes back once the file's pages are released, which a
    // loaded machine may take a moment to do.
    let room = || tern_events::disk::free_bytes(disk.0.path()).unwrap();
    assert!(
        tern_tests::eventually(Duration::from_secs(10), || room() > 96 << 20),
        "the disk has {} bytes free after the filler was removed",
        room()
    );
    up.deploy(&guest("json_api"), "api", &["--route", "/api/greet/:name"]);
    assert!(tern_tests::publish(&up.url, &up.token, "e.x", "data").is_ok());
}
