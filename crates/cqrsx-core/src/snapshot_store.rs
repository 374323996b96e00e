//! The [`SnapshotStore`] trait (bytes in, bytes out) and the [`SnapshotStrategy`] through which
//! a [`crate::Repository`] restores and takes snapshots without knowing how.

use std::time::Duration;

use async_trait::async_trait;

use crate::aggregate::{Aggregate, AggregateRoot};
use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::event_store::validate_number;
use crate::stream::StreamId;

/// One stored snapshot of an aggregate's state.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream version the state includes.
    pub version: u64,
    /// How `payload` is encoded, e.g. `application/msgpack+zstd`.
    pub content_type: String,
    /// The state's schema version; a snapshot of another schema is ignored.
    pub schema_version: u32,
    /// The encoded state.
    pub payload: Vec<u8>,
    /// When it was taken.
    pub created_at: Timestamp,
}

/// A snapshot's description, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The stream version the state includes.
    pub version: u64,
    /// How the payload is encoded.
    pub content_type: String,
    /// The state's schema version.
    pub schema_version: u32,
    /// Payload size in bytes.
    pub size: u64,
    /// When it was taken.
    pub created_at: Timestamp,
}

impl SnapshotInfo {
    /// The description of a record.
    pub fn of(record: &SnapshotRecord) -> Self {
        Self {
            version: record.version,
            content_type: record.content_type.clone(),
            schema_version: record.schema_version,
            size: record.payload.len() as u64,
            created_at: record.created_at,
        }
    }
}

/// Stores snapshots, several per stream, keyed by version.
///
/// Saving a version that is already stored replaces it; saving an older version never hides a
/// newer one: [`SnapshotStore::latest`] returns the highest version.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Stores a snapshot.
    async fn save(&self, snapshot: SnapshotRecord) -> Result<()>;

    /// The snapshot with the highest version ≤ `max_version` (any version when `None`).
    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>>;

    /// Every snapshot of the stream, newest first.
    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>>;

    /// Deletes all but the newest `keep` snapshots; returns how many were deleted.
    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64>;

    /// Deletes every snapshot of the stream; returns how many were deleted.
    async fn delete_all(&self, stream: &StreamId) -> Result<u64>;
}

/// Checks a snapshot before it is stored.
pub fn validate_snapshot(snapshot: &SnapshotRecord, max_bytes: usize) -> Result<()> {
    if snapshot.version == 0 {
        return Err(Error::InvalidInput("a snapshot needs a version of at least 1".into()));
    }
    validate_number("snapshot version", snapshot.version)?;
    validate_number("snapshot created-at (ms)", snapshot.created_at.as_millis())?;
    if snapshot.content_type.is_empty() {
        return Err(Error::InvalidInput("a snapshot needs a content type".into()));
    }
    if snapshot.payload.len() > max_bytes {
        return Err(Error::InvalidInput(format!(
            "snapshot of {} bytes is over the limit of {max_bytes}",
            snapshot.payload.len()
        )));
    }
    Ok(())
}

/// A state restored from a snapshot.
#[derive(Debug)]
pub struct Restored<A> {
    /// The state.
    pub state: A,
    /// The stream version the state includes.
    pub version: u64,
}

/// How a load went: where the state came from and how much was replayed (what
/// [`crate::Repository::load_with_info`] returns and [`SnapshotStrategy::loaded`] is told).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadInfo {
    /// The snapshot version the load started from, if one was used.
    pub snapshot_version: Option<u64>,
    /// Events replayed on top of the snapshot (or from the start).
    pub events_replayed: u64,
    /// Why a snapshot that existed was not used, when that happened.
    pub fallback: Option<String>,
    /// Wall time of the load.
    pub elapsed: Duration,
}

/// How a [`crate::Repository`] restores and takes snapshots. `cqrsx-snapshot`'s
/// `SnapshotManager` is the full implementation; the repository needs only this.
#[async_trait]
pub trait SnapshotStrategy<A: Aggregate>: Send + Sync {
    /// The newest usable snapshot, `Ok(None)` when there is none, `Err` when one exists but
    /// cannot be used (the repository then replays all events and reports it).
    async fn restore(&self, stream: &StreamId) -> Result<Option<Restored<A>>>;

    /// Told that the repository replayed because the restored snapshot could not be used.
    fn fallback(&self, _stream: &StreamId, _reason: &Error) {}

    /// Told how a load went (snapshot used, events replayed, wall time), so that a strategy
    /// can adapt to measured replay cost.
    fn loaded(&self, _stream: &StreamId, _info: &LoadInfo) {}

    /// Called after a successful save of `committed` events; takes a snapshot if its policy
    /// says so and returns whether it did. Errors are logged by the repository and never fail
    /// the save: the events are already stored.
    async fn after_save(&self, root: &AggregateRoot<A>, committed: u64) -> Result<bool>;
}
