//! Buckets for `tern up`: one sled tree per bucket in the data dir.
//!
//! Each stored value is an envelope: the revision that wrote it, when it
//! expires (0: never), then the value. Writes are made under their bucket's
//! lock (a read-check-write is then atomic, and the bucket's byte count
//! exact) and made durable after it, by a flush shared with the writers
//! around them (a batch shares one). Reads take no lock.
//!
//! An expired entry reads as absent; its bytes count against the quota until
//! it is overwritten or deleted.

use crate::{
    Entry, Expect, KvBucket, KvError, KvStore, check_key, check_write, expired, expiry, valid_bucket,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tern_disk::GroupFlush;

const HEADER: usize = 16;

pub struct SledKv {
    shared: Arc<Shared>,
    /// One handle per bucket, so its write lock and byte count are shared
    /// by every user of the bucket.
    buckets: Mutex<HashMap<String, Arc<SledBucket>>>,
}

/// What every bucket of the store shares.
struct Shared {
    db: sled::Db,
    dir: PathBuf,
    max_bytes: u64,
    flush: GroupFlush,
}

pub struct SledBucket {
    name: String,
    tree: sled::Tree,
    shared: Arc<Shared>,
    /// Bytes of keys and values, counted at first write after start. Held
    /// across every read-check-write.
    used: Mutex<Option<u64>>,
}

impl SledKv {
    /// Opens (or makes) the store in `dir`; each bucket may hold `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, KvError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            KvError::Unavailable(format!("cannot open the key-value store in {}: {e}", dir.display()))
        })?;
        let flusher = db.clone();
        let flush = GroupFlush::new("tern-kv-flush", move || {
            flusher.flush().map(|_| ()).map_err(std::io::Error::other)
        })
        .map_err(|e| KvError::Unavailable(format!("cannot start the flushing thread: {e}")))?;
        let shared = Arc::new(Shared { db, dir: dir.to_path_buf(), max_bytes, flush });
        Ok(SledKv { shared, buckets: Mutex::new(HashMap::new()) })
    }
}

#[async_trait]
impl KvStore for SledKv {
    async fn bucket(&self, name: &str) -> Result<Arc<dyn KvBucket>, KvError> {
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.get(name) {
            return Ok(b.clone());
        }
        valid_bucket(name)?;
        let tree = self.shared.db.open_tree(format!("kv/{name}")).map_err(unavailable)?;
        let bucket = Arc::new(SledBucket {
            name: name.to_string(),
            tree,
            shared: self.shared.clone(),
            used: Mutex::new(None),
        });
        buckets.insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }
}

impl SledBucket {
    /// Changes one key under the write lock: `decide` sees the live entry
    /// and returns the change (or `None` to leave it) and what to answer.
    /// Returns that answer and the new revision, if a value was written.
    fn write<T>(
        &self,
        key: &str,
        decide: impl FnOnce(Option<(u64, &[u8])>) -> Result<(Option<Change>, T), KvError>,
    ) -> Result<(T, Option<u64>), KvError> {
        let mut used = self.used.lock();
        let total = *used.get_or_insert_with(|| {
            self.tree.iter().filter_map(Result::ok).map(|(k, v)| stored_size(&k, &v)).sum()
        });
        let old = self.tree.get(key.as_bytes()).map_err(unavailable)?;
        let live =
            old.as_deref().and_then(decode).filter(|(_, exp, _)| !expired(*exp)).map(|(rev, _, v)| (rev, v));
        let (change, out) = decide(live)?;
        let old_size = old.as_ref().map_or(0, |o| stored_size(key.as_bytes(), o));
        let (after, revision) = match change {
            None => (total, None),
            Some(Change::Delete) => {
                if old.is_some() {
                    self.tree.remove(key.as_bytes()).map_err(unavailable)?;
                }
                (total - old_size, None)
            }
            Some(Change::Set(value, ttl)) => {
                let revision = self.shared.db.generate_id().map_err(unavailable)? + 1;
                let stored = encode(revision, expiry(ttl), &value);
                let new_size = stored_size(key.as_bytes(), &stored);
                let after = total - old_size + new_size;
                if new_size > old_size && after > self.shared.max_bytes {
                    return Err(KvError::QuotaExceeded {
                        bucket: self.name.clone(),
                        limit: self.shared.max_bytes,
                    });
                }
                tern_disk::ensure_room(&self.shared.dir, new_size)
                    .map_err(|e| KvError::Unavailable(e.to_string()))?;
                self.tree.insert(key.as_bytes(), stored).map_err(unavailable)?;
                (after, Some(revision))
            }
        };
        *used = Some(after);
        Ok((out, revision))
    }

