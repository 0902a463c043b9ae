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
/// The longest a put or a get may take. The object store's reads are an
/// ordered consumer that waits on its server without a deadline of its
/// own; if that server dies mid-read, the caller gets an error to retry
/// (on another server) instead of waiting for ever.
const WITHIN: Duration = Duration::from_secs(60);
/// Times a missing artifact is looked for again, 100 ms apart.
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

#[async_trait]
impl ArtifactStore for JetStreamArtifacts {
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), ArtifactError> {
        check(digest)?;
        if self.store.info(digest).await.is_ok() {
            return Ok(());
        }
        tokio::time::timeout(WITHIN, self.store.put(digest, &mut &bytes[..]))
            .await
            .map_err(storage("storing an artifact timed out"))?
            .map_err(storage("storing an artifact"))?;
        Ok(())
    }

    async fn get(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        check(digest)?;
        let read = || async {
            let mut object = match self.store.get(digest).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(storage("reading an artifact")(e)),
            };
            let mut bytes = Vec::with_capacity(object.info().size);
            object.read_to_end(&mut bytes).await.map_err(storage("reading an artifact"))?;
            Ok(Some(bytes.into()))
        };
        // With replicas, a read right after another role's put may be
        // answered by a server that has not applied it yet: a miss is
        // asked again a few times before it counts.
        for _ in 0..MISSES_ASKED_AGAIN {
            match tokio::time::timeout(WITHIN, read())
                .await
                .map_err(storage("reading an artifact timed out"))??
            {
                Some(bytes) => return Ok(Some(bytes)),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::timeout(WITHIN, read()).await.map_err(storage("reading an artifact timed out"))?
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
