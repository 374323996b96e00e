//! The [`EventStore`] trait every backend implements, over already-encoded events, and the
//! checks every backend runs before it writes.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::event::{
    validate_new_event, AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp,
};
use crate::stream::{ExpectedVersion, StreamId};

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
    /// Whether the backend uses multi-document transactions (MongoDB replica sets).
    pub transactions: bool,
}

impl Default for EventStoreCapabilities {
    fn default() -> Self {
        Self {
            partitions: 1,
            max_event_bytes: 16 * 1024 * 1024,
            max_batch: 10_000,
            transactions: false,
        }
    }
}

/// An append-only store of event streams with optimistic concurrency.
///
/// Backends move bytes and enforce concurrency; codecs, upcasting and snapshots live above, in
/// [`crate::Repository`] and [`crate::EventCodec`]. The trait is dyn-compatible: hold stores as
/// `Arc<dyn EventStore>`.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> EventStoreCapabilities;

    /// Appends `events` atomically if the stream's version satisfies `expected`.
    ///
    /// Fails with [`Error::Conflict`] (carrying the actual version) when it does not, with
    /// [`Error::StreamDeleted`] on a deleted stream, with [`Error::InvalidInput`] on an empty
    /// batch or bad envelope; none of these writes anything. A batch whose event ids were
    /// already appended in the same order (a retry) returns the original result.
    async fn append(&self, stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>)
        -> Result<AppendResult>;

    /// Up to `max_count` events of a stream with version ≥ `from_version`, in version order.
    /// An unknown stream reads as empty; a deleted one fails with [`Error::StreamDeleted`].
    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// The stream's current version (0: no stream).
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// Up to `max_count` events of one partition with position ≥ `from`, in position order,
    /// filtered. [`AllPage::next`] is where the next read starts. A catch-up reader that keeps
    /// calling this from `next` sees every event exactly once, also while writers append.
    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage>;

    /// Up to `max_count` events of the given type recorded at or after `since`, oldest first
    /// (the seed's `GetEventsByType`, for projections).
    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// Removes the stream's events with version < `before` (compaction). The stream's version is
    /// unchanged and appends continue after it; returns how many events were removed.
    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64>;

    /// Deletes the stream if its version satisfies `expected`. It leaves a tombstone: later
    /// appends and reads fail with [`Error::StreamDeleted`].
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()>;
}

/// Conveniences over any [`EventStore`].
pub trait EventStoreExt: EventStore {
    /// The stream's events from `from_version` on, fetched a page at a time, so a long stream
    /// never sits in memory at once.
    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        page_size: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        let page_size = page_size.max(1);
        stream::try_unfold(Some(from_version), move |next| async move {
            let Some(from) = next else {
                return Ok(None);
            };
            let page = self.read_stream(stream, from, page_size).await?;
            if page.is_empty() {
                return Ok(None);
            }
            let following = match page.last() {
                Some(last) if page.len() == page_size => Some(last.version + 1),
                _ => None,
            };
            Ok(Some((stream::iter(page.into_iter().map(Ok)), following)))
        })
        .try_flatten()
        .boxed()
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}

/// The checks every backend runs on an append before touching the server: a non-empty batch
/// within the backend's limits, valid envelopes, no event id twice.
pub fn validate_append(events: &[NewEvent], caps: &EventStoreCapabilities) -> Result<()> {
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
    let mut ids = HashSet::with_capacity(events.len());
    for event in events {
        validate_new_event(event, caps.max_event_bytes)?;
        if !ids.insert(event.event_id) {
            return Err(Error::InvalidInput(format!(
                "event id {} appears twice in one append",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// Checks a `read_all` position against the backend's partitions.
pub fn validate_position(from: Position, caps: &EventStoreCapabilities) -> Result<()> {
    if from.partition >= caps.partitions {
        return Err(Error::InvalidInput(format!(
            "partition {} does not exist; this store has {}",
            from.partition, caps.partitions
        )));
    }
    Ok(())
}
