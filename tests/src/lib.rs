//! Harness for the end-to-end tests: real `tern` processes, real components,
//! real HTTP.
//!
//! The harness builds the `tern` binary and the guest components (for
//! wasm32-wasip2) before the first test uses them.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's target dir, found from this test binary's own path
/// (`target/debug/deps/<test>`), so the tests use the binaries built with them.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir above target/debug/deps").to_path_buf()
}

/// Guest crates the tests deploy.
const GUESTS: &[&str] = &["hello", "json-api", "audit", "plain-wasi", "hostile", "plain-event"];

/// Builds the `tern` binary and the guests once per test binary, so the
/// tests never run against stale builds. (`cargo test` builds neither: the
/// binary is not a dependency, and the guests are for another target.)
fn build_once() {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let run = |args: &[&str]| {
            let status = Command::new(&cargo).args(args).status().expect("run cargo");
            assert!(status.success(), "cargo {args:?} failed");
        };
        run(&["build", "-p", "tern-cli"]);
        let mut args = vec!["build", "--target", "wasm32-wasip2", "--profile", "guest"];
        for g in GUESTS {
            args.extend(["-p", g]);
        }
        run(&args);
    });
}

/// The `tern` binary under test.
pub fn tern_bin() -> PathBuf {
    build_once();
    target_dir().join("debug/tern")
}

/// A guest component built for wasm32-wasip2 (`hello`, `json_api`, `audit`, `plain_wasi`, `hostile`, `plain_event`).
pub fn guest(name: &str) -> PathBuf {
    build_once();
    target_dir().join(format!("wasm32-wasip2/guest/{name}.wasm"))
}

/// A running `tern up`, killed when dropped. Its log is printed if the test
/// fails while it runs.
pub struct TernUp {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    pub token: String,
}

impl TernUp {
    /// Starts `tern up` on a free port with `data_dir`, and waits until it
    /// serves.
    pub fn start(data_dir: &Path) -> TernUp {
        Self::start_with(data_dir, &[])
    }

