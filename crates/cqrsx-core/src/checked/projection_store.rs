//! [`ProjectionBackend`], the unchecked half of a projection store, and the checked
//! [`ProjectionStore`] every backend gets from it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::trace::{backend, measured};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::validate_number;
use crate::projection::{validate_lease_ttl, LeaseHolder, ParkedEvent, ProjectionStore, ReplayRequests, ViewKey};
use crate::raw::{Commit, Lease, ViewChange};
use crate::read_store::{has_nested_arrays, ReadStore};
use crate::stream::validate_id;

/// What a projection-store backend implements: the [`ProjectionStore`] contract on input that
/// core has already checked. A type implementing it is a [`ProjectionStore`]; before any method
/// here runs, the checked layer has refused (with [`Error::InvalidInput`]) bad owner names and
/// document ids, lease TTLs out of range, and commits with invalid checkpoints, documents,
/// TTLs or positions — or documents of a shape the backend cannot hold
/// ([`ProjectionBackend::nested_arrays`]). Each method's contract is that of the
/// [`ProjectionStore`] method of the same name.
#[async_trait]
pub trait ProjectionBackend: Send + Sync {
    /// Whether view documents may hold arrays directly inside arrays.
    fn nested_arrays(&self) -> bool;

    /// [`ProjectionStore::acquire`].
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// [`ProjectionStore::renew`].
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()>;

    /// [`ProjectionStore::release`].
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// [`ProjectionStore::checkpoint`].
    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>>;

    /// [`ProjectionStore::get`].
    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>>;

    /// [`ProjectionStore::commit`], on a valid commit.
    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()>;

    /// [`ProjectionStore::parked`].
    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>>;

    /// [`ProjectionStore::active_version`].
    async fn active_version(&self, projection: &str) -> Result<Option<u32>>;

    /// [`ProjectionStore::activate`].
    async fn activate(&self, lease: &Lease) -> Result<()>;

    /// [`ProjectionStore::drop_view`].
    async fn drop_view(&self, key: &ViewKey) -> Result<()>;

    /// [`ProjectionStore::view`].
    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>>;

    /// [`ProjectionStore::views`].
    async fn views(&self) -> Result<Vec<ViewKey>>;

    /// [`ProjectionStore::holder`].
    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>>;

    /// [`ProjectionStore::request_replay`].
    async fn request_replay(&self, key: &ViewKey) -> Result<u64>;

    /// [`ProjectionStore::replay_requests`].
    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests>;

    /// [`ProjectionStore::replay_handled`], `upto` and `replayed` in range.
    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()>;
}

/// Checks a commit against what the backend can hold.
fn validate_commit<B: ProjectionBackend>(store: &B, commit: &Commit) -> Result<()> {
    commit.validate()?;
    if !store.nested_arrays() {
        for w in &commit.writes {
            if let ViewChange::Put { data, .. } = &w.change {
                if has_nested_arrays(data) {
                    return Err(Error::InvalidInput(format!(
                        "document {} holds an array inside an array, which this server cannot store",
                        w.id
                    )));
                }
            }
        }
    }
    Ok(())
}

#[async_trait]
impl<B: ProjectionBackend> ProjectionStore for B {
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let span = tracing::debug_span!("acquire", store = backend::<B>(), projection = %key, owner);
        measured(backend::<B>(), "acquire", span, async move {
            validate_id("lease owner", owner)?;
            validate_lease_ttl(ttl)?;
            ProjectionBackend::acquire(self, key, owner, ttl).await
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let span = tracing::debug_span!("renew", store = backend::<B>(), projection = %lease.key);
        measured(backend::<B>(), "renew", span, async move {
            validate_lease_ttl(ttl)?;
            ProjectionBackend::renew(self, lease, ttl).await
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let span = tracing::debug_span!("release", store = backend::<B>(), projection = %lease.key);
        measured(backend::<B>(), "release", span, ProjectionBackend::release(self, lease)).await
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        let span = tracing::debug_span!("checkpoint", store = backend::<B>(), projection = %key);
        measured(
            backend::<B>(),
            "checkpoint",
            span,
            ProjectionBackend::checkpoint(self, key),
        )
        .await
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>> {
        let span = tracing::debug_span!("get_view_document", store = backend::<B>(), projection = %key, id);
        measured(backend::<B>(), "get_view_document", span, async move {
            validate_id("view document id", id)?;
            ProjectionBackend::get(self, key, id).await
        })
        .await
    }

    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()> {
        let span = tracing::debug_span!(
            "commit",
            store = backend::<B>(),
            projection = %lease.key,
            writes = commit.writes.len()
        );
        measured(backend::<B>(), "commit", span, async move {
            validate_commit(self, &commit)?;
            ProjectionBackend::commit(self, lease, commit).await
        })
        .await
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        let span = tracing::debug_span!("parked", store = backend::<B>(), projection = %key);
        measured(backend::<B>(), "parked", span, ProjectionBackend::parked(self, key)).await
    }

    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        let span = tracing::debug_span!("active_version", store = backend::<B>(), projection);
        measured(
            backend::<B>(),
            "active_version",
            span,
            ProjectionBackend::active_version(self, projection),
        )
        .await
    }

    async fn activate(&self, lease: &Lease) -> Result<()> {
        let span = tracing::debug_span!("activate", store = backend::<B>(), projection = %lease.key);
        measured(
            backend::<B>(),
            "activate",
            span,
            ProjectionBackend::activate(self, lease),
        )
        .await
    }

    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        let span = tracing::debug_span!("drop_view", store = backend::<B>(), projection = %key);
        measured(
            backend::<B>(),
            "drop_view",
            span,
            ProjectionBackend::drop_view(self, key),
        )
        .await
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        ProjectionBackend::view(self, key)
    }

    async fn views(&self) -> Result<Vec<ViewKey>> {
        let span = tracing::debug_span!("views", store = backend::<B>());
        measured(backend::<B>(), "views", span, async move {
            let mut views = ProjectionBackend::views(self).await?;
            views.sort();
            views.dedup();
            Ok(views)
        })
        .await
    }

    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        let span = tracing::debug_span!("holder", store = backend::<B>(), projection = %key);
        measured(backend::<B>(), "holder", span, ProjectionBackend::holder(self, key)).await
    }

    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        let span = tracing::debug_span!("request_replay", store = backend::<B>(), projection = %key);
        measured(
            backend::<B>(),
            "request_replay",
            span,
            ProjectionBackend::request_replay(self, key),
        )
        .await
    }

    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        let span = tracing::debug_span!("replay_requests", store = backend::<B>(), projection = %key);
        measured(
            backend::<B>(),
            "replay_requests",
            span,
            ProjectionBackend::replay_requests(self, key),
        )
        .await
    }

    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        let span = tracing::debug_span!("replay_handled", store = backend::<B>(), projection = %key, upto);
        measured(backend::<B>(), "replay_handled", span, async move {
            validate_number("replay request", upto)?;
            validate_number("replayed events", replayed)?;
            ProjectionBackend::replay_handled(self, key, upto, replayed).await
        })
        .await
    }
}
