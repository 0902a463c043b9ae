//! Buckets in a cluster: each Tern bucket `B` is the JetStream key-value
//! bucket `tern_B` (stream `KV_tern_B`, history 1, file storage, `max_bytes`
//! the quota), so every worker sees the same data and `nats kv` can inspect
//! it.
//!
//! Entries are written as the key-value layer writes them (a message on
//! `$KV.tern_B.<key>`; a delete is a `KV-Operation: DEL` marker), with one
//! addition: an entry with a time to live carries a `Tern-Expires` header (ms
//! since the epoch), because nats-server 2.9 has no per-message TTL. The
//! revision is the message's stream sequence, and a revision-checked write
//! is a publish with `Nats-Expected-Last-Subject-Sequence`. (So a swap or
//! delete naming the revision of an entry that has since expired, with no
//! write after it, still succeeds here; sled refuses it. Either way no
//! other writer's entry is touched.)
//!
//! Keys NATS accepts as subject tokens are stored as they are; any other key
//! (spaces, wildcards, a leading `_`…) as `_` and its bytes in hex.

use crate::{
    Entry, Expect, KvBucket, KvError, KvStore, check_key, check_write, expired, expiry, valid_bucket,
};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const EXPIRES_HEADER: &str = "Tern-Expires";
const OPERATION_HEADER: &str = "KV-Operation";
const EXPECTED_HEADER: &str = "Nats-Expected-Last-Subject-Sequence";
/// Room for subject and headers beside a value in one message.
const MESSAGE_OVERHEAD: usize = 1024;

pub struct JetStreamKv {
    shared: Arc<Shared>,
    buckets: parking_lot::Mutex<HashMap<String, Arc<JsBucket>>>,
}

struct Shared {
    js: jetstream::Context,
    client: async_nats::Client,
    replicas: usize,
    max_bytes: u64,
    max_payload: usize,
}

pub struct JsBucket {
    name: String,
    stream: stream::Stream,
    /// `$KV.tern_<name>.`: a key's subject is this and the stored key.
    prefix: String,
    shared: Arc<Shared>,
}

/// The last message on a key's subject, whatever it says.
struct Last {
    revision: u64,
    /// A live value (not a delete marker, not expired).
    live: Option<Bytes>,
}

impl JetStreamKv {
    /// `replicas`: servers keeping each bucket (1, or 3 on a three-node
    /// NATS cluster); `max_bytes`: each new bucket's quota.
    pub fn new(client: async_nats::Client, replicas: usize, max_bytes: u64) -> Self {
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client.clone());
        JetStreamKv {
            shared: Arc::new(Shared { js, client, replicas, max_bytes, max_payload }),
            buckets: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The stream a JetStream key-value bucket is (what `nats kv add`
    /// makes), created directly: the client's `create_key_value` first
    /// queries account limits in a shape nats-server 2.9 does not answer.
    fn config(&self, js_name: &str, description: String, max_bytes: i64) -> stream::Config {
        stream::Config {
            name: format!("KV_{js_name}"),
            description: Some(description),
            subjects: vec![format!("$KV.{js_name}.>")],
            max_messages_per_subject: 1,
            max_bytes,
            storage: stream::StorageType::File,
            num_replicas: self.shared.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        }
    }

    /// One of Tern's own buckets (`TERN_REGISTRY`), not a function's: its
    /// JetStream name is `name` as given (upper case, so no function's
    /// `tern_<bucket>` is ever it), with no quota.
    pub async fn system_bucket(&self, name: &str) -> Result<Arc<dyn KvBucket>, KvError> {
        assert!(name.starts_with("TERN_"), "system buckets are TERN_*");
        let config = self.config(name, format!("Tern's {name}"), -1);
        Ok(Arc::new(self.open(name, config).await?))
    }

    /// The bucket's stream, made on first use. Roles opening a bucket
    /// together race to create it; the loser finds the winner's.
    async fn open(&self, name: &str, config: stream::Config) -> Result<JsBucket, KvError> {
        let js = &self.shared.js;
        let prefix = format!("$KV.{}.", &config.name["KV_".len()..]);
        let stream_name = config.name.clone();
        let mut tries = 0;
        let stream = loop {
            let found = match js.get_stream(&stream_name).await {
                Ok(s) => Ok(s),
                Err(_) => js.create_stream(config.clone()).await.map_err(|e| e.to_string()),
            };
            match found {
                Ok(s) => break s,
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(bucket = name, "opening the bucket: {e}");
                    tokio::time::sleep(Duration::from_millis(20 * tries)).await;
                }
                Err(e) => return Err(KvError::Unavailable(format!("cannot open bucket {name}: {e}"))),
            }
        };
        Ok(JsBucket { name: name.to_string(), stream, prefix, shared: self.shared.clone() })
    }
}

#[async_trait]
impl KvStore for JetStreamKv {
    async fn bucket(&self, name: &str) -> Result<Arc<dyn KvBucket>, KvError> {
        if let Some(b) = self.buckets.lock().get(name) {
            return Ok(b.clone());
        }
        valid_bucket(name)?;
        let js_name = js_bucket(name);
        let config = self.config(&js_name, format!("Tern bucket {name}"), self.shared.max_bytes as i64);
        let bucket = Arc::new(self.open(name, config).await?);
        // Two first opens may both get here: the first handle kept wins.
        Ok(self.buckets.lock().entry(name.to_string()).or_insert(bucket).clone())
    }
}

impl JsBucket {
    fn subject(&self, key: &str) -> String {
        format!("{}{}", self.prefix, encode_key(key))
    }

