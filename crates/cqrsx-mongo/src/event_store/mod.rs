//! [`MongoEventStore`]: one document per commit, a counter for global positions, and readers
//! that close gaps left by slow or failed writers with fillers.

mod append;
mod heads;
mod import;
pub(crate) mod layout;
mod positions;
mod read;
mod tail;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::raw::{AllPage, EventBackend, EventStoreCapabilities, Wake};
use cqrsx_core::{
    AppendResult, Checkpoint, Error, EventFilter, ExpectedVersion, NewEvent, Position, RecordedEvent, Result, StreamId,
    Timestamp,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::Collection;

use crate::client::MongoClientManager;
use crate::error::corrupt;
use heads::{Head, Heads};
use layout::{as_i64, offset_of, slot_id, u64_of, EVENT_BITS};
use positions::Positions;

pub use append::{StreamContention, MAX_COMMIT_BYTES};
pub use positions::CounterContention;

/// The MongoDB event store.
///
/// A commit (the events of one append) is one document, so a batch is atomic without
/// transactions. Its `_id` is its version slot (stream and first version): racing writers of a
/// stream collide there, and every commit starts right after the head its writer read, so a
/// writer with a stale head always meets the commit that moved the head. Its `pos` is a commit
/// number reserved from a counter document (unique index); its events sit at offsets
/// `pos << 16 | index`, so offsets increase in commit order but are not dense. A reader of the
/// global log that meets a gap (numbers reserved but not yet written) waits up to
/// `gap_timeout`, then inserts fillers there; a late writer then meets the filler, reserves a
/// new number and retries, so no reader ever skips a commit.
///
/// On MongoDB an uncontended append is two sequential round trips: a position (shared with
/// this process's concurrent writers) and the stream's head together, then the insert; a
/// stream is read with one query. Where the server lacks what that needs, declared in
/// [`crate::ServerCapabilities`], the store takes slower paths that are still correct: heads
/// from hints read by `_id` (no indexed queries), event ids checked by a query before the
/// insert (no unique indexes over arrays).
///
/// Live subscriptions wake on a change stream where the server has them, and poll elsewhere.
pub struct MongoEventStore {
    client: MongoClientManager,
    commits: Collection<Document>,
    positions: Arc<Positions>,
    heads: Heads,
    tail: Arc<tail::Tail>,
    caps: EventStoreCapabilities,
    gap_timeout: Duration,
    insert_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Whether a unique index refuses an event id twice in a stream.
    unique_ids: bool,
}

impl std::fmt::Debug for MongoEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoEventStore")
            .field("commits", &self.commits.name())
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl MongoEventStore {
    /// An event store over this client's database and configured collection names. Call
    /// [`MongoClientManager::initialize_event_sourcing_schema`] once before first use.
    pub fn new(client: MongoClientManager) -> Self {
        let config = client.config();
        let commits: Collection<Document> = client.database().collection(&config.events_collection());
        let counters: Collection<Document> = client.database().collection(&config.counters_collection());
        let capabilities = client.capabilities();
        let caps = EventStoreCapabilities {
            partitions: 1,
            max_event_bytes: MAX_COMMIT_BYTES,
            live_signal: capabilities.change_streams,
            ..EventStoreCapabilities::default()
        };
        Self {
            gap_timeout: config.gap_timeout,
            unique_ids: capabilities.unique_array_indexes,
            positions: Arc::new(Positions::new(client.clone(), counters.clone(), commits.clone())),
            heads: Heads::new(client.clone(), commits.clone(), counters),
            tail: Arc::new(tail::Tail::new(commits.clone())),
            client,
            commits,
            caps,
            insert_gate: None,
        }
    }

    /// Makes every append wait, between reserving its first position and inserting its commit,
    /// until the test adds a permit to `gate` — a stalled writer, for tests of the gap
    /// handling. Not for production use.
    #[doc(hidden)]
    pub fn with_insert_gate(mut self, gate: Arc<tokio::sync::Semaphore>) -> Self {
        self.insert_gate = Some(gate);
        self
    }
}

#[async_trait]
impl EventBackend for MongoEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.append_commit(stream, expected, events).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.events_from(stream, from_version, max_count.min(1000))
            .take(max_count)
            .try_collect()
            .await
    }

    fn stream_cursor<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        batch: usize,
    ) -> Option<BoxStream<'a, Result<RecordedEvent>>> {
        Some(self.events_from(stream, from_version, batch))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let head = self.heads.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(head.version)
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        if max_count == 0 {
            return Ok(AllPage {
                events: Vec::new(),
                next: from.max(Position::start_of(0)),
            });
        }
        self.read_all_page(from, max_count, filter).await
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.by_type(event_type, since, max_count).await
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<cqrsx_core::raw::StreamInfo>> {
        self.catalogue_page(after, max_count).await
    }

    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        self.import_commit(stream, after, events).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let head = self.heads.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        let commits: Vec<Document> = self
            .client
            .track(
                self.commits
                    .find(doc! { "stream": stream.key(), "v0": { "$lt": as_i64(before) } })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        let mut removed = 0;
        for commit in commits {
            let v0 = u64_of(&commit, "v0")?;
            let v1 = u64_of(&commit, "v1")?;
            let trimmed = commit.get("tr").map_or(Ok(0), |_| u64_of(&commit, "tr"))?;
            let total = v1 + 1 - v0;
            let new_trimmed = (before - v0).min(total);
            if new_trimmed <= trimmed {
                continue;
            }
            let events = commit
                .get_array("events")
                .map_err(|_| corrupt("commit without events"))?;
            let keep: Vec<Bson> = events
                .iter()
                .skip(usize::try_from(new_trimmed - trimmed).unwrap_or(usize::MAX))
                .cloned()
                .collect();
            // The commit shell stays: its version slot keeps racing writers apart and its
            // position keeps the global log's numbers.
            self.client
                .track(
                    self.commits
                        .update_one(
                            doc! { "_id": commit.get("_id").cloned().unwrap_or(Bson::Null), "tr": commit.get("tr").cloned().unwrap_or(Bson::Null) },
                            doc! { "$set": { "events": keep, "tr": as_i64(new_trimmed) } },
                        )
                        .into_future(),
                )
                .await?;
            removed += new_trimmed - trimmed;
        }
        Ok(removed)
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let head = self.heads.head(stream).await?;
        expected.check(stream, head.version, head.deleted)?;
        if head.version == 0 && !head.deleted {
            // A stream deleted before its first write is in the catalogue too.
            self.heads.enter(stream).await?;
        }
        // The tombstone takes the next version slot, so it races appends like a commit would.
        let v0 = head.version + 1;
        let tombstone = doc! {
            "_id": slot_id(stream, v0),
            "stream": stream.key(),
            "at": stream.aggregate_type(),
            "v0": as_i64(v0),
            "v1": as_i64(head.version),
            "ids": [],
            "types": [],
            "ts": DateTime::now(),
            "events": [],
            "deleted": true,
        };
        if !self.insert_tombstone(stream, tombstone).await? {
            // Another write took the slot: what it left decides (the tombstone's slot is
            // taken, so the head moved, and `Exact(head)` no longer holds).
            let actual = self.heads.head(stream).await?;
            if actual.deleted {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            return Err(Error::conflict(stream, expected, actual.version));
        }
        self.heads
            .advance(
                stream,
                Head {
                    version: head.version,
                    deleted: true,
                },
                &[],
            )
            .await;
        self.client
            .track(
                self.commits
                    .update_many(
                        doc! { "stream": stream.key(), "deleted": { "$ne": true } },
                        doc! { "$set": { "events": [], "deleted": true } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    async fn head(&self) -> Result<Checkpoint> {
        Checkpoint::from_offsets([offset_of(self.positions.last().await? + 1, 0)])
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        if !self.caps.live_signal {
            return Ok(Wake::Unsupported);
        }
        let reserved = self.positions.last().await?;
        self.tail.wait(checkpoint, reserved, timeout).await
    }

    /// In commits: offsets before the first commit point at its start.
    fn distance(&self, from: Position, to: Position) -> u64 {
        let commit = |offset: u64| (offset >> EVENT_BITS).max(1);
        commit(to.offset).saturating_sub(commit(from.offset))
    }
}
