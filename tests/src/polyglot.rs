//! The examples written in other languages (`examples/python-hello`,
//! `examples/javascript-hello`), built by their own build scripts with
//! their pinned toolchains (componentize-py from PyPI, componentize-js
//! from npm), once per test binary.

use crate::build::target_dir;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The example's component, or why it could not be built here: only when
/// its registry cannot be reached (a test then says so and skips it). A
/// build that fails with the registry reachable is a failure.
pub fn polyglot_example(example: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Result<PathBuf, String>>>> =
        OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    built.entry(example.to_string()).or_insert_with(|| build(example)).clone()
}

fn build(example: &str) -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = target_dir().join("polyglot");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{example}.wasm"));
    let output = Command::new(root.join("examples").join(example).join("build.sh"))
        .arg(&out)
        .env("TERN_EXAMPLE_BUILD", dir.join(example))
        .output()
        .unwrap_or_else(|e| panic!("run examples/{example}/build.sh: {e}"));
    if output.status.success() {
        return Ok(out);
    }
    let log =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let registry = if example.starts_with("python") {
        "https://pypi.org/simple/"
    } else {
        "https://registry.npmjs.org/"
    };
    match reqwest::blocking::Client::new().get(registry).timeout(std::time::Duration::from_secs(10)).send() {
        Err(e) => {
            Err(format!("{registry} cannot be reached ({e}); examples/{example} was not built:\n{log}"))
        }
        Ok(_) => panic!("examples/{example}/build.sh failed with {registry} reachable:\n{log}"),
    }
}
