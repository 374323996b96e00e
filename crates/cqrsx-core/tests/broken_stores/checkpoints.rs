//! A projection store that breaks one of its contract items, around the in-memory one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrsx_core::memory::InMemoryProjectionStore;
use cqrsx_core::projection::{LeaseHolder, ParkedEvent, ReplayRequests, ViewKey};
use cqrsx_core::raw::{Commit, Lease};
use cqrsx_core::testkit::Fixture;
use cqrsx_core::{async_trait, Checkpoint, ProjectionStore, ReadStore, Result};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CheckpointFault {
    /// Writes the checkpoint first and the view documents after a pause: a crash in between
    /// leaves the checkpoint ahead of the view.
    CheckpointBeforeView,
    /// Grants a lease to anyone and never fences.
    NoFencing,
    /// Parks nothing.
    ForgetsParked,
    /// Every version of a projection writes to the same view.
    VersionsShareOneView,
    /// Commits writes without checking them.
    AcceptsBadWrites,
    /// Reads the one document every event changes as missing (a guard that loses what other
    /// streams wrote to a shared document): each runner session starts it over from nothing.
    LosesSharedUpdates,
    /// Fences by token alone: the holder's token under any owner is the holder.
    TrustsTokens,
    /// Drops a view but leaves its lease working: the holder from before the drop writes on.
    DropDoesNotFence,
    /// Records any replay as the last one handled, moving the mark back.
    HandledMovesBack,
    /// Names the last holder of a lease after it was released.
    HolderOutlivesRelease,
}

struct BrokenCheckpoints {
    inner: InMemoryProjectionStore,
    fault: CheckpointFault,
    /// The last lease given per view.
    given: Mutex<HashMap<ViewKey, Lease>>,
    /// Leases that stand for others: (view, token) -> the lease used in its place.
    standing_in: Mutex<HashMap<(ViewKey, u64), Lease>>,
    /// Replay requests kept here for [`CheckpointFault::HandledMovesBack`].
    replays: Mutex<HashMap<ViewKey, ReplayRequests>>,
}

impl BrokenCheckpoints {
    fn key(&self, key: &ViewKey) -> ViewKey {
        match self.fault {
            CheckpointFault::VersionsShareOneView => key.at_version(1).expect("key"),
            _ => key.clone(),
        }
    }

    fn lease(&self, lease: &Lease) -> Lease {
        let mut lease = Lease {
            key: self.key(&lease.key),
            ..lease.clone()
        };
        if let Some(instead) = self
            .standing_in
            .lock()
            .expect("lock")
            .get(&(lease.key.clone(), lease.token))
        {
            return instead.clone();
        }
        if self.fault == CheckpointFault::TrustsTokens {
            if let Some(given) = self.given.lock().expect("lock").get(&lease.key) {
                if given.token == lease.token {
                    lease.owner = given.owner.clone();
                }
            }
        }
        lease
    }
}

