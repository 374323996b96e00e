//! The [`EventStore`] trait every backend implements, over already-encoded events, and the
//! checks every backend runs before it writes.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::checkpoint::{Checkpoint, Wake};
use crate::error::{Error, Result};
use crate::event::{
    validate_new_event, AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp,
};
use crate::import::StreamInfo;
use crate::stream::{validate_type_name, ExpectedVersion, StreamId};

pub use crate::event::{validate_number, MAX_NUMBER};

/// Default number of events fetched per round trip when a stream is read as a [`futures::Stream`].
pub const DEFAULT_PAGE_SIZE: usize = 512;

/// What a backend can and cannot do, declared by the backend and checked by the conformance
/// suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStoreCapabilities {
    /// Number of global-log partitions; `read_all` orders events within a partition.
    pub partitions: u32,
    /// Largest accepted payload of one event, in bytes.
    pub max_event_bytes: usize,
    /// Largest accepted number of events in one append.
    pub max_batch: usize,
    /// Whether [`EventStore::wait_for_append`] wakes on the backend's own signal (Redis
    /// `XREAD BLOCK`, MongoDB change streams, an in-memory notify). Without one, live
    /// subscriptions poll with back-off.
    pub live_signal: bool,
}

impl Default for EventStoreCapabilities {
    fn default() -> Self {
        Self {
            partitions: 1,
            max_event_bytes: 16 * 1024 * 1024,
            max_batch: 10_000,
            live_signal: false,
        }
    }
}

/// An append-only store of event streams with optimistic concurrency.
///
/// Backends move bytes and enforce concurrency; codecs, upcasting and snapshots live above, in
/// [`crate::Repository`] and [`crate::EventCodec`]. The trait is dyn-compatible: hold stores as
/// `Arc<dyn EventStore>`. Every method below states its contract; the conformance suite
/// (feature `testkit`) checks each on every backend.
///
/// Numbers: versions, offsets and timestamps are valid up to [`MAX_NUMBER`] (2^53 − 1, the
/// largest integer every backend's server stores exactly); larger ones are refused with
/// [`Error::InvalidInput`] before anything is sent. Counts (`max_count`) are limits: 0 reads
/// nothing, and any larger value reads what there is.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> EventStoreCapabilities;

    /// Appends `events` atomically if the stream's version satisfies `expected`.
    ///
    /// All or nothing: readers never see part of a batch. A batch whose event ids were all
    /// appended before, in the same order, in one commit of this stream (a retry after a lost
    /// reply) returns that commit's result and writes nothing, whatever `expected` says.
    /// Event ids are unique per stream, as in KurrentDB: the same id in another stream is
    /// another event.
    ///
    /// Errors, none of which writes anything: [`Error::Conflict`] (carrying the actual version)
    /// when `expected` does not hold; [`Error::EventIdReused`] when some ids are already in the
    /// stream but the batch is not a retry; [`Error::StreamDeleted`] on a deleted stream;
    /// [`Error::InvalidInput`] on an empty or oversized batch, a bad envelope, an id twice in
    /// the batch, or an expected version over [`MAX_NUMBER`].
    async fn append(&self, stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>)
        -> Result<AppendResult>;

    /// Up to `max_count` events of a stream with version ≥ `from_version`, in version order
    /// (events removed by [`EventStore::truncate_before`] are skipped). An unknown stream reads
    /// as empty; a deleted one fails with [`Error::StreamDeleted`].
    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// The stream's current version (0: no stream); [`Error::StreamDeleted`] for a deleted one.
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// Up to `max_count` matching events of one partition with position ≥ `from`, in position
    /// order; events of deleted streams and truncated events are skipped. [`AllPage::next`] is
    /// where the next read starts: past every position this read looked at, matching or not,
    /// so a catch-up reader that keeps reading from `next` sees every event exactly once, also
    /// while writers append or one of them stalls. A page may hold fewer than `max_count`
    /// events while more follow (a backend bounds the work of one call); only a page whose
    /// `next` equals `from` says the partition holds nothing more for now.
    /// [`Error::InvalidInput`] for a partition the store does not have.
    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage>;

    /// Up to `max_count` events of type `event_type` recorded at or after `since`, in commit
    /// order (`GetEventsByType` of the Go cqrsx package); deleted streams' events are skipped.
    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// Removes the stream's events with version < `before` (compaction). The stream's version is
    /// unchanged and appends continue after it; returns how many events were removed.
    /// [`Error::StreamDeleted`] for a deleted stream.
    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64>;

    /// Deletes the stream if its version satisfies `expected` ([`Error::Conflict`] otherwise).
    /// It leaves a tombstone: later appends and reads fail with [`Error::StreamDeleted`], and
    /// `read_all` / `events_by_type` skip its events.
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()>;

    /// Up to `max_count` streams of the store's catalogue whose keys ([`StreamId::key`]) sort
    /// after `after` (from the first with `None`), in the byte order of their keys: every
    /// stream ever appended to or imported, with its version, including streams whose events
    /// are all truncated and deleted ones (tombstones). A page shorter than `max_count` is the
    /// last. What migration, verification and retention walk.
    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>>;

    /// Writes events copied from another store with their ids, versions, types, schema
    /// versions, content types, payloads, metadata and recorded-at times unchanged; positions
    /// are assigned here, in the order of the calls (what migration and archives use; an
    /// application appends with [`EventStore::append`]).
    ///
    /// The events are `stream`'s, with versions `after + 1`, `after + 2`, … They continue the
    /// stream when its version is `after`; a stream this store has never seen starts at
    /// `after` (versions up to `after` read as truncated, as in a source truncated before
    /// them), also with no events at all (a source stream whose events are all truncated).
    /// A batch already in the stream — the same ids at the same versions, as when an import
    /// resumes after a crash — returns its result and writes nothing.
    ///
    /// Errors, none of which writes anything: [`Error::Conflict`] when the stream is at
    /// another version; [`Error::EventIdReused`] when an id of the batch is in the stream at
    /// another version; [`Error::StreamDeleted`]; [`Error::InvalidInput`] for versions that do
    /// not continue `after` one by one, events of another stream, an envelope an append would
    /// refuse, or an empty batch with `after` 0.
    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult>;

    /// Where the log ends: a checkpoint just past the last committed (or, where positions are
    /// reserved before the commit lands, reserved) position of every partition. A subscription
    /// checkpoint past it is refused; the lag of a reader is measured against it.
    async fn head(&self) -> Result<Checkpoint>;

    /// Waits until an append may have landed past `checkpoint` in some partition, for at most
    /// `timeout`. Backends with a signal ([`EventStoreCapabilities::live_signal`]) return
    /// [`Wake::Signalled`] when it fires (or at once when the log is already past the
    /// checkpoint) and [`Wake::TimedOut`] otherwise; the default returns
    /// [`Wake::Unsupported`] at once, and callers poll.
    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        let _ = (checkpoint, timeout);
        Ok(Wake::Unsupported)
    }

    /// Every event of the stream from `from_version` on, as a [`futures::Stream`], so a long
    /// stream never sits in memory at once (what a repository replays). Backends that answer a
    /// whole stream with one cursor do so, fetching `batch` events per round trip (MongoDB);
    /// the default reads pages of `batch` events with [`EventStore::read_stream`]. Errors as
    /// [`EventStore::read_stream`].
    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        pages(self, stream, from_version, batch)
    }

    /// How far `from` is behind `to` in one partition: events where positions are dense (the
    /// default), commits where they number commits (MongoDB).
    fn distance(&self, from: Position, to: Position) -> u64 {
        to.offset.saturating_sub(from.offset)
    }
}

