//! One fsync for many writers. A writer makes its change in memory, then
//! waits on [`GroupFlush::flushed`]; one thread runs the flushes, each
//! covering every change made before it started. Under load the writers that
//! arrive during one flush share the next, so durability costs a flush per
//! group, not per write.
//!
//! Not sled's `flush_async`: it waits on sled's small I/O pool, and enough
//! concurrent waiters fill that pool and deadlock it. The blocking flush runs
//! on a thread of its own, off the async runtime.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, thiserror::Error)]
#[error("could not write to disk: {0}")]
pub struct FlushError(pub String);

/// Groups the flushes of concurrent writers. Dropping it waits for the flush
/// in progress and stops the thread, releasing what `flush` holds (a store
/// can then be opened again at once).
pub struct GroupFlush {
    shared: Arc<Shared>,
    done: watch::Receiver<Flushed>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// Tickets handed out: a flush that starts after ticket `n` was taken
    /// covers the change its holder made before taking it.
    requested: u64,
    stop: bool,
}

/// The latest finished flush: the last ticket it covers, and its error.
#[derive(Clone)]
struct Flushed {
    ticket: u64,
    error: Option<String>,
}

impl GroupFlush {
    /// Starts the flushing thread; `flush` writes everything changed so far.
    pub fn new(
        name: &str,
        flush: impl Fn() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared =
            Arc::new(Shared { state: Mutex::new(State { requested: 0, stop: false }), wake: Condvar::new() });
        let (tx, done) = watch::channel(Flushed { ticket: 0, error: None });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let mut covered = 0;
            loop {
                let target = {
                    let mut s = thread_shared.state.lock();
                    while s.requested == covered && !s.stop {
                        thread_shared.wake.wait(&mut s);
                    }
                    if s.stop {
                        break;
                    }
                    s.requested
                };
                let error = flush().err().map(|e| e.to_string());
                covered = target;
                let _ = tx.send(Flushed { ticket: target, error });
            }
        })?;
        Ok(GroupFlush { shared, done, thread: Some(thread) })
    }

    /// Returns once every change this task made before calling is on disk.
    pub async fn flushed(&self) -> Result<(), FlushError> {
        let ticket = {
            let mut s = self.shared.state.lock();
            s.requested += 1;
            s.requested
        };
        self.shared.wake.notify_one();
        let mut done = self.done.clone();
        let flushed = done
            .wait_for(|f| f.ticket >= ticket)
            .await
            .map_err(|_| FlushError("the flushing thread has stopped".into()))?;
        // A later flush overwrote an earlier one's outcome only if it also
        // covered this ticket, so its result is this write's result.
        match &flushed.error {
            Some(e) => Err(FlushError(e.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for GroupFlush {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_each_is_covered() {
        let flushes = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let on_disk = Arc::new(AtomicU64::new(0));
        let (f, w, d) = (flushes.clone(), written.clone(), on_disk.clone());
        let group = Arc::new(
            GroupFlush::new("test-flush", move || {
                // A slow disk: what was written when the flush started is
                // what it makes durable.
                let upto = w.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                d.fetch_max(upto, Ordering::SeqCst);
                f.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap(),
        );
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (group, written, on_disk) = (group.clone(), written.clone(), on_disk.clone());
                tokio::spawn(async move {
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    group.flushed().await.unwrap();
                    assert!(on_disk.load(Ordering::SeqCst) >= mine, "returned before its write was flushed");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..100).contains(&n), "200 writers took {n} flushes");
    }

    #[tokio::test]
    async fn a_failed_flush_is_the_writers_error() {
        let group = GroupFlush::new("test-flush", || Err(std::io::Error::other("disk gone"))).unwrap();
        let e = group.flushed().await.unwrap_err();
        assert!(e.to_string().contains("disk gone"), "{e}");
    }
}
