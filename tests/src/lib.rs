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
const GUESTS: &[&str] = &["hello", "json-api", "plain-wasi", "hostile"];

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

/// A guest component built for wasm32-wasip2 (`hello`, `json_api`, `plain_wasi`, `hostile`).
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
        std::fs::create_dir_all(data_dir).unwrap();
        // One log per start, so a restarted instance's log is its own.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = data_dir.with_extension(format!("{n}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut child = Command::new(tern_bin())
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
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
