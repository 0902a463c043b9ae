//! Harness for the end-to-end tests: real components, real HTTP, and
//! either real `tern` processes ([`process`]) or every role in this test's
//! own process ([`in_process`]) for logic that needs no process boundary.
//!
//! The harness builds the `tern` binary and the guest components (for
//! wasm32-wasip2) before the first test uses them.

pub mod browser;
pub mod build;
pub mod client;
pub mod events;
pub mod in_process;
pub mod load;
pub mod memory;
pub mod polyglot;
pub mod process;
pub mod prometheus;
pub mod upstream;

pub use build::{guest, target_dir, tern_bin, wat_component};
pub use client::{Client, Resp};
pub use events::{Delivered, Deliveries, publish};
pub use in_process::InProcess;
pub use load::{Load, burst, burst_with, eventually};
/// The routes the json-api example serves, as `tern deploy` flags.
pub const JSON_API_ROUTES: &[&str] = &[
    "--route",
    "/api/greet/:name",
    "--route",
    "/api/add/:a/:b",
    "--route",
    "/api/echo",
    "--route",
    "/api/info/*",
];

pub use process::{Cluster, ClusterOptions, NatsServer, Role, TernUp, free_port, nats_password};
pub use upstream::{Answer, TestCa, Upstream};