    async fn last(&self, key: &str) -> Result<Option<Last>, KvError> {
        let msg = match self.stream.direct_get_last_for_subject(self.subject(key)).await {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(KvError::Unavailable(format!("reading {}: {e}", self.name))),
        };
        let deleted = header(Some(&msg.headers), OPERATION_HEADER).is_some();
        let expires = header(Some(&msg.headers), EXPIRES_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
        let live = (!deleted && !expired(expires)).then_some(msg.payload);
        Ok(Some(Last { revision: msg.sequence, live }))
    }

    /// Publishes one message on the key's subject and waits for the
    /// server's ack; `expected` makes it revision-checked (`Ok(None)`: the
    /// key moved on).
    async fn publish(
        &self,
        key: &str,
        mut headers: HeaderMap,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<Option<u64>, KvError> {
        let max_payload = self.shared.max_payload;
        if value.len() + MESSAGE_OVERHEAD > max_payload {
            return Err(KvError::Unavailable(format!(
                "the NATS server's max_payload ({max_payload} bytes) is too small for a {} byte value; raise it to at least 2MB",
                value.len()
            )));
        }
        if let Some(rev) = expected {
            headers.insert(EXPECTED_HEADER, rev.to_string().as_str());
        }
        let sent = self.shared.js.publish_with_headers(self.subject(key), headers, value).await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) if e.to_string().contains("maximum bytes") => {
                Err(KvError::QuotaExceeded { bucket: self.name.clone(), limit: self.shared.max_bytes })
            }
            Err(e) => Err(KvError::Unavailable(format!("writing to {}: {e}", self.name))),
        }
    }

    fn value_headers(ttl: Option<Duration>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if ttl.is_some() {
            h.insert(EXPIRES_HEADER, expiry(ttl).to_string().as_str());
        }
        h
    }

    fn delete_marker() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(OPERATION_HEADER, "DEL");
        h
    }
}

#[async_trait]
impl KvBucket for JsBucket {
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        check_key(key)?;
        let last = self.last(key).await?;
        Ok(last.and_then(|l| Some(Entry { value: l.live?, revision: l.revision })))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, KvError> {
        check_write(key, &value)?;
        let rev = self.publish(key, Self::value_headers(ttl), value, None).await?;
        Ok(rev.expect("an unchecked write is not refused"))
    }