/// A stream read as pages of `batch` events through [`EventStore::read_stream`] (what
/// [`EventStore::stream_events`] does where a backend has no cursor of its own).
pub(crate) fn pages<'a, S: EventStore + ?Sized>(
    store: &'a S,
    stream: &'a StreamId,
    from_version: u64,
    batch: usize,
) -> BoxStream<'a, Result<RecordedEvent>> {
    let batch = batch.max(1);
    stream::try_unfold(Some(from_version), move |next| async move {
        let Some(from) = next else {
            return Ok(None);
        };
        let page = store.read_stream(stream, from, batch).await?;
        if page.is_empty() {
            return Ok(None);
        }
        let following = match page.last() {
            Some(last) if page.len() == batch => Some(last.version + 1),
            _ => None,
        };
        Ok(Some((stream::iter(page.into_iter().map(Ok)), following)))
    })
    .try_flatten()
    .boxed()
}

/// The checks every backend runs on an append before touching the server: an expected version
/// in range, a non-empty batch within the backend's limits, valid envelopes, no event id twice.
pub fn validate_append(expected: ExpectedVersion, events: &[NewEvent], caps: &EventStoreCapabilities) -> Result<()> {
    validate_expected(expected)?;
    if let ExpectedVersion::Exact(v) = expected {
        validate_number("version after the append", v.saturating_add(events.len() as u64))?;
    }
    if events.is_empty() {
        return Err(Error::InvalidInput("an append needs at least one event".into()));
    }
    if events.len() > caps.max_batch {
        return Err(Error::InvalidInput(format!(
            "an append of {} events is over the backend limit of {}",
            events.len(),
            caps.max_batch
        )));
    }
    for event in events {
        validate_new_event(event, caps.max_event_bytes)?;
    }
    if events.len() > 1 {
        let mut ids = HashSet::with_capacity(events.len());
        if let Some(twice) = events.iter().find(|e| !ids.insert(e.event_id)) {
            return Err(Error::InvalidInput(format!(
                "event id {} appears twice in one append",
                twice.event_id
            )));
        }
    }
    Ok(())
}

/// Checks an expected version's number.
pub fn validate_expected(expected: ExpectedVersion) -> Result<()> {
    match expected {
        ExpectedVersion::Exact(v) => validate_number("expected version", v),
        _ => Ok(()),
    }
}

/// Checks a `read_all` position: a partition the store has, an offset within range.
pub fn validate_position(from: Position, caps: &EventStoreCapabilities) -> Result<()> {
    if from.partition >= caps.partitions {
        return Err(Error::InvalidInput(format!(
            "partition {} does not exist; this store has {}",
            from.partition, caps.partitions
        )));
    }
    validate_number("position offset", from.offset)
}

/// Checks a filter's names: every event and aggregate type a valid type name.
pub fn validate_filter(filter: &EventFilter) -> Result<()> {
    for t in &filter.event_types {
        validate_type_name("event type in a filter", t)?;
    }
    for t in &filter.aggregate_types {
        validate_type_name("aggregate type in a filter", t)?;
    }
    Ok(())
}
