//! [`EncryptedProjectionStore`]: the views of the projections marked personal, sealed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::projection::store::{
    Commit, Lease, LeaseHolder, ParkedEvent, ProjectionStore, ReplayRequests, ViewChange, ViewKey,
};
use crate::read_store::ReadStore;

use super::keys::Keys;
use super::policy::DocumentPolicy;
use super::read_store::{open_document, seal_document, EncryptedReadStore};

/// A projection store that seals the view documents of the projections given a
/// [`DocumentPolicy`] (every version and shard of each), in [`ProjectionStore::commit`], and
/// opens them in [`ProjectionStore::get`] and in the read stores [`ProjectionStore::view`] and
/// [`ProjectionStore::active_view`] return. Other projections pass through.
///
/// A view written while its subject is forgotten holds the erased values (no ciphertext), so a
/// projection rebuilt after a forget — replaying the erased events — holds no personal data.
pub struct EncryptedProjectionStore {
    inner: Arc<dyn ProjectionStore>,
    keys: Arc<Keys>,
    policies: HashMap<String, Arc<DocumentPolicy>>,
}

impl EncryptedProjectionStore {
    /// Wraps `inner`; no projection is protected yet.
    pub fn new(inner: Arc<dyn ProjectionStore>, keys: Arc<Keys>) -> Self {
        Self {
            inner,
            keys,
            policies: HashMap::new(),
        }
    }

    /// Marks the projection named `projection` personal: its documents are sealed as `policy`
    /// says.
    pub fn protect(mut self, projection: impl Into<String>, policy: DocumentPolicy) -> Self {
        self.policies.insert(projection.into(), Arc::new(policy));
        self
    }

    fn policy(&self, key: &ViewKey) -> Option<&Arc<DocumentPolicy>> {
        self.policies.get(key.projection())
    }

    fn scope(key: &ViewKey) -> String {
        format!("projection:{}", key.projection())
    }
}

#[async_trait]
impl ProjectionStore for EncryptedProjectionStore {
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.acquire(key, owner, ttl).await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        self.inner.renew(lease, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        self.inner.checkpoint(key).await
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>> {
        let found = self.inner.get(key, id).await?;
        match (found, self.policy(key)) {
            (Some(data), Some(_)) => Ok(Some(open_document(&self.keys, &Self::scope(key), id, data).await?)),
            (found, _) => Ok(found),
        }
    }

    async fn commit(&self, lease: &Lease, mut commit: Commit) -> Result<()> {
        if let Some(policy) = self.policy(&lease.key) {
            let scope = Self::scope(&lease.key);
            for write in &mut commit.writes {
                if let ViewChange::Put { data, .. } = &mut write.change {
                    let plain = std::mem::take(data);
                    *data = seal_document(&self.keys, policy, &scope, &write.id, plain).await?;
                }
            }
        }
        self.inner.commit(lease, commit).await
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        self.inner.parked(key).await
    }

    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        self.inner.active_version(projection).await
    }

    async fn activate(&self, lease: &Lease) -> Result<()> {
        self.inner.activate(lease).await
    }

    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        self.inner.drop_view(key).await
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        let view = self.inner.view(key)?;
        match self.policy(key) {
            Some(policy) => Ok(Arc::new(EncryptedReadStore::shared(
                view,
                Arc::clone(&self.keys),
                Arc::clone(policy),
                Self::scope(key),
            ))),
            None => Ok(view),
        }
    }

    async fn views(&self) -> Result<Vec<ViewKey>> {
        self.inner.views().await
    }

    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        self.inner.holder(key).await
    }

    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        self.inner.request_replay(key).await
    }

    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        self.inner.replay_requests(key).await
    }

    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        self.inner.replay_handled(key, upto, replayed).await
    }
}
