//! [`Keys`]: the data-key service — a master key, a key store and a bounded, expiring cache of
//! unwrapped keys.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::Timestamp;

use super::key_store::{validate_subject, KeyStore, StoredKey};
use super::master::{DataKey, MasterKey};

/// How long an unwrapped key stays cached by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many unwrapped keys are cached at most by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// The data-key service every encrypted store uses.
///
/// It creates a subject's first key on the first seal (racing processes agree on one: the key
/// store keeps the first), unwraps keys with the master key and caches them for a TTL.
///
/// Cache and erasure: [`Keys::forget`] deletes the subject's keys in the key store and purges
/// this process's cache at once. Other processes (other `Keys`) keep the keys they had cached
/// until their TTL passes ([`Keys::with_cache`], default 60 s): for that long they may still
/// open — and seal — the subject's data. Likewise a [`Keys::rotate`] elsewhere is picked up
/// for new seals here within one TTL; old versions keep opening.
pub struct Keys {
    master: Arc<dyn MasterKey>,
    store: Arc<dyn KeyStore>,
    ttl: Duration,
    capacity: usize,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, HashMap<u32, (DataKey, Instant)>>,
    len: usize,
    latest: HashMap<String, (u32, Instant)>,
    forgotten: HashSet<String>,
}

impl Keys {
    /// A service over a master key and a key store, with the default cache.
    pub fn new(master: Arc<dyn MasterKey>, store: Arc<dyn KeyStore>) -> Self {
        Self {
            master,
            store,
            ttl: DEFAULT_CACHE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Sets how long unwrapped keys stay cached (`Duration::ZERO`: no cache) and how many at
    /// most.
    pub fn with_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.ttl = ttl;
        self.capacity = capacity.max(1);
        self
    }

    /// The key store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, subject: &str, version: u32) -> Option<DataKey> {
        let cache = self.cache();
        let (key, at) = cache.keys.get(subject)?.get(&version)?;
        (at.elapsed() < self.ttl).then(|| key.clone())
    }

    fn remember(&self, subject: &str, version: u32, key: &DataKey, latest: bool) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache();
        if cache.len >= self.capacity {
            let ttl = self.ttl;
            for versions in cache.keys.values_mut() {
                versions.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            cache.keys.retain(|_, versions| !versions.is_empty());
            cache.latest.retain(|_, (_, at)| at.elapsed() < ttl);
            cache.len = cache.keys.values().map(HashMap::len).sum();
            if cache.len >= self.capacity {
                cache.keys.clear();
                cache.latest.clear();
                cache.len = 0;
            }
        }
        let replaced = cache
            .keys
            .entry(subject.to_string())
            .or_default()
            .insert(version, (key.clone(), now));
        if replaced.is_none() {
            cache.len += 1;
        }
        if latest {
            let newer = cache.latest.get(subject).is_none_or(|(v, _)| *v <= version);
            if newer {
                cache.latest.insert(subject.to_string(), (version, now));
            }
        }
    }

    async fn unwrap(&self, stored: &StoredKey) -> Result<DataKey> {
        if stored.master_key_id != self.master.id() {
            return Err(Error::WrongMasterKey {
                key_id: self.master.id().to_string(),
                subject: stored.subject.clone(),
            });
        }
        self.master
            .unwrap(&stored.subject, stored.version, &stored.wrapped)
            .await
    }

    async fn create(&self, subject: &str, version: u32) -> Result<StoredKey> {
        let key = DataKey::generate();
        let wrapped = self.master.wrap(subject, version, &key).await?;
        self.store
            .create_if_absent(StoredKey {
                subject: subject.to_string(),
                version,
                master_key_id: self.master.id().to_string(),
                wrapped,
                created_at: Timestamp::now(),
            })
            .await
    }

