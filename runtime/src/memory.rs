//! The node's memory budget (`--memory-budget`), charged by what is there:
//! a loaded function costs what loading it took (its compiled code, shared
//! by every function of the same component, and its own small part), and a
//! running instance costs its `--memory`, held from before the instance is
//! made until it is gone. So the budget bounds how many instances run at
//! once, not how many functions are loaded; an instance that finds no room
//! waits for one to end, within its timeout.
//!
//! Linear memory actually used by live instances is counted beside what
//! they hold (for `tern status` and metrics); the hold is what admits, so
//! an instance never runs out of node memory half-way through.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;
use tokio::time::Instant;

pub struct NodeMemory {
    budget: u64,
    charged: Mutex<Charged>,
    /// Linear memory and tables of live instances.
    in_use: AtomicU64,
    freed: Notify,
    /// Instances waiting in `hold` for room: while any are, instances kept
    /// for reuse are let go ([`crate::reuse`]).
    waiting: AtomicUsize,
    /// Instances kept for reuse on this node, of [`MAX_KEPT`].
    kept: AtomicUsize,
}

/// Instances kept idle for reuse on one node, all functions together:
/// each holds one of the engine's instance slots, so they never take more
/// than a quarter of them.
pub(crate) const MAX_KEPT: usize = 250;

#[derive(Default, Clone, Copy)]
struct Charged {
    /// Loaded functions.
    footprint: u64,
    /// Instances alive now, each its `--memory`.
    held: u64,
}

impl NodeMemory {
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(NodeMemory {
            budget,
            charged: Mutex::default(),
            in_use: AtomicU64::new(0),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
        })
    }

    /// What the loaded functions cost now (the worker sums it on each load
    /// and unload).
    pub(crate) fn set_footprint(&self, bytes: u64) {
        self.charged.lock().footprint = bytes;
        self.freed.notify_waiters();
    }

    /// Holds `bytes` for one instance, waiting until `until` for room. One
    /// instance is always let run, however full the node is with loaded
    /// functions, so a node never stops serving. `None`: no room in time.
    pub(crate) async fn hold(self: &Arc<Self>, bytes: u64, until: Instant) -> Option<Held> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut c = self.charged.lock();
                if c.held == 0 || c.footprint + c.held + bytes <= self.budget {
                    c.held += bytes;
                    return Some(Held { node: self.clone(), bytes, in_use: 0 });
                }
            }
            // Counted until this wait ends, however it ends (a caller that
            // goes away drops it mid-wait).
            let _waiting = Waiting::new(&self.waiting);
            tokio::time::timeout_at(until, freed).await.ok()?;
        }
    }

    /// Whether an instance is waiting for room now.
    pub(crate) fn pressed(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Counts one more instance kept for reuse, if there is a place for it.
    pub(crate) fn keep_one(&self) -> bool {
        self.kept
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| (k < MAX_KEPT).then_some(k + 1))
            .is_ok()
    }

    /// A kept instance was taken back into use or dropped.
    pub(crate) fn unkeep_one(&self) {
        self.kept.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> tern_protocol::NodeMemory {
        let c = *self.charged.lock();
        tern_protocol::NodeMemory {
            budget_bytes: self.budget,
            footprint_bytes: c.footprint,
            held_bytes: c.held,
            in_use_bytes: self.in_use.load(Ordering::Relaxed),
            rss_bytes: tern_metrics::rss_bytes(),
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance's share of the node's memory; given back when dropped
/// (with the instance's store).
pub(crate) struct Held {
    node: Arc<NodeMemory>,
    bytes: u64,
    in_use: u64,
}

impl Held {
    /// The instance's memory grew by `bytes`.
    pub(crate) fn grew(&mut self, bytes: u64) {
        self.in_use += bytes;
        self.node.in_use.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.node.in_use.fetch_sub(self.in_use, Ordering::Relaxed);
        self.node.charged.lock().held -= self.bytes;
        self.node.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn instances_wait_for_room_and_one_always_runs() {
        let node = NodeMemory::new(300);
        node.set_footprint(100);
        let soon = || Instant::now() + Duration::from_millis(50);
        let a = node.hold(100, soon()).await.expect("fits");
        let b = node.hold(100, soon()).await.expect("fits exactly");
        assert!(node.hold(100, soon()).await.is_none(), "a third does not fit in time");
        // One ending lets a waiting one in.
        let waiting = tokio::spawn({
            let node = node.clone();
            async move { node.hold(100, Instant::now() + Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(waiting.await.unwrap(), "room made by an ending instance is taken");
        drop(b);
        // A node full of loaded functions still runs one instance at a time.
        node.set_footprint(1000);
        let mut only = node.hold(100, soon()).await.expect("one always runs");
        assert!(node.hold(100, soon()).await.is_none());
        only.grew(64);
        assert_eq!(node.report().in_use_bytes, 64);
        drop(only);
        let r = node.report();
        assert_eq!((r.in_use_bytes, r.held_bytes, r.footprint_bytes), (0, 0, 1000));
    }
}
