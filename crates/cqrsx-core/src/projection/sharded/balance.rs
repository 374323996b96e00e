//! The balancing task of one process of a sharded projection: holds a member slot, and every
//! check starts and stops shard runners towards the process's fair share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::ShardScope;
use super::{lock, Fault, Local};
use crate::error::Result;
use crate::event_store::EventStore;
use crate::projection::handle::{Command, ProjectionHandle};
use crate::projection::options::RunnerOptions;
use crate::projection::renewal::Renewal;
use crate::projection::runner::ProjectionRunner;
use crate::projection::status::{ProjectionStatus, RunnerState};
use crate::projection::store::{Lease, ProjectionStore, Shard, ViewKey};
use crate::projection::Projection;

/// The fair share of the member ranked `rank` (from 0) among `members` live ones, of `shards`.
pub(super) fn fair_share(shards: u16, members: u16, rank: u16) -> u16 {
    let members = members.max(1);
    shards / members + u16::from(rank < shards % members)
}

pub(super) struct Balancer {
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn ProjectionStore>,
    options: RunnerOptions,
    shards: u16,
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    fault: Fault,
    local: Arc<Mutex<Local>>,
    /// The member slot held, and its renewal.
    member: Option<(Lease, Renewal)>,
    /// Checks so far.
    check: u64,
    /// For each runner without its lease, the check that first saw it so.
    waiting: BTreeMap<u16, u64>,
    /// Shards started again after a rebuild through this handle: kept when the process gives
    /// shards up (its other processes may have given up on them, after a failure).
    rebuilt: std::collections::BTreeSet<u16>,
    /// The members counted at the first check (the `IgnoresNewMembers` fault keeps it).
    first_count: Option<u16>,
}

impl Balancer {
    pub(super) fn new(
        projection: Arc<dyn Projection>,
        events: Arc<dyn EventStore>,
        store: Arc<dyn ProjectionStore>,
        options: RunnerOptions,
        shards: u16,
        fault: Fault,
        local: Arc<Mutex<Local>>,
    ) -> Self {
        Self {
            projection,
            events,
            store,
            options,
            shards,
            fault,
            local,
            member: None,
            check: 0,
            waiting: BTreeMap::new(),
            rebuilt: std::collections::BTreeSet::new(),
            first_count: None,
        }
    }

    fn ttl(&self) -> Duration {
        self.options.lease_ttl
    }

    /// Checks every third of the lease TTL until asked to stop (or the handle is dropped),
    /// then gives everything up.
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<()> {
        let every = (self.ttl() / 3).max(Duration::from_millis(20));
        loop {
            self.check += 1;
            self.reap();
            if let Err(e) = self.balance().await {
                // The next check tries again; the runners ride store outages out themselves.
                warn!(error = %e, "could not balance the shards this check");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => break,
            }
        }
        let all: Vec<u16> = lock(&self.local).runners.keys().copied().collect();
        self.stop_runners(all).await;
        if let Some((lease, renewal)) = self.member.take() {
            drop(renewal);
            if let Err(e) = self.store.release(&lease).await {
                warn!(error = %e, "could not release the member slot; it will expire");
            }
        }
        lock(&self.local).slot = None;
        info!("stopped: every shard and the member slot released");
        Ok(())
    }

    /// Forgets runners that ended on their own; those that failed or were superseded are not
    /// started again by this process (their status says why).
    fn reap(&mut self) {
        let mut local = lock(&self.local);
        let ended: Vec<u16> = local
            .runners
            .iter()
            .filter(|(_, h)| h.last_status().ended())
            .map(|(i, _)| *i)
            .collect();
        for shard in ended {
            if let Some(handle) = local.runners.remove(&shard) {
                let status = handle.last_status();
                self.waiting.remove(&shard);
                if status.state != RunnerState::Stopped {
                    warn!(shard, state = ?status.state, error = ?status.last_error, "a shard runner ended");
                    local.ended.insert(shard, status);
                }
            }
        }
    }

    fn shard_key(&self, shard: u16) -> Result<ViewKey> {
        if self.shards == 1 {
            return ViewKey::new(self.projection.name(), self.projection.version());
        }
        ViewKey::sharded(
            self.projection.name(),
            self.projection.version(),
            Shard::new(shard, self.shards)?,
        )
    }

    fn member_key(&self, slot: u16) -> Result<ViewKey> {
        ViewKey::member(
            self.projection.name(),
            self.projection.version(),
            Shard::new(slot, self.shards)?,
        )
    }

