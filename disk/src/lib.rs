//! What Tern's sled stores (event log, registry, key-value buckets) share
//! about the disk under them: [`ensure_room`] refuses a write up front while
//! the disk is nearly full, and [`GroupFlush`] makes "durable when the call
//! returns" cost one fsync per group of concurrent writers, not one each.

mod flush;
mod room;

pub use flush::{FlushError, GroupFlush};
pub use room::{DiskFull, RESERVE_BYTES, ensure_room, free_bytes};
