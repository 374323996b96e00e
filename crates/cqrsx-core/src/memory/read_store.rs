//! [`InMemoryReadStore`]: read models in a map, with TTL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::checked::ReadBackend;
use crate::error::{Error, Result};
use crate::read_store::{Document, Filter, Query, ReadStoreCapabilities};

struct Entry {
    data: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// A read store in process memory. Clones share the same data.
#[derive(Clone, Default)]
pub struct InMemoryReadStore {
    docs: Arc<RwLock<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for InMemoryReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryReadStore").finish_non_exhaustive()
    }
}

const CAPS: ReadStoreCapabilities = ReadStoreCapabilities {
    ttl: true,
    max_document_bytes: 16 * 1024 * 1024,
    nested_arrays: true,
};

fn poisoned() -> Error {
    Error::backend(false, "in-memory read store lock poisoned")
}

impl InMemoryReadStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a document a commit validated.
    pub(crate) fn insert(&self, id: &str, data: Value, ttl: Option<Duration>) -> Result<()> {
        let expires = ttl.map(|t| Instant::now() + t);
        self.docs
            .write()
            .map_err(|_| poisoned())?
            .insert(id.to_owned(), Entry { data, expires });
        Ok(())
    }

    /// Removes a document (a projection commit's delete).
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        self.docs.write().map_err(|_| poisoned())?.remove(id);
        Ok(())
    }

    /// Removes every document (a dropped view).
    pub(crate) fn clear(&self) -> Result<()> {
        self.docs.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    fn live_docs(&self) -> Result<Vec<Document>> {
        let now = Instant::now();
        let docs = self.docs.read().map_err(|_| poisoned())?;
        Ok(docs
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(id, e)| Document {
                id: id.clone(),
                data: e.data.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl ReadBackend for InMemoryReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        CAPS
    }

    async fn save_docs(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        let expires = ttl.map(|t| Instant::now() + t);
        let mut map = self.docs.write().map_err(|_| poisoned())?;
        for d in docs {
            map.insert(d.id, Entry { data: d.data, expires });
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Value>> {
        let docs = self.docs.read().map_err(|_| poisoned())?;
        Ok(docs.get(id).filter(|e| e.live(Instant::now())).map(|e| e.data.clone()))
    }

    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        Ok(query.apply(self.live_docs()?))
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        let query = Query::counting(filters)?;
        Ok(query.count_matching(&self.live_docs()?))
    }

    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        let now = Instant::now();
        let mut map = self.docs.write().map_err(|_| poisoned())?;
        Ok(ids
            .iter()
            .filter(|id| map.remove(id.as_str()).is_some_and(|e| e.live(now)))
            .count() as u64)
    }
}
