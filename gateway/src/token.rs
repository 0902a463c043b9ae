//! The admin bearer token: made on first start, kept in the data dir with
//! 0600 permissions, read by the CLI.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "admin-token";

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, or makes one if there is none yet.
///
/// A new token file is created with `O_EXCL` and mode 0600 from the start
/// (never a moment with a looser mode, never over a file planted there). An
/// existing one must be a regular file (not a link, say); a mode that lets
/// anyone but the owner read it is tightened, and if that fails the gateway
/// does not start.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<String> {
    let path = token_path(data_dir);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file; remove it and start again to make a new token",
                path.display()
            )));
        }
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("{} is readable by others and cannot be made 0600: {e}", path.display()),
                    )
                })?;
                tracing::warn!(path = %path.display(), "the admin token file was readable by others; it is 0600 now");
            }
            let token = std::fs::read_to_string(&path)?.trim().to_string();
            if !token.is_empty() {
                return Ok(token);
            }
            // An empty file (a crash before the write landed): start over.
            std::fs::remove_file(&path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let token = hex::encode(raw);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Compares without an early exit, so timing does not reveal a prefix.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `Authorization: Bearer <expected>`.
pub fn bearer_matches(headers: &http::HeaderMap, expected: &str) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| matches(expected, t.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_0600() {
        let dir = std::env::temp_dir().join(format!("tern-token-test-{}", std::process::id()));
        let t1 = load_or_create(&dir).unwrap();
        let t2 = load_or_create(&dir).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(token_path(&dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_loose_token_file_is_tightened_and_a_link_refused() {
        let dir = tempfile_dir("loose");
        std::fs::write(token_path(&dir), "abc\n").unwrap();
        std::fs::set_permissions(token_path(&dir), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&dir).unwrap(), "abc");
        assert_eq!(std::fs::metadata(token_path(&dir)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_file(token_path(&dir)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", token_path(&dir)).unwrap();
        assert!(load_or_create(&dir).unwrap_err().to_string().contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-token-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn comparison() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
    }
}
