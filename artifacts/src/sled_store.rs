//! `tern up`'s artifacts: a tree of the registry's sled database, so a
//! component and the versions that name it are in one place on disk.

use crate::{ArtifactError, ArtifactStore, check};
use async_trait::async_trait;
use bytes::Bytes;

pub struct SledArtifacts {
    tree: sled::Tree,
}

impl SledArtifacts {
    pub fn new(tree: sled::Tree) -> Self {
        SledArtifacts { tree }
    }
}

fn storage(e: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Storage(e.to_string())
}

#[async_trait]
impl ArtifactStore for SledArtifacts {
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), ArtifactError> {
        check(digest)?;
        let tree = self.tree.clone();
        let key = digest.to_string();
        // A write of megabytes, and the flush that makes it durable, stay
        // off the async threads.
        tokio::task::spawn_blocking(move || {
            if !tree.contains_key(&key)? {
                tree.insert(key.as_bytes(), &bytes[..])?;
                tree.flush()?;
            }
            Ok::<_, sled::Error>(())
        })
        .await
        .map_err(storage)?
        .map_err(storage)
    }

    async fn get(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError> {
        check(digest)?;
        let tree = self.tree.clone();
        let key = digest.to_string();
        let found = tokio::task::spawn_blocking(move || tree.get(key.as_bytes()))
            .await
            .map_err(storage)?
            .map_err(storage)?;
        Ok(found.map(|v| Bytes::copy_from_slice(&v)))
    }

    async fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        check(digest)?;
        let tree = self.tree.clone();
        let key = digest.to_string();
        tokio::task::spawn_blocking(move || tree.remove(key.as_bytes()).map(|_| ()))
            .await
            .map_err(storage)?
            .map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_passes_the_artifact_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        crate::conformance::run(&SledArtifacts::new(db.open_tree("artifacts").unwrap())).await;
    }
}
