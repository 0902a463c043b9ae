//! What a function was granted at deploy beyond WASI: key-value buckets
//! (`wasi:keyvalue@0.2.0-draft` store, atomics and batch, plus Tern's
//! `tern:kv/revisions` for compare-and-swap and time to live), config
//! (`wasi:config@0.2.0-rc.1`: its `--env` values and granted secrets), and
//! publishing events (`tern:events/publisher`). The WIT is the `state`
//! world in `sdk/wit`.
//!
//! Everything here is denied unless granted: `open` of a bucket not in the
//! function's `--kv` list is `access-denied`, and a function with no
//! buckets never reaches the store.

mod config;
mod keyvalue;
mod publish;

use std::collections::BTreeMap;
use std::sync::Arc;
use tern_kv::KvStore;
use wasmtime::component::{HasData, Linker, ResourceTable};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "tern:function/state",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::keyvalue::Bucket,
        },
    });
}

/// What one function version may reach, shared by all its instances.
pub struct Grants {
    /// The node's store.
    pub store: Arc<dyn KvStore>,
    /// Buckets the function may open.
    pub buckets: Vec<String>,
    /// The node's event log.
    pub events: Arc<dyn tern_events::EventLog>,
    /// Subjects the function may publish on.
    pub publish: Vec<tern_protocol::nats_subject::SubjectPattern>,
    /// Largest event data it may publish (what fits one bus message).
    pub max_event_bytes: usize,
}

/// One instance's view of its grants.
pub(crate) struct State {
    pub grants: Arc<Grants>,
    /// `wasi:config` keys: `--env` values and granted secrets, as they were
    /// when the instance was made.
    pub config: Arc<BTreeMap<String, String>>,
    /// Where each `list-keys` cursor handed out continues: the last key of
    /// its page. A cursor is an index here, so it is only good in the
    /// instance that got it.
    cursors: Vec<String>,
    /// Bucket handles this instance holds: each is host memory the guest's
    /// `--memory` does not count, so their number is capped.
    open_buckets: usize,
    /// The invocation's trace: events it publishes are spans of it.
    pub trace: Option<tern_protocol::trace::TraceParent>,
}

impl State {
    pub(crate) fn new(
        grants: Arc<Grants>,
        config: Arc<BTreeMap<String, String>>,
        trace: Option<tern_protocol::trace::TraceParent>,
    ) -> Self {
        State { grants, config, cursors: Vec::new(), open_buckets: 0, trace }
    }

    /// A kept instance's next invocation: config as it is now, its trace,
    /// and no cursors (an earlier request's are not this one's to continue,
    /// and they would count against this one's cap). Open buckets stay
    /// counted: their handles are still in the instance.
    pub(crate) fn begin(
        &mut self,
        config: Arc<BTreeMap<String, String>>,
        trace: Option<tern_protocol::trace::TraceParent>,
    ) {
        self.config = config;
        self.trace = trace;
        self.cursors.clear();
    }
}

/// The host side of the `state` world: an instance's state and its
/// resource table.
pub(crate) struct StateView<'a> {
    pub state: &'a mut State,
    pub table: &'a mut ResourceTable,
}

struct HasState;

impl HasData for HasState {
    type Data<'a> = StateView<'a>;
}

/// Adds every interface of the `state` world to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> StateView<'_>,
) -> wasmtime::Result<()> {
    use bindings::{tern, wasi};
    wasi::keyvalue::store::add_to_linker::<T, HasState>(linker, view)?;
    wasi::keyvalue::atomics::add_to_linker::<T, HasState>(linker, view)?;
    wasi::keyvalue::batch::add_to_linker::<T, HasState>(linker, view)?;
    wasi::config::store::add_to_linker::<T, HasState>(linker, view)?;
    tern::kv::revisions::add_to_linker::<T, HasState>(linker, view)?;
    tern::events::publisher::add_to_linker::<T, HasState>(linker, view)?;
    Ok(())
}
