//! [`ShardedRunner`]: one projection run as N shards, shared by any number of runner
//! processes, and the [`ShardedHandle`] an operator reads and steers them with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Position;
use crate::event_store::EventStore;
use crate::projection::handle::ProjectionHandle;
use crate::projection::options::RunnerOptions;
use crate::projection::status::ProjectionStatus;
use crate::projection::store::{LeaseHolder, ProjectionStore, Shard, ViewKey, MAX_SHARDS};
use crate::projection::Projection;

mod balance;

use balance::Balancer;

/// A broken behaviour of a [`ShardedRunner`], for the meta-test that shows the conformance
/// suite notices it. Not part of the API.
#[doc(hidden)]
#[cfg(feature = "testkit")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFault {
    /// Each shard's runner applies every event, not only those of its shard's streams.
    IgnoresOwnership,
    /// A process never gives up shards above its fair share.
    KeepsExtraShards,
    /// A process counts the members once, when it starts, and never notices a new one.
    IgnoresNewMembers,
    /// A shard of a new layout becomes active at once, empty, while another layout serves.
    ActivatesNewLayoutAtOnce,
}

/// The shard a runner runs, and whether it keeps to it (a test fault ignores it).
#[derive(Debug, Clone, Copy)]
pub(super) struct ShardScope {
    pub(super) shard: Shard,
    pub(super) skips_foreign: bool,
    /// Whether it waits to catch up before it activates beside another layout (a test fault
    /// activates at once).
    pub(super) waits_beside: bool,
}

/// The fault hook, present only with the `testkit` feature.
#[cfg(feature = "testkit")]
pub(super) type Fault = Option<ShardFault>;
#[cfg(not(feature = "testkit"))]
pub(super) type Fault = Option<std::convert::Infallible>;

/// Runs a [`Projection`] as `shards` shards, shared by every process that runs the same
/// projection (name and version) with the same number of shards.
///
/// Each shard is an ordinary projection key ([`ViewKey::sharded`], stored as
/// `{name}.s{index}of{count}`) with its own lease, fencing token, checkpoint, view documents,
/// dead letters, replay requests and active version, run by a regular
/// [`super::ProjectionRunner`] that applies the events of the streams its shard owns
/// ([`Shard::of_stream`]) and moves its checkpoint past the others. So one stream's events are
/// applied in order by one shard, and each document is written by one shard only.
///
/// **Membership.** A process holds one *member slot* (a lease, [`ViewKey::member`]). Every
/// third of the lease TTL it reads the `shards` member slots and the shards' holders
/// ([`ProjectionStore::holder`], which takes nothing), ranks the live members by slot, and
/// aims at its fair share: `shards / members`, plus one for the first `shards % members` in
/// rank. Above it, it stops runners (they commit and release their leases); below it, it starts
/// runners for shards nobody holds, and stops a runner that did not get its lease by the next
/// check. A process beyond `shards` members has no slot (and no shard) until a slot frees. A
/// new process gets its share within a few checks; a stopped one gives everything up at once;
/// a dead one's shards are taken once its leases expire (the lease TTL plus a check).
///
/// The process is identified by [`RunnerOptions::owner`] (its member slot and its shards' leases
/// are held under it): give every process its own (the default, a fresh UUID per
/// [`RunnerOptions::default`], is).
///
/// A shard whose runner ends on its own — failed (the [`super::OnFailure::Stop`] policy) or
/// superseded by a newer version — is not started again by this process; its last status stays
/// in [`ShardedHandle::local_status`], and another process may take the shard.
///
/// With `shards == 1` it is the unsharded projection (its key has no shard suffix): every
/// process runs a runner of it, one holds the lease and the others stand by.
///
/// ```
/// use std::sync::Arc;
/// use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore};
/// use cqrsx_core::projection::{HandlerResult, ShardedRunner};
/// use cqrsx_core::{async_trait, Projection, RecordedEvent, View};
///
/// /// One document per stream: how many events it has.
/// struct PerStream;
///
/// #[async_trait]
/// impl Projection for PerStream {
///     fn name(&self) -> &str { "per_stream" }
///     async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
///         let n = view.get(event.stream.id()).await?.and_then(|d| d["n"].as_u64()).unwrap_or(0);
///         view.put(event.stream.id(), serde_json::json!({ "n": n + 1 }))?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main] async fn main() -> cqrsx_core::Result<()> {
/// let events = Arc::new(InMemoryEventStore::new());
/// let store = Arc::new(InMemoryProjectionStore::new());
/// let handle = ShardedRunner::new(Arc::new(PerStream), events, store, 4).spawn()?;
/// for shard in handle.status().await? {
///     println!("{}: held by {:?}", shard.key, shard.holder.map(|h| h.owner));
/// }
/// handle.stop().await
/// # }
/// ```
pub struct ShardedRunner {
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn ProjectionStore>,
    shards: u16,
    options: RunnerOptions,
    fault: Fault,
}

