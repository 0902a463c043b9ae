//! Wire types and subject names shared by every Tern role.
//!
//! Nothing here does I/O. Every subject a role publishes or subscribes to is
//! built by a function in [`subject`], so the wire layout lives in one place
//! and carries its version (`tern.v1.…`).

pub mod cron;
pub mod frame;
pub mod nats_subject;
pub mod route;
pub mod subject;
mod types;

pub use frame::{Frame, FrameError};
pub use types::*;