    /// One check: the member slot, the members, the shards' holders, then runners stopped or
    /// started towards the fair share.
    async fn balance(&mut self) -> Result<()> {
        if self.shards == 1 {
            // Unsharded: every process runs a runner; one holds the lease, the others stand by.
            let running = lock(&self.local).runners.contains_key(&0) || lock(&self.local).ended.contains_key(&0);
            if !running {
                self.start(0)?;
            }
            return Ok(());
        }
        self.hold_slot().await?;
        let (share, rank, members) = self.share().await?;
        let mut holders = Vec::with_capacity(usize::from(self.shards));
        for shard in 0..self.shards {
            let holder = self.store.holder(&self.shard_key(shard)?).await?;
            // A lease under this process's own owner (left by an earlier run of it) is free to it.
            holders.push(holder.filter(|h| h.owner != self.options.owner));
        }

        // A runner that did not get its lease by the next check — the store refused it: another
        // process holds the shard — gives the shard up. One still asking (a slow store) is left
        // to finish asking.
        let runners: Vec<(u16, bool)> = lock(&self.local)
            .runners
            .iter()
            .map(|(i, h)| (*i, h.last_status().token.is_some()))
            .collect();
        let refused: Vec<u16> = lock(&self.local)
            .runners
            .iter()
            .filter(|(_, h)| h.last_status().state == RunnerState::WaitingForLease)
            .map(|(i, _)| *i)
            .collect();
        let mut stale = Vec::new();
        for &(shard, holding) in &runners {
            let since = *self.waiting.entry(shard).or_insert(self.check);
            if holding {
                self.waiting.remove(&shard);
            } else if since < self.check && refused.contains(&shard) {
                stale.push(shard);
            }
        }
        if !stale.is_empty() {
            debug!(?stale, "runners that did not get their lease");
            self.stop_runners(stale.clone()).await;
        }
        let mut mine: Vec<(u16, bool)> = runners.into_iter().filter(|(s, _)| !stale.contains(s)).collect();
        // A shard rebuilt through this handle is started again here when nobody holds it.
        let restart: Vec<u16> = std::mem::take(&mut lock(&self.local).restart).into_iter().collect();
        for shard in restart {
            lock(&self.local).ended.remove(&shard);
            if holders[usize::from(shard)].is_none() && !mine.iter().any(|(m, _)| *m == shard) {
                self.start(shard)?;
                mine.push((shard, false));
                self.rebuilt.insert(shard);
            }
        }
        let count = mine.len() as u16;
        if count > share && !self.keeps_extra() {
            // Give up the waiting ones first, then the highest shards.
            // A shard rebuilt here goes last: the others may not take it.
            let rebuilt = &self.rebuilt;
            mine.sort_by_key(|&(shard, holding)| (rebuilt.contains(&shard), holding, std::cmp::Reverse(shard)));
            let extra: Vec<u16> = mine.iter().take(usize::from(count - share)).map(|(s, _)| *s).collect();
            info!(?extra, share, "above the fair share; giving shards up");
            self.stop_runners(extra).await;
        } else if count < share {
            let ended: Vec<u16> = lock(&self.local).ended.keys().copied().collect();
            let mut free: Vec<u16> = (0..self.shards)
                .filter(|&s| holders[usize::from(s)].is_none() && !mine.iter().any(|(m, _)| *m == s))
                .filter(|s| !ended.contains(s))
                .collect();
            // Start where this member's share would lie, so that members starting together
            // reach for different shards.
            if !free.is_empty() {
                let from = usize::from(rank) * usize::from(self.shards) / usize::from(members.max(1));
                let at = free.iter().position(|&s| usize::from(s) >= from).unwrap_or(0);
                free.rotate_left(at);
            }
            let mut wanted = share - count;
            for shard in free {
                if wanted == 0 {
                    break;
                }
                // A shard whose newer version is already active is not this version's to run.
                let key = self.shard_key(shard)?;
                if self
                    .store
                    .active_version(key.projection())
                    .await?
                    .is_some_and(|a| a > key.version())
                {
                    let mut status = ProjectionStatus::starting(key);
                    status.state = RunnerState::Superseded;
                    lock(&self.local).ended.insert(shard, status);
                    continue;
                }
                self.start(shard)?;
                wanted -= 1;
            }
        }
        Ok(())
    }

    fn keeps_extra(&self) -> bool {
        #[cfg(feature = "testkit")]
        {
            self.fault == Some(super::ShardFault::KeepsExtraShards)
        }
        #[cfg(not(feature = "testkit"))]
        {
            false
        }
    }

    fn ignores_new_members(&self) -> bool {
        #[cfg(feature = "testkit")]
        {
            self.fault == Some(super::ShardFault::IgnoresNewMembers)
        }
        #[cfg(not(feature = "testkit"))]
        {
            false
        }
    }

