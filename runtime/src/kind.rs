//! The kinds of guest a worker runs. A [`Kind`] says which [`World`] the
//! registry records it as, which export makes a component one, what a spec
//! of it may ask for, and how a version is linked into a [`Handler`] that
//! serves invoke messages. Validation, the scheduler's spec check and the
//! worker's loading all ask `crate::kinds::KINDS`: a new kind is a file
//! implementing `Kind` (beside `http.rs` and `event.rs`) and a line in
//! `KINDS` (with its `World` on the wire).

use crate::host::Host;
use crate::instance::Settings;
use crate::load::LoadCounters;
use crate::meter::Served;
use async_trait::async_trait;
use std::sync::Arc;
use tern_bus::{Bus, Message};
use tern_invoke::Streams;
use tern_protocol::{FunctionSpec, World};
use wasmtime::component::InstancePre;

pub(crate) trait Kind: Sync {
    fn world(&self) -> World;

    /// The interface whose export makes a component this kind.
    fn export(&self) -> &'static str;

    /// What a user calls it: "an HTTP function".
    fn noun(&self) -> &'static str;

    /// What a spec of this kind may not ask for, said so a user can act.
    fn check_spec(&self, spec: &FunctionSpec) -> Result<(), String>;

    /// Type-checks the component's exports against the kind (at deploy,
    /// so a wrong one is refused then, not when it is first placed).
    fn check_exports(&self, pre: InstancePre<Host>) -> Result<(), String>;

    /// A loaded version, ready to serve.
    fn load(
        &self,
        pre: InstancePre<Host>,
        settings: Settings,
        body_limit: usize,
    ) -> Result<Arc<dyn Handler>, String>;
}

/// What serving one message may use of the worker.
pub(crate) struct Context<'a> {
    pub bus: &'a Arc<dyn Bus>,
    pub streams: Option<&'a Streams>,
    /// This worker, for receipts.
    pub node: &'a str,
}

/// A loaded function version of some kind.
#[async_trait]
pub(crate) trait Handler: Send + Sync {
    fn name(&self) -> &str;

    /// Answers one invoke message (a streamed body included); the log
    /// records and receipts out.
    async fn serve(&self, on: Context<'_>, msg: &Message, load: &LoadCounters) -> Served;
}