    /// Like [`TernUp::start`], with more arguments for `tern up`.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> TernUp {
        std::fs::create_dir_all(data_dir).unwrap();
        // One log per start, so a restarted instance's log is its own.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = data_dir.with_extension(format!("{n}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(tern_bin())
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info,cranelift=warn,wasmtime=warn")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn tern up");
        // The first stdout line says where it listens.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = match lines.next() {
            Some(Ok(l)) => l,
            other => {
                let _ = child.kill();
                panic!(
                    "tern up printed no address ({other:?}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let url = line
            .strip_prefix("tern is up: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .expect("admin token written")
            .trim()
            .to_string();
        TernUp { child, url, data_dir: data_dir.to_path_buf(), log, token }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs the real CLI against this instance.
    pub fn tern(&self, args: &[&str]) -> Output {
        Command::new(tern_bin())
            .args(args)
            .env("TERN_URL", &self.url)
            .env("TERN_TOKEN", &self.token)
            .output()
            .expect("run tern")
    }

    /// Runs the CLI and insists that it succeeds; returns its stdout.
    pub fn tern_ok(&self, args: &[&str]) -> String {
        let out = self.tern(args);
        assert!(
            out.status.success(),
            "tern {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI and insists that it fails; returns its stderr.
    pub fn tern_err(&self, args: &[&str]) -> String {
        let out = self.tern(args);
        assert!(
            !out.status.success(),
            "tern {args:?} should have failed; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn deploy(&self, file: &Path, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["deploy", file.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        self.tern_ok(&args)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.request(reqwest::Method::POST, path, Some(body.into()))
    }

    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> Resp {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut req = client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("request {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Resp { status, body: resp.text().unwrap(), headers }
    }

    /// Polls `path` until it answers `status` or `timeout` passes.
    pub fn wait_for(&self, path: &str, status: u16, timeout: Duration) -> Resp {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(path);
            if r.status == status || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `tern describe NAME --json`.
    pub fn describe(&self, function: &str) -> serde_json::Value {
        serde_json::from_str(&self.tern_ok(&["describe", function, "--json"])).unwrap()
    }
}

impl Drop for TernUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut log = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                let _ = f.read_to_string(&mut log);
            }
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- tern up log (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real `nats-server` (the Debian package) on a free port, with JetStream
/// and a payload limit that fits Tern's 8 MiB bodies. Killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl NatsServer {
    pub fn start(dir: &Path) -> NatsServer {
        let port = free_port();
        let mut s = NatsServer { child: None, port, dir: dir.to_path_buf() };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let conf = self.dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\nmax_payload: 16MB\njetstream {{ store_dir: {:?} }}\n",
                self.port,
                self.dir.join("js")
            ),
        )
        .unwrap();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats.log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server is not installed: `apt-get install nats-server` (scripts/test does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start; see {}",
                self.dir.join("nats.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server hard and starts it again on the same port and store.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `tern` role (`scheduler`, `worker`, `gateway`) as a real process,
/// restartable, killed (-9) when dropped.
pub struct Role {
    args: Vec<String>,
    child: Option<Child>,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// For a gateway: where it serves.
    pub url: Option<String>,
}

impl Role {
    pub fn start(role: &str, nats: &str, data_dir: &Path, extra: &[&str]) -> Role {
        let mut args: Vec<String> = vec![role.into(), "--nats".into(), nats.into(), "--data-dir".into()];
        args.push(data_dir.to_str().unwrap().into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = Role {
            args,
            child: None,
            data_dir: data_dir.to_path_buf(),
            log: data_dir.with_extension("log"),
            url: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut child = Command::new(tern_bin())
            .args(&self.args)
            .env("RUST_LOG", "info,cranelift=warn,wasmtime=warn,async_nats=warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn tern role");
        let stdout = child.stdout.take().unwrap();
        if self.args[0] == "gateway" {
            let mut lines = BufReader::new(stdout).lines();
            let line = lines.next().and_then(Result::ok).unwrap_or_else(|| {
                panic!(
                    "gateway printed no address; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            });
            self.url = Some(line.strip_prefix("tern is up: ").expect("address line").to_string());
            std::thread::spawn(move || for _ in lines {});
        } else {
            std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        }
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- tern {} log (last lines) ----", self.args[0]);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A cluster of separate processes on a real nats-server: one scheduler,
/// `workers` workers (labelled zone=w0, zone=w1, …) and one gateway.
pub struct Cluster {
    pub gateway: Role,
    pub workers: Vec<Role>,
    pub scheduler: Role,
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(workers: usize) -> Cluster {
        Self::start_with(workers, &[])
    }

    /// Like [`Cluster::start`], with more arguments for `tern scheduler`.
    pub fn start_with(workers: usize, scheduler_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start(&dir.path().join("nats"));
        let url = nats.url();
        let scheduler = Role::start("scheduler", &url, &dir.path().join("scheduler"), scheduler_args);
        let workers: Vec<Role> = (0..workers)
            .map(|i| {
                let label = format!("zone=w{i}");
                Role::start(
                    "worker",
                    &url,
                    &dir.path().join(format!("worker{i}")),
                    &["--label", &label, "--memory-budget", "2048"],
                )
            })
            .collect();
        let gateway = Role::start("gateway", &url, &dir.path().join("gateway"), &["--listen", "127.0.0.1:0"]);
        let c = Cluster { gateway, workers, scheduler, nats, dir };
        c.wait_for_nodes(c.workers.len());
        c
    }

    pub fn url(&self) -> String {
        self.gateway.url.clone().unwrap()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.gateway.data_dir.join("admin-token")).unwrap().trim().to_string()
    }

    pub fn tern(&self, args: &[&str]) -> Output {
        Command::new(tern_bin())
            .args(args)
            .env("TERN_URL", self.url())
            .env("TERN_TOKEN", self.token())
            .output()
            .unwrap()
    }

    pub fn tern_ok(&self, args: &[&str]) -> String {
        let out = self.tern(args);
        assert!(out.status.success(), "tern {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.tern_ok(&["status", "--json"])).unwrap()
    }

    /// Node ids serving `function`, per `tern status`.
    pub fn replicas(&self, function: &str) -> Vec<String> {
        let s = self.status();
        s["replicas"][function]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Waits until `tern status` shows `n` live nodes.
    pub fn wait_for_nodes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.tern(&["status", "--json"]);
            if out.status.success() {
                let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let alive = s["nodes"].as_array().unwrap().iter().filter(|n| n["alive"] == true).count();
                if alive == n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cluster never showed {n} live nodes");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tern describe NAME --json`.
    pub fn describe(&self, function: &str) -> serde_json::Value {
        serde_json::from_str(&self.tern_ok(&["describe", function, "--json"])).unwrap()
    }

    pub fn node_id(&self, worker: usize) -> String {
        std::fs::read_to_string(self.workers[worker].data_dir.join("node-id")).unwrap().trim().to_string()
    }

    pub fn get(&self, path: &str) -> Result<Resp, String> {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let resp = client.get(format!("{}{path}", self.url())).send().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Ok(Resp { status, body: resp.text().map_err(|e| e.to_string())?, headers })
    }
}

/// Background GET traffic on one path, recording when each request
/// started and how it ended.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, bool)>>>,
}

impl Load {
    pub fn start(url: &str, path: &str, threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (stop, target) = (stop.clone(), format!("{url}{path}"));
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()
                        .unwrap();
                    let mut out = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let started = Instant::now();
                        let ok = client.get(&target).send().map(|r| r.status().is_success()).unwrap_or(false);
                        out.push((started, ok));
                        if !ok {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    out
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops and returns every (start time, succeeded), oldest first.
    pub fn finish(self) -> Vec<(Instant, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all: Vec<(Instant, bool)> =
            self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }
}

/// Polls until `f` holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// `n` GETs of `url` at once (released together); each one's status and
/// body, and how long it took.
pub fn burst(url: &str, n: usize) -> Vec<(u16, String, Duration)> {
    let gate = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (gate, url) = (gate.clone(), url.to_string());
            std::thread::spawn(move || {
                let client =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                gate.wait();
                let started = Instant::now();
                match client.get(&url).send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().unwrap_or_default(), started.elapsed())
                    }
                    Err(e) => (0, e.to_string(), started.elapsed()),
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// One line `delivery id=… subject=… attempt=… data=…` that the
/// plain-event guest prints per delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub id: String,
    pub subject: String,
    pub attempt: u32,
    pub data: String,
    /// When the worker captured the line.
    pub ts_ms: u64,
}

impl Delivered {
    fn parse(line: &str, ts_ms: u64) -> Option<Delivered> {
        let rest = line.strip_prefix("delivery id=")?;
        let (id, rest) = rest.split_once(" subject=")?;
        let (subject, rest) = rest.split_once(" attempt=")?;
        let (attempt, data) = rest.split_once(" data=")?;
        Some(Delivered {
            id: id.into(),
            subject: subject.into(),
            attempt: attempt.parse().ok()?,
            data: data.into(),
            ts_ms,
        })
    }
}

/// Follows a function's log live (`tern logs NAME --follow --json`) and
/// keeps every delivery line: how tests see what a function handled, in
/// any number (the stored log keeps only the latest lines).
pub struct Deliveries {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Delivered>>>,
}

impl Deliveries {
    pub fn follow(url: &str, token: &str, function: &str) -> Deliveries {
        let mut child = Command::new(tern_bin())
            // The backlog too: lines printed before the live subscription
            // started are not missed. A line in both is kept once.
            .args(["logs", function, "--follow", "--json", "--tail", "2000"])
            .env("TERN_URL", url)
            .env("TERN_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tern logs --follow");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let keep = seen.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let text = record["line"].as_str().unwrap_or_default();
                if let Some(d) = Delivered::parse(text, record["ts_ms"].as_u64().unwrap_or(0)) {
                    let mut seen = keep.lock().unwrap();
                    // A real redelivery has its own time (and attempt).
                    if !seen.iter().rev().take(4000).any(|s| s == &d) {
                        seen.push(d);
                    }
                }
            }
        });
        // Give the request a moment to land; the backlog covers the rest.
        std::thread::sleep(Duration::from_millis(300));
        Deliveries { child, seen }
    }

    pub fn all(&self) -> Vec<Delivered> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was seen, or `within` passes;
    /// returns what was seen either way.
    pub fn wait(&self, within: Duration, done: impl Fn(&[Delivered]) -> bool) -> Vec<Delivered> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.all();
            if done(&seen) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes through the admin API (`POST /api/v1/events/SUBJECT`) and
/// returns the stored event's id, or the status and body of a refusal.
pub fn publish(url: &str, token: &str, subject: &str, data: &str) -> Result<String, (u16, String)> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
    });
    let resp = client
        .post(format!("{url}/api/v1/events/{subject}"))
        .bearer_auth(token)
        .body(data.to_string())
        .send()
        .map_err(|e| (0, e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    if status != 202 {
        return Err((status, body));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| (status, e.to_string()))?;
    Ok(v["id"].as_str().unwrap_or_default().to_string())
}
