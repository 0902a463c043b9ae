//! Which scheduler leads: only the leader places functions, scales them
//! and fires cron ticks; every scheduler answers reads and takes changes.
//!
//! In a cluster the leader holds a lease, the key `leader` in the
//! registry's bucket, and renews it (a revision-checked write) five times
//! per lease. No clock is compared between machines: another scheduler
//! takes the lease over once it has seen the same revision of the key for
//! a whole lease, and the holder stops leading by itself when it has not
//! renewed for four fifths of one, so the two never lead at once. `tern up`
//! has one scheduler, which always leads.

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_kv::{Expect, KvBucket};
use tern_protocol::{LeaderStatus, clock};
use tokio::sync::watch;

const KEY: &str = "leader";

#[derive(Debug, Serialize, Deserialize)]
struct Held {
    holder: String,
    /// When the holder took the lease (ms since the epoch): for `tern
    /// status`, never compared with another machine's clock.
    since_ms: u64,
}

pub struct Lease {
    /// `None`: the only scheduler.
    bucket: Option<Arc<dyn KvBucket>>,
    /// This scheduler, as the lease names it.
    me: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    holder: Option<String>,
    since_ms: u64,
    /// Times this scheduler became leader.
    terms: u64,
}

impl Lease {
    /// The only scheduler: it leads from the start.
    pub fn sole() -> Arc<Lease> {
        let (leading, _) = watch::channel(true);
        let seen = Seen { holder: Some("this process".into()), since_ms: clock::now_ms(), terms: 1 };
        Arc::new(Lease {
            bucket: None,
            me: "this process".into(),
            ttl: Duration::ZERO,
            leading,
            seen: Mutex::new(seen),
        })
    }

    /// One of several schedulers sharing `bucket`, competing for a lease of
    /// `ttl`. Call [`Lease::run`] to take part.
    pub fn shared(bucket: Arc<dyn KvBucket>, ttl: Duration, me: String) -> Arc<Lease> {
        let (leading, _) = watch::channel(false);
        Arc::new(Lease { bucket: Some(bucket), me, ttl, leading, seen: Mutex::new(Seen::default()) })
    }

    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Changes of [`Lease::leading`].
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub fn status(&self) -> LeaderStatus {
        let seen = self.seen.lock();
        LeaderStatus {
            me: self.me.clone(),
            leading: self.leading(),
            leader: seen.holder.clone(),
            since_ms: seen.since_ms,
            lease_ms: self.ttl.as_millis() as u64,
            terms: seen.terms,
        }
    }

    /// Competes for the lease until `self` is dropped by everyone else.
    pub async fn run(self: Arc<Self>) {
        let Some(bucket) = self.bucket.clone() else { return };
        let weak = Arc::downgrade(&self);
        drop(self);
        let mut state = State::default();
        loop {
            let Some(lease) = weak.upgrade() else { return };
            let pause = lease.round(&*bucket, &mut state).await;
            drop(lease);
            tokio::time::sleep(pause).await;
        }
    }