#[async_trait]
impl ProjectionStore for BrokenCheckpoints {
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        if self.fault == CheckpointFault::NoFencing {
            return Ok(Some(Lease {
                key: key.clone(),
                owner: owner.to_string(),
                token: 1,
            }));
        }
        let lease = self.inner.acquire(&self.key(key), owner, ttl).await?;
        if let Some(lease) = &lease {
            self.given
                .lock()
                .expect("lock")
                .insert(lease.key.clone(), lease.clone());
        }
        Ok(lease.map(|l| Lease { key: key.clone(), ..l }))
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        if self.fault == CheckpointFault::NoFencing {
            return Ok(());
        }
        self.inner.renew(&self.lease(lease), ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(&self.lease(lease)).await
    }
    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        self.inner.checkpoint(key).await
    }
    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>> {
        if self.fault == CheckpointFault::LosesSharedUpdates && id == "total" {
            return Ok(None);
        }
        self.inner.get(&self.key(key), id).await
    }
    async fn commit(&self, lease: &Lease, mut commit: Commit) -> Result<()> {
        match self.fault {
            CheckpointFault::NoFencing => {
                let held = self
                    .inner
                    .acquire(&lease.key, &lease.owner, Duration::from_secs(60))
                    .await?
                    .expect("lease");
                self.inner.commit(&held, commit).await
            }
            CheckpointFault::CheckpointBeforeView => {
                let checkpoint = commit.checkpoint.take();
                self.inner
                    .commit(
                        lease,
                        Commit {
                            checkpoint,
                            ..Commit::default()
                        },
                    )
                    .await?;
                tokio::time::sleep(Duration::from_millis(3)).await;
                self.inner.commit(lease, commit).await
            }
            CheckpointFault::ForgetsParked => {
                commit.parked.clear();
                self.inner.commit(lease, commit).await
            }
            CheckpointFault::AcceptsBadWrites => {
                commit.writes.retain(|w| !w.id.is_empty());
                self.inner.commit(lease, commit).await
            }
            CheckpointFault::LosesSharedUpdates
            | CheckpointFault::TrustsTokens
            | CheckpointFault::DropDoesNotFence
            | CheckpointFault::HandledMovesBack
            | CheckpointFault::HolderOutlivesRelease => self.inner.commit(&self.lease(lease), commit).await,
            CheckpointFault::VersionsShareOneView => {
                // Documents go to version 1's view; the checkpoint stays per version.
                let checkpoint = commit.checkpoint.take();
                self.inner.commit(&self.lease(lease), commit).await?;
                if checkpoint.is_some() {
                    let own = self
                        .inner
                        .acquire(&lease.key, &lease.owner, Duration::from_secs(60))
                        .await?;
                    if let Some(own) = own {
                        self.inner
                            .commit(
                                &own,
                                Commit {
                                    checkpoint,
                                    ..Commit::default()
                                },
                            )
                            .await?;
                    }
                }
                Ok(())
            }
        }
    }
    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        self.inner.parked(key).await
    }
    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        self.inner.active_version(projection).await
    }
    async fn activate(&self, lease: &Lease) -> Result<()> {
        if self.fault == CheckpointFault::VersionsShareOneView {
            let own = self
                .inner
                .acquire(&lease.key, &lease.owner, Duration::from_secs(60))
                .await?;
            if let Some(own) = own {
                return self.inner.activate(&own).await;
            }
        }
        self.inner.activate(&self.lease(lease)).await
    }
    async fn views(&self) -> Result<Vec<ViewKey>> {
        self.inner.views().await
    }
    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        let holder = self.inner.holder(key).await?;
        if holder.is_none() && self.fault == CheckpointFault::HolderOutlivesRelease {
            let given = self.given.lock().expect("lock").get(key).cloned();
            return Ok(given.map(|l| LeaseHolder {
                owner: l.owner,
                token: l.token,
                expires_in: Duration::from_secs(1),
            }));
        }
        Ok(holder)
    }
    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        if self.fault == CheckpointFault::HandledMovesBack {
            let mut replays = self.replays.lock().expect("lock");
            let r = replays.entry(key.clone()).or_default();
            r.requested += 1;
            return Ok(r.requested);
        }
        self.inner.request_replay(key).await
    }
    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        if self.fault == CheckpointFault::HandledMovesBack {
            return Ok(self.replays.lock().expect("lock").get(key).copied().unwrap_or_default());
        }
        self.inner.replay_requests(key).await
    }
    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        if self.fault == CheckpointFault::HandledMovesBack {
            let mut replays = self.replays.lock().expect("lock");
            let r = replays.entry(key.clone()).or_default();
            (r.handled, r.replayed) = (upto, replayed);
            return Ok(());
        }
        self.inner.replay_handled(key, upto, replayed).await
    }
    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        self.inner.drop_view(key).await?;
        if self.fault == CheckpointFault::DropDoesNotFence {
            let given = self.given.lock().expect("lock").get(key).cloned();
            if let Some(old) = given {
                if let Some(new) = self.inner.acquire(key, &old.owner, Duration::from_secs(60)).await? {
                    self.standing_in
                        .lock()
                        .expect("lock")
                        .insert((key.clone(), old.token), new);
                }
            }
        }
        Ok(())
    }
    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        self.inner.view(&self.key(key))
    }
}

pub fn broken_checkpoints(fault: CheckpointFault) -> Fixture {
    let f = Fixture::in_memory();
    Fixture::new(
        f.events,
        f.snapshots,
        f.reads,
        Arc::new(BrokenCheckpoints {
            inner: InMemoryProjectionStore::new(),
            fault,
            given: Mutex::default(),
            standing_in: Mutex::default(),
            replays: Mutex::default(),
        }),
    )
}
