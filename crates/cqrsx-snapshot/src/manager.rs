//! The [`SnapshotManager`]: the full [`SnapshotStrategy`] — policy after save, restore with
//! schema and content checks, retention, listing and statistics — and
//! [`RepositorySnapshotExt`], which plugs a configured one into any repository.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrsx_core::snapshot::{LoadInfo, Restored, SnapshotInfo, SnapshotRecord};
use cqrsx_core::{
    async_trait, Aggregate, AggregateRoot, Error, Repository, Result, SnapshotStore, SnapshotStrategy, StreamId,
    Timestamp,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, debug_span, warn, Instrument};

use crate::config::{Retention, SnapshotConfig};
use crate::policy::{EveryNEvents, LoadSample, SnapshotContext, SnapshotPolicy};
use crate::serializer::SnapshotSerializer;

/// Streams whose last snapshot time and load measurement the manager remembers; past this the
/// memory is cleared rather than grown without bound.
const REMEMBERED_STREAMS: usize = 50_000;

/// Counters a user can read with [`SnapshotManager::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots written.
    pub taken: u64,
    /// Loads that started from a snapshot.
    pub hits: u64,
    /// Loads that found no snapshot.
    pub misses: u64,
    /// Loads that found a snapshot they could not use and replayed every event.
    pub fallbacks: u64,
    /// Snapshots ignored because their schema version was not the aggregate's.
    pub schema_mismatches: u64,
    /// Snapshots deleted by retention.
    pub pruned: u64,
    /// Snapshot writes that failed.
    pub errors: u64,
    /// Payload bytes written.
    pub bytes_written: u64,
    /// Payload bytes read.
    pub bytes_read: u64,
    /// Mean time to fetch and decode a snapshot.
    pub avg_restore_time: Duration,
    /// Mean time of a whole load (snapshot plus replay) through a repository.
    pub avg_load_time: Duration,
}

impl SnapshotStats {
    /// Hits over loads that had a snapshot to try or found none (0 when there were no loads).
    pub fn hit_rate(&self) -> f64 {
        let loads = self.hits + self.misses + self.fallbacks;
        if loads == 0 {
            0.0
        } else {
            self.hits as f64 / loads as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    taken: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    fallbacks: AtomicU64,
    schema_mismatches: AtomicU64,
    pruned: AtomicU64,
    errors: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    restores: AtomicU64,
    restore_nanos: AtomicU64,
    loads: AtomicU64,
    load_nanos: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn mean(total_nanos: &AtomicU64, count: &AtomicU64) -> Duration {
    match count.load(Ordering::Relaxed) {
        0 => Duration::ZERO,
        n => Duration::from_nanos(total_nanos.load(Ordering::Relaxed) / n),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Default, Clone, Copy)]
struct StreamMemory {
    last_snapshot_at: Option<Timestamp>,
    last_load: Option<LoadSample>,
}

/// Takes, restores, lists and prunes snapshots of aggregate `A`; plug it into a repository with
/// [`cqrsx_core::Repository::with_snapshots`] or [`crate::RepositorySnapshotExt`].
///
/// ```
/// use std::sync::Arc;
/// use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
/// use cqrsx_core::{Aggregate, Repository};
/// use cqrsx_snapshot::{Compression, EveryNEvents, Format, Retention, SnapshotManager, SnapshotSerializer};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter { value: i64 }
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Added { by: i64 } }
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Counter";
///     type Event = CounterEvent;
///     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Added { by } => self.value += by } }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let manager = Arc::new(
///     SnapshotManager::<Counter>::new(Arc::new(InMemorySnapshotStore::new()))
///         .with_policy(EveryNEvents(100))
///         .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT))
///         .with_retention(Retention::newest(2)?),
/// );
/// let repo = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new())).with_snapshots(manager.clone());
/// let mut counter = repo.create("c-1")?;
/// for _ in 0..250 { counter.record(CounterEvent::Added { by: 1 }); }
/// repo.save(&mut counter).await?;
///
/// let (loaded, info) = repo.load_with_info("c-1").await?;
/// assert_eq!((loaded.state().value, info.snapshot_version, info.events_replayed), (250, Some(250), 0));
/// assert_eq!(manager.stats().hits, 1);
/// # Ok(()) }
/// ```
pub struct SnapshotManager<A> {
    store: Arc<dyn SnapshotStore>,
    policy: Arc<dyn SnapshotPolicy>,
    serializer: SnapshotSerializer,
    schema_version: u32,
    retention: Retention,
    counters: Counters,
    streams: Mutex<HashMap<StreamId, StreamMemory>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> fmt::Debug for SnapshotManager<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotManager")
            .field("policy", &self.policy)
            .field("serializer", &self.serializer)
            .field("schema_version", &self.schema_version)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl<A> SnapshotManager<A>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    /// A manager over `store` with [`SnapshotConfig::default`]'s settings: every 100 events,
    /// JSON, schema version 1, the newest 3 kept.
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        let defaults = SnapshotConfig::default();
        Self {
            store,
            policy: Arc::new(EveryNEvents(100)),
            serializer: defaults.serializer,
            schema_version: defaults.schema_version,
            retention: defaults.retention,
            counters: Counters::default(),
            streams: Mutex::new(HashMap::new()),
            _aggregate: PhantomData,
        }
    }

    /// A manager built from configuration.
    pub fn from_config(store: Arc<dyn SnapshotStore>, config: &SnapshotConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::new(store)
            .with_policy_arc(config.policy.build()?)
            .with_serializer(config.serializer)
            .with_schema_version(config.schema_version)
            .with_retention(config.retention))
    }