    /// One look at the lease: renew it, wait on another holder, or take
    /// it. Returns how long to wait before the next look.
    async fn round(&self, bucket: &dyn KvBucket, state: &mut State) -> Duration {
        let renew_every = self.ttl / 5;
        let look_every = (self.ttl / 10).min(Duration::from_millis(500));
        // Not renewed for most of a lease: another may take it any moment.
        if self.leading() && state.renewed.is_none_or(|t| t.elapsed() > self.ttl * 4 / 5) {
            self.step_down("the lease was not renewed in time");
        }
        let entry = match bucket.get(KEY).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot read the scheduler lease: {e}");
                return look_every;
            }
        };
        let held = entry.as_ref().and_then(|e| serde_json::from_slice::<Held>(&e.value).ok());
        let mine = held.as_ref().is_some_and(|h| h.holder == self.me);
        let takeable = match &entry {
            None => true,
            Some(_) if mine => true,
            Some(e) => {
                let now = Instant::now();
                match state.watching {
                    Some((rev, since)) if rev == e.revision => now.duration_since(since) >= self.ttl,
                    _ => {
                        state.watching = Some((e.revision, now));
                        false
                    }
                }
            }
        };
        if let Some(h) = &held
            && !mine
        {
            self.seen_holder(h);
        }
        if !takeable {
            if self.leading() {
                self.step_down("another scheduler holds the lease");
            }
            return look_every;
        }
        let since_ms = match (&held, self.leading()) {
            (Some(h), true) if mine => h.since_ms,
            _ => clock::now_ms(),
        };
        let value =
            Bytes::from(serde_json::to_vec(&Held { holder: self.me.clone(), since_ms }).expect("serialise"));
        let expect = entry.as_ref().map_or(Expect::Absent, |e| Expect::Revision(e.revision));
        let asked = Instant::now();
        match bucket.swap(KEY, expect, value, None).await {
            Ok(Some(_)) => {
                // Counted from before the write: the other schedulers'
                // wait starts no earlier than it landed.
                state.renewed = Some(asked);
                state.watching = None;
                if !self.leading() {
                    self.take(since_ms, held.as_ref().map(|h| h.holder.as_str()));
                }
                renew_every
            }
            Ok(None) => {
                if self.leading() {
                    self.step_down("another scheduler took the lease");
                }
                look_every
            }
            Err(e) => {
                tracing::warn!("cannot write the scheduler lease: {e}");
                look_every
            }
        }
    }

    fn take(&self, since_ms: u64, from: Option<&str>) {
        {
            let mut seen = self.seen.lock();
            seen.holder = Some(self.me.clone());
            seen.since_ms = since_ms;
            seen.terms += 1;
        }
        tracing::info!(scheduler = %self.me, previous = from.unwrap_or("none"), "leading: this scheduler now places, scales and fires cron");
        self.leading.send_replace(true);
    }

    fn step_down(&self, why: &str) {
        tracing::warn!(scheduler = %self.me, "no longer leading: {why}");
        self.leading.send_replace(false);
    }

    fn seen_holder(&self, held: &Held) {
        let mut seen = self.seen.lock();
        if seen.holder.as_deref() != Some(held.holder.as_str()) {
            tracing::info!(leader = %held.holder, "another scheduler leads");
            seen.holder = Some(held.holder.clone());
            seen.since_ms = held.since_ms;
        }
    }
}

#[derive(Default)]
struct State {
    /// When this scheduler's last renewal was sent (it succeeded).
    renewed: Option<Instant>,
    /// Another holder's revision, and when it was first seen.
    watching: Option<(u64, Instant)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_kv::{KvStore, SledKv};

    async fn leaders(leases: &[Arc<Lease>]) -> Vec<bool> {
        leases.iter().map(|l| l.leading()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_leads_and_another_takes_over_a_lease_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledKv::open(dir.path(), 1 << 20).unwrap();
        let bucket = store.bucket("registry").await.unwrap();
        let ttl = Duration::from_millis(400);
        let a = Lease::shared(bucket.clone(), ttl, "a".into());
        let b = Lease::shared(bucket.clone(), ttl, "b".into());
        let run_a = tokio::spawn(a.clone().run());
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::spawn(b.clone().run());
        // Over several leases, exactly one leads at every look.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(leaders(&[a.clone(), b.clone()]).await, [true, false]);
        }
        assert_eq!(b.status().leader.as_deref(), Some("a"));
        // a dies without a word: b leads within a lease and a look.
        run_a.abort();
        let died = Instant::now();
        a.leading.send_replace(false);
        while !b.leading() {
            assert!(died.elapsed() < ttl + Duration::from_millis(300), "b never took over");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(died.elapsed() >= ttl / 2, "took over before the lease could have lapsed");
        let status = b.status();
        assert_eq!((status.leader.as_deref(), status.terms, status.leading), (Some("b"), 1, true));
    }

    #[test]
    fn the_only_scheduler_leads() {
        let lease = Lease::sole();
        assert!(lease.leading());
        assert!(lease.status().leading);
    }
}
