//! Cold storage for events a retention run ([`crate::retention::RetentionJob`]) takes out of the
//! hot store, and the transparent loads over both.
//!
//! An [`Archive`] keeps, per stream, a run of consecutive versions: what retention moved out,
//! oldest first. Two implementations: [`StoreArchive`] over any [`EventStore`] (a cold store,
//! written through [`EventStore::import`], so ids, versions, times and metadata are kept) and
//! [`FileArchive`] (a directory of zstd-compressed newline-delimited JSON, one file per
//! archived segment).
//!
//! [`ArchivedEventStore`] wraps a hot store and an archive into one [`EventStore`] whose stream
//! reads return archived versions from the archive and the rest from the hot store, so
//! [`crate::Repository::load`] (see [`crate::Repository::with_archive`]) gives the same state as
//! before archiving. Everything else — appends, `read_all`, `events_by_type`, subscriptions
//! and projections, the catalogue, `stream_version` — is the hot store's alone: `read_all` does
//! not see archived events. An archived event keeps the position it had where it was read
//! from when it was archived (the hot store's for [`FileArchive`], the cold store's for
//! [`StoreArchive`]); it is not a position of the hot store's log any more.

mod file;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::checkpoint::{Checkpoint, Wake};
use crate::error::{Error, Result};
use crate::event::{AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::{EventStore, EventStoreCapabilities};
use crate::import::StreamInfo;
use crate::stream::{ExpectedVersion, StreamId};

pub use file::FileArchive;

/// Where retention puts the events it takes out of the hot store.
///
/// Per stream an archive holds consecutive versions, from the first it was given to the
/// highest ([`Archive::archived_version`]). Contract, checked by the conformance suite:
/// - [`Archive::put`] is durable when it returns and idempotent: versions already archived
///   (the same event ids, as when a run resumes after a crash between archiving and
///   truncating) are skipped, and a put of only such versions writes nothing. A put that
///   would leave a gap after the archived versions, or that gives other ids at archived
///   versions, is refused ([`Error::Integrity`], [`Error::EventIdReused`]) and writes nothing.
/// - [`Archive::read`] returns archived events in version order, every envelope field as
///   given to `put` except the position.
#[async_trait]
pub trait Archive: Send + Sync {
    /// Archives `events`: consecutive versions of `stream`, in order.
    async fn put(&self, stream: &StreamId, events: &[RecordedEvent]) -> Result<()>;

    /// Up to `max_count` archived events of `stream` with version ≥ `from_version`, in version
    /// order (none for a stream never archived).
    async fn read(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>>;

    /// The highest archived version of `stream` (0: none).
    async fn archived_version(&self, stream: &StreamId) -> Result<u64>;
}

/// Checks what [`Archive::put`] is given: events of `stream`, consecutive versions in order.
pub(crate) fn validate_put(stream: &StreamId, events: &[RecordedEvent]) -> Result<()> {
    for (i, event) in events.iter().enumerate() {
        if event.stream != *stream {
            return Err(Error::InvalidInput(format!(
                "event {} of stream {} archived as stream {stream}",
                event.event_id, event.stream
            )));
        }
        if i > 0 && event.version != events[i - 1].version + 1 {
            return Err(Error::InvalidInput(format!(
                "archived events of {stream} jump from version {} to {}",
                events[i - 1].version,
                event.version
            )));
        }
    }
    Ok(())
}

/// The part of `events` past `archived`, after checking that the part at or below it is what
/// the archive holds (`held` reads it) and that the rest continues it without a gap.
pub(crate) async fn new_part<'a, F, Fut>(
    stream: &StreamId,
    events: &'a [RecordedEvent],
    archived: u64,
    held: F,
) -> Result<&'a [RecordedEvent]>
where
    F: FnOnce(u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<RecordedEvent>>>,
{
    validate_put(stream, events)?;
    let Some(first) = events.first() else {
        return Ok(events);
    };
    let overlap = events.iter().take_while(|e| e.version <= archived).count();
    if overlap > 0 {
        let present = held(first.version, overlap).await?;
        for event in &events[..overlap] {
            match present.iter().find(|p| p.version == event.version) {
                Some(p) if p.event_id == event.event_id => {}
                Some(_) => {
                    return Err(Error::EventIdReused {
                        stream: stream.clone(),
                        event_id: event.event_id,
                    })
                }
                None => {
                    return Err(Error::Integrity(format!(
                        "archive of {stream} lacks version {} though it reaches {archived}",
                        event.version
                    )))
                }
            }
        }
    }
    let rest = &events[overlap..];
    if let Some(next) = rest.first() {
        if archived > 0 && next.version != archived + 1 {
            return Err(Error::Integrity(format!(
                "archive of {stream} ends at version {archived}; archiving {} would leave a gap",
                next.version
            )));
        }
    }
    Ok(rest)
}

/// An [`Archive`] in another [`EventStore`] (a cold store: another database, another Redis),
/// written through [`EventStore::import`], so every event keeps its id, version, type, schema
/// version, content type, payload, metadata and recorded-at time; positions are the cold
/// store's. A stream's first archived segment starts the cold stream at its first version.
#[derive(Clone)]
pub struct StoreArchive {
    cold: Arc<dyn EventStore>,
}

impl StoreArchive {
    /// An archive in `cold`.
    pub fn new(cold: Arc<dyn EventStore>) -> Self {
        Self { cold }
    }

    /// The cold store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.cold
    }
}

#[async_trait]
impl Archive for StoreArchive {
    async fn put(&self, stream: &StreamId, events: &[RecordedEvent]) -> Result<()> {
        let archived = self.cold.stream_version(stream).await?;
        let rest = new_part(stream, events, archived, |from, n| {
            self.cold.read_stream(stream, from, n)
        })
        .await?;
        let mut after = match rest.first() {
            Some(first) => first.version - 1,
            None => return Ok(()),
        };
        for chunk in rest.chunks(self.cold.capabilities().max_batch.max(1)) {
            let done = self.cold.import(stream, after, chunk.to_vec()).await?;
            after = done.version;
        }
        Ok(())
    }

    async fn read(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.cold.read_stream(stream, from_version, max_count).await
    }

    async fn archived_version(&self, stream: &StreamId) -> Result<u64> {
        self.cold.stream_version(stream).await
    }
}

/// A hot [`EventStore`] with an [`Archive`] behind it: stream reads ([`EventStore::read_stream`]
/// and so [`EventStore::stream_events`]) return the versions retention moved to the archive
/// from there and the rest from the hot store; every other call is the hot store's (see the
/// [module docs](self): `read_all`, `events_by_type` and subscriptions see only the hot store).
///
/// A read asks the hot store first and the archive only when the hot store starts past the
/// version asked for; since retention archives before it truncates, whatever the hot store no
/// longer has is in the archive by then, also while a retention run is going on.
#[derive(Clone)]
pub struct ArchivedEventStore {
    hot: Arc<dyn EventStore>,
    archive: Arc<dyn Archive>,
}

impl ArchivedEventStore {
    /// `hot` with `archive` behind it.
    pub fn new(hot: Arc<dyn EventStore>, archive: Arc<dyn Archive>) -> Self {
        Self { hot, archive }
    }

    /// The hot store.
    pub fn hot(&self) -> &Arc<dyn EventStore> {
        &self.hot
    }

    /// The archive.
    pub fn archive(&self) -> &Arc<dyn Archive> {
        &self.archive
    }
}

#[async_trait]
impl EventStore for ArchivedEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.hot.capabilities()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.hot.append(stream, expected, events).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let from = from_version.max(1);
        let hot = self.hot.read_stream(stream, from, max_count).await?;
        if max_count == 0 || hot.first().is_some_and(|e| e.version <= from) {
            return Ok(hot);
        }
        // The hot store starts past `from` (or has nothing from there): the versions before
        // its first are archived, if anywhere. Read after the hot store, the archive holds
        // everything the hot store had lost by then.
        let hot_first = hot.first().map(|e| e.version);
        let archived = self.archive.read(stream, from, max_count).await?;
        let mut page: Vec<RecordedEvent> = archived
            .into_iter()
            .filter(|e| hot_first.is_none_or(|first| e.version < first))
            .collect();
        if page.is_empty() {
            return Ok(hot);
        }
        let last = page.last().map_or(0, |e| e.version);
        if hot_first.is_some_and(|first| first == last + 1) {
            let room = max_count.saturating_sub(page.len());
            page.extend(hot.into_iter().take(room));
        } else if let Some(first) = hot_first {
            if page.len() < max_count {
                // A gap between the archive and the hot store (events truncated without
                // being archived): the reader sees it as a jump in versions.
                let room = max_count - page.len();
                page.extend(hot.into_iter().filter(|e| e.version >= first).take(room));
            }
        }
        Ok(page)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        self.hot.stream_version(stream).await
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        self.hot.read_all(from, max_count, filter).await
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.hot.events_by_type(event_type, since, max_count).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        self.hot.truncate_before(stream, before).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        self.hot.delete_stream(stream, expected).await
    }

    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        self.hot.list_streams(after, max_count).await
    }

    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        self.hot.import(stream, after, events).await
    }

    async fn head(&self) -> Result<Checkpoint> {
        self.hot.head().await
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        self.hot.wait_for_append(checkpoint, timeout).await
    }

    fn distance(&self, from: Position, to: Position) -> u64 {
        self.hot.distance(from, to)
    }
}
