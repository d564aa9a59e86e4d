//! Secret material: random bytes, the key master, the session signing
//! keys, and sealing the clusters' admin credentials for storage.

use std::path::Path;

use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator does not fail on Linux once booted; a failure here
    // would make every key predictable, so it is fatal.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    b
}

/// Random bytes as lowercase hex.
pub fn random_hex<const N: usize>() -> String {
    random_bytes::<N>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a secret file (content without surrounding whitespace).
pub fn read_secret(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    Ok(raw.trim().as_bytes().to_vec())
}

/// Reads a secret file, or creates it (mode 600) with fresh random content.
pub fn read_or_create_secret(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                f.write_all(format!("{}\n", random_hex::<32>()).as_bytes())?;
                tracing::info!(path = %path.display(), "generated a new {what}");
            }
            // Another replica made it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    read_secret(what, path)
}

/// The key master: API key secrets derive from it.
#[derive(Clone)]
pub struct KeyMaster(Vec<u8>);

impl std::fmt::Debug for KeyMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaster(..)")
    }
}

impl KeyMaster {
    /// Loads it from a file.
    pub fn load(path: &Path) -> anyhow::Result<KeyMaster> {
        let m = read_secret("key master", path)?;
        if m.len() < dyno_core::apikey::MIN_MASTER_BYTES {
            bail!(
                "the key master in {} must be at least {} bytes",
                path.display(),
                dyno_core::apikey::MIN_MASTER_BYTES
            );
        }
        Ok(KeyMaster(m))
    }

    /// A key master from bytes (tests).
    pub fn from_bytes(b: Vec<u8>) -> KeyMaster {
        KeyMaster(b)
    }

    /// The secret of API key `id`.
    pub fn key_secret(&self, id: &str) -> String {
        dyno_core::apikey::derive_secret(&self.0, id)
    }

    fn sealing_key(&self) -> Key {
        // HMAC accepts any key length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"dyno-cluster-credential-v1");
        let bytes = mac.finalize().into_bytes();
        *Key::from_slice(&bytes)
    }

    /// Seals a cluster credential for storage: nonce || ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let cipher = ChaCha20Poly1305::new(&self.sealing_key());
        let nonce_bytes = random_bytes::<12>();
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext)
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok([nonce_bytes.as_slice(), &ct].concat())
    }

    /// Opens a sealed credential.
    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 12 {
            bail!("a sealed credential is too short");
        }
        let (nonce, ct) = sealed.split_at(12);
        ChaCha20Poly1305::new(&self.sealing_key())
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| anyhow::anyhow!("the credential does not open with this key master"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_their_master() {
        let m = KeyMaster::from_bytes(vec![1; 32]);
        let sealed = m.seal(b"admin-token").expect("seal");
        assert!(!sealed.windows(11).any(|w| w == b"admin-token"));
        assert_eq!(m.open(&sealed).expect("open"), b"admin-token");
        assert!(KeyMaster::from_bytes(vec![2; 32]).open(&sealed).is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(m.open(&tampered).is_err());
    }
}
