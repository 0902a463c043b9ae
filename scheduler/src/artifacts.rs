//! Serving components to workers by digest, in chunks small enough for
//! one bus message each.

use bytes::Bytes;
use tern_artifacts::ArtifactStore;
use tern_bus::{Bus, Message, respond};
use tern_protocol::{ApiError, ArtifactChunk, ArtifactRequest, Frame, Reply, encode_reply};

/// Answers one chunk request on the artifact subject.
pub async fn serve(store: &dyn ArtifactStore, bus: &dyn Bus, msg: Message) {
    let reply = match serde_json::from_slice::<ArtifactRequest>(&msg.payload) {
        Ok(req) if !tern_protocol::valid_digest(&req.digest) => {
            Err(ApiError::bad_request("an artifact is asked for by its sha256 digest (64 hex characters)"))
        }
        Ok(req) => chunk_of(store, req).await,
        Err(e) => Err(ApiError::bad_request(format!("malformed artifact request: {e}"))),
    };
    let reply = match reply {
        Ok((chunk, bytes)) => Frame::new(Reply::Ok(chunk), bytes).encode(),
        Err(e) => encode_reply::<ArtifactChunk>(&Err(e)),
    };
    let _ = respond(bus, &msg, reply).await;
}

async fn chunk_of(
    store: &dyn ArtifactStore,
    req: ArtifactRequest,
) -> Result<(ArtifactChunk, Bytes), ApiError> {
    let bytes = store
        .get(&req.digest)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no artifact {}", req.digest)))?;
    Ok(slice(&bytes, req.offset, req.max_len))
}

/// The part of `bytes` a request asks for; past the end is empty, never
/// a panic.
fn slice(bytes: &[u8], offset: u64, max_len: u64) -> (ArtifactChunk, Bytes) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    let len = usize::try_from(max_len).unwrap_or(usize::MAX);
    let end = start.saturating_add(len).min(bytes.len());
    (ArtifactChunk { total: bytes.len() as u64 }, Bytes::copy_from_slice(&bytes[start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_inside_the_artifact() {
        let bytes: Vec<u8> = (0..10).collect();
        let (c, b) = slice(&bytes, 4, 3);
        assert_eq!((c.total, &b[..]), (10, &[4u8, 5, 6][..]));
        assert_eq!(&slice(&bytes, 8, 100).1[..], &[8u8, 9][..]);
        assert!(slice(&bytes, 50, 5).1.is_empty());
        assert!(slice(&bytes, u64::MAX, u64::MAX).1.is_empty());
    }
}
