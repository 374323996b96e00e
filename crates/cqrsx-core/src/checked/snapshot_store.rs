//! [`SnapshotBackend`], the unchecked half of a snapshot store, and the checked
//! [`SnapshotStore`] every backend gets from it.

use async_trait::async_trait;

use super::trace::{backend, measured};
use crate::error::Result;
use crate::snapshot_store::{validate_snapshot, SnapshotInfo, SnapshotRecord, SnapshotStore};
use crate::stream::StreamId;

/// What a snapshot-store backend implements: the [`SnapshotStore`] contract on input that core
/// has already checked. A type implementing it is a [`SnapshotStore`]; before
/// [`SnapshotBackend::save`] runs, the checked layer has refused (with
/// [`crate::Error::InvalidInput`]) a snapshot of version 0, numbers over
/// [`crate::raw::MAX_NUMBER`], an empty content type and a payload over
/// [`SnapshotBackend::max_snapshot_bytes`].
#[async_trait]
pub trait SnapshotBackend: Send + Sync {
    /// The largest payload the backend stores, in bytes.
    fn max_snapshot_bytes(&self) -> usize;

    /// [`SnapshotStore::save`], on a valid snapshot.
    async fn save(&self, snapshot: SnapshotRecord) -> Result<()>;

    /// [`SnapshotStore::latest`].
    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>>;

    /// [`SnapshotStore::list`].
    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>>;

    /// [`SnapshotStore::prune`].
    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64>;

    /// [`SnapshotStore::delete_all`].
    async fn delete_all(&self, stream: &StreamId) -> Result<u64>;
}

#[async_trait]
impl<B: SnapshotBackend> SnapshotStore for B {
    async fn save(&self, snapshot: SnapshotRecord) -> Result<()> {
        let span = tracing::debug_span!(
            "save_snapshot",
            store = backend::<B>(),
            stream = %snapshot.stream,
            version = snapshot.version
        );
        measured(backend::<B>(), "save_snapshot", span, async move {
            validate_snapshot(&snapshot, self.max_snapshot_bytes())?;
            SnapshotBackend::save(self, snapshot).await
        })
        .await
    }

    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>> {
        let span = tracing::debug_span!("latest_snapshot", store = backend::<B>(), stream = %stream, ?max_version);
        measured(
            backend::<B>(),
            "latest_snapshot",
            span,
            SnapshotBackend::latest(self, stream, max_version),
        )
        .await
    }

    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        let span = tracing::debug_span!("list_snapshots", store = backend::<B>(), stream = %stream);
        measured(
            backend::<B>(),
            "list_snapshots",
            span,
            SnapshotBackend::list(self, stream),
        )
        .await
    }

    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let span = tracing::debug_span!("prune_snapshots", store = backend::<B>(), stream = %stream, keep);
        measured(
            backend::<B>(),
            "prune_snapshots",
            span,
            SnapshotBackend::prune(self, stream, keep),
        )
        .await
    }

    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        let span = tracing::debug_span!("delete_snapshots", store = backend::<B>(), stream = %stream);
        measured(
            backend::<B>(),
            "delete_snapshots",
            span,
            SnapshotBackend::delete_all(self, stream),
        )
        .await
    }
}
