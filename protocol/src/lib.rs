//! Wire types and subject names shared by every Tern role.
//!
//! Nothing here does I/O beyond reading the clock and the OS's random
//! source. Every subject a role publishes or subscribes to is built by a
//! function in [`subject`], so the wire layout lives in one place and
//! carries its version (`tern.v1.…`).

pub mod clock;
pub mod cron;
pub mod frame;
pub mod host;
pub mod id;
mod messages;
pub mod nats_subject;
pub mod outbound;
mod receipt;
pub mod route;
mod secrets;
mod spec;
mod spec_query;
mod status;
pub mod subject;
pub mod trace;

pub use frame::{Frame, FrameError, decode_reply, encode_reply};
pub use messages::*;
pub use receipt::*;
pub use secrets::*;
pub use spec::*;
pub use status::*;
