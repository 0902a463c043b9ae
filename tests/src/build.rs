//! Building what the tests run: the `tern` binary and the guest
//! components, once per test binary, so no test runs a stale build.

use std::path::PathBuf;
use std::process::Command;

/// The workspace's target dir, found from this test binary's own path
/// (`target/debug/deps/<test>`), so the tests use the binaries built with them.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("target dir above target/debug/deps").to_path_buf()
}

/// Guest crates the tests deploy.
const GUESTS: &[&str] = &[
    "hello",
    "json-api",
    "audit",
    "plain-wasi",
    "hostile",
    "scatter",
    "plain-event",
    "kv-wit",
    "kv-lock",
    "shortener",
    "publisher",
    "fetch",
    "checkout",
    "stream",
    "ticker",
];

/// Builds the `tern` binary and the guests once per test binary, so the
/// tests never run against stale builds. (`cargo test` builds neither: the
/// binary is not a dependency, and the guests are for another target.)
pub fn build_once() {
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

/// A hand-written component from `tests/guests/wat/NAME.wat`, assembled
/// into the target dir; for shapes no compiler emits on purpose.
pub fn wat_component(name: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("guests/wat/{name}.wat"));
    let bytes = wat::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = target_dir().join(format!("wat-{name}.wasm"));
    std::fs::write(&out, bytes).unwrap();
    out
}
