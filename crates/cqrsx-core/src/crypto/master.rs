//! Master keys: what wraps and unwraps the per-subject data keys ([`MasterKey`]), and the
//! local AES-256-GCM implementation ([`LocalMasterKey`]).

use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;

use crate::error::{Error, Result};

/// Length of an AES-GCM nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// A data key in clear: 32 bytes of AES-256 key, with its expanded cipher (built once, shared
/// by every clone). Never stored; only its wrapped form is.
#[derive(Clone)]
pub struct DataKey {
    pub(crate) bytes: [u8; 32],
    cipher: Arc<Aes256Gcm>,
}

impl DataKey {
    /// A fresh random data key (the OS random source).
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(key.as_slice());
        Self::from_bytes(bytes)
    }

    /// A data key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            cipher: Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes))),
            bytes,
        }
    }

    pub(crate) fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Wraps and unwraps data keys. Async, so that a KMS or an HSM can sit behind it.
///
/// `subject` and `version` are bound to the wrapped form (AES-GCM associated data in
/// [`LocalMasterKey`]): a wrapped key copied to another subject or version does not unwrap.
#[async_trait]
pub trait MasterKey: Send + Sync {
    /// The id of this master key, stored beside every key it wraps.
    fn id(&self) -> &str;

    /// Wraps a data key of `subject` at `version`.
    async fn wrap(&self, subject: &str, version: u32, key: &DataKey) -> Result<Vec<u8>>;

    /// Unwraps what [`MasterKey::wrap`] returned. A key wrapped by another master key, or
    /// altered, is [`Error::WrongMasterKey`], never a garbage key.
    async fn unwrap(&self, subject: &str, version: u32, wrapped: &[u8]) -> Result<DataKey>;
}

/// A master key held in process memory: AES-256-GCM key wrap with a random nonce, the
/// subject, the key version and this key's id as associated data.
pub struct LocalMasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl LocalMasterKey {
    /// A master key from 32 bytes (e.g. from a secret manager) and an id naming it (stored
    /// beside every wrapped key, so that a rotation of the master key can tell which one wrapped
    /// what).
    pub fn new(key: [u8; 32], id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    fn aad(&self, subject: &str, version: u32) -> Vec<u8> {
        format!("cqrsx-wrap/1\u{0}{}\u{0}{subject}\u{0}{version}", self.id).into_bytes()
    }
}

impl std::fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MasterKey for LocalMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, subject: &str, version: u32, key: &DataKey) -> Result<Vec<u8>> {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let aad = self.aad(subject, version);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &key.bytes,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Config("AES-GCM refused to wrap a data key".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn unwrap(&self, subject: &str, version: u32, wrapped: &[u8]) -> Result<DataKey> {
        let wrong = || Error::WrongMasterKey {
            key_id: self.id.clone(),
            subject: subject.to_string(),
        };
        if wrapped.len() != NONCE_LEN + 32 + 16 {
            return Err(wrong());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let aad = self.aad(subject, version);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| wrong())?;
        let mut bytes = [0u8; 32];
        if plain.len() != 32 {
            return Err(wrong());
        }
        bytes.copy_from_slice(&plain);
        Ok(DataKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_unwraps_only_with_its_master_subject_and_version() -> Result<()> {
        let master = LocalMasterKey::new([7; 32], "m1");
        let key = DataKey::generate();
        let wrapped = master.wrap("alice", 1, &key).await?;
        assert_eq!(master.unwrap("alice", 1, &wrapped).await?.bytes, key.bytes);
        let other = LocalMasterKey::new([8; 32], "m1");
        assert!(matches!(
            other.unwrap("alice", 1, &wrapped).await,
            Err(Error::WrongMasterKey { .. })
        ));
        assert!(matches!(
            master.unwrap("bob", 1, &wrapped).await,
            Err(Error::WrongMasterKey { .. })
        ));
        assert!(matches!(
            master.unwrap("alice", 2, &wrapped).await,
            Err(Error::WrongMasterKey { .. })
        ));
        assert!(matches!(
            master.unwrap("alice", 1, &wrapped[1..]).await,
            Err(Error::WrongMasterKey { .. })
        ));
        Ok(())
    }
}
