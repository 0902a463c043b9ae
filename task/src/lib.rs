//! Tern's roles are long-running loops (the scheduler's observer, placement
//! and cron; the worker's control loop; the gateway's table follower and
//! activator). A panic in one unit of their work (one message, one tick)
//! must cost that unit, logged, and never the loop: a dead loop leaves the
//! process up and quietly broken. Each unit runs through [`guarded`].
//!
//! Debug builds take `TERN_TEST_PANIC=name,name…`: the first unit of each
//! named kind panics, so tests can show the loop survives.

use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// A spawned task aborted when its handle is dropped: work whose caller
/// gave up (a guest, an upload) stops with it.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work`; `None` if it panicked (logged with `what`).
pub async fn guarded<T>(what: &'static str, work: impl Future<Output = T>) -> Option<T> {
    let work = async move {
        test_panic(what);
        work.await
    };
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(v) => Some(v),
        Err(panic) => {
            tracing::error!(task = what, "panicked: {}; the loop goes on", message(&*panic));
            None
        }
    }
}

fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(debug_assertions)]
fn test_panic(what: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static ASKED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let asked = ASKED.get_or_init(|| {
        let names = std::env::var("TERN_TEST_PANIC").unwrap_or_default();
        Mutex::new(names.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect())
    });
    let once = asked.lock().unwrap_or_else(|p| p.into_inner()).remove(what);
    if once {
        panic!("TERN_TEST_PANIC asked {what} to panic once");
    }
}

#[cfg(not(debug_assertions))]
fn test_panic(_: &str) {}

/// Runs `work` on a thread of its own, named `name`, every `period` for as
/// long as `owner` lives: the thread holds it only while it works, so the
/// owner's last user dropping it ends the thread. For stores' background
/// upkeep (flushing, pruning), which blocks and so stays off the async
/// threads.
pub fn every_while<T: Send + Sync + 'static>(
    name: &str,
    period: std::time::Duration,
    owner: std::sync::Weak<T>,
    work: impl Fn(&T) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        while let Some(owner) = owner.upgrade() {
            work(&owner);
            drop(owner);
            std::thread::sleep(period);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught_and_the_next_unit_runs() {
        assert_eq!(guarded("t", async { 7 }).await, Some(7));
        let boom = guarded("t", async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        });
        assert_eq!(boom.await, None);
        assert_eq!(guarded("t", async { 8 }).await, Some(8));
    }
}
