//! Tests that load the machine or bound latency: they run one at a time
//! (each takes [`solo`] first), so none measures another's load. Cargo runs
//! test binaries one after another, so nothing else runs beside them either.

mod density;
mod hardening_load;

/// Held for the whole of each test in this binary: the tests here run one
/// at a time, whatever `--test-threads` says. A test that panicked while
/// holding it poisons nothing the next one needs.
fn solo() -> std::sync::MutexGuard<'static, ()> {
    static SOLO: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SOLO.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