    /// The key new data of `subject` is sealed with, and its version: the latest, created
    /// (version 1) when the subject has none. [`Error::SubjectForgotten`] for a forgotten
    /// subject.
    pub async fn sealing_key(&self, subject: &str) -> Result<(u32, DataKey)> {
        validate_subject(subject)?;
        let latest = {
            let cache = self.cache();
            if cache.forgotten.contains(subject) {
                return Err(Error::SubjectForgotten(subject.to_string()));
            }
            cache
                .latest
                .get(subject)
                .filter(|(_, at)| at.elapsed() < self.ttl)
                .map(|(v, _)| *v)
        };
        if let Some(version) = latest {
            if let Some(key) = self.cached(subject, version) {
                return Ok((version, key));
            }
        }
        let stored = match self.store.latest(subject).await? {
            Some(stored) => stored,
            None => self.create(subject, 1).await?,
        };
        let key = self.unwrap(&stored).await?;
        self.remember(subject, stored.version, &key, true);
        Ok((stored.version, key))
    }

    /// The key of `subject` at `version`, to open data sealed with it; `None` when the subject
    /// was forgotten (the data reads as erased). A key that is missing although the subject
    /// was never forgotten is [`Error::Integrity`].
    pub async fn opening_key(&self, subject: &str, version: u32) -> Result<Option<DataKey>> {
        if let Some(key) = self.cached(subject, version) {
            return Ok(Some(key));
        }
        if self.cache().forgotten.contains(subject) {
            return Ok(None);
        }
        match self.store.get(subject, version).await? {
            Some(stored) => {
                let key = self.unwrap(&stored).await?;
                self.remember(subject, version, &key, false);
                Ok(Some(key))
            }
            None if self.store.forgotten(subject).await? => {
                self.mark_forgotten(subject);
                Ok(None)
            }
            None => Err(Error::Integrity(format!(
                "no data key version {version} for subject {subject:?}, which was never forgotten"
            ))),
        }
    }

    fn mark_forgotten(&self, subject: &str) {
        let mut cache = self.cache();
        if let Some(versions) = cache.keys.remove(subject) {
            cache.len -= versions.len();
        }
        cache.latest.remove(subject);
        if cache.forgotten.len() >= self.capacity {
            cache.forgotten.clear();
        }
        cache.forgotten.insert(subject.to_string());
    }

    /// Adds a new key version for `subject` and returns it: new seals use it (here at once,
    /// in other processes within their cache TTL), data sealed with older versions keeps
    /// opening. [`Error::UnknownSubject`] when the subject has no key,
    /// [`Error::SubjectForgotten`] when it was forgotten.
    pub async fn rotate(&self, subject: &str) -> Result<u32> {
        validate_subject(subject)?;
        let Some(latest) = self.store.latest(subject).await? else {
            if self.store.forgotten(subject).await? {
                return Err(Error::SubjectForgotten(subject.to_string()));
            }
            return Err(Error::UnknownSubject(subject.to_string()));
        };
        let next = latest
            .version
            .checked_add(1)
            .ok_or_else(|| Error::InvalidInput(format!("subject {subject:?} has no key version left")))?;
        let stored = self.create(subject, next).await?;
        let key = self.unwrap(&stored).await?;
        self.remember(subject, stored.version, &key, true);
        Ok(stored.version)
    }

    /// Forgets `subject` (crypto-shredding): deletes every version of its key in the key
    /// store, leaves a tombstone and purges this process's cache. Everything sealed for it
    /// reads as erased from then on (in other processes once their cache TTL has passed).
    /// [`Error::UnknownSubject`] for a subject that never had a key; forgetting twice is a
    /// no-op.
    pub async fn forget(&self, subject: &str) -> Result<()> {
        validate_subject(subject)?;
        if self.store.latest(subject).await?.is_none() && !self.store.forgotten(subject).await? {
            return Err(Error::UnknownSubject(subject.to_string()));
        }
        self.store.forget(subject).await?;
        self.mark_forgotten(subject);
        tracing::info!(subject, "subject forgotten: its data keys are deleted");
        Ok(())
    }

    /// Whether `subject` was forgotten (asks the key store).
    pub async fn is_forgotten(&self, subject: &str) -> Result<bool> {
        if self.cache().forgotten.contains(subject) {
            return Ok(true);
        }
        self.store.forgotten(subject).await
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("master", &self.master.id())
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}
