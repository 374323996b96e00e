//! [`EventBackend`], the unchecked half of an event store, and the checked [`EventStore`] every
//! backend gets from it.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use super::trace::{backend, measured};
use crate::checkpoint::{Checkpoint, Wake};
use crate::error::Result;
use crate::event::{AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::{
    pages, validate_append, validate_expected, validate_filter, validate_number, validate_position, EventStore,
    EventStoreCapabilities,
};
use crate::import::{already_imported, validate_import, StreamInfo};
use crate::stream::{validate_type_name, ExpectedVersion, StreamId};

/// What an event-store backend implements: the [`EventStore`] contract on input that core has
/// already checked. A type implementing it is an [`EventStore`]; before any method here runs,
/// the checked layer has refused (with [`crate::Error::InvalidInput`]) an empty or oversized
/// batch, a bad envelope, an id twice in a batch, numbers over [`crate::raw::MAX_NUMBER`], a
/// partition the backend does not have ([`EventBackend::capabilities`]), and bad type names.
/// Each method's contract is that of the [`EventStore`] method of the same name.
#[async_trait]
pub trait EventBackend: Send + Sync {
    /// What this backend can do (the checks use its limits).
    fn capabilities(&self) -> EventStoreCapabilities;

    /// [`EventStore::append`], on a valid batch.
    async fn append(&self, stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>)
        -> Result<AppendResult>;

    /// [`EventStore::read_stream`], `from_version` in range.
    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// [`EventStore::stream_version`].
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// [`EventStore::read_all`], on a partition the backend has and a valid filter.
    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage>;

    /// [`EventStore::events_by_type`], on a valid type name and time.
    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// [`EventStore::truncate_before`], `before` in range.
    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64>;

    /// [`EventStore::delete_stream`], `expected` in range.
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()>;

    /// [`EventStore::list_streams`].
    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>>;

    /// [`EventStore::import`] on a valid batch, writing only when the stream is at `after` (or
    /// has never been written, and then starts at `after`); [`crate::Error::Conflict`] with the
    /// actual version otherwise (core then checks whether the batch is already there),
    /// [`crate::Error::StreamDeleted`] for a tombstone, [`crate::Error::EventIdReused`] for an
    /// id already in the stream.
    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult>;

    /// [`EventStore::head`].
    async fn head(&self) -> Result<Checkpoint>;

    /// [`EventStore::wait_for_append`]; by default [`Wake::Unsupported`] at once.
    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        let _ = (checkpoint, timeout);
        Ok(Wake::Unsupported)
    }

    /// A backend's own cursor over a whole stream ([`EventStore::stream_events`]), where it has
    /// one; `None` (the default) pages through [`EventBackend::read_stream`].
    fn stream_cursor<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        batch: usize,
    ) -> Option<BoxStream<'a, Result<RecordedEvent>>> {
        let _ = (stream, from_version, batch);
        None
    }

    /// [`EventStore::distance`].
    fn distance(&self, from: Position, to: Position) -> u64 {
        to.offset.saturating_sub(from.offset)
    }
}

#[async_trait]
impl<B: EventBackend> EventStore for B {
    fn capabilities(&self) -> EventStoreCapabilities {
        EventBackend::capabilities(self)
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let span = tracing::debug_span!("append", store = backend::<B>(), stream = %stream, count = events.len());
        measured(backend::<B>(), "append", span, async move {
            // Inside the append's span: its context, or the caller's when it is disabled.
            #[cfg(feature = "otel")]
            let events = crate::telemetry::stamp_trace_context(events);
            validate_append(expected, &events, &EventBackend::capabilities(self))?;
            EventBackend::append(self, stream, expected, events).await
        })
        .await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let span = tracing::debug_span!("read_stream", store = backend::<B>(), stream = %stream, from_version);
        measured(backend::<B>(), "read_stream", span, async move {
            validate_number("from version", from_version)?;
            EventBackend::read_stream(self, stream, from_version, max_count).await
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let span = tracing::debug_span!("stream_version", store = backend::<B>(), stream = %stream);
        measured(
            backend::<B>(),
            "stream_version",
            span,
            EventBackend::stream_version(self, stream),
        )
        .await
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        let span = tracing::debug_span!("read_all", store = backend::<B>(), %from, max_count);
        measured(backend::<B>(), "read_all", span, async move {
            validate_position(from, &EventBackend::capabilities(self))?;
            validate_filter(filter)?;
            EventBackend::read_all(self, from, max_count, filter).await
        })
        .await
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let span = tracing::debug_span!("events_by_type", store = backend::<B>(), event_type, max_count);
        measured(backend::<B>(), "events_by_type", span, async move {
            validate_type_name("event type", event_type)?;
            validate_number("since (ms)", since.as_millis())?;
            EventBackend::events_by_type(self, event_type, since, max_count).await
        })
        .await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let span = tracing::debug_span!("truncate_before", store = backend::<B>(), stream = %stream, before);
        measured(backend::<B>(), "truncate_before", span, async move {
            validate_number("truncate before version", before)?;
            EventBackend::truncate_before(self, stream, before).await
        })
        .await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let span = tracing::debug_span!("delete_stream", store = backend::<B>(), stream = %stream);
        measured(backend::<B>(), "delete_stream", span, async move {
            validate_expected(expected)?;
            EventBackend::delete_stream(self, stream, expected).await
        })
        .await
    }

    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        let span = tracing::debug_span!("list_streams", store = backend::<B>(), max_count);
        measured(backend::<B>(), "list_streams", span, async move {
            if max_count == 0 {
                return Ok(Vec::new());
            }
            EventBackend::list_streams(self, after, max_count).await
        })
        .await
    }

    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        let span =
            tracing::debug_span!("import", store = backend::<B>(), stream = %stream, after, count = events.len());
        measured(backend::<B>(), "import", span, async move {
            validate_import(stream, after, &events, &EventBackend::capabilities(self))?;
            // Kept to compare with what is there if the stream is already past `after`.
            let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
            match EventBackend::import(self, stream, after, events).await {
                Err(conflict @ crate::Error::Conflict { .. }) => {
                    already_imported(self, stream, after, &ids, conflict).await
                }
                done => done,
            }
        })
        .await
    }

    async fn head(&self) -> Result<Checkpoint> {
        measured(
            backend::<B>(),
            "head",
            tracing::debug_span!("head", store = backend::<B>()),
            EventBackend::head(self),
        )
        .await
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        // Not traced: a live subscription waits here all the time.
        EventBackend::wait_for_append(self, checkpoint, timeout).await
    }

    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        if let Err(e) = validate_number("from version", from_version) {
            return stream::once(async move { Err(e) }).boxed();
        }
        match EventBackend::stream_cursor(self, stream, from_version, batch.max(1)) {
            Some(cursor) => cursor,
            None => pages(self, stream, from_version, batch),
        }
    }

    fn distance(&self, from: Position, to: Position) -> u64 {
        EventBackend::distance(self, from, to)
    }
}