    fn waits_beside(&self) -> bool {
        #[cfg(feature = "testkit")]
        {
            self.fault != Some(super::ShardFault::ActivatesNewLayoutAtOnce)
        }
        #[cfg(not(feature = "testkit"))]
        {
            true
        }
    }

    fn skips_foreign(&self) -> bool {
        #[cfg(feature = "testkit")]
        {
            self.fault != Some(super::ShardFault::IgnoresOwnership)
        }
        #[cfg(not(feature = "testkit"))]
        {
            true
        }
    }

    /// Keeps a member slot: the one held while its renewal holds, else the first free one.
    async fn hold_slot(&mut self) -> Result<()> {
        if self.member.as_ref().is_some_and(|(_, r)| r.lost.borrow().is_some()) {
            warn!("lost the member slot; taking one again");
            self.member = None;
            lock(&self.local).slot = None;
        }
        if self.member.is_some() {
            return Ok(());
        }
        for slot in 0..self.shards {
            let key = self.member_key(slot)?;
            if let Some(lease) = self.store.acquire(&key, &self.options.owner, self.ttl()).await? {
                info!(slot, "took a member slot");
                let renewal = Renewal::start(Arc::clone(&self.store), lease.clone(), self.ttl());
                self.member = Some((lease, renewal));
                lock(&self.local).slot = Some(slot);
                return Ok(());
            }
        }
        Ok(())
    }

    /// This process's fair share, its rank and the live members: no share without a slot;
    /// else by its rank among the live members.
    async fn share(&mut self) -> Result<(u16, u16, u16)> {
        let Some(mine) = lock(&self.local).slot else {
            return Ok((0, 0, 0));
        };
        let mut live = Vec::new();
        for slot in 0..self.shards {
            if slot == mine || self.store.holder(&self.member_key(slot)?).await?.is_some() {
                live.push(slot);
            }
        }
        let mut members = live.len() as u16;
        if self.ignores_new_members() {
            members = *self.first_count.get_or_insert(members);
        }
        let rank = live.iter().filter(|&&s| s < mine).count() as u16;
        Ok((fair_share(self.shards, members, rank), rank, members))
    }

    /// Starts the runner of `shard` (unless the process was aborted).
    fn start(&mut self, shard: u16) -> Result<()> {
        let mut runner = ProjectionRunner::new(
            Arc::clone(&self.projection),
            Arc::clone(&self.events),
            Arc::clone(&self.store),
        )
        .with_options(self.options.clone());
        if self.shards > 1 {
            runner = runner.for_shard(ShardScope {
                shard: Shard::new(shard, self.shards)?,
                skips_foreign: self.skips_foreign(),
                waits_beside: self.waits_beside(),
            });
        }
        let mut local = lock(&self.local);
        if local.aborted {
            return Ok(());
        }
        let handle = runner.spawn()?;
        debug!(shard, "started a shard runner");
        self.waiting.insert(shard, self.check);
        local.runners.insert(shard, Arc::new(handle));
        Ok(())
    }

    /// Stops runners gracefully (each commits its page and releases its lease) and waits for
    /// them; one that does not end within its handler timeout and a lease TTL is aborted (its
    /// lease then expires).
    async fn stop_runners(&mut self, shards: Vec<u16>) {
        let handles: Vec<(u16, Arc<ProjectionHandle>)> = {
            let local = lock(&self.local);
            shards
                .iter()
                .filter_map(|s| local.runners.get(s).map(|h| (*s, Arc::clone(h))))
                .collect()
        };
        for (_, handle) in &handles {
            let _ = handle.commands.send(Command::Stop).await;
        }
        let bound = self.options.handler_timeout + self.ttl();
        for (shard, handle) in handles {
            if handle.wait_for(bound, |s| s.ended()).await.is_err() && !handle.last_status().ended() {
                warn!(shard, "a shard runner did not stop in time; aborting it");
                handle.abort();
            }
            lock(&self.local).runners.remove(&shard);
            self.waiting.remove(&shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn fair_shares_add_up_and_differ_by_one_at_most() {
        for shards in 1..=17u16 {
            for members in 1..=20u16 {
                let shares: Vec<u16> = (0..members).map(|r| fair_share(shards, members, r)).collect();
                assert_eq!(shares.iter().sum::<u16>(), shards, "{shards} over {members}");
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            }
        }
        assert_eq!(
            [fair_share(4, 3, 0), fair_share(4, 3, 1), fair_share(4, 3, 2)],
            [2, 1, 1]
        );
    }
}
