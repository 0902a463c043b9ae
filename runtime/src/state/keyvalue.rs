//! `wasi:keyvalue` store, atomics and batch, and `tern:kv/revisions`, over
//! the node's `KvStore`. A bucket handle is only ever made by `open` of a
//! granted bucket, so every other call goes straight to it.

use super::StateView;
use super::bindings::tern::kv::revisions;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use store::{Error, KeyResponse};
use tern_kv::{Expect, KvBucket, KvError};
use wasmtime::component::Resource;

/// Keys per `list-keys` page, and the most `list-prefix` returns.
const PAGE: usize = 1000;
/// Keys one batch call may name.
const MAX_BATCH: usize = 1000;
/// Bucket handles one instance may hold open at once.
const MAX_OPEN_BUCKETS: usize = 256;
/// Cursors one instance may hold (10 million keys' worth); past this a
/// listing's last page comes without a cursor.
const MAX_CURSORS: usize = 10_000;

/// An open bucket, made only by `open` of a granted one.
pub struct Bucket(Arc<dyn KvBucket>);

type KvResult<T> = wasmtime::Result<Result<T, Error>>;

fn other(e: KvError) -> Error {
    Error::Other(e.to_string())
}

impl StateView<'_> {
    /// The bucket behind a handle.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<dyn KvBucket>> {
        Ok(self.borrow(bucket)?.clone())
    }

    /// The same, borrowed: no reference count touched on the hot path (its
    /// cache line is shared by every instance using the bucket).
    fn borrow(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<&Arc<dyn KvBucket>> {
        Ok(&self.table.get(bucket)?.0)
    }
}

impl store::Host for StateView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        if !self.state.grants.buckets.contains(&identifier) {
            return Ok(Err(Error::AccessDenied));
        }
        if self.state.open_buckets >= MAX_OPEN_BUCKETS {
            return Ok(Err(Error::Other(format!(
                "this instance holds {MAX_OPEN_BUCKETS} open buckets, the most it may; drop some first"
            ))));
        }
        match self.state.grants.store.bucket(&identifier).await {
            Ok(bucket) => {
                self.state.open_buckets += 1;
                Ok(Ok(self.table.push(Bucket(bucket))?))
            }
            Err(e) => Ok(Err(other(e))),
        }
    }
}

impl store::HostBucket for StateView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let b = self.borrow(&bucket)?;
        Ok(b.get(&key).await.map(|e| e.map(|e| e.value.to_vec())).map_err(other))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let b = self.borrow(&bucket)?;
        Ok(b.set(&key, Bytes::from(value), None).await.map(|_| ()).map_err(other))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let b = self.borrow(&bucket)?;
        Ok(b.delete(&key).await.map_err(other))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let b = self.borrow(&bucket)?;
        Ok(b.get(&key).await.map(|e| e.is_some()).map_err(other))
    }

    async fn list_keys(&mut self, bucket: Resource<Bucket>, cursor: Option<u64>) -> KvResult<KeyResponse> {
        let b = self.bucket(&bucket)?;
        let after = match cursor {
            None => None,
            Some(c) => match self.state.cursors.get(c as usize) {
                Some(k) => Some(k.clone()),
                None => {
                    return Ok(Err(Error::Other(format!("cursor {c} is not one this instance was given"))));
                }
            },
        };
        let keys = match b.keys("", after.as_deref(), PAGE).await {
            Ok(k) => k,
            Err(e) => return Ok(Err(other(e))),
        };
        let cursor = match keys.last() {
            Some(last) if keys.len() == PAGE && self.state.cursors.len() < MAX_CURSORS => {
                self.state.cursors.push(last.clone());
                Some(self.state.cursors.len() as u64 - 1)
            }
            _ => None,
        };
        Ok(Ok(KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        self.state.open_buckets -= 1;
        Ok(())
    }
}

impl atomics::Host for StateView<'_> {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> KvResult<u64> {
        let b = self.borrow(&bucket)?;
        Ok(b.increment(&key, delta).await.map_err(other))
    }
}

impl batch::Host for StateView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let b = self.borrow(&bucket)?;
        if let Err(e) = batch_size(keys.len()) {
            return Ok(Err(e));
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match b.get(&key).await {
                Ok(entry) => out.push(entry.map(|e| (key, e.value.to_vec()))),
                Err(e) => return Ok(Err(other(e))),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let b = self.borrow(&bucket)?;
        if let Err(e) = batch_size(key_values.len()) {
            return Ok(Err(e));
        }
        // Not a transaction (the draft does not promise one): the writes
        // are made in order, and the first to fail stops the rest.
        let pairs = key_values.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        Ok(b.set_many(pairs).await.map_err(other))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let b = self.borrow(&bucket)?;
        if let Err(e) = batch_size(keys.len()) {
            return Ok(Err(e));
        }
        Ok(b.delete_many(&keys).await.map_err(other))
    }
}

fn batch_size(n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(Error::Other(format!("a batch names {n} keys; the most is {MAX_BATCH}")));
    }
    Ok(())
}

impl revisions::Host for StateView<'_> {
    async fn get_entry(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> KvResult<Option<revisions::Entry>> {
        let b = self.borrow(&bucket)?;
        Ok(b.get(&key)
            .await
            .map(|e| e.map(|e| revisions::Entry { value: e.value.to_vec(), revision: e.revision }))
            .map_err(other))
    }

    async fn set_with_ttl(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> KvResult<u64> {
        let b = self.borrow(&bucket)?;
        Ok(b.set(&key, Bytes::from(value), Some(Duration::from_millis(ttl_ms))).await.map_err(other))
    }

    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> KvResult<Option<u64>> {
        let b = self.borrow(&bucket)?;
        let expect = expected.map_or(Expect::Absent, Expect::Revision);
        let ttl = ttl_ms.map(Duration::from_millis);
        Ok(b.swap(&key, expect, Bytes::from(value), ttl).await.map_err(other))
    }

    async fn delete_if(&mut self, bucket: Resource<Bucket>, key: String, revision: u64) -> KvResult<bool> {
        let b = self.borrow(&bucket)?;
        Ok(b.delete_if(&key, revision).await.map_err(other))
    }

    async fn list_prefix(
        &mut self,
        bucket: Resource<Bucket>,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> KvResult<Vec<String>> {
        let b = self.borrow(&bucket)?;
        let limit = (limit as usize).min(PAGE);
        Ok(b.keys(&prefix, after.as_deref(), limit).await.map_err(other))
    }
}
