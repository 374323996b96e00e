//! Which version of a projection readers use: the active version a runner reads before it
//! takes its lease and again once it holds it, and whether another layout of the projection
//! (its unsharded key, or shards of another count) already serves readers.

use super::Run;
use crate::error::{Error, Result};

impl Run {
    /// The active version of the runner's key, read again after a transient error.
    pub(super) async fn read_active(&mut self) -> Result<Option<u32>> {
        loop {
            match self.store.active_version(self.key.projection()).await {
                Ok(active) => return Ok(active),
                Err(e) if super::transient(&e) => self.retry_after("reading the active version", &e).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the runner's version is below the active one, so it must not start: a shard's
    /// runner (started by a [`crate::projection::ShardedRunner`] as the new version took over)
    /// is then simply superseded; a projection's own runner refuses with [`Error::Config`].
    pub(super) fn older_than_active(&self, active: Option<u32>) -> Result<bool> {
        match active.filter(|&a| a > self.key.version()) {
            Some(_) if self.key.shard().is_some() => Ok(true),
            Some(active) => Err(Error::Config(format!(
                "projection {} v{} is older than the active v{active}",
                self.key.projection(),
                self.key.version()
            ))),
            None => Ok(false),
        }
    }

    /// Whether a newer version became active while this runner waited for its lease (the
    /// old holder stepped down for it): it must not apply anything then, or it would write
    /// into a view the new version already dropped.
    pub(super) async fn newer_is_active(&self) -> Result<bool> {
        Ok(self
            .store
            .active_version(self.key.projection())
            .await?
            .is_some_and(|a| a > self.key.version()))
    }

    /// Whether another layout of the projection serves readers now: its unsharded key or a
    /// shard of another count with an active version. A key of a new layout is then built like
    /// a new version — from the first event, activated once caught up — instead of becoming
    /// active empty.
    pub(super) async fn other_layout_active(&self) -> Result<bool> {
        if !self.waits_beside {
            return Ok(false);
        }
        let (name, count) = (self.key.name(), self.key.shard().map(|s| s.count()));
        for key in self.store.views().await? {
            // Its own layout's other shards are no other layout.
            if key.name() != name || key.is_member() || key.shard().map(|s| s.count()) == count {
                continue;
            }
            if self.store.active_version(key.projection()).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// After the lease is taken: `Some(true)` when a newer version became active meanwhile
    /// (the lease released, the state `Superseded`: step down), `Some(false)` to go on, `None` after a store outage
    /// (the lease released and the pause waited: take it again), like any other outage.
    pub(super) async fn after_acquire(&self, lease: &crate::raw::Lease) -> Result<Option<bool>> {
        match self.newer_is_active().await {
            Ok(false) => Ok(Some(false)),
            Ok(true) => {
                tracing::info!("a newer version became active while this runner waited; stepping down");
                self.release(lease).await;
                self.set_state(super::RunnerState::Superseded);
                Ok(Some(true))
            }
            Err(e) => {
                self.release(lease).await;
                if !super::transient(&e) {
                    return Err(e);
                }
                self.retry_after("reading the active version", &e).await;
                Ok(None)
            }
        }
    }

    /// The newest older version of this key whose view was never dropped (it still has a
    /// checkpoint): left by a rebuild whose runner stopped, moved or crashed after activating
    /// and before dropping it.
    pub(super) async fn undropped_older(&self) -> Result<Option<u32>> {
        let mut older: Vec<u32> = self
            .store
            .views()
            .await?
            .into_iter()
            .filter(|k| k.projection() == self.key.projection() && k.version() < self.key.version())
            .map(|k| k.version())
            .collect();
        older.sort_unstable_by(|a, b| b.cmp(a));
        for version in older {
            if self.store.checkpoint(&self.key.at_version(version)?).await?.is_some() {
                return Ok(Some(version));
            }
        }
        Ok(None)
    }
}
