//! What every [`KvStore`] must do, run against each implementation on a
//! fresh store opened with a per-bucket quota of [`QUOTA`] bytes.

use crate::{Expect, KvError, KvStore, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use bytes::Bytes;
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
pub async fn concurrent_increments(store: &dyn KvStore) {
    let conc = store.bucket("conc").await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let conc = conc.clone();
            tokio::spawn(async move { conc.increment("n", 1).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=100).collect::<Vec<u64>>(), "each increment returns a distinct new value");
    assert_eq!(&conc.get("n").await.unwrap().unwrap().value[..], b"100");
}

async fn round_trip(store: &dyn KvStore) {
    let rt = store.bucket("rt").await.unwrap();
    let rt_other = store.bucket("rt-other").await.unwrap();
    assert_eq!(rt.get("missing").await.unwrap(), None);
    let binary: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let r1 = rt.set("k", binary.clone(), None).await.unwrap();
    let got = rt.get("k").await.unwrap().unwrap();
    assert_eq!((got.value.clone(), got.revision), (binary, r1), "binary value and its revision");
    let r2 = rt.set("k", Bytes::from_static(b""), None).await.unwrap();
    assert!(r2 > r1, "a write makes a later revision: {r1} then {r2}");
    assert_eq!(rt.get("k").await.unwrap().unwrap().value, Bytes::new(), "an empty value is a value");

    // Keys are any string: spaces, dots, wildcards, non-ASCII.
    for key in ["with space", ".leading", "a..b", "*", ">", "ünï/cødé", "x=y%z", "_x", "tab\tnewline\n"] {
        rt.set(key, Bytes::from(key.to_string()), None).await.unwrap();
        let got = rt.get(key).await.unwrap().unwrap();
        assert_eq!(got.value, key.as_bytes(), "key {key:?}");
    }

    // Batches: in order, and each key as if set or deleted alone.
    let pairs =
        vec![("b1".to_string(), Bytes::from_static(b"1")), ("b2".to_string(), Bytes::from_static(b"2"))];
    rt.set_many(pairs).await.unwrap();
    assert_eq!(rt.get("b2").await.unwrap().unwrap().value, &b"2"[..]);
    let bad = vec![("b3".to_string(), Bytes::from_static(b"3")), (String::new(), Bytes::new())];
    assert_eq!(rt.set_many(bad).await.unwrap_err(), KvError::EmptyKey, "the first failure is the answer");
    assert!(rt.get("b3").await.unwrap().is_some(), "what came before it stays");
    rt.delete_many(&["b1".to_string(), "b2".to_string(), "b3".to_string()]).await.unwrap();
    assert_eq!(rt.get("b1").await.unwrap(), None);
    assert_eq!(rt.get("b3").await.unwrap(), None);

    // The same key in another bucket is another entry.
    rt_other.set("k", Bytes::from_static(b"other"), None).await.unwrap();
    assert_eq!(rt.get("k").await.unwrap().unwrap().value, Bytes::new());

    rt.delete("k").await.unwrap();
    assert_eq!(rt.get("k").await.unwrap(), None);
    rt.delete("k").await.unwrap();
    rt.delete("never-there").await.unwrap();
    assert_eq!(rt_other.get("k").await.unwrap().unwrap().value, &b"other"[..]);

    let e = store.bucket("Bad.Name").await.err().expect("a bad name is refused");
    assert!(matches!(e, KvError::BadBucket(..)), "{e}");
}

async fn keys(store: &dyn KvStore) {
    let keys = store.bucket("keys").await.unwrap();
    let empty_bucket = store.bucket("empty-bucket").await.unwrap();
    for k in ["user/2", "user/1", "user/3", "other", "user/10"] {
        keys.set(k, Bytes::from_static(b"v"), None).await.unwrap();
    }
    keys.delete("user/3").await.unwrap();
    let all = keys.keys("", None, 100).await.unwrap();
    assert_eq!(all, ["other", "user/1", "user/10", "user/2"], "live keys in byte order");
    let users = keys.keys("user/", None, 100).await.unwrap();
    assert_eq!(users, ["user/1", "user/10", "user/2"]);
    let page = keys.keys("user/", None, 2).await.unwrap();
    assert_eq!(page, ["user/1", "user/10"]);
    let next = keys.keys("user/", Some("user/10"), 2).await.unwrap();
    assert_eq!(next, ["user/2"]);
    assert!(keys.keys("nobody", None, 100).await.unwrap().is_empty());
    assert!(empty_bucket.keys("", None, 100).await.unwrap().is_empty());
}

async fn compare_and_swap(store: &dyn KvStore) {
    let cas = store.bucket("cas").await.unwrap();
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let r1 = cas.swap("k", Expect::Absent, v("1"), None).await.unwrap().expect("absent: written");
    assert_eq!(cas.swap("k", Expect::Absent, v("x"), None).await.unwrap(), None, "no longer absent");
    let r2 = cas.swap("k", Expect::Revision(r1), v("2"), None).await.unwrap().expect("current revision");
    assert_eq!(cas.swap("k", Expect::Revision(r1), v("x"), None).await.unwrap(), None, "stale revision");
    assert_eq!(cas.get("k").await.unwrap().unwrap().value, &b"2"[..], "failed swaps wrote nothing");

    assert!(!cas.delete_if("k", r1).await.unwrap(), "stale revision deletes nothing");
    assert!(cas.get("k").await.unwrap().is_some());
    assert!(cas.delete_if("k", r2).await.unwrap());
    assert_eq!(cas.get("k").await.unwrap(), None);
    assert!(!cas.delete_if("k", r2).await.unwrap(), "already gone");
    assert_eq!(cas.swap("k", Expect::Revision(r2), v("x"), None).await.unwrap(), None, "deleted");
    cas.swap("k", Expect::Absent, v("3"), None).await.unwrap().expect("absent again after delete");
}

async fn time_to_live(store: &dyn KvStore) {
    let bucket = store.bucket("ttl").await.unwrap();
    let ttl = Some(Duration::from_millis(300));
    bucket.set("short", Bytes::from_static(b"v"), ttl).await.unwrap();
    bucket.set("long", Bytes::from_static(b"v"), None).await.unwrap();
    assert!(bucket.get("short").await.unwrap().is_some(), "live before its ttl");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(bucket.get("short").await.unwrap(), None, "gone after its ttl");
    assert_eq!(bucket.keys("", None, 10).await.unwrap(), ["long"]);
    // An expired entry is absent to compare-and-swap: a lock whose holder
    // died can be taken.
    let r = bucket.swap("short", Expect::Absent, Bytes::from_static(b"new"), ttl).await.unwrap();
    assert!(r.is_some(), "an expired entry counts as absent");
    assert_eq!(bucket.get("short").await.unwrap().unwrap().value, &b"new"[..]);
    // Setting without a ttl makes it permanent again.
    bucket.set("short", Bytes::from_static(b"kept"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(bucket.get("short").await.unwrap().is_some());
}

async fn increment(store: &dyn KvStore) {
    let inc = store.bucket("inc").await.unwrap();
    assert_eq!(inc.increment("n", 5).await.unwrap(), 5, "absent counts as 0");
    assert_eq!(inc.increment("n", 1).await.unwrap(), 6);
    assert_eq!(inc.get("n").await.unwrap().unwrap().value, &b"6"[..], "stored as decimal text");
    inc.set("bin", Bytes::from_static(&[0xff, 0]), None).await.unwrap();
    let e = inc.increment("bin", 1).await.unwrap_err();
    assert!(matches!(e, KvError::NotACounter(_)), "{e}");
    inc.set("max", Bytes::from(u64::MAX.to_string()), None).await.unwrap();
    assert!(matches!(inc.increment("max", 1).await.unwrap_err(), KvError::Overflow(_)));
}

async fn limits(store: &dyn KvStore) {
    let lim = store.bucket("lim").await.unwrap();
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let e = lim.set(&long, Bytes::from_static(b"v"), None).await.unwrap_err();
    assert_eq!(e, KvError::KeyTooLong(MAX_KEY_BYTES + 1));
    let at_limit = "k".repeat(MAX_KEY_BYTES);
    lim.set(&at_limit, Bytes::from_static(b"v"), None).await.unwrap();
    assert_eq!(lim.get(&long).await.unwrap_err(), KvError::KeyTooLong(MAX_KEY_BYTES + 1));

    let big = Bytes::from(vec![7u8; MAX_VALUE_BYTES + 1]);
    let e = lim.set("big", big, None).await.unwrap_err();
    assert_eq!(e, KvError::ValueTooLarge(MAX_VALUE_BYTES + 1));
    assert_eq!(lim.get("big").await.unwrap(), None, "nothing stored");
    let full = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    lim.set("big", full.clone(), None).await.unwrap();
    assert_eq!(lim.get("big").await.unwrap().unwrap().value, full, "a value at the limit");
}

async fn quota(store: &dyn KvStore) {
    let quota = store.bucket("quota").await.unwrap();
    let quota_2 = store.bucket("quota-2").await.unwrap();
    let full = Bytes::from(vec![1u8; MAX_VALUE_BYTES]);
    quota.set("a", full.clone(), None).await.unwrap();
    quota.set("b", full.clone(), None).await.unwrap();
    let e = quota.set("c", full.clone(), None).await.unwrap_err();
    assert!(matches!(e, KvError::QuotaExceeded { .. }), "{e}");
    assert!(e.to_string().contains("nothing was stored"), "{e}");
    assert_eq!(quota.get("c").await.unwrap(), None, "nothing stored");
    assert_eq!(quota.get("a").await.unwrap().unwrap().value, full, "what was there is intact");
    // Another bucket has its own quota; freeing space makes room again.
    quota_2.set("c", full.clone(), None).await.unwrap();
    quota.delete("a").await.unwrap();
    quota.set("c", full, None).await.unwrap();
}