    /// Decides when to snapshot with `policy`.
    pub fn with_policy(self, policy: impl SnapshotPolicy + 'static) -> Self {
        self.with_policy_arc(Arc::new(policy))
    }

    /// Like [`SnapshotManager::with_policy`], with a shared policy.
    pub fn with_policy_arc(mut self, policy: Arc<dyn SnapshotPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Writes snapshots with `serializer` (reads follow each snapshot's own content type).
    pub fn with_serializer(mut self, serializer: SnapshotSerializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// The schema version of `A`'s serialized state; bump it when the state's shape changes
    /// so that older snapshots are ignored and the state is rebuilt by replay.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Keeps `retention` snapshots of a stream after each new one (see [`Retention`]).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// The serializer new snapshots are written with.
    pub fn serializer(&self) -> SnapshotSerializer {
        self.serializer
    }

    /// The schema version snapshots are written with and must have to be used.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Snapshots the aggregate at its persisted version now, whatever the policy says.
    /// Pending (unsaved) events make it refuse: a snapshot must match stored events.
    pub async fn take(&self, root: &AggregateRoot<A>) -> Result<SnapshotInfo> {
        if !root.pending().is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} has {} unsaved events; save before taking a snapshot",
                root.stream(),
                root.pending().len()
            )));
        }
        self.snapshot_state(root.stream(), root.persisted_version(), root.state())
            .await
    }

    /// Stores `state` as the snapshot of `stream` at `version`, then applies retention.
    pub async fn snapshot_state(&self, stream: &StreamId, version: u64, state: &A) -> Result<SnapshotInfo> {
        let span = debug_span!("cqrsx.snapshot.take", stream = %stream, version, content_type = %self.serializer);
        async {
            let result = self.write(stream, version, state).await;
            if result.is_err() {
                add(&self.counters.errors, 1);
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn write(&self, stream: &StreamId, version: u64, state: &A) -> Result<SnapshotInfo> {
        let payload = self.serializer.encode(state)?;
        let record = SnapshotRecord {
            stream: stream.clone(),
            version,
            content_type: self.serializer.content_type(),
            schema_version: self.schema_version,
            payload,
            created_at: Timestamp::now(),
        };
        let info = SnapshotInfo::of(&record);
        self.store.save(record).await?;
        add(&self.counters.taken, 1);
        add(&self.counters.bytes_written, info.size);
        self.remember(stream, |m| m.last_snapshot_at = Some(info.created_at));
        debug!(size = info.size, "snapshot taken");
        if let Some(keep) = self.retention.keep() {
            let pruned = self.store.prune(stream, keep).await?;
            add(&self.counters.pruned, pruned);
        }
        Ok(info)
    }

    /// Fetches and decodes the newest snapshot: `Ok(None)` when there is none, an error when
    /// it cannot be used (wrong schema version, unknown content type, bytes that do not
    /// decode).
    pub async fn restore_state(&self, stream: &StreamId) -> Result<Option<Restored<A>>> {
        let span = debug_span!("cqrsx.snapshot.restore", stream = %stream);
        async {
            let started = Instant::now();
            let record = self.store.latest(stream, None).await?;
            let result = record.map(|r| self.decode(r)).transpose();
            add(&self.counters.restores, 1);
            add(&self.counters.restore_nanos, nanos(started.elapsed()));
            result
        }
        .instrument(span)
        .await
    }

    fn decode(&self, record: SnapshotRecord) -> Result<Restored<A>> {
        add(&self.counters.bytes_read, record.payload.len() as u64);
        if record.schema_version != self.schema_version {
            add(&self.counters.schema_mismatches, 1);
            return Err(Error::serialization_msg(format!(
                "snapshot of {} at version {} has schema version {}, the aggregate's is {}",
                record.stream, record.version, record.schema_version, self.schema_version
            )));
        }
        let state = SnapshotSerializer::decode(&record.content_type, &record.payload)?;
        self.remember(&record.stream, |m| m.last_snapshot_at = Some(record.created_at));
        Ok(Restored {
            state,
            version: record.version,
        })
    }

    /// Every snapshot of the stream, newest first, without payloads.
    pub async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        self.store.list(stream).await
    }

    /// The newest snapshot's description.
    pub async fn latest_info(&self, stream: &StreamId) -> Result<Option<SnapshotInfo>> {
        Ok(self.store.latest(stream, None).await?.map(|r| SnapshotInfo::of(&r)))
    }

    /// Deletes all but the newest `keep` snapshots of the stream.
    pub async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let pruned = self.store.prune(stream, keep).await?;
        add(&self.counters.pruned, pruned);
        Ok(pruned)
    }

    /// Deletes every snapshot of the stream.
    pub async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        self.forget(stream);
        self.store.delete_all(stream).await
    }

    /// The counters so far.
    pub fn stats(&self) -> SnapshotStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SnapshotStats {
            taken: get(&c.taken),
            hits: get(&c.hits),
            misses: get(&c.misses),
            fallbacks: get(&c.fallbacks),
            schema_mismatches: get(&c.schema_mismatches),
            pruned: get(&c.pruned),
            errors: get(&c.errors),
            bytes_written: get(&c.bytes_written),
            bytes_read: get(&c.bytes_read),
            avg_restore_time: mean(&c.restore_nanos, &c.restores),
            avg_load_time: mean(&c.load_nanos, &c.loads),
        }
    }

    fn remember(&self, stream: &StreamId, update: impl FnOnce(&mut StreamMemory)) {
        let Ok(mut streams) = self.streams.lock() else {
            return;
        };
        if streams.len() >= REMEMBERED_STREAMS && !streams.contains_key(stream) {
            streams.clear();
        }
        update(streams.entry(stream.clone()).or_default());
    }

    fn memory(&self, stream: &StreamId) -> StreamMemory {
        self.streams
            .lock()
            .ok()
            .and_then(|s| s.get(stream).copied())
            .unwrap_or_default()
    }

    fn forget(&self, stream: &StreamId) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(stream);
        }
    }
}