    async fn durable(&self) -> Result<(), KvError> {
        self.shared.flush.flushed().await.map_err(|e| KvError::Unavailable(e.to_string()))
    }
}

enum Change {
    Set(Bytes, Option<Duration>),
    Delete,
}

#[async_trait]
impl KvBucket for SledBucket {
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        let Some(raw) = self.tree.get(key.as_bytes()).map_err(unavailable)? else {
            return Ok(None);
        };
        match decode(&raw) {
            // The value shares sled's buffer rather than being copied.
            Some((revision, exp, _)) if !expired(exp) => {
                Ok(Some(Entry { value: Bytes::from_owner(raw).slice(HEADER..), revision }))
            }
            _ => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        check_write(key, &value)?;
        let ((), revision) = self.write(key, |_| Ok((Some(Change::Set(value, ttl)), ())))?;
        self.durable().await?;
        Ok(revision.expect("a set writes"))
    }

    async fn swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        check_write(key, &value)?;
        let ((), revision) = self.write(key, |live| {
            let matches = match (expect, live) {
                (Expect::Absent, None) => true,
                (Expect::Revision(r), Some((rev, _))) => r == rev,
                _ => false,
            };
            Ok((matches.then_some(Change::Set(value, ttl)), ()))
        })?;
        if revision.is_some() {
            self.durable().await?;
        }
        Ok(revision)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.write(key, |_| Ok((Some(Change::Delete), ())))?;
        self.durable().await
    }

    async fn set_many(&self, pairs: Vec<(String, Bytes)>) -> Result<(), KvError> {
        let written = pairs.into_iter().try_for_each(|(key, value)| {
            check_write(&key, &value)?;
            self.write(&key, |_| Ok((Some(Change::Set(value, None)), ()))).map(|_| ())
        });
        // One flush for the batch, covering what was written before a failure.
        self.durable().await?;
        written
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let written = keys.iter().try_for_each(|key| {
            check_key(key)?;
            self.write(key, |_| Ok((Some(Change::Delete), ()))).map(|_| ())
        });
        self.durable().await?;
        written
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<bool, KvError> {
        check_key(key)?;
        let (deleted, _) = self.write(key, |live| {
            let matches = live.is_some_and(|(rev, _)| rev == revision);
            Ok((matches.then_some(Change::Delete), matches))
        })?;
        if deleted {
            self.durable().await?;
        }
        Ok(deleted)
    }

    async fn keys(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError> {
        let start = match after {
            // The smallest key greater than `after`.
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                let mut s = a.as_bytes().to_vec();
                s.push(0);
                s
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let mut keys = Vec::new();
        for item in self.tree.range(start..) {
            let (k, v) = item.map_err(unavailable)?;
            if !k.starts_with(prefix.as_bytes()) || keys.len() >= limit {
                break;
            }
            let live = decode(&v).is_some_and(|(_, exp, _)| !expired(exp));
            if let (true, Ok(k)) = (live, std::str::from_utf8(&k)) {
                keys.push(k.to_string());
            }
        }
        Ok(keys)
    }
}

fn encode(revision: u64, expires_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + value.len());
    v.extend_from_slice(&revision.to_be_bytes());
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode(raw: &[u8]) -> Option<(u64, u64, &[u8])> {
    if raw.len() < HEADER {
        return None;
    }
    let revision = u64::from_be_bytes(raw[..8].try_into().ok()?);
    let expires = u64::from_be_bytes(raw[8..16].try_into().ok()?);
    Some((revision, expires, &raw[HEADER..]))
}

/// What an entry counts against its bucket's quota: key and value (the
/// envelope is Tern's overhead, not the user's).
fn stored_size(key: &[u8], stored: &[u8]) -> u64 {
    (key.len() + stored.len().saturating_sub(HEADER)) as u64
}

fn unavailable(e: sled::Error) -> KvError {
    KvError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledKv::open(dir.path(), crate::conformance::QUOTA).unwrap();
        crate::conformance::run(&store).await;
        crate::conformance::concurrent_increments(&store).await;
    }

    #[tokio::test]
    async fn entries_and_quota_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledKv::open(dir.path(), 100).unwrap();
            store.bucket("b").await.unwrap().set("k", Bytes::from(vec![1; 60]), None).await.unwrap();
        }
        let store = SledKv::open(dir.path(), 100).unwrap();
        let b = store.bucket("b").await.unwrap();
        assert_eq!(b.get("k").await.unwrap().unwrap().value.len(), 60);
        let e = b.set("k2", Bytes::from(vec![1; 60]), None).await.unwrap_err();
        assert!(matches!(e, KvError::QuotaExceeded { .. }), "{e}");
    }
}
