//! Tern as real processes: `tern up`, a real `nats-server`, and clusters
//! of separate scheduler, worker and gateway processes. Each is killed
//! (-9) when dropped, and prints its log's tail if the test failed.

use crate::build::tern_bin;
use crate::client::Client;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `tern up`, killed when dropped. Its log is printed if the test
/// fails while it runs.
pub struct TernUp {
    child: Child,
    client: Client,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl std::ops::Deref for TernUp {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl TernUp {
    /// Starts `tern up` on a free port with `data_dir`, and waits until it
    /// serves.
    pub fn start(data_dir: &Path) -> TernUp {
        Self::start_with(data_dir, &[])
    }

    /// In a temporary data dir, removed with the returned guard.
    pub fn start_temp() -> (tempfile::TempDir, TernUp) {
        let dir = tempfile::tempdir().unwrap();
        let up = TernUp::start(&dir.path().join("data"));
        (dir, up)
    }

    /// Like [`TernUp::start`], with more arguments for `tern up`.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> TernUp {
        Self::start_env(data_dir, extra, &[])
    }

    /// Like [`TernUp::start_with`], with environment variables.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TernUp {
        // `tern up` makes the data dir itself (0700), as for a user.
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
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
            .envs(env.iter().copied())
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
        TernUp { child, client: Client { url, token }, data_dir: data_dir.to_path_buf(), log }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as a service manager stops it; returns how it exited, once
    /// it did within `within` (`None`: still running then).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process's peak resident memory so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
    max_payload: String,
    /// With the shipped users and permissions (deploy/nats-users.conf).
    users: bool,
    /// In a NATS cluster: its name, this server's route port, and the route
    /// ports of all its servers.
    cluster: Option<(String, u16, Vec<u16>)>,
}

/// The password the harness gives each user of deploy/nats-users.conf.
pub fn nats_password(user: &str) -> String {
    format!("{user}-test-password")
}

impl NatsServer {
    pub fn start(dir: &Path) -> NatsServer {
        Self::start_with(dir, "16MB")
    }

    /// With `max_payload` as given (`1MB` is nats-server's default).
    pub fn start_with(dir: &Path, max_payload: &str) -> NatsServer {
        let port = free_port();
        let mut s = NatsServer {
            child: None,
            port,
            dir: dir.to_path_buf(),
            max_payload: max_payload.to_string(),
            users: false,
            cluster: None,
        };
        s.spawn();
        s
    }

    /// `n` servers routed into one NATS cluster on loopback, JetStream on
    /// each (so streams may have `n` replicas), each with its own store
    /// under `dir`.
    pub fn start_cluster(dir: &Path, n: usize) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<NatsServer> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| NatsServer {
                child: None,
                port: free_port(),
                dir: dir.join(format!("n{i}")),
                max_payload: "16MB".into(),
                users: false,
                cluster: Some(("tern-test".into(), *route, routes.clone())),
            })
            .collect();
        servers.iter_mut().for_each(NatsServer::spawn);
        servers
    }

    /// Every server's URL, comma-separated, as a role is given them.
    pub fn urls(servers: &[NatsServer]) -> String {
        servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// With the users and permissions Tern ships (deploy/nats-users.conf),
    /// each user's password from [`nats_password`].
    pub fn start_with_users(dir: &Path) -> NatsServer {
        let port = free_port();
        let mut s = NatsServer {
            child: None,
            port,
            dir: dir.to_path_buf(),
            max_payload: "16MB".into(),
            users: true,
            cluster: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL as `user` (with the shipped users).
    pub fn url_as(&self, user: &str) -> String {
        format!("nats://{user}:{}@127.0.0.1:{}", nats_password(user), self.port)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let conf = self.dir.join("nats.conf");
        let mut text = format!(
            "listen: 127.0.0.1:{}\nmax_payload: {}\njetstream {{ store_dir: {:?} }}\n",
            self.port,
            self.max_payload,
            self.dir.join("js")
        );
        if let Some((name, route, all)) = &self.cluster {
            let routes: Vec<String> = all.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
            text.push_str(&format!(
                "server_name: n{route}\ncluster {{ name: {name}, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        if self.users {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats-users.conf");
            std::fs::copy(&shipped, self.dir.join("nats-users.conf")).unwrap();
            text.push_str("include ./nats-users.conf\n");
        }
        std::fs::write(&conf, text).unwrap();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats.log")).unwrap();
        let mut command = Command::new("nats-server");
        for user in ["scheduler", "worker", "gateway", "publisher"] {
            command.env(format!("TERN_{}_PASSWORD", user.to_uppercase()), nats_password(user));
        }
        let child = command
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
            // TERN_TEST_RUST_LOG: more of the roles' logs, to debug a test.
            .env(
                "RUST_LOG",
                std::env::var("TERN_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn,async_nats=warn".into()),
            )
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

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the role is running").id()
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

/// How to start a [`Cluster`].
pub struct ClusterOptions<'a> {
    pub workers: usize,
    pub scheduler_args: &'a [&'a str],
    pub worker_args: &'a [&'a str],
    /// nats-server's `max_payload` (Tern's bodies need 16MB for 8 MiB).
    pub nats_max_payload: &'a str,
    /// Run nats-server with the shipped users; each role connects as its own.
    pub nats_users: bool,
}

impl Default for ClusterOptions<'_> {
    fn default() -> Self {
        ClusterOptions {
            workers: 1,
            scheduler_args: &[],
            worker_args: &[],
            nats_max_payload: "16MB",
            nats_users: false,
        }
    }
}

/// A cluster of separate processes on a real nats-server: one scheduler,
/// `workers` workers (labelled zone=w0, zone=w1, …) and one gateway.
pub struct Cluster {
    client: Client,
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
        Self::start_opts(ClusterOptions { workers, scheduler_args, ..Default::default() })
    }

    pub fn start_opts(o: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nats = if o.nats_users {
            NatsServer::start_with_users(&dir.path().join("nats"))
        } else {
            NatsServer::start_with(&dir.path().join("nats"), o.nats_max_payload)
        };
        let url_for = |role: &str| if o.nats_users { nats.url_as(role) } else { nats.url() };
        let scheduler =
            Role::start("scheduler", &url_for("scheduler"), &dir.path().join("scheduler"), o.scheduler_args);
        let workers: Vec<Role> = (0..o.workers)
            .map(|i| {
                let label = format!("zone=w{i}");
                let mut args = vec!["--label", &label, "--memory-budget", "2048"];
                args.extend_from_slice(o.worker_args);
                Role::start("worker", &url_for("worker"), &dir.path().join(format!("worker{i}")), &args)
            })
            .collect();
        let gateway = Role::start(
            "gateway",
            &url_for("gateway"),
            &dir.path().join("gateway"),
            &["--listen", "127.0.0.1:0"],
        );
        let url = gateway.url.clone().expect("a gateway says where it listens");
        let token = std::fs::read_to_string(gateway.data_dir.join("admin-token")).unwrap().trim().to_string();
        let c = Cluster { client: Client { url, token }, gateway, workers, scheduler, nats, dir };
        c.wait_for_nodes(c.workers.len());
        c
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
            let out = self.client.tern(&["status", "--json"]);
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

    pub fn node_id(&self, worker: usize) -> String {
        std::fs::read_to_string(self.workers[worker].data_dir.join("node-id")).unwrap().trim().to_string()
    }
}

impl std::ops::Deref for Cluster {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}
