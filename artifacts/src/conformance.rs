//! What every [`ArtifactStore`] does; run against each implementation
//! (sled in a unit test, JetStream on a real nats-server in `tests/`).

use crate::{ArtifactError, ArtifactStore};
use bytes::Bytes;

/// A digest-shaped name for test `n`.
pub fn digest(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

pub async fn run(store: &dyn ArtifactStore) {
    let (a, b) = (digest(1), digest(2));
    assert_eq!(store.get(&a).await.unwrap(), None, "nothing kept yet");

    // Larger than a NATS message: a store must not be bound by one.
    let big: Bytes = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    store.put(&a, big.clone()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), Some(big.clone()), "read back whole");
    store.put(&a, big.clone()).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), Some(big.clone()), "a second put is a no-op");

    store.put(&b, Bytes::from_static(b"small")).await.unwrap();
    store.put(&digest(3), Bytes::new()).await.unwrap();
    assert_eq!(store.get(&digest(3)).await.unwrap(), Some(Bytes::new()), "an empty one is kept too");

    store.remove(&a).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), None, "removed");
    assert_eq!(store.get(&b).await.unwrap().as_deref(), Some(&b"small"[..]), "the others stay");
    store.remove(&a).await.unwrap();

    for bad in ["", "../etc/passwd", "A".repeat(64).as_str(), &"0".repeat(63), "tern.v1.>"] {
        assert!(
            matches!(store.get(bad).await, Err(ArtifactError::BadDigest(_))),
            "{bad:?} is refused as a name"
        );
        assert!(matches!(store.put(bad, Bytes::new()).await, Err(ArtifactError::BadDigest(_))));
    }
}
