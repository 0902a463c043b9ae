//! What every [`KvStore`] must do, run against each implementation on a
//! fresh store opened with a per-bucket quota of [`QUOTA`] bytes.

use crate::{Expect, KvError, KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The quota the suite's store must be opened with: two values at the
/// limit fit, a third does not.
pub const QUOTA: u64 = (MAX_VALUE_BYTES as u64) * 5 / 2;

pub async fn run(store: &dyn KvStore) {
    round_trip(store).await;
    keys(store).await;
    compare_and_swap(store).await;
    time_to_live(store).await;
    increment(store).await;
    limits(store).await;
    quota(store).await;
}

/// Runs the increment check from many tasks at once: the suite's proof that
/// increment is atomic in one process (across processes, the end-to-end
/// tests).
pub async fn concurrent_increments(store: Arc<dyn KvStore>) {
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.increment("conc", "n", 1).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>(), "each increment returns a distinct new value");
    assert_eq!(&store.get("conc", "n").await.unwrap().unwrap().value[..], b"100");
}

async fn round_trip(store: &dyn KvStore) {
    assert_eq!(store.get("rt", "missing").await.unwrap(), None);
    let binary: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let r1 = store.set("rt", "k", binary.clone(), None).await.unwrap();
    let got = store.get("rt", "k").await.unwrap().unwrap();
    assert_eq!((got.value.clone(), got.revision), (binary, r1), "binary value and its revision");
    let r2 = store.set("rt", "k", Bytes::from_static(b""), None).await.unwrap();
    assert!(r2 > r1, "a write makes a later revision: {r1} then {r2}");
    assert_eq!(store.get("rt", "k").await.unwrap().unwrap().value, Bytes::new(), "an empty value is a value");

    // Keys are any string: spaces, dots, wildcards, non-ASCII.
    for key in ["with space", ".leading", "a..b", "*", ">", "ünï/cødé", "x=y%z", "_x", "tab\tnewline\n"] {
        store.set("rt", key, Bytes::from(key.to_string()), None).await.unwrap();
        let got = store.get("rt", key).await.unwrap().unwrap();
        assert_eq!(got.value, key.as_bytes(), "key {key:?}");
    }

    // The same key in another bucket is another entry.
    store.set("rt-other", "k", Bytes::from_static(b"other"), None).await.unwrap();
    assert_eq!(store.get("rt", "k").await.unwrap().unwrap().value, Bytes::new());

    store.delete("rt", "k").await.unwrap();
    assert_eq!(store.get("rt", "k").await.unwrap(), None);
    store.delete("rt", "k").await.unwrap();
    store.delete("rt", "never-there").await.unwrap();
    assert_eq!(store.get("rt-other", "k").await.unwrap().unwrap().value, &b"other"[..]);

    let e = store.get("Bad.Name", "k").await.unwrap_err();
    assert!(matches!(e, KvError::BadBucket(..)), "{e}");
}

async fn keys(store: &dyn KvStore) {
    for k in ["user/2", "user/1", "user/3", "other", "user/10"] {
        store.set("keys", k, Bytes::from_static(b"v"), None).await.unwrap();
    }
    store.delete("keys", "user/3").await.unwrap();
    let all = store.keys("keys", "", None, 100).await.unwrap();
    assert_eq!(all, ["other", "user/1", "user/10", "user/2"], "live keys in byte order");
    let users = store.keys("keys", "user/", None, 100).await.unwrap();
    assert_eq!(users, ["user/1", "user/10", "user/2"]);
    let page = store.keys("keys", "user/", None, 2).await.unwrap();
    assert_eq!(page, ["user/1", "user/10"]);
    let next = store.keys("keys", "user/", Some("user/10"), 2).await.unwrap();
    assert_eq!(next, ["user/2"]);
    assert!(store.keys("keys", "nobody", None, 100).await.unwrap().is_empty());
    assert!(store.keys("empty-bucket", "", None, 100).await.unwrap().is_empty());
}

async fn compare_and_swap(store: &dyn KvStore) {
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let r1 = store.swap("cas", "k", Expect::Absent, v("1"), None).await.unwrap().expect("absent: written");
    assert_eq!(store.swap("cas", "k", Expect::Absent, v("x"), None).await.unwrap(), None, "no longer absent");
    let r2 =
        store.swap("cas", "k", Expect::Revision(r1), v("2"), None).await.unwrap().expect("current revision");
    assert_eq!(
        store.swap("cas", "k", Expect::Revision(r1), v("x"), None).await.unwrap(),
        None,
        "stale revision"
    );
    assert_eq!(store.get("cas", "k").await.unwrap().unwrap().value, &b"2"[..], "failed swaps wrote nothing");

    assert!(!store.delete_if("cas", "k", r1).await.unwrap(), "stale revision deletes nothing");
    assert!(store.get("cas", "k").await.unwrap().is_some());
    assert!(store.delete_if("cas", "k", r2).await.unwrap());
    assert_eq!(store.get("cas", "k").await.unwrap(), None);
    assert!(!store.delete_if("cas", "k", r2).await.unwrap(), "already gone");
    assert_eq!(store.swap("cas", "k", Expect::Revision(r2), v("x"), None).await.unwrap(), None, "deleted");
    store.swap("cas", "k", Expect::Absent, v("3"), None).await.unwrap().expect("absent again after delete");
}

