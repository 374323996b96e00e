//! Broken key stores: the encryption cases must catch each.

use cqrsx_core::crypto::{InMemoryKeyStore, KeyStore, StoredKey};
use cqrsx_core::{async_trait, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyFault {
    /// `forget` leaves a tombstone but keeps every key readable.
    ForgetKeepsKeys,
    /// `get` answers the latest version whatever version is asked.
    GetIgnoresVersion,
}

pub struct BrokenKeys {
    pub inner: InMemoryKeyStore,
    pub fault: KeyFault,
    pub kept: tokio::sync::Mutex<Vec<StoredKey>>,
}

#[async_trait]
impl KeyStore for BrokenKeys {
    async fn create_if_absent(&self, key: StoredKey) -> Result<StoredKey> {
        self.inner.create_if_absent(key).await
    }

    async fn get(&self, subject: &str, version: u32) -> Result<Option<StoredKey>> {
        if self.fault == KeyFault::ForgetKeepsKeys {
            let kept = self.kept.lock().await;
            if let Some(key) = kept.iter().find(|k| k.subject == subject && k.version == version) {
                return Ok(Some(key.clone()));
            }
        }
        match self.fault {
            KeyFault::GetIgnoresVersion => self.inner.latest(subject).await,
            KeyFault::ForgetKeepsKeys => self.inner.get(subject, version).await,
        }
    }

    async fn latest(&self, subject: &str) -> Result<Option<StoredKey>> {
        self.inner.latest(subject).await
    }

    async fn forget(&self, subject: &str) -> Result<bool> {
        if self.fault == KeyFault::ForgetKeepsKeys {
            let mut version = 1;
            while let Some(key) = self.inner.get(subject, version).await? {
                self.kept.lock().await.push(key);
                version += 1;
            }
        }
        self.inner.forget(subject).await
    }

    async fn forgotten(&self, subject: &str) -> Result<bool> {
        self.inner.forgotten(subject).await
    }
}
