//! Key-value buckets: durable, shared by every instance and every function
//! granted the same bucket (`tern deploy … --kv NAME`).
//!
//! ```ignore
//! use tern_sdk::kv;
//!
//! let bucket = kv::open("counters")?;
//! let hits = bucket.increment("hits", 1)?;
//! bucket.set("last-visitor", b"ada")?;
//! ```
//!
//! Every write makes a new revision; [`Bucket::entry`] reads a value with
//! its revision and [`Bucket::compare_and_swap`] writes only if the
//! revision is unchanged, atomically across workers. [`Bucket::lock`]
//! builds a lock on that with a time to live, so a holder that dies (traps,
//! times out) cannot hold it forever.
//!
//! Limits: keys up to 256 bytes, values up to 1 MiB, each bucket up to the
//! platform's `--kv-max-bytes` (64 MiB unless the operator changed it).

use crate::state::tern::kv::revisions;
use crate::state::wasi::keyvalue::{atomics, batch, store};
use std::fmt;
use std::time::{Duration, Instant};

/// Why a bucket operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The function was not granted this bucket (`--kv NAME` at deploy).
    AccessDenied(String),
    /// Anything else, with the platform's message (a limit, the store).
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AccessDenied(b) => {
                write!(f, "bucket {b:?} is not granted to this function (deploy with --kv {b})")
            }
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

fn error(bucket: &str) -> impl Fn(store::Error) -> Error + '_ {
    move |e| match e {
        store::Error::AccessDenied => Error::AccessDenied(bucket.to_string()),
        store::Error::NoSuchStore => Error::Other(format!("no bucket {bucket:?}")),
        store::Error::Other(m) => Error::Other(m),
    }
}

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// An open bucket.
pub struct Bucket {
    name: String,
    inner: store::Bucket,
}

/// Opens bucket `name`; the function must have been granted it.
pub fn open(name: &str) -> Result<Bucket, Error> {
    let inner = store::open(name).map_err(error(name))?;
    Ok(Bucket { name: name.to_string(), inner })
}

impl Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key).map_err(error(&self.name))
    }

    /// The value as UTF-8 text (lossy), if any.
    pub fn get_string(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        self.inner.set(key, value.as_ref()).map_err(error(&self.name))
    }

    /// Sets `key`, to expire after `ttl`; returns the new revision.
    pub fn set_with_ttl(&self, key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<u64, Error> {
        revisions::set_with_ttl(&self.inner, key, value.as_ref(), millis(ttl)).map_err(error(&self.name))
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key).map_err(error(&self.name))
    }

    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.inner.exists(key).map_err(error(&self.name))
    }

    /// Adds `delta` to the counter under `key` (absent is 0) and returns
    /// the new value; atomic across every worker.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        atomics::increment(&self.inner, key, delta).map_err(error(&self.name))
    }

    /// Every key in the bucket, in byte order.
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        self.keys_with_prefix("")
    }

    /// Every key starting with `prefix`, in byte order.
    pub fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let after = keys.last().map(String::as_str);
            let page = revisions::list_prefix(&self.inner, prefix, after, 1000).map_err(error(&self.name))?;
            let done = page.len() < 1000;
            keys.extend(page);
            if done {
                return Ok(keys);
            }
        }
    }

    /// Values of `keys`, in order (`None` where absent); up to 1000 keys.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let got = batch::get_many(&self.inner, keys).map_err(error(&self.name))?;
        Ok(got.into_iter().map(|e| e.map(|(_, v)| v)).collect())
    }

    /// Sets each pair in order (not as a transaction: the first failure
    /// stops the rest); up to 1000 pairs.
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        batch::set_many(&self.inner, pairs).map_err(error(&self.name))
    }

    pub fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
        batch::delete_many(&self.inner, keys).map_err(error(&self.name))
    }

    /// The value under `key` with its revision.
    pub fn entry(&self, key: &str) -> Result<Option<Entry>, Error> {
        let e = revisions::get_entry(&self.inner, key).map_err(error(&self.name))?;
        Ok(e.map(|e| Entry { value: e.value, revision: e.revision }))
    }

    /// Sets `key` only if revision `expected` wrote its value (`None`: only
    /// if absent). Returns the new revision, or `None` if another writer
    /// got there first and nothing was written.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: impl AsRef<[u8]>,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, Error> {
        revisions::compare_and_swap(&self.inner, key, expected, value.as_ref(), ttl.map(millis))
            .map_err(error(&self.name))
    }

    /// Deletes `key` only if revision `revision` wrote its value.
    pub fn delete_if(&self, key: &str, revision: u64) -> Result<bool, Error> {
        revisions::delete_if(&self.inner, key, revision).map_err(error(&self.name))
    }

    /// Takes the lock named `key`, waiting up to `wait` for it. The lock
    /// expires after `ttl` if its holder does not release it (it trapped,
    /// or ran out of time), so pick a `ttl` longer than the work it guards.
    pub fn lock(&self, key: &str, ttl: Duration, wait: Duration) -> Result<Lock<'_>, Error> {
        let deadline = Instant::now() + wait;
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(lock) = self.try_lock(key, ttl)? {
                return Ok(lock);
            }
            if Instant::now() >= deadline {
                return Err(Error::Other(format!("lock {key:?} is held elsewhere; gave up after {wait:?}")));
            }
            sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// Takes the lock named `key` if no one holds it.
    pub fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock<'_>>, Error> {
        let taken = self.compare_and_swap(key, None, b"locked", Some(ttl))?;
        Ok(taken.map(|revision| Lock { bucket: self, key: key.to_string(), revision, released: false }))
    }
}

/// A held lock: released on [`Lock::release`] or when dropped. Releasing
/// removes it only if it is still this holder's (not expired and taken by
/// another since).
pub struct Lock<'a> {
    bucket: &'a Bucket,
    key: String,
    revision: u64,
    released: bool,
}

impl Lock<'_> {
    /// Releases the lock; false if it had expired and been taken since.
    pub fn release(mut self) -> Result<bool, Error> {
        self.released = true;
        self.bucket.delete_if(&self.key, self.revision)
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.bucket.delete_if(&self.key, self.revision);
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn sleep(d: Duration) {
    let ns = d.as_nanos().min(u64::MAX as u128) as u64;
    wasi::clocks::monotonic_clock::subscribe_duration(ns).block();
}