impl std::fmt::Debug for ShardedRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedRunner")
            .field("projection", &self.projection.name())
            .field("version", &self.projection.version())
            .field("shards", &self.shards)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ShardedRunner {
    /// A process's share of `projection` run as `shards` shards (1 to [`MAX_SHARDS`]), reading
    /// `events` and writing to `store`.
    pub fn new(
        projection: Arc<dyn Projection>,
        events: Arc<dyn EventStore>,
        store: Arc<dyn ProjectionStore>,
        shards: u16,
    ) -> Self {
        Self {
            projection,
            events,
            store,
            shards,
            options: RunnerOptions::default(),
            fault: None,
        }
    }

    /// Replaces the options every shard's runner gets; the lease TTL sets the member slot's
    /// too, and the balancing checks run every third of it.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Breaks the runner on purpose (the suite's meta-test).
    #[doc(hidden)]
    #[cfg(feature = "testkit")]
    pub fn with_fault(mut self, fault: Option<ShardFault>) -> Self {
        self.fault = fault;
        self
    }

    /// Starts this process's balancing task and returns its handle. A bad shard count, name,
    /// version, filter or option is refused here with [`Error::InvalidInput`], before anything
    /// runs.
    pub fn spawn(self) -> Result<ShardedHandle> {
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(Error::InvalidInput(format!(
                "a projection runs as 1 to {MAX_SHARDS} shards, not {}",
                self.shards
            )));
        }
        self.options.validate()?;
        crate::event_store::validate_filter(&self.projection.filter())?;
        let name = self.projection.name().to_string();
        let version = self.projection.version();
        let keys = shard_keys(&name, version, self.shards)?;
        if self.shards > 1 {
            // The longest member name must be valid too.
            ViewKey::member(&name, version, Shard::new(self.shards - 1, self.shards)?)?;
        }
        let local = Arc::new(Mutex::new(Local::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let span = tracing::info_span!("cqrsx.sharded", projection = %name, version, shards = self.shards);
        let balancer = Balancer::new(
            Arc::clone(&self.projection),
            Arc::clone(&self.events),
            Arc::clone(&self.store),
            self.options.clone(),
            self.shards,
            self.fault,
            Arc::clone(&local),
        );
        let task = tokio::spawn(balancer.run(stop_rx).instrument(span));
        Ok(ShardedHandle {
            keys,
            owner: self.options.owner,
            partitions: self.events.capabilities().partitions,
            events: self.events,
            store: self.store,
            local,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// The key of every shard, in order (the unsharded key for one shard).
fn shard_keys(name: &str, version: u32, shards: u16) -> Result<Vec<ViewKey>> {
    if shards == 1 {
        return Ok(vec![ViewKey::new(name, version)?]);
    }
    Shard::all(shards)?
        .into_iter()
        .map(|shard| ViewKey::sharded(name, version, shard))
        .collect()
}

/// What a process runs, shared by its balancing task and its handle.
#[derive(Default)]
pub(super) struct Local {
    /// The runner of each shard this process runs (holding its lease, or waiting for it).
    pub(super) runners: BTreeMap<u16, Arc<ProjectionHandle>>,
    /// Shards whose runner here ended on its own (failed, or superseded by a newer version):
    /// their last status. This process does not start them again.
    pub(super) ended: BTreeMap<u16, ProjectionStatus>,
    /// The member slot this process holds.
    pub(super) slot: Option<u16>,
    /// Set by [`ShardedHandle::abort`]: no runner is started after it.
    pub(super) aborted: bool,
    /// Shards rebuilt through this handle ([`ShardedHandle::rebuild_shard`]): started again
    /// here at the next check when free, even one whose runner here had failed.
    pub(super) restart: std::collections::BTreeSet<u16>,
}

/// Locks the shared state; a panic elsewhere while it was held leaves nothing half-changed
/// that matters (every change is one insert or remove), so a poisoned lock is used as is.
pub(super) fn lock(local: &Mutex<Local>) -> MutexGuard<'_, Local> {
    local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One shard as an operator reads it from the store (any process can read every shard).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatus {
    /// The shard's key (the projection's own key when it runs as one shard).
    pub key: ViewKey,
    /// Who holds its lease now: the owner, the fencing token and how long it stays valid.
    pub holder: Option<LeaseHolder>,
    /// Its committed checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// How far its checkpoint is behind the log's head, per partition (every event counts, its
    /// shard's or not: a shard reads them all).
    pub lag: Vec<u64>,
    /// Its parked events.
    pub parked: u64,
    /// The shard's active version (each shard switches to a rebuilt version on its own).
    pub active_version: Option<u32>,
    /// The status its runner in this process reports, when this process runs it.
    pub here: Option<ProjectionStatus>,
}

impl ShardStatus {
    /// The lag over all partitions.
    pub fn total_lag(&self) -> u64 {
        self.lag.iter().sum()
    }
}

/// What [`ShardedHandle::replay_parked`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReplays {
    /// Parked events applied by the shards this process holds.
    pub replayed: u64,
    /// Replays requested from the holders of the other shards with parked events
    /// ([`ProjectionStore::request_replay`]): the shard and the request's number.
    pub requested: Vec<(ViewKey, u64)>,
}

/// This process's part of a sharded projection: the shards it holds, their statuses, every
/// shard's status read from the store, and the operator's actions.
pub struct ShardedHandle {
    keys: Vec<ViewKey>,
    owner: String,
    partitions: u32,
    events: Arc<dyn EventStore>,
    store: Arc<dyn ProjectionStore>,
    local: Arc<Mutex<Local>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for ShardedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedHandle")
            .field("owner", &self.owner)
            .field("shards", &self.keys.len())
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl ShardedHandle {
    /// Every shard's key, in shard order.
    pub fn keys(&self) -> &[ViewKey] {
        &self.keys
    }

    /// The owner this process holds its member slot and shards under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The member slot this process holds (`None` before it took one, beyond `shards`
    /// members, and always for one shard).
    pub fn slot(&self) -> Option<u16> {
        lock(&self.local).slot
    }

    /// The shards this process holds now (their runner holds the lease), as their runners
    /// last reported.
    pub fn held(&self) -> Vec<ViewKey> {
        lock(&self.local)
            .runners
            .values()
            .map(|h| h.last_status())
            .filter(|s| s.token.is_some() && !s.ended())
            .map(|s| s.key)
            .collect()
    }

    /// The status of every shard runner of this process — holding its lease, waiting for
    /// it, or ended on its own (failed or superseded) — in shard order.
    pub fn local_status(&self) -> Vec<ProjectionStatus> {
        let local = lock(&self.local);
        let mut all: BTreeMap<u16, ProjectionStatus> = local.ended.clone();
        all.extend(local.runners.iter().map(|(i, h)| (*i, h.last_status())));
        all.into_values().collect()
    }

    /// Every shard's status, read from the store now (any process sees every shard): holder,
    /// checkpoint, lag against the log's head read once, parked count, active version, and
    /// this process's runner status where it runs the shard.
    pub async fn status(&self) -> Result<Vec<ShardStatus>> {
        let head = self.events.head().await?;
        let here: BTreeMap<ViewKey, ProjectionStatus> =
            self.local_status().into_iter().map(|s| (s.key.clone(), s)).collect();
        let mut out = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let checkpoint = self.store.checkpoint(key).await?;
            let from = checkpoint.clone().unwrap_or_else(|| Checkpoint::start(self.partitions));
            out.push(ShardStatus {
                key: key.clone(),
                holder: self.store.holder(key).await?,
                lag: super::status::lag(self.events.as_ref(), &from, &head),
                checkpoint,
                parked: self.store.parked(key).await?.len() as u64,
                active_version: self.store.active_version(key.projection()).await?,
                here: here.get(key).cloned(),
            });
        }
        Ok(out)
    }

    /// Every member slot and who holds it (empty for one shard): the processes sharing the
    /// projection, as the balancing reads them.
    pub async fn members(&self) -> Result<Vec<(ViewKey, Option<LeaseHolder>)>> {
        let shards = self.keys.len() as u16;
        if shards == 1 {
            return Ok(Vec::new());
        }
        let name = self.keys[0].name();
        let version = self.keys[0].version();
        let mut out = Vec::with_capacity(self.keys.len());
        for slot in Shard::all(shards)? {
            let key = ViewKey::member(name, version, slot)?;
            let holder = self.store.holder(&key).await?;
            out.push((key, holder));
        }
        Ok(out)
    }

    /// Waits until every shard's committed checkpoint (in the store, whichever process holds
    /// the shard) covers `position`, so the caller reads its own writes in every shard — of
    /// this handle's version: while a newer version takes over, readers ([`super::Views`])
    /// switch to it shard by shard, so wait on the newer version's handle then.
    /// [`Error::Timeout`] after `timeout`; a position no event can have is refused with
    /// [`Error::InvalidInput`] at once.
    pub async fn wait_until_caught_up(&self, position: Position, timeout: Duration) -> Result<()> {
        super::handle::check_wait_position(position, self.partitions)?;
        let wait = async {
            let mut waiting: Vec<&ViewKey> = self.keys.iter().collect();
            let mut pause = Duration::from_millis(2);
            loop {
                let mut still = Vec::new();
                for key in waiting {
                    let here = self.local_checkpoint(key);
                    let covered = match here {
                        Some(c) if c.covers(position) => true,
                        _ => self.store.checkpoint(key).await?.is_some_and(|c| c.covers(position)),
                    };
                    if !covered {
                        still.push(key);
                    }
                }
                if still.is_empty() {
                    return Ok(());
                }
                waiting = still;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("waiting for every shard of projection {}", self.keys[0].name()),
                after: timeout,
            }),
        }
    }

    /// The checkpoint this process's runner of `key` last committed.
    fn local_checkpoint(&self, key: &ViewKey) -> Option<Checkpoint> {
        let local = lock(&self.local);
        local
            .runners
            .values()
            .map(|h| h.last_status())
            .find(|s| &s.key == key)
            .and_then(|s| s.checkpoint)
    }

    /// Replays every shard's parked events: those of the shards this process holds at once,
    /// through their runners; for every other shard with parked events, a request to its holder
    /// (handled within a third of its lease TTL, or by the next runner to take it).
    pub async fn replay_parked(&self) -> Result<ShardReplays> {
        let held: BTreeMap<ViewKey, Arc<ProjectionHandle>> = {
            let local = lock(&self.local);
            local
                .runners
                .values()
                .filter(|h| h.last_status().token.is_some())
                .map(|h| (h.key().clone(), Arc::clone(h)))
                .collect()
        };
        let mut out = ShardReplays::default();
        for key in &self.keys {
            match held.get(key) {
                Some(handle) => match handle.replay_parked().await {
                    Ok(n) => out.replayed += n,
                    // It lost or gave up the shard meanwhile: ask its holder, whoever it is.
                    Err(Error::InvalidInput(_)) => {
                        out.requested.push((key.clone(), self.store.request_replay(key).await?))
                    }
                    Err(e) => return Err(e),
                },
                None if !self.store.parked(key).await?.is_empty() => {
                    out.requested.push((key.clone(), self.store.request_replay(key).await?));
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Rebuilds one shard (by index) from the first event: drops its view
    /// ([`ProjectionStore::drop_view`]), which fences its holder; the holder — here or in
    /// another process — takes the lease again and applies the shard's events from the start.
    /// To rebuild every shard, run a new version of the projection.
    pub async fn rebuild_shard(&self, shard: u16) -> Result<()> {
        let key = self.keys.get(usize::from(shard)).ok_or_else(|| {
            Error::InvalidInput(format!(
                "shard {shard} cannot exist: the projection runs as {} shard(s)",
                self.keys.len()
            ))
        })?;
        self.store.drop_view(key).await?;
        // A shard whose runner here failed is started again by this process at its next check.
        lock(&self.local).restart.insert(shard);
        Ok(())
    }

    /// Stops this process's part: every shard runner commits its page and releases its lease,
    /// then the member slot is released, so the other processes take the shards at their next
    /// check.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(Error::backend(false, e)),
            },
            None => Ok(()),
        }
    }

    /// Kills this process's part where it is, as a crash would: nothing is released, so the
    /// other processes take its shards once their leases expire.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let mut local = lock(&self.local);
        local.aborted = true;
        for runner in local.runners.values() {
            runner.abort();
        }
    }
}
