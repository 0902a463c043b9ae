//! Secrets at rest: each value sealed with AES-256-GCM under a key kept in
//! the scheduler's data dir (`secret-key`, mode 0600, made on first start),
//! bound to its name (a sealed value moved under another name does not
//! open). The registry holds only the sealed bytes, so a copy of the
//! registry alone reveals nothing.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const KEY_FILE: &str = "secret-key";
const KEY_LEN: usize = 32;
/// Format of a sealed value: this byte, the nonce, the ciphertext and tag.
const FORMAT: u8 = 1;

pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// Reads the key from `dir`, or makes one there.
    pub(crate) fn open_or_create(dir: &Path) -> std::io::Result<Sealer> {
        let path = dir.join(KEY_FILE);
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                rng.fill(&mut key).map_err(|_| std::io::Error::other("no randomness for the secret key"))?;
                std::fs::create_dir_all(dir)?;
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
                f.write_all(&key)?;
                f.sync_all()?;
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        if bytes.len() != KEY_LEN {
            return Err(std::io::Error::other(format!(
                "{} is {} bytes, not a {KEY_LEN} byte key; restore it from a backup (secrets sealed with another key cannot be read)",
                path.display(),
                bytes.len()
            )));
        }
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| std::io::Error::other("bad secret key"))?;
        Ok(Sealer { key: LessSafeKey::new(key), rng })
    }

    pub(crate) fn seal(&self, name: &str, value: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("sealing a value of bounded size");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The value sealed under `name`; an error (never the bytes) if it was
    /// sealed with another key, for another name, or changed.
    pub(crate) fn open(&self, name: &str, sealed: &[u8]) -> Result<String, String> {
        let broken =
            || format!("secret {name:?} cannot be unsealed (a different secret-key, or a damaged registry)");
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT {
            return Err(broken());
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| broken())?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf).map_err(|_| broken())?;
        String::from_utf8(plain.to_vec()).map_err(|_| broken())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seals_opens_and_keeps_its_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::open_or_create(dir.path()).unwrap();
        let sealed = s.seal("db-password", "hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "no plaintext in the sealed bytes");
        assert_eq!(s.open("db-password", &sealed).unwrap(), "hunter2");
        assert!(s.open("other-name", &sealed).is_err(), "bound to its name");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key after a restart; another key cannot open it.
        let again = Sealer::open_or_create(dir.path()).unwrap();
        assert_eq!(again.open("db-password", &sealed).unwrap(), "hunter2");
        let other = Sealer::open_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let e = other.open("db-password", &sealed).unwrap_err();
        assert!(!e.contains("hunter2"));
    }
}
