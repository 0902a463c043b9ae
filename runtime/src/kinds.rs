//! The list of kinds of guest (see [`crate::kind`]): a new kind is one line
//! here.

use crate::kind::Kind;
use tern_protocol::{FunctionSpec, World};

/// Every kind a worker runs; the first whose export a component has is
/// its kind.
pub(crate) static KINDS: &[&dyn Kind] = &[&crate::http::HttpKind, &crate::event::EventKind];

/// The kind recorded as `world`.
pub(crate) fn of_world(world: World) -> &'static dyn Kind {
    KINDS.iter().copied().find(|k| k.world() == world).expect("every World has its Kind in KINDS")
}

/// Whether a spec asks only for what `world` can do.
pub fn check_spec(world: World, spec: &FunctionSpec) -> Result<(), String> {
    of_world(world).check_spec(spec)
}
