//! The generic [`Repository`]: load = newest snapshot + tail events, save = append the pending
//! events with the loaded version as the expected version, then let the snapshot strategy decide.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use tracing::{debug, warn, Instrument};

use crate::aggregate::{Aggregate, AggregateRoot};
use crate::codec::EventCodec;
use crate::error::{Error, Result};
use crate::event::{AppendResult, ContentType, RecordedEvent};
use crate::event_store::{EventStore, DEFAULT_PAGE_SIZE};
use crate::registry::EventRegistry;
use crate::snapshot_store::{LoadInfo, SnapshotStrategy};
use crate::stream::{ExpectedVersion, StreamId};

/// Loads and saves aggregates of type `A` over any [`EventStore`].
///
/// ```
/// use std::sync::Arc;
/// use cqrsx_core::{Aggregate, Repository, memory::InMemoryEventStore};
/// # #[derive(Default)] struct Counter { value: i64 }
/// # #[derive(serde::Serialize, serde::Deserialize)] enum CounterEvent { Added { by: i64 } }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "Counter";
/// #     type Event = CounterEvent;
/// #     fn apply(&mut self, e: &CounterEvent) { match e { CounterEvent::Added { by } => self.value += by } }
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let repo = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()));
/// let mut counter = repo.create("c-1")?;
/// counter.record(CounterEvent::Added { by: 2 });
/// repo.save(&mut counter).await?;
/// assert_eq!(repo.load("c-1").await?.state().value, 2);
/// # Ok(()) }
/// ```
pub struct Repository<A: Aggregate> {
    events: Arc<dyn EventStore>,
    codec: EventCodec,
    snapshots: Option<Arc<dyn SnapshotStrategy<A>>>,
    page_size: usize,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            events: Arc::clone(&self.events),
            codec: self.codec.clone(),
            snapshots: self.snapshots.clone(),
            page_size: self.page_size,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository writing JSON events, without snapshots.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self {
            events,
            codec: EventCodec::default(),
            snapshots: None,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Writes new events with `content_type` (reads follow each event's own content type).
    pub fn with_content_type(mut self, content_type: ContentType) -> Self {
        self.codec = EventCodec::new(content_type).with_registry(Arc::new(self.codec.registry().clone()));
        self
    }

    /// Uses `registry` for schema versions and upcasting: the service's one registry, which
    /// may hold the event types of all its aggregates and is shared with its typed projections
    /// (`Typed::new(projection, repository.codec().clone())`). [`crate::Error::Config`] when the
    /// aggregate's event type is not an enum. A registry of one aggregate's events can be
    /// checked against its enum with [`EventRegistry::check_event_enum`].
    pub fn with_registry(mut self, registry: Arc<EventRegistry>) -> Result<Self> {
        if crate::tagged::variant_names::<A::Event>().is_empty() {
            return Err(crate::Error::Config(format!(
                "{} is not an enum; events must be enum variants",
                std::any::type_name::<A::Event>()
            )));
        }
        self.codec = self.codec.with_registry(registry);
        Ok(self)
    }

    /// Restores from and takes snapshots through `strategy`.
    pub fn with_snapshots(mut self, strategy: Arc<dyn SnapshotStrategy<A>>) -> Self {
        self.snapshots = Some(strategy);
        self
    }

    /// Loads through `archive` as well: stream reads return the versions a retention run moved
    /// to the archive from there and the rest from the event store (an
    /// [`crate::archive::ArchivedEventStore`] over both), so a load gives the same state as
    /// before archiving, with or without snapshots. Saves go to the event store as before.
    pub fn with_archive(mut self, archive: Arc<dyn crate::archive::Archive>) -> Self {
        self.events = Arc::new(crate::archive::ArchivedEventStore::new(self.events, archive));
        self
    }

    /// Events fetched per round trip while replaying.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The event store underneath.
    pub fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// The codec in use.
    pub fn codec(&self) -> &EventCodec {
        &self.codec
    }

    /// The stream id of aggregate `id`.
    pub fn stream_id(&self, id: &str) -> Result<StreamId> {
        StreamId::new(A::TYPE, id)
    }

    /// A new, empty aggregate (version 0); saving it fails with a conflict if the id is taken.
    pub fn create(&self, id: &str) -> Result<AggregateRoot<A>> {
        Ok(AggregateRoot::from_parts(self.stream_id(id)?, 0, A::default()))
    }

    /// Loads an aggregate; [`Error::NotFound`] when it has no events.
    pub async fn load(&self, id: &str) -> Result<AggregateRoot<A>> {
        let (root, _) = self.load_with_info(id).await?;
        if root.version() == 0 {
            return Err(Error::NotFound(format!("{} {id}", A::TYPE)));
        }
        Ok(root)
    }

    /// Loads an aggregate, or a new one at version 0 when it has no events.
    pub async fn load_or_create(&self, id: &str) -> Result<AggregateRoot<A>> {
        Ok(self.load_with_info(id).await?.0)
    }

    /// Loads an aggregate and says how: snapshot used, events replayed, fallbacks.
    pub async fn load_with_info(&self, id: &str) -> Result<(AggregateRoot<A>, LoadInfo)> {
        let stream = self.stream_id(id)?;
        let span = tracing::debug_span!("cqrsx.repository.load", stream = %stream);
        self.load_stream(stream).instrument(span).await
    }

    async fn load_stream(&self, stream: StreamId) -> Result<(AggregateRoot<A>, LoadInfo)> {
        let started = Instant::now();
        let mut info = LoadInfo::default();
        let (mut state, mut version) = (A::default(), 0);
        if let Some(strategy) = &self.snapshots {
            match strategy.restore(&stream).await {
                Ok(Some(restored)) => {
                    state = restored.state;
                    version = restored.version;
                    info.snapshot_version = Some(version);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(stream = %stream, error = %e, "snapshot unusable, replaying all events");
                    strategy.fallback(&stream, &e);
                    info.fallback = Some(e.to_string());
                }
            }
        }
        match self.replay(&stream, &mut state, version).await {
            Ok((v, n)) => {
                version = v;
                info.events_replayed = n;
            }
            Err(e)
                if info.snapshot_version.is_some()
                    && !matches!(e, Error::Backend { .. } | Error::StreamDeleted { .. }) =>
            {
                // The snapshot did not fit the stream (e.g. it is ahead of a truncated stream or
                // its state does not take the tail events): start over from the first event.
                warn!(stream = %stream, error = %e, "snapshot does not fit the stream, replaying all events");
                if let Some(strategy) = &self.snapshots {
                    strategy.fallback(&stream, &e);
                }
                info.fallback = Some(e.to_string());
                info.snapshot_version = None;
                state = A::default();
                let (v, n) = self.replay(&stream, &mut state, 0).await?;
                version = v;
                info.events_replayed = n;
            }
            Err(e) => return Err(e),
        }
        let mut root = AggregateRoot::from_parts(stream, version, state);
        root.set_snapshot_version(info.snapshot_version.unwrap_or(0));
        info.elapsed = started.elapsed();
        if let Some(strategy) = &self.snapshots {
            strategy.loaded(root.stream(), &info);
        }
        debug!(version, replayed = info.events_replayed, snapshot = ?info.snapshot_version, "loaded");
        Ok((root, info))
    }

    /// Applies events after `from_version` to `state`; returns the last version and the count.
    async fn replay(&self, stream: &StreamId, state: &mut A, from_version: u64) -> Result<(u64, u64)> {
        // After a snapshot, the read starts at the snapshot's own version: its event, skipped,
        // shows that the stream still reaches the snapshot, with no call for the stream's
        // version (a snapshot taken at the head then loads in two calls, not three).
        let mut events = self.events.stream_events(stream, from_version.max(1), self.page_size);
        let mut version = from_version;
        let mut count = 0;
        let mut reaches_snapshot = false;
        while let Some(recorded) = events.try_next().await? {
            if from_version > 0 && recorded.version == from_version {
                reaches_snapshot = true;
                continue;
            }
            if recorded.version != version + 1 {
                if count == 0 && from_version == 0 {
                    warn!(stream = %stream, first = recorded.version, "replaying a truncated stream without a snapshot");
                } else {
                    return Err(Error::Integrity(format!(
                        "stream {stream} jumps from version {version} to {}",
                        recorded.version
                    )));
                }
            }
            let event: A::Event = self.codec.decode(&recorded)?;
            state.apply(&event);
            version = recorded.version;
            count += 1;
        }
        if count == 0 && from_version > 0 && !reaches_snapshot {
            // A snapshot ahead of the stream means the stream lost events (truncated, deleted or
            // rewritten) since the snapshot was taken. (The snapshot's own event may also be
            // gone to a truncation that kept the stream's head: then the head tells.)
            let head = self.events.stream_version(stream).await?;
            if head < from_version {
                return Err(Error::Integrity(format!(
                    "snapshot at version {from_version} is ahead of stream {stream} at {head}"
                )));
            }
        }
        Ok((version, count))
    }

    /// Appends the aggregate's pending events, expecting the version it was loaded at, then
    /// lets the snapshot strategy act. Returns `None` when there was nothing to save.
    pub async fn save(&self, root: &mut AggregateRoot<A>) -> Result<Option<AppendResult>> {
        if root.pending().is_empty() {
            return Ok(None);
        }
        let span =
            tracing::debug_span!("cqrsx.repository.save", stream = %root.stream(), events = root.pending().len());
        async {
            let events = root
                .pending()
                .iter()
                .map(|p| self.codec.encode(&p.event, p.metadata.clone()))
                .collect::<Result<Vec<_>>>()?;
            let committed = events.len() as u64;
            let expected = ExpectedVersion::from_loaded(root.persisted_version());
            let result = self.events.append(root.stream(), expected, events).await?;
            root.mark_committed(result.version);
            if let Some(strategy) = &self.snapshots {
                match strategy.after_save(root, committed).await {
                    Ok(true) => root.set_snapshot_version(result.version),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(stream = %root.stream(), error = %e, "snapshot after save failed; events are saved")
                    }
                }
            }
            Ok(Some(result))
        }
        .instrument(span)
        .await
    }

    /// The aggregate's events, decoded, with their envelopes (for history views and tooling).
    pub async fn history(&self, id: &str) -> Result<Vec<(RecordedEvent, A::Event)>> {
        let stream = self.stream_id(id)?;
        self.events
            .stream_events(&stream, 1, self.page_size)
            .and_then(|recorded| async move {
                let event = self.codec.decode(&recorded)?;
                Ok((recorded, event))
            })
            .try_collect()
            .await
    }
}
