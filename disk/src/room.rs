//! Room on the disk a store writes to. sled does not recover well from a
//! full disk (a write that fails there can stay visible, and the store can
//! stop answering), so Tern's stores refuse a write up front while the
//! disk is nearly full: the client is told "not stored", nothing changes,
//! and reads go on.

use std::path::Path;

/// Free space kept in reserve on a store's disk, beyond the write itself.
pub const RESERVE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the disk under {path} has {free} bytes free, less than the {need} this write needs with its reserve; nothing was changed"
)]
pub struct DiskFull {
    pub path: String,
    pub free: u64,
    pub need: u64,
}

/// Bytes free to this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid buffer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Ok if `bytes` fit under `path` with [`RESERVE_BYTES`] to spare (or the
/// free space cannot be read: the write then fails, or not, on its own).
pub fn ensure_room(path: &Path, bytes: u64) -> Result<(), DiskFull> {
    let need = bytes.saturating_add(RESERVE_BYTES);
    match free_bytes(path) {
        Some(free) if free < need => Err(DiskFull { path: path.display().to_string(), free, need }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_checked() {
        let dir = std::env::temp_dir();
        assert!(free_bytes(&dir).is_some_and(|f| f > 0));
        assert!(ensure_room(&dir, 0).is_ok() || free_bytes(&dir).unwrap() < RESERVE_BYTES);
        let e = ensure_room(&dir, u64::MAX / 2).unwrap_err();
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    }
}
