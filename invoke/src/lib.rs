//! Calling a function by name: the one invoke path every caller shares.
//! The gateway's triggers (HTTP routes, events, cron, the admin API) and a
//! worker's calls between functions (`http://NAME.tern.internal`) both send
//! an invoke frame through [`Invoker::call`]; a function with no ready
//! replica is woken by the [`Activator`] while the call waits.

pub mod activator;
pub mod client;
pub mod gather;
pub mod headers;
pub mod invoker;
pub mod mailbox;
pub mod outlet;
pub mod scheduler_client;
pub mod stream;
pub mod streams;
pub mod upload;

pub use activator::{ActivateError, Activator};
pub use invoker::{CallError, Invoker};
pub use scheduler_client::SchedulerClient;
pub use streams::Streams;