    async fn swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        check_write(key, &value)?;
        let expected = match expect {
            // The server checks the revision: no read first, so an update
            // is one round trip and its window for a conflict is short.
            Expect::Revision(r) => r,
            Expect::Absent => match self.last(key).await? {
                // 0: no message on the subject at all.
                None => 0,
                // A delete marker or an expired entry: absent, at that revision.
                Some(Last { revision, live: None }) => revision,
                Some(Last { live: Some(_), .. }) => return Ok(None),
            },
        };
        self.publish(key, Self::value_headers(ttl), value, Some(expected)).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.publish(key, Self::delete_marker(), Bytes::new(), None).await?;
        Ok(())
    }

    async fn delete_if(&self, key: &str, revision: u64) -> Result<bool, KvError> {
        check_key(key)?;
        // A revision only ever names a value (a delete marker's is never
        // handed out), so the server's check is the whole condition.
        let done = self.publish(key, Self::delete_marker(), Bytes::new(), Some(revision)).await?;
        Ok(done.is_some())
    }

    async fn keys(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, KvError> {
        let unavailable =
            |e: &dyn std::fmt::Display| KvError::Unavailable(format!("listing {}: {e}", self.name));
        // The last message of every key, headers only: what the key-value
        // layer's own key listing reads, plus the expiry header it drops.
        // The inbox is subscribed before the consumer exists: subscribing
        // after (as an ordered consumer's `messages()` does) can miss the
        // first messages the server pushes, and then the listing waits for
        // a heartbeat to notice, seconds on a busy machine.
        let inbox = self.shared.client.new_inbox();
        let mut sub = self.shared.client.subscribe(inbox.clone()).await.map_err(|e| unavailable(&e))?;
        let consumer = self
            .stream
            .create_consumer(consumer::push::Config {
                deliver_subject: inbox,
                filter_subject: format!("{}>", self.prefix),
                headers_only: true,
                ack_policy: consumer::AckPolicy::None,
                replay_policy: consumer::ReplayPolicy::Instant,
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let mut keys = Vec::new();
        let mut pending = consumer.cached_info().num_pending;
        while pending > 0 {
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .map_err(|_| unavailable(&"timed out"))?
                .ok_or_else(|| unavailable(&"the listing's subscription ended"))?;
            let msg = jetstream::Message { message: msg, context: self.shared.js.clone() };
            pending = msg.info().map(|i| i.pending).unwrap_or(0);
            let deleted = header(msg.headers.as_ref(), OPERATION_HEADER).is_some();
            let expires =
                header(msg.headers.as_ref(), EXPIRES_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
            if !deleted
                && !expired(expires)
                && let Some(key) = msg.subject.strip_prefix(self.prefix.as_str()).and_then(decode_key)
            {
                keys.push(key);
            }
        }
        // The consumer goes by itself once no one listens (workers may
        // not delete consumers).
        let _ = sub.unsubscribe().await;
        keys.retain(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a));
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }
}

fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers?.get(name).map(|v| v.as_str().to_string())
}

fn js_bucket(bucket: &str) -> String {
    format!("tern_{bucket}")
}

/// A key as a subject suffix: as it is when NATS takes it and it cannot be
/// mistaken for an encoded one, else `_` and hex.
fn encode_key(key: &str) -> String {
    let plain = !key.starts_with(['_', '.'])
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b));
    if plain { key.to_string() } else { format!("_{}", hex::encode(key)) }
}

fn decode_key(stored: &str) -> Option<String> {
    match stored.strip_prefix('_') {
        Some(h) => String::from_utf8(hex::decode(h).ok()?).ok(),
        None => Some(stored.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_subjects() {
        for key in
            ["plain", "a/b=c-d_e.f", "_leading", ".dot", "dot.", "a..b", "sp ace", "*", ">", "ünï", "a\nb"]
        {
            let stored = encode_key(key);
            assert!(
                stored.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{key:?} → {stored}"
            );
            assert_eq!(decode_key(&stored).as_deref(), Some(key));
        }
        assert_eq!(encode_key("user/1"), "user/1", "ordinary keys stay readable");
    }
}
