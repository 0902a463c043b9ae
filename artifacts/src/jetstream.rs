//! A cluster's artifacts: the JetStream object store `TERN_ARTIFACTS`,
//! replicated as `--js-replicas` says. An object is stored in chunks, each
//! one NATS message, so neither a put nor a get is bound by the server's
//! `max_payload`.

use crate::{ArtifactError, ArtifactStore, check};
use async_nats::jetstream::{self, object_store};
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub const BUCKET: &str = "TERN_ARTIFACTS";
/// The longest one try of a put or a get may take before it is tried
/// again. A JetStream request can go unanswered while a stream elects a
/// new leader (seen: an object-store read asked of a three-node cluster
/// just after one node died waited over 30 s), and the object store's
/// reads are an ordered consumer with no deadline of its own.
const TRY_WITHIN: Duration = Duration::from_secs(10);
/// Tries of a put or a get before its error is returned.
const TRIES: usize = 6;
/// Times a missing artifact is looked for again, 100 ms apart: with
/// replicas, a read right after another role's put may be answered by a
/// server that has not applied it yet.
const MISSES_ASKED_AGAIN: usize = 5;

pub struct JetStreamArtifacts {
    store: object_store::ObjectStore,
}

fn storage<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ArtifactError {
    move |e| ArtifactError::Storage(format!("{what}: {e}"))
}

impl JetStreamArtifacts {
    /// Opens `TERN_ARTIFACTS`, creating it (with `replicas` copies) if it
    /// is missing.
    pub async fn open(client: async_nats::Client, replicas: usize) -> Result<Self, ArtifactError> {
        let js = jetstream::new(client);
        // Roles starting together race to create it; the loser looks again.
        let mut tries = 0;
        let store = loop {
            if let Ok(s) = js.get_object_store(BUCKET).await {
                break s;
            }
            let config = object_store::Config {
                bucket: BUCKET.into(),
                description: Some("Tern: components by sha256 digest".into()),
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_object_store(config).await {
                Ok(s) => break s,
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(storage("creating the TERN_ARTIFACTS object store")(e)),
            }
        };
        Ok(JetStreamArtifacts { store })
    }
}

impl JetStreamArtifacts {
    /// One try at reading an artifact whole.
    async fn read(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        let mut object = match self.store.get(digest).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage("reading an artifact")(e)),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object.read_to_end(&mut bytes).await.map_err(storage("reading an artifact"))?;
        Ok(Some(bytes.into()))
    }
}

#[async_trait]
impl ArtifactStore for JetStreamArtifacts {
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), ArtifactError> {
        check(digest)?;
        let mut failed = None;
        for _ in 0..TRIES {
            let once = async {
                // Content-addressed: one there already is this one.
                if self.store.info(digest).await.is_ok() {
                    return Ok(());
                }
                self.store
                    .put(digest, &mut &bytes[..])
                    .await
                    .map(|_| ())
                    .map_err(storage("storing an artifact"))
            };
            match tokio::time::timeout(TRY_WITHIN, once).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(ArtifactError::Storage("storing an artifact timed out".into())),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(failed.expect("tried at least once"))
    }

    async fn get(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        check(digest)?;
        let mut failed = None;
        let mut misses = 0;
        for _ in 0..TRIES + MISSES_ASKED_AGAIN {
            match tokio::time::timeout(TRY_WITHIN, self.read(digest)).await {
                Ok(Ok(Some(bytes))) => return Ok(Some(bytes)),
                Ok(Ok(None)) if misses == MISSES_ASKED_AGAIN => return Ok(None),
                Ok(Ok(None)) => misses += 1,
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(ArtifactError::Storage("reading an artifact timed out".into())),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(failed.unwrap_or_else(|| ArtifactError::Storage("reading an artifact kept failing".into())))
    }

    async fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        check(digest)?;
        match self.store.delete(digest).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage("removing an artifact")(e)),
        }
    }
}
