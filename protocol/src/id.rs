//! Random identifiers (event ids, a worker's run, node-id suffixes).
//!
//! They must be unique, not secret, and making one must never fail: a
//! process out of file descriptors still publishes events. So the OS's
//! random source is tried first and, if it cannot be read, the bytes come
//! from std's per-process random hasher keys mixed with the time and a
//! counter. Secrets (the admin token) do not use this: they read the OS
//! source and fail loudly if they cannot.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// `N` random bytes; never fails.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut raw = [0u8; N];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw));
    if read.is_err() {
        fallback(&mut raw);
    }
    raw
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

/// `N` random bytes as lowercase hex (2·N characters).
pub fn random_hex<const N: usize>() -> String {
    random_bytes::<N>().iter().map(|b| format!("{b:02x}")).collect()
}

/// An invocation id: 16 hex digits, unique within this process (a counter
/// through a bijective mix) and random across processes (the counter
/// starts at a random point). Cheap: no system call per id.
pub fn invocation_id() -> String {
    format!("{:016x}", quick_u64())
}

/// Whether `id` has an invocation id's shape (16 lowercase hex digits):
/// one that came from elsewhere (a bus peer) is used only then.
pub fn is_invocation_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 64 random-looking bits, distinct within this process, without a system
/// call: for ids that must be unique, not unpredictable (invocation ids,
/// trace and span ids).
pub fn quick_u64() -> u64 {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    mix(NEXT.get_or_init(|| AtomicU64::new(random_u64())).fetch_add(1, Ordering::Relaxed))
}

/// splitmix64's finaliser: a bijection on u64, so distinct counters give
/// distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

fn fallback(out: &mut [u8]) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_have_their_length() {
        let (a, b) = (random_hex::<16>(), random_hex::<16>());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn invocation_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| invocation_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| is_invocation_id(i)));
        assert!(!is_invocation_id("") && !is_invocation_id("0123456789ABCDEF"));
        assert!(!is_invocation_id(&"a".repeat(4096)));
    }

    #[test]
    fn the_fallback_fills_every_byte_and_differs_per_call() {
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        fallback(&mut a);
        fallback(&mut b);
        assert_ne!(a, b);
        assert_ne!(&a[16..], &[0u8; 4]);
    }
}
