//! Functions' key-value buckets: the `KvStore` seam, with [`SledKv`] for
//! `tern up` (buckets in the data dir) and [`JetStreamKv`] for a cluster
//! (one JetStream key-value bucket per Tern bucket, so every worker sees the
//! same data). [`conformance`] is the behaviour both must show.
//!
//! Every entry has a revision that changes with every write; increment and
//! compare-and-swap are revision-checked updates, so they are atomic across
//! every worker sharing the store. A write is durable when the call returns.

pub mod conformance;
mod jetstream;
mod sled_kv;

pub use jetstream::JetStreamKv;
pub use sled_kv::SledKv;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Default quota of one bucket: its keys and values together.
pub const DEFAULT_BUCKET_MAX_BYTES: u64 = 64 << 20;

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub revision: u64,
}

/// What a compare-and-swap expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No live entry (never set, deleted, or expired).
    Absent,
    /// The entry this revision wrote, still live.
    Revision(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The name and what is wrong with it.
    #[error("{1}")]
    BadBucket(String, String),
    #[error("keys must not be empty")]
    EmptyKey,
    #[error("key is {0} bytes, over the {MAX_KEY_BYTES} byte limit; nothing was stored")]
    KeyTooLong(usize),
    #[error("value is {0} bytes, over the {MAX_VALUE_BYTES} byte limit; nothing was stored")]
    ValueTooLarge(usize),
    #[error("bucket {bucket} is full (its quota is {limit} bytes); nothing was stored")]
    QuotaExceeded { bucket: String, limit: u64 },
    #[error("the value of {0:?} is not a decimal counter, so it cannot be incremented")]
    NotACounter(String),
    #[error("incrementing {0:?} would overflow a u64")]
    Overflow(String),
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
}

/// Where functions' buckets live. Buckets are made on first use; the same
/// name is the same bucket for every function granted it.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The bucket `name`, made if it is new. Checks the name; every
    /// operation on the handle then goes straight to the bucket.
    async fn bucket(&self, name: &str) -> Result<Arc<dyn KvBucket>, KvError>;
}

/// One bucket.
#[async_trait]
pub trait KvBucket: Send + Sync + 'static {
    /// The live entry under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError>;

    /// Writes `value` under `key`, expiring after `ttl` if given; returns the
    /// new revision.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError>;

    /// Writes only if the entry is still as `expect`ed: the new revision, or
    /// `None` if another writer got there first.
    async fn swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError>;

    /// Deletes `key` (no error if it is absent).
    async fn delete(&self, key: &str) -> Result<(), KvError>;

    /// Sets each pair in order, with no time to live. Not a transaction:
    /// the first failure stops the rest, and what was set before it stays.
    async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), KvError> {
        for (key, value) in pairs {
            self.set(&key, value, None).await?;
        }
        Ok(())
    }

    /// Deletes each key in order; the first failure stops the rest.
    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// Deletes `key` only if `revision` wrote its live entry; false if not.
    async fn delete_if(&self, key: &str, revision: u64) -> Result<bool, KvError>;

    /// Live keys starting with `prefix`, in byte order, after `after` (if
    /// given), at most `limit` of them.
    async fn keys(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError>;

    /// Adds `delta` to the decimal counter under `key` (absent counts as 0)
    /// and returns the new value. Atomic: a compare-and-swap loop.
    async fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        loop {
            let current = self.get(key).await?;
            let (now, expect) = match &current {
                None => (0, Expect::Absent),
                Some(e) => (parse_counter(key, &e.value)?, Expect::Revision(e.revision)),
            };
            let next = now.checked_add(delta).ok_or_else(|| KvError::Overflow(key.to_string()))?;
            let value = Bytes::from(next.to_string());
            if self.swap(key, expect, value, None).await?.is_some() {
                return Ok(next);
            }
        }
    }
}

/// Counters are stored as decimal text, as wasmtime's own keyvalue host
/// does, so any tool reading the bucket sees the number.
fn parse_counter(key: &str, value: &[u8]) -> Result<u64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| KvError::NotACounter(key.to_string()))
}

/// Checks a bucket name: the same rules in both stores, and safe as part of
/// a JetStream bucket name and a sled tree name.
pub fn valid_bucket(name: &str) -> Result<(), KvError> {
    tern_protocol::validate_bucket_name(name).map_err(|e| KvError::BadBucket(name.to_string(), e))
}

pub(crate) fn check_key(key: &str) -> Result<(), KvError> {
    match key.len() {
        0 => Err(KvError::EmptyKey),
        n if n > MAX_KEY_BYTES => Err(KvError::KeyTooLong(n)),
        _ => Ok(()),
    }
}

pub(crate) fn check_write(key: &str, value: &[u8]) -> Result<(), KvError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge(value.len()));
    }
    Ok(())
}

/// When an entry written now with `ttl` expires, in ms since the epoch
/// (0: never).
pub(crate) fn expiry(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(t) => {
            tern_protocol::clock::now_ms().saturating_add(t.as_millis().min(u64::MAX as u128) as u64).max(1)
        }
    }
}

/// Whether an entry expiring at `expires_ms` (0: never) has; reads the
/// clock only for entries that expire.
pub(crate) fn expired(expires_ms: u64) -> bool {
    expires_ms != 0 && expires_ms <= tern_protocol::clock::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["a", "counters", "user-sessions_2", "0"] {
            valid_bucket(ok).unwrap();
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a b", "a/b", "a*", &"x".repeat(64)] {
            assert!(valid_bucket(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_checked_before_anything_is_written() {
        assert_eq!(check_write("", b""), Err(KvError::EmptyKey));
        assert_eq!(check_write(&"k".repeat(257), b""), Err(KvError::KeyTooLong(257)));
        check_write(&"k".repeat(256), &vec![0; MAX_VALUE_BYTES]).unwrap();
        assert_eq!(
            check_write("k", &vec![0; MAX_VALUE_BYTES + 1]),
            Err(KvError::ValueTooLarge(MAX_VALUE_BYTES + 1))
        );
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(parse_counter("k", b"42"), Ok(42));
        assert!(parse_counter("k", b"\x01\x02").is_err());
        assert!(parse_counter("k", b"-1").is_err());
    }
}