#[async_trait]
impl<A> SnapshotStrategy<A> for SnapshotManager<A>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    async fn restore(&self, stream: &StreamId) -> Result<Option<Restored<A>>> {
        self.restore_state(stream).await
    }

    fn fallback(&self, stream: &StreamId, reason: &Error) {
        add(&self.counters.fallbacks, 1);
        warn!(stream = %stream, reason = %reason, "snapshot fallback to full replay");
    }

    fn loaded(&self, stream: &StreamId, info: &LoadInfo) {
        add(&self.counters.loads, 1);
        add(&self.counters.load_nanos, nanos(info.elapsed));
        if info.snapshot_version.is_some() {
            add(&self.counters.hits, 1);
        } else if info.fallback.is_none() {
            add(&self.counters.misses, 1);
        }
        let sample = LoadSample {
            events_replayed: info.events_replayed,
            elapsed: info.elapsed,
        };
        self.remember(stream, |m| m.last_load = Some(sample));
    }

    async fn after_save(&self, root: &AggregateRoot<A>, committed: u64) -> Result<bool> {
        let memory = self.memory(root.stream());
        let ctx = SnapshotContext {
            stream: root.stream(),
            version: root.persisted_version(),
            committed,
            last_snapshot_version: root.snapshot_version(),
            last_snapshot_at: memory.last_snapshot_at,
            last_load: memory.last_load,
            now: Timestamp::now(),
        };
        if !self.policy.should_snapshot(&ctx) {
            return Ok(false);
        }
        self.take(root).await?;
        Ok(true)
    }
}

/// Adds configured snapshots to any [`Repository`] — in-memory, Redis or Mongo alike.
///
/// ```
/// use std::sync::Arc;
/// use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
/// use cqrsx_core::Repository;
/// use cqrsx_snapshot::{RepositorySnapshotExt, SnapshotConfig};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Counter;
/// # #[derive(serde::Serialize, serde::Deserialize)] enum Never {}
/// # impl cqrsx_core::Aggregate for Counter { const TYPE: &'static str = "Counter"; type Event = Never; fn apply(&mut self, _: &Never) {} }
///
/// let config = SnapshotConfig::from_env().unwrap();
/// let repo = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()))
///     .with_snapshot_config(Arc::new(InMemorySnapshotStore::new()), &config)
///     .unwrap();
/// # let _ = repo;
/// ```
pub trait RepositorySnapshotExt<A>: Sized {
    /// Restores from and takes snapshots in `store` as `config` says; unchanged when snapshots
    /// are disabled.
    fn with_snapshot_config(self, store: Arc<dyn SnapshotStore>, config: &SnapshotConfig) -> Result<Self>;
}

impl<A> RepositorySnapshotExt<A> for Repository<A>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    fn with_snapshot_config(self, store: Arc<dyn SnapshotStore>, config: &SnapshotConfig) -> Result<Self> {
        if !config.enabled {
            config.validate()?;
            return Ok(self);
        }
        let manager = SnapshotManager::<A>::from_config(store, config)?;
        Ok(self.with_snapshots(Arc::new(manager)))
    }
}