async fn time_to_live(store: &dyn KvStore) {
    let ttl = Some(Duration::from_millis(300));
    store.set("ttl", "short", Bytes::from_static(b"v"), ttl).await.unwrap();
    store.set("ttl", "long", Bytes::from_static(b"v"), None).await.unwrap();
    assert!(store.get("ttl", "short").await.unwrap().is_some(), "live before its ttl");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.get("ttl", "short").await.unwrap(), None, "gone after its ttl");
    assert_eq!(store.keys("ttl", "", None, 10).await.unwrap(), ["long"]);
    // An expired entry is absent to compare-and-swap: a lock whose holder
    // died can be taken.
    let r = store.swap("ttl", "short", Expect::Absent, Bytes::from_static(b"new"), ttl).await.unwrap();
    assert!(r.is_some(), "an expired entry counts as absent");
    assert_eq!(store.get("ttl", "short").await.unwrap().unwrap().value, &b"new"[..]);
    // Setting without a ttl makes it permanent again.
    store.set("ttl", "short", Bytes::from_static(b"kept"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(store.get("ttl", "short").await.unwrap().is_some());
}

async fn increment(store: &dyn KvStore) {
    assert_eq!(store.increment("inc", "n", 5).await.unwrap(), 5, "absent counts as 0");
    assert_eq!(store.increment("inc", "n", 1).await.unwrap(), 6);
    assert_eq!(store.get("inc", "n").await.unwrap().unwrap().value, &b"6"[..], "stored as decimal text");
    store.set("inc", "bin", Bytes::from_static(&[0xff, 0]), None).await.unwrap();
    let e = store.increment("inc", "bin", 1).await.unwrap_err();
    assert!(matches!(e, KvError::NotACounter(_)), "{e}");
    store.set("inc", "max", Bytes::from(u64::MAX.to_string()), None).await.unwrap();
    assert!(matches!(store.increment("inc", "max", 1).await.unwrap_err(), KvError::Overflow(_)));
}

async fn limits(store: &dyn KvStore) {
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let e = store.set("lim", &long, Bytes::from_static(b"v"), None).await.unwrap_err();
    assert_eq!(e, KvError::KeyTooLong(MAX_KEY_BYTES + 1));
    let at_limit = "k".repeat(MAX_KEY_BYTES);
    store.set("lim", &at_limit, Bytes::from_static(b"v"), None).await.unwrap();
    assert_eq!(store.get("lim", &long).await.unwrap_err(), KvError::KeyTooLong(MAX_KEY_BYTES + 1));

    let big = Bytes::from(vec![7u8; MAX_VALUE_BYTES + 1]);
    let e = store.set("lim", "big", big, None).await.unwrap_err();
    assert_eq!(e, KvError::ValueTooLarge(MAX_VALUE_BYTES + 1));
    assert_eq!(store.get("lim", "big").await.unwrap(), None, "nothing stored");
    let full = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    store.set("lim", "big", full.clone(), None).await.unwrap();
    assert_eq!(store.get("lim", "big").await.unwrap().unwrap().value, full, "a value at the limit");
}

async fn quota(store: &dyn KvStore) {
    let full = Bytes::from(vec![1u8; MAX_VALUE_BYTES]);
    store.set("quota", "a", full.clone(), None).await.unwrap();
    store.set("quota", "b", full.clone(), None).await.unwrap();
    let e = store.set("quota", "c", full.clone(), None).await.unwrap_err();
    assert!(matches!(e, KvError::QuotaExceeded { .. }), "{e}");
    assert!(e.to_string().contains("nothing was stored"), "{e}");
    assert_eq!(store.get("quota", "c").await.unwrap(), None, "nothing stored");
    assert_eq!(store.get("quota", "a").await.unwrap().unwrap().value, full, "what was there is intact");
    // Another bucket has its own quota; freeing space makes room again.
    store.set("quota-2", "c", full.clone(), None).await.unwrap();
    store.delete("quota", "a").await.unwrap();
    store.set("quota", "c", full, None).await.unwrap();
}
