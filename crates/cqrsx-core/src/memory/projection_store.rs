//! [`InMemoryProjectionStore`]: projection checkpoints, leases, views and dead letters in
//! process memory; a commit is one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::checked::{ProjectionBackend, ReadBackend};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Position;
use crate::memory::InMemoryReadStore;
use crate::projection::{LeaseHolder, ParkedEvent, ReplayRequests, ViewKey};
use crate::raw::{Commit, Lease, ViewChange};
use crate::read_store::ReadStore;

struct Held {
    owner: String,
    token: u64,
    expires: Instant,
}

impl Held {
    /// Whether `lease` is this one: the same token given to the same owner.
    fn is(&self, lease: &Lease) -> bool {
        self.token == lease.token && self.owner == lease.owner
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<ViewKey, Held>,
    tokens: HashMap<ViewKey, u64>,
    checkpoints: HashMap<ViewKey, Checkpoint>,
    views: HashMap<ViewKey, InMemoryReadStore>,
    parked: HashMap<ViewKey, BTreeMap<Position, ParkedEvent>>,
    active: HashMap<String, u32>,
    replays: HashMap<ViewKey, ReplayRequests>,
}

impl State {
    fn view(&mut self, key: &ViewKey) -> InMemoryReadStore {
        self.views.entry(key.clone()).or_default().clone()
    }

    fn check(&self, lease: &Lease) -> Result<()> {
        match self.leases.get(&lease.key) {
            Some(held) if held.is(lease) => Ok(()),
            _ => Err(Error::LeaseLost {
                projection: lease.key.to_string(),
                token: lease.token,
                reason: "a newer lease was granted, or the view was dropped".into(),
            }),
        }
    }
}

/// Projection state in process memory. Clones share it.
///
/// A commit takes one lock: its view changes, dead letters and checkpoint land together, and a
/// runner aborted at any await point leaves either all of a commit or none of it.
#[derive(Clone, Default)]
pub struct InMemoryProjectionStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for InMemoryProjectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryProjectionStore").finish_non_exhaustive()
    }
}

impl InMemoryProjectionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a few map operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ProjectionBackend for InMemoryProjectionStore {
    fn nested_arrays(&self) -> bool {
        true
    }

    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(held) = state.leases.get(key) {
            if held.owner != owner && held.expires > now {
                return Ok(None);
            }
        }
        let token = state.tokens.get(key).copied().unwrap_or(0) + 1;
        state.tokens.insert(key.clone(), token);
        state.leases.insert(
            key.clone(),
            Held {
                owner: owner.to_string(),
                token,
                expires: now + ttl,
            },
        );
        Ok(Some(Lease {
            key: key.clone(),
            owner: owner.to_string(),
            token,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let mut state = self.lock();
        match state.leases.get_mut(&lease.key) {
            Some(held) if held.is(lease) => {
                held.expires = Instant::now() + ttl;
                Ok(())
            }
            _ => Err(Error::LeaseLost {
                projection: lease.key.to_string(),
                token: lease.token,
                reason: "a newer lease was granted, or this one was released".into(),
            }),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut state = self.lock();
        if state.leases.get(&lease.key).is_some_and(|h| h.is(lease)) {
            state.leases.remove(&lease.key);
        }
        Ok(())
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        Ok(self.lock().checkpoints.get(key).cloned())
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<serde_json::Value>> {
        let view = self.lock().view(key);
        ReadBackend::get(&view, id).await
    }

    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()> {
        let mut state = self.lock();
        state.check(lease)?;
        let view = state.view(&lease.key);
        for write in &commit.writes {
            match &write.change {
                ViewChange::Put { data, ttl } => view.insert(&write.id, data.clone(), *ttl)?,
                ViewChange::Delete => view.remove(&write.id)?,
            }
        }
        let parked = state.parked.entry(lease.key.clone()).or_default();
        for p in commit.parked {
            parked.insert(p.position, p);
        }
        for position in &commit.replayed {
            parked.remove(position);
        }
        if let Some(checkpoint) = commit.checkpoint {
            state.checkpoints.insert(lease.key.clone(), checkpoint);
        }
        Ok(())
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        Ok(self
            .lock()
            .parked
            .get(key)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        Ok(self.lock().active.get(projection).copied())
    }

    async fn activate(&self, lease: &Lease) -> Result<()> {
        let mut state = self.lock();
        state.check(lease)?;
        let active = state.active.entry(lease.key.projection().to_string()).or_insert(0);
        *active = (*active).max(lease.key.version());
        Ok(())
    }

    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        let mut state = self.lock();
        if let Some(view) = state.views.remove(key) {
            view.clear()?;
        }
        state.checkpoints.remove(key);
        state.parked.remove(key);
        // Fenced: no lease given before the drop writes again (the token counter stays, so
        // the next lease gets a larger token).
        state.leases.remove(key);
        Ok(())
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        Ok(Arc::new(self.lock().view(key)))
    }

    async fn views(&self) -> Result<Vec<ViewKey>> {
        Ok(self.lock().tokens.keys().cloned().collect())
    }

    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        let now = Instant::now();
        Ok(self.lock().leases.get(key).and_then(|held| {
            (held.expires > now).then(|| LeaseHolder {
                owner: held.owner.clone(),
                token: held.token,
                expires_in: held.expires - now,
            })
        }))
    }

    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        let mut state = self.lock();
        let requests = state.replays.entry(key.clone()).or_default();
        requests.requested += 1;
        Ok(requests.requested)
    }

    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        Ok(self.lock().replays.get(key).copied().unwrap_or_default())
    }

    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        let mut state = self.lock();
        let requests = state.replays.entry(key.clone()).or_default();
        if upto > requests.handled {
            requests.handled = upto;
            requests.replayed = replayed;
        }
        Ok(())
    }
}
