//! One way for a test to talk to a running Tern, whichever harness started
//! it: the real `tern` CLI, or plain HTTP on the gateway.

use crate::build::tern_bin;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A gateway's address and admin token.
#[derive(Debug, Clone)]
pub struct Client {
    pub url: String,
    pub token: String,
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

impl Client {
    /// Runs the real CLI against this gateway.
    pub fn tern(&self, args: &[&str]) -> Output {
        Command::new(tern_bin())
            .args(args)
            .env("TERN_URL", &self.url)
            .env("TERN_TOKEN", &self.token)
            .output()
            .expect("run tern")
    }

    /// Runs the CLI with `input` on its stdin.
    pub fn tern_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(tern_bin())
            .args(args)
            .env("TERN_URL", &self.url)
            .env("TERN_TOKEN", &self.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tern");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().expect("run tern")
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

    /// `tern deploy FILE --name NAME EXTRA…`; returns its stdout.
    pub fn deploy(&self, file: &Path, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["deploy", file.to_str().unwrap(), "--name", name];
        args.extend_from_slice(extra);
        self.tern_ok(&args)
    }

    /// `tern describe NAME --json`.
    pub fn describe(&self, function: &str) -> serde_json::Value {
        serde_json::from_str(&self.tern_ok(&["describe", function, "--json"])).unwrap()
    }

    /// `tern status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.tern_ok(&["status", "--json"])).unwrap()
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, None)
    }

    /// A GET that may fail to connect (a gateway restarting, NATS down).
    pub fn try_get(&self, path: &str) -> Result<Resp, String> {
        self.try_request(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.request(reqwest::Method::POST, path, Some(body.into()))
    }

    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> Resp {
        self.try_request(method, path, body).unwrap_or_else(|e| panic!("request {path}: {e}"))
    }

    /// A request that may fail to connect (the platform being killed).
    pub fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut req = client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Ok(Resp { status, body: resp.text().map_err(|e| e.to_string())?, headers })
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
}
