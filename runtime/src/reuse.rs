//! Instances kept to serve another request (`--instance-reuse N`): what a
//! fresh instance costs a large guest (a Python or JavaScript interpreter
//! set up again, its pages faulted in again) is paid once per N requests.
//!
//! A kept instance is in exactly one place at a time: this pool, or the
//! one invocation that took it, so it never serves two requests at once.
//! It comes back only when its guest returned normally; one that trapped,
//! timed out, hit a limit or was cut off is dropped with its store. After
//! N requests it is dropped too. While kept it still holds its `--memory`
//! of the node's budget; kept instances are let go after [`KEEP_IDLE`]
//! unused, or at once while another instance waits for room.

use crate::host::Host;
use crate::memory::NodeMemory;
use parking_lot::Mutex;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use wasmtime::Store;

/// A kept instance not used for this long is dropped.
pub(crate) const KEEP_IDLE: Duration = Duration::from_secs(60);
/// How often idle instances are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Instances one function keeps idle at most: enough for the requests one
/// node runs at once, no more.
const MAX_KEPT_PER_FUNCTION: usize = 64;

/// One function version's kept instances. `M` is what its world made from
/// the store (the bindings' handle of the instance).
pub(crate) struct Pool<M> {
    /// Requests one instance serves before it is dropped.
    limit: u32,
    node: Arc<NodeMemory>,
    idle: Mutex<Vec<Kept<M>>>,
}

pub(crate) struct Kept<M> {
    pub store: Store<Host>,
    pub made: M,
    /// Requests it has served.
    pub served: u32,
    since: Instant,
}

/// Where an instance goes back to once its guest has returned.
pub(crate) struct GiveBack<M> {
    pool: Arc<Pool<M>>,
    /// Requests it will have served, this one included.
    served: u32,
}

impl<M: Send + 'static> Pool<M> {
    /// A pool for instances serving `limit` requests each; `None` when
    /// every request gets a fresh one (`limit` 0 or 1).
    pub(crate) fn new(limit: u32, node: Arc<NodeMemory>) -> Option<Arc<Self>> {
        if limit <= 1 {
            return None;
        }
        let pool = Arc::new(Pool { limit, node, idle: Mutex::new(Vec::new()) });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(sweep(weak));
        Some(pool)
    }

    /// The most recently used kept instance, if any (its pages are the
    /// likeliest to be warm).
    pub(crate) fn take(&self) -> Option<Kept<M>> {
        let kept = self.idle.lock().pop()?;
        self.node.unkeep_one();
        Some(kept)
    }

    /// What an instance that served `served` requests before this one goes
    /// back with.
    pub(crate) fn give_back(self: &Arc<Self>, served: u32) -> GiveBack<M> {
        GiveBack { pool: self.clone(), served: served + 1 }
    }

    fn put(&self, kept: Kept<M>) {
        if kept.served >= self.limit || self.node.pressed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_KEPT_PER_FUNCTION && self.node.keep_one() {
            idle.push(kept);
        }
    }

    /// Drops instances idle past [`KEEP_IDLE`], or every one while the
    /// node has an instance waiting for memory.
    fn sweep(&self, now: Instant) {
        let all = self.node.pressed();
        let gone: Vec<Kept<M>> = {
            let mut idle = self.idle.lock();
            let (gone, stay) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|k| all || now.duration_since(k.since) >= KEEP_IDLE);
            *idle = stay;
            gone
        };
        for _ in &gone {
            self.node.unkeep_one();
        }
        // Dropped outside the lock: a store's teardown is not free.
        drop(gone);
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

impl<M> Drop for Pool<M> {
    fn drop(&mut self) {
        for _ in self.idle.get_mut().iter() {
            self.node.unkeep_one();
        }
    }
}

impl<M: Send + 'static> GiveBack<M> {
    /// The guest returned normally: the instance may serve again.
    pub(crate) fn keep(self, store: Store<Host>, made: M) {
        self.pool.put(Kept { store, made, served: self.served, since: Instant::now() });
    }
}

async fn sweep<M: Send + 'static>(pool: Weak<Pool<M>>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The function was unloaded: its pool, and this, end.
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Call;
    use crate::limits::Deadline;
    use crate::outbound::{Notes, OutboundHooks};
    use crate::output::CappedOutput;
    use crate::state::Grants;

    fn store(engine: &wasmtime::Engine, node: &Arc<NodeMemory>) -> Store<Host> {
        let held = futures::executor::block_on(node.hold(1, tokio::time::Instant::now())).unwrap();
        let call = Call {
            stdout: CappedOutput::new(16),
            stderr: CappedOutput::new(16),
            hooks: OutboundHooks::new(None, 0, Deadline::new(Instant::now()), Notes::default()),
            config: Arc::default(),
            trace: None,
            deadline: Deadline::new(Instant::now()),
        };
        // Real stores, granted nothing: the pool never reaches them.
        let dir = tempfile::tempdir().unwrap();
        let grants = Arc::new(Grants {
            store: Arc::new(tern_kv::SledKv::open(&dir.path().join("kv"), 1 << 20).unwrap()),
            buckets: vec![],
            events: Arc::new(tern_events::SledLog::open(&dir.path().join("events")).unwrap()),
            publish: vec![],
            max_event_bytes: 0,
        });
        Store::new(engine, Host::new(&[], grants, 1 << 20, held, call))
    }

    #[tokio::test]
    async fn an_instance_serves_at_most_its_limit_then_goes() {
        let engine = wasmtime::Engine::default();
        let node = NodeMemory::new(1 << 30);
        let pool = Pool::<u32>::new(3, node.clone()).unwrap();
        let back = pool.give_back(0);
        back.keep(store(&engine, &node), 7);
        let kept = pool.take().expect("kept after its first request");
        assert_eq!((kept.served, kept.made), (1, 7));
        assert!(pool.take().is_none(), "one instance is in one place at a time");
        pool.give_back(kept.served).keep(kept.store, kept.made);
        let kept = pool.take().unwrap();
        assert_eq!(kept.served, 2);
        pool.give_back(kept.served).keep(kept.store, kept.made);
        assert!(pool.take().is_none(), "after its third request it is dropped");
        assert_eq!(node.report().held_bytes, 0, "and its memory given back");
    }

    #[tokio::test]
    async fn idle_instances_go_after_a_while_and_at_once_under_pressure() {
        let engine = wasmtime::Engine::default();
        let node = NodeMemory::new(2);
        let pool = Pool::<()>::new(100, node.clone()).unwrap();
        pool.give_back(0).keep(store(&engine, &node), ());
        pool.give_back(0).keep(store(&engine, &node), ());
        pool.sweep(Instant::now());
        assert_eq!(pool.idle(), 2, "recently used: kept");
        pool.sweep(Instant::now() + KEEP_IDLE);
        assert_eq!((pool.idle(), node.report().held_bytes), (0, 0));

        // The two kept fill the node: a third instance waits, and they go.
        pool.give_back(0).keep(store(&engine, &node), ());
        pool.give_back(0).keep(store(&engine, &node), ());
        let soon = tokio::time::Instant::now() + Duration::from_secs(5);
        let waiting = tokio::spawn({
            let node = node.clone();
            async move { node.hold(1, soon).await.is_some() }
        });
        // The pool's own sweep lets them go within a second.
        assert!(waiting.await.unwrap(), "room made for the one waiting");
        assert_eq!(pool.idle(), 0);
        assert!(Pool::<()>::new(1, node).is_none(), "a limit of 1 is a fresh instance per request");
    }
}
