//! [`KeyStore`]: where the wrapped data keys live, per subject and version, and the in-memory
//! implementation.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::event::Timestamp;

/// One wrapped data key as the key store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The subject (the person, or whatever is erased as one) the key belongs to.
    pub subject: String,
    /// The key's version (1 for the first; [`crate::crypto::Keys::rotate`] adds one).
    pub version: u32,
    /// The id of the master key that wrapped it.
    pub master_key_id: String,
    /// The wrapped key, as [`crate::crypto::MasterKey::wrap`] returned it.
    pub wrapped: Vec<u8>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The raw, backend-facing store of wrapped data keys (dyn-compatible: hold it as
/// `Arc<dyn KeyStore>`). Keys are kept per subject and version; forgetting a subject deletes
/// every version and leaves a tombstone, so the subject never gets a key again.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores `key` unless its subject already has that version; returns the key stored for
    /// that subject and version (the caller's, or the one that won a race). Two processes
    /// creating the first key of a subject at once: one wins, both get the winner.
    /// [`Error::SubjectForgotten`] for a forgotten subject (nothing stored).
    async fn create_if_absent(&self, key: StoredKey) -> Result<StoredKey>;

    /// The key of `subject` at `version`, if stored.
    async fn get(&self, subject: &str, version: u32) -> Result<Option<StoredKey>>;

    /// The subject's highest version, if it has any key.
    async fn latest(&self, subject: &str) -> Result<Option<StoredKey>>;

    /// Deletes every version of the subject's key and leaves a tombstone; returns whether it
    /// had any key. Forgetting twice is a no-op.
    async fn forget(&self, subject: &str) -> Result<bool>;

    /// Whether the subject was forgotten.
    async fn forgotten(&self, subject: &str) -> Result<bool>;
}

/// Checks a subject before it reaches a key store: not empty, no control characters, at most
/// 512 bytes.
pub fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.len() > 512 || subject.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "subject {:?} must be 1 to 512 bytes without control characters",
            subject.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// A key store in process memory (tests, single-process applications).
#[derive(Debug, Default)]
pub struct InMemoryKeyStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, BTreeMap<u32, StoredKey>>,
    tombstones: HashSet<String>,
}

impl InMemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl KeyStore for InMemoryKeyStore {
    async fn create_if_absent(&self, key: StoredKey) -> Result<StoredKey> {
        validate_subject(&key.subject)?;
        let mut inner = self.inner.lock().await;
        if inner.tombstones.contains(&key.subject) {
            return Err(Error::SubjectForgotten(key.subject));
        }
        let versions = inner.keys.entry(key.subject.clone()).or_default();
        Ok(versions.entry(key.version).or_insert(key).clone())
    }

    async fn get(&self, subject: &str, version: u32) -> Result<Option<StoredKey>> {
        let inner = self.inner.lock().await;
        Ok(inner.keys.get(subject).and_then(|v| v.get(&version)).cloned())
    }

    async fn latest(&self, subject: &str) -> Result<Option<StoredKey>> {
        let inner = self.inner.lock().await;
        Ok(inner.keys.get(subject).and_then(|v| v.values().next_back()).cloned())
    }

    async fn forget(&self, subject: &str) -> Result<bool> {
        validate_subject(subject)?;
        let mut inner = self.inner.lock().await;
        inner.tombstones.insert(subject.to_string());
        Ok(inner.keys.remove(subject).is_some_and(|v| !v.is_empty()))
    }

    async fn forgotten(&self, subject: &str) -> Result<bool> {
        Ok(self.inner.lock().await.tombstones.contains(subject))
    }
}
