//! [`InMemorySnapshotStore`]: snapshots per stream, ordered by version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::checked::SnapshotBackend;
use crate::error::{Error, Result};
use crate::snapshot_store::{SnapshotInfo, SnapshotRecord};
use crate::stream::StreamId;

/// A snapshot store in process memory. Clones share the same data.
#[derive(Clone, Default)]
pub struct InMemorySnapshotStore {
    streams: Arc<RwLock<HashMap<String, BTreeMap<u64, SnapshotRecord>>>>,
}

impl std::fmt::Debug for InMemorySnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemorySnapshotStore").finish_non_exhaustive()
    }
}

/// Largest snapshot the in-memory store accepts (the same as MongoDB's document limit).
const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

fn poisoned() -> Error {
    Error::backend(false, "in-memory snapshot store lock poisoned")
}

impl InMemorySnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SnapshotBackend for InMemorySnapshotStore {
    fn max_snapshot_bytes(&self) -> usize {
        MAX_SNAPSHOT_BYTES
    }

    async fn save(&self, snapshot: SnapshotRecord) -> Result<()> {
        let mut streams = self.streams.write().map_err(|_| poisoned())?;
        streams
            .entry(snapshot.stream.key().to_owned())
            .or_default()
            .insert(snapshot.version, snapshot);
        Ok(())
    }

    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>> {
        let streams = self.streams.read().map_err(|_| poisoned())?;
        Ok(streams
            .get(stream.key())
            .and_then(|s| s.range(..=max_version.unwrap_or(u64::MAX)).next_back())
            .map(|(_, r)| r.clone()))
    }

    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        let streams = self.streams.read().map_err(|_| poisoned())?;
        Ok(streams
            .get(stream.key())
            .map(|s| s.values().rev().map(SnapshotInfo::of).collect())
            .unwrap_or_default())
    }

    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let mut streams = self.streams.write().map_err(|_| poisoned())?;
        let Some(s) = streams.get_mut(stream.key()) else {
            return Ok(0);
        };
        let excess = s.len().saturating_sub(keep);
        let doomed: Vec<u64> = s.keys().take(excess).copied().collect();
        for v in &doomed {
            s.remove(v);
        }
        Ok(doomed.len() as u64)
    }

    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        let mut streams = self.streams.write().map_err(|_| poisoned())?;
        Ok(streams.remove(stream.key()).map_or(0, |s| s.len() as u64))
    }
}
