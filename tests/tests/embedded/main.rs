//! End-to-end tests of one node: `tern up` (sled, the in-process bus) as a
//! real process, or every role in this test's own process. One test binary,
//! so wasmtime is linked once; each file is a module.

mod embedded;
mod events;
mod hardening;
mod in_process;
mod outbound;
mod polyglot;
mod publish;
mod receipts;
mod resident;
mod reuse;
mod secrets;
mod shutdown;
mod state;
mod streaming;
mod uploads;
