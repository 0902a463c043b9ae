//! The `ArtifactStore` seam: the components functions are made of, kept by
//! their sha256 digest, written once by a deploy and read by whoever
//! compiles or loads them.
//!
//! [`SledArtifacts`] is `tern up`'s: a tree of the registry's database.
//! [`JetStreamArtifacts`] is a cluster's: the object store
//! `TERN_ARTIFACTS`, which stores a component in chunks that each fit one
//! NATS message, so a gateway can hand over a component larger than the
//! server's `max_payload`, and a worker can fetch one with no scheduler up.
//! [`conformance`] is the suite both pass.
//!
//! A store keeps bytes, not judgement: the digest is the caller's to check
//! against what it reads (a store is NATS peers' input in a cluster).

use async_trait::async_trait;
use bytes::Bytes;

pub mod conformance;
mod jetstream;
mod sled_store;

pub use jetstream::JetStreamArtifacts;
pub use sled_store::SledArtifacts;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ArtifactError {
    #[error("the artifact store failed: {0}")]
    Storage(String),
    #[error("{0:?} is not a sha256 digest (64 lowercase hex characters)")]
    BadDigest(String),
}

#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Keeps `bytes` under `digest`. Putting a digest again is a no-op.
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), ArtifactError>;

    /// The bytes kept under `digest`, if any.
    async fn get(&self, digest: &str) -> Result<Option<Bytes>, ArtifactError>;

    /// Forgets `digest`; forgetting one that is not kept is no error.
    async fn remove(&self, digest: &str) -> Result<(), ArtifactError>;
}

/// The sha256 digest a component is kept under, in lowercase hex.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Digests are names in both stores (a sled key, an object name): only
/// the form a sha256 digest has is let in.
fn check(digest: &str) -> Result<(), ArtifactError> {
    let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok { Ok(()) } else { Err(ArtifactError::BadDigest(digest.chars().take(80).collect())) }
}
