//! [`MongoEventStore`]: one document per commit, a counter for global positions, and readers
//! that close gaps left by slow or failed writers with fillers.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrsx_core::{
    validate_append, validate_position, AllPage, AppendResult, Error, EventFilter, EventStore, EventStoreCapabilities,
    ExpectedVersion, NewEvent, Position, RecordedEvent, Result, StreamId, Timestamp,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use tracing::instrument;

use crate::client::{MongoClientManager, Tracked};
use crate::error::{corrupt, is_duplicate_key};
use crate::payload::{event_doc, recorded};

/// The counter document holding the last reserved global position.
const POSITION_COUNTER: &str = "global_position";
/// Commits are refused above this size, before the write: the server's limit is 16 MiB per
/// document, and the envelope fields need some room.
pub const MAX_COMMIT_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;
/// Commits fetched per `read_all` query.
const READ_BATCH: i64 = 256;
/// How often a reader waiting on a gap looks again.
const GAP_POLL: Duration = Duration::from_millis(5);
/// A commit's events sit at positions `commit << EVENT_BITS | index`, so a commit needs one
/// counter value however many events it holds, and its `_id` alone keeps commits apart.
const EVENT_BITS: u32 = 16;
/// How often a writer whose reserved position turned out taken re-reserves. On MongoDB that
/// happens only when a reader closed the position; on servers whose `$inc` loses concurrent
/// updates (FerretDB 1.x) many writers can be handed the same position, and each round lets
/// one of them through, so the bound must exceed the number of concurrent writers.
const MAX_RESERVATIONS: usize = 64;
/// Commits a stream read follows by `_id` before it turns to one query, where the server
/// evaluates only `_id` filters in SQL (FerretDB 1.x): every lookup costs a pass over the
/// collection there, so a few are cheaper than a query and many are not.
const MAX_SLOT_WALK: usize = 4;
/// How often an `Any` / `StreamExists` append re-reads a head that moved under it. Each lost
/// round means another writer's commit landed, so this only ends a writer that loses that
/// many times in a row (after jittered pauses) to others.
const MAX_APPEND_ROUNDS: usize = 512;

/// The MongoDB event store.
///
/// A commit (the events of one append) is one document, so a batch is atomic without
/// transactions. Its `_id` is its version slot (stream and first version): racing writers of a
/// stream collide there, and every commit starts right after the head its writer read, so a
/// writer with a stale head always meets the commit that moved the head. Its `pos` is a global
/// position reserved from a counter document (unique index). A reader of the global log that
/// meets a gap (positions reserved but not yet written) waits up to `gap_timeout`, then inserts
/// fillers at those positions; a late writer then hits the filler, reserves a new position and
/// retries, so no reader ever skips a commit.
///
/// Every lookup on the write path is by `_id`: the head comes from a per-stream hint document
/// (a lower bound each writer advances) followed slot by slot to the true head. MongoDB answers
/// these from the `_id` index; FerretDB 1.x (SQLite) answers only `_id` filters in SQL rather
/// than by decoding every document, which is what keeps appends usable there.
pub struct MongoEventStore {
    client: MongoClientManager,
    commits: Collection<Document>,
    counters: Collection<Document>,
    caps: EventStoreCapabilities,
    gap_timeout: Duration,
    insert_delay: Option<Duration>,
}

impl std::fmt::Debug for MongoEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoEventStore")
            .field("commits", &self.commits.name())
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

/// What a writer learns about a stream before it writes.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    version: u64,
    deleted: bool,
}

fn i64_of(d: &Document, key: &str) -> Result<i64> {
    match d.get(key) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        Some(Bson::Double(v)) if v.fract() == 0.0 => Ok(*v as i64),
        _ => Err(corrupt(format!("commit field {key} is missing or not a number"))),
    }
}

fn u64_of(d: &Document, key: &str) -> Result<u64> {
    u64::try_from(i64_of(d, key)?).map_err(|_| corrupt(format!("commit field {key} is negative")))
}

/// A short pause after the `attempt`-th position collision: up to `attempt` × 200 µs, varied
/// by the clock's nanoseconds so that writers that collided together spread out.
fn collision_backoff(attempt: usize) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let ceiling = 200 * attempt.min(20) as u64;
    Duration::from_micros(jitter % ceiling.max(1))
}

/// A commit's `_id`: its stream and first version. Stream keys hold no control characters, so
/// the separator keeps slots of different streams apart.
fn slot_id(stream: &StreamId, v0: u64) -> String {
    format!("{}\u{1f}{v0}", stream.key())
}

/// A filler's `_id`, which no slot can equal (slots start with a stream key).
fn filler_id(position: u64) -> String {
    format!("\u{1f}fill\u{1f}{position}")
}

/// The `_id` of a stream's head hint in the counters collection.
fn head_id(stream: &StreamId) -> String {
    format!("head\u{1f}{}", stream.key())
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The global offset of event `index` of the commit at `commit`.
fn offset_of(commit: u64, index: u64) -> u64 {
    (commit << EVENT_BITS) | index
}

/// The commit and event index an offset points at; offsets before the first commit point at
/// its start.
fn split(offset: u64) -> (u64, u64) {
    let commit = offset >> EVENT_BITS;
    if commit == 0 {
        (1, 0)
    } else {
        (commit, offset & ((1 << EVENT_BITS) - 1))
    }
}

impl MongoEventStore {
    /// An event store over this client's database and configured collection names. Call
    /// [`MongoClientManager::initialize_event_sourcing_schema`] once before first use.
    pub fn new(client: MongoClientManager) -> Self {
        let config = client.config();
        let commits = client.database().collection(&config.events_collection());
        let counters = client.database().collection(&config.counters_collection());
        let caps = EventStoreCapabilities {
            partitions: 1,
            max_event_bytes: MAX_COMMIT_BYTES,
            transactions: client.capabilities().transactions,
            ..EventStoreCapabilities::default()
        };
        Self {
            gap_timeout: config.gap_timeout,
            client,
            commits,
            counters,
            caps,
            insert_delay: None,
        }
    }

    /// Makes every append pause between reserving its first position and inserting its commit
    /// — a stalled writer, for tests of the gap handling. Not for production use.
    #[doc(hidden)]
    pub fn with_insert_delay(mut self, delay: Duration) -> Self {
        self.insert_delay = Some(delay);
        self
    }

    /// The stream's head hint: a lower bound of its version kept in the counters collection,
    /// read by `_id` alone. Every writer advances it after its commit lands; a writer that
    /// stops in between leaves it behind, which [`MongoEventStore::walk`] repairs.
    async fn head_hint(&self, stream: &StreamId) -> Result<Head> {
        let found = self
            .client
            .track(self.counters.find_one(doc! { "_id": head_id(stream) }).into_future())
            .await?;
        match found {
            None => Ok(Head::default()),
            Some(d) => Ok(Head {
                version: u64_of(&d, "v")?,
                deleted: d.get_bool("deleted").unwrap_or(false),
            }),
        }
    }

    /// The commit holding version slot `v0` of the stream, looked up by `_id`.
    async fn slot(&self, stream: &StreamId, v0: u64) -> Result<Option<Document>> {
        self.client
            .track(
                self.commits
                    .find_one(doc! { "_id": slot_id(stream, v0) })
                    .projection(doc! { "v1": 1, "ids": 1, "pos": 1, "deleted": 1 })
                    .into_future(),
            )
            .await
    }

    /// The whole commit holding version slot `v0`, looked up by `_id`.
    async fn commit_at(&self, stream: &StreamId, v0: u64) -> Result<Option<Document>> {
        self.client
            .track(self.commits.find_one(doc! { "_id": slot_id(stream, v0) }).into_future())
            .await
    }

    /// Follows version slots from `head` (a version the stream is known to have) to the true
    /// head, one `_id` lookup per commit, and advances the hint when it had fallen behind.
    async fn walk(&self, stream: &StreamId, mut head: Head) -> Result<Head> {
        let start = head;
        while !head.deleted {
            let Some(commit) = self.slot(stream, head.version + 1).await? else {
                break;
            };
            if commit.get_bool("deleted").unwrap_or(false) {
                head.deleted = true;
            } else {
                head.version = u64_of(&commit, "v1")?;
            }
        }
        if head.version > start.version || head.deleted != start.deleted {
            self.advance_hint(stream, head).await;
        }
        Ok(head)
    }

    /// The stream's true head.
    async fn head(&self, stream: &StreamId) -> Result<Head> {
        let hint = self.head_hint(stream).await?;
        self.walk(stream, hint).await
    }

    /// Raises the head hint to `head`. Failures only cost later writers a longer walk, so they
    /// are logged, not returned.
    async fn advance_hint(&self, stream: &StreamId, head: Head) {
        let mut update = doc! { "$max": { "v": as_i64(head.version) } };
        if head.deleted {
            update.insert("$set", doc! { "deleted": true });
        }
        for _ in 0..2 {
            let result = self
                .client
                .track_raw(
                    self.counters
                        .update_one(doc! { "_id": head_id(stream) }, update.clone())
                        .upsert(true)
                        .into_future(),
                )
                .await;
            match result {
                Ok(_) => return,
                // Two first-ever upserts raced on the hint's _id; the update now finds it.
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => continue,
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e.into_error(), "could not advance the head hint");
                    return;
                }
            }
        }
    }

    /// Reserves the next commit position.
    async fn reserve(&self) -> Result<u64> {
        // Where `$inc` loses concurrent updates, this process's writers take turns; writers of
        // other processes can still collide, which `insert_commit` resolves.
        let _turn = match self.client.capabilities().atomic_counters {
            true => None,
            false => Some(self.client.reservations().lock().await),
        };
        for _ in 0..3 {
            let result = self
                .client
                .track_raw(
                    self.counters
                        .find_one_and_update(doc! { "_id": POSITION_COUNTER }, doc! { "$inc": { "n": 1_i64 } })
                        .upsert(true)
                        .return_document(ReturnDocument::After)
                        .into_future(),
                )
                .await;
            match result {
                Ok(Some(d)) => return u64_of(&d, "n"),
                Ok(None) => return Err(corrupt("the position counter upsert returned nothing")),
                // Two first-ever upserts can race on the counter's _id; the loser retries.
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into_error()),
            }
        }
        Err(Error::backend(true, CounterContention))
    }

    /// Moves the counter to at least `taken`, a position found in use. Needed where `$inc` is
    /// not atomic under concurrency (FerretDB 1.x loses increments) and after readers filled
    /// positions: a writer that collides brings the counter forward with one `_id` update.
    async fn bump_counter(&self, taken: u64) -> Result<()> {
        self.client
            .track(
                self.counters
                    .update_one(
                        doc! { "_id": POSITION_COUNTER },
                        doc! { "$max": { "n": as_i64(taken) } },
                    )
                    .upsert(true)
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    /// Closes positions `first..=last` with fillers, where no commit has landed. A duplicate
    /// key means the position is taken by a real commit, which is what the reader waited for.
    async fn fill(&self, first: u64, last: u64) -> Result<()> {
        if last < first {
            return Ok(());
        }
        let fillers: Vec<Document> = (first..=last)
            .map(|p| doc! { "_id": filler_id(p), "pos": as_i64(p), "filler": true })
            .collect();
        match self
            .client
            .track_raw(self.commits.insert_many(fillers).ordered(false).into_future())
            .await
        {
            Ok(_) => Ok(()),
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    /// Releases a reserved position a writer will not use, so readers need not wait for it.
    async fn release(&self, position: u64) {
        if let Err(e) = self.fill(position, position).await {
            tracing::warn!(error = %e, position, "could not release a reserved position; readers will fill it");
        }
    }

    /// The commit a retry of `ids` would repeat, if the stream already holds any of them.
    async fn existing_ids(&self, stream: &StreamId, ids: &[String]) -> Result<Option<Document>> {
        self.client
            .track(
                self.commits
                    .find_one(doc! { "stream": stream.key(), "ids": { "$in": ids } })
                    .projection(doc! { "ids": 1, "v1": 1, "pos": 1 })
                    .into_future(),
            )
            .await
    }

    fn conflict(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> Error {
        Error::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        }
    }

    /// The result of an earlier commit with exactly these ids, or a conflict.
    fn repeat_or_conflict(
        stream: &StreamId,
        expected: ExpectedVersion,
        head: Head,
        earlier: &Document,
        ids: &[String],
    ) -> Result<AppendResult> {
        if Self::same_ids(earlier, ids) {
            return Self::repeat(earlier, ids.len() as u64);
        }
        // Ids that match an earlier commit only in part: not a retry of it.
        Err(Self::conflict(stream, expected, head.version))
    }

    /// Inserts `commit` (its `_id` is its version slot) at `position`, or at a newly reserved
    /// position when that one turns out to be taken (a reader closed it, or the counter fell
    /// behind). A taken slot ends it: the holder is returned and the position released.
    async fn insert_commit(&self, stream: &StreamId, commit: &mut Document, mut position: u64) -> Result<Inserted> {
        let v0 = u64_of(commit, "v0")?;
        for attempt in 0..MAX_RESERVATIONS {
            if attempt > 0 {
                // Writers that collided together would collide again in lockstep: spread them.
                tokio::time::sleep(collision_backoff(attempt)).await;
                position = self.reserve().await?;
            }
            commit.insert("pos", as_i64(position));
            if let Some(delay) = self.insert_delay.filter(|_| attempt == 0) {
                tokio::time::sleep(delay).await;
            }
            match self
                .client
                .track_raw(self.commits.insert_one(&*commit).into_future())
                .await
            {
                Ok(_) => return Ok(Inserted::Landed(position)),
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {
                    if let Some(holder) = self.slot(stream, v0).await? {
                        self.release(position).await;
                        return Ok(Inserted::SlotTaken(holder));
                    }
                    tracing::debug!(position, "reserved position is taken; reserving again");
                    self.bump_counter(position).await?;
                }
                // The insert may or may not have landed; a reader fills the position if not,
                // and a retry with the same event ids is answered idempotently.
                Err(e) => return Err(e.into_error()),
            }
        }
        self.release(position).await;
        Err(Error::backend(true, CounterContention))
    }

    /// Whether `commit` holds exactly these event ids (a retry of it).
    fn same_ids(commit: &Document, ids: &[String]) -> bool {
        commit
            .get_array("ids")
            .map(|a| a.iter().filter_map(Bson::as_str).eq(ids.iter().map(String::as_str)))
            .unwrap_or(false)
    }

    /// The answer for a commit that already holds exactly these ids.
    fn repeat(commit: &Document, n: u64) -> Result<AppendResult> {
        Ok(AppendResult {
            version: u64_of(commit, "v1")?,
            position: Position {
                partition: 0,
                offset: offset_of(u64_of(commit, "pos")?, n.saturating_sub(1)),
            },
        })
    }

    fn commit_events(&self, commit: &Document, from_version: u64) -> Result<Vec<RecordedEvent>> {
        let stream = StreamId::parse(commit.get_str("stream").map_err(|_| corrupt("commit without stream"))?)?;
        let v0 = u64_of(commit, "v0")?;
        let first_pos = u64_of(commit, "pos")?;
        let trimmed = commit.get("tr").map_or(Ok(0), |_| u64_of(commit, "tr"))?;
        let ts = commit
            .get_datetime("ts")
            .map(|t| Timestamp(u64::try_from(t.timestamp_millis()).unwrap_or(0)))
            .map_err(|_| corrupt("commit without time"))?;
        let events = commit
            .get_array("events")
            .map_err(|_| corrupt("commit without events"))?;
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let k = trimmed + i as u64;
            let version = v0 + k;
            if version < from_version {
                continue;
            }
            let d = e.as_document().ok_or_else(|| corrupt("event is not a document"))?;
            let position = Position {
                partition: 0,
                offset: offset_of(first_pos, k),
            };
            out.push(recorded(&stream, version, position, ts, d)?);
        }
        Ok(out)
    }
}

/// How an insert ended.
enum Inserted {
    /// The commit is stored from this position.
    Landed(u64),
    /// Another commit (returned) holds the version slot.
    SlotTaken(Document),
}

/// The position counter stayed contended through every retry.
#[derive(Debug, thiserror::Error)]
#[error("could not reserve global positions: the counter document is contended")]
pub struct CounterContention;

/// An `Any` / `StreamExists` append lost the race for the stream's next version every time.
#[derive(Debug, thiserror::Error)]
#[error("the stream's head kept moving: other writers won every attempt")]
pub struct StreamContention;

#[async_trait]
impl EventStore for MongoEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    #[instrument(skip(self, events), fields(stream = %stream, count = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        validate_append(&events, &self.caps)?;
        let n = events.len() as u64;
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let docs = events.iter().map(event_doc).collect::<Result<Vec<_>>>()?;
        let mut commit = doc! {
            "_id": 0_i64,
            "stream": stream.key(),
            "at": stream.aggregate_type(),
            "v0": 0_i64,
            "v1": 0_i64,
            "ids": ids.clone(),
            "types": types,
            "ts": DateTime::now(),
            "events": docs,
        };
        let size = mongodb::bson::to_vec(&commit)
            .map_err(|e| Error::serialization("commit", e))?
            .len();
        if size > MAX_COMMIT_BYTES {
            return Err(Error::InvalidInput(format!(
                "a commit of {size} bytes exceeds MongoDB's document limit ({MAX_COMMIT_BYTES} bytes): split the batch"
            )));
        }

        // The head hint and a position are fetched together (both by `_id`), and for `Any` /
        // `StreamExists` the event ids are looked up too, since such a retry may land anywhere.
        // The commit then goes into version slot head + 1: its `_id` is the slot, so racing
        // writers of a stream collide on it and the loser learns the winner from the slot.
        let exact = match expected {
            ExpectedVersion::Exact(n) => Some(n),
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => None,
        };
        let lookup_ids = async {
            match exact {
                Some(_) => Ok(None),
                None => self.existing_ids(stream, &ids).await,
            }
        };
        let (hint, earlier, position) = tokio::join!(self.head_hint(stream), lookup_ids, self.reserve());
        let mut position = Some(position?);
        let release = |position: Option<u64>| async move {
            if let Some(p) = position {
                self.release(p).await;
            }
        };
        let mut head = match (hint, earlier) {
            (Ok(hint), Ok(None)) => hint,
            (Ok(hint), Ok(Some(earlier))) => {
                release(position.take()).await;
                let head = self.walk(stream, hint).await?;
                return Self::repeat_or_conflict(stream, expected, head, &earlier, &ids);
            }
            (Err(e), _) | (_, Err(e)) => {
                release(position.take()).await;
                return Err(e);
            }
        };
        for round in 0..MAX_APPEND_ROUNDS {
            if let Some(want) = exact {
                if head.version < want && !head.deleted {
                    head = self.walk(stream, head).await?;
                }
                if head.version > want && !head.deleted {
                    // Slot want + 1 is taken: by this very commit when this is a retry.
                    release(position.take()).await;
                    return match self.slot(stream, want + 1).await? {
                        Some(holder) if Self::same_ids(&holder, &ids) => Self::repeat(&holder, n),
                        _ => Err(Self::conflict(stream, expected, self.walk(stream, head).await?.version)),
                    };
                }
            }
            if head.deleted {
                release(position.take()).await;
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            if !expected.accepts(head.version) {
                // The hint may lag behind a stream that exists.
                head = self.walk(stream, head).await?;
                if head.deleted || !expected.accepts(head.version) {
                    release(position.take()).await;
                    if head.deleted {
                        return Err(Error::StreamDeleted { stream: stream.clone() });
                    }
                    return Err(Self::conflict(stream, expected, head.version));
                }
            }
            let v0 = head.version + 1;
            commit.insert("_id", slot_id(stream, v0));
            commit.insert("v0", as_i64(v0));
            commit.insert("v1", as_i64(head.version + n));
            let at = match position.take() {
                Some(p) => p,
                None => self.reserve().await?,
            };
            match self.insert_commit(stream, &mut commit, at).await? {
                Inserted::Landed(landed) => {
                    let version = head.version + n;
                    self.advance_hint(
                        stream,
                        Head {
                            version,
                            deleted: false,
                        },
                    )
                    .await;
                    return Ok(AppendResult {
                        version,
                        position: Position {
                            partition: 0,
                            offset: offset_of(landed, n - 1),
                        },
                    });
                }
                Inserted::SlotTaken(holder) => {
                    if Self::same_ids(&holder, &ids) {
                        return Self::repeat(&holder, n);
                    }
                    let moved = Head {
                        version: u64_of(&holder, "v1")?,
                        deleted: holder.get_bool("deleted").unwrap_or(false),
                    };
                    head = self.walk(stream, moved).await?;
                    if exact.is_some() {
                        if head.deleted {
                            return Err(Error::StreamDeleted { stream: stream.clone() });
                        }
                        return Err(Self::conflict(stream, expected, head.version));
                    }
                    // The writers that lost this slot would race for the next one in lockstep.
                    tokio::time::sleep(collision_backoff(round + 1)).await;
                }
            }
        }
        Err(Error::backend(true, StreamContention))
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        if max_count == 0 {
            return Ok(out);
        }
        let from = from_version.max(1);
        let by_id = !self.client.capabilities().indexed_queries;
        // With indexes, one query answers every case; without them (FerretDB), `_id` lookups
        // are far cheaper than a query, so start with the commit at `from`.
        let mut next = match by_id {
            true => self.commit_at(stream, from).await?,
            false => None,
        };
        if by_id && next.is_none() {
            if from == 1 {
                // Every stream's first commit sits in slot 1 (and stays there, truncated or not).
                return Ok(out);
            }
            // No commit starts there: either one spans it, or the stream ends before it (the
            // usual case after a snapshot at the head), which `_id` lookups settle without a
            // query over the stream.
            let hint = self.head_hint(stream).await?;
            let head = if hint.version + 1 == from && !hint.deleted {
                // The slot after the hint is the one just found empty: the hint is the head.
                hint
            } else {
                self.walk(stream, hint).await?
            };
            if head.deleted {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            if head.version < from {
                return Ok(out);
            }
        }
        let mut rest_from = from;
        if by_id && next.is_some() {
            // Where only `_id` filters are evaluated in SQL, follow a few commits slot by slot
            // (a snapshot's tail is usually one or two); a longer stream is cheaper in one query.
            let mut walked = 0;
            while let Some(commit) = next.take() {
                if commit.get_bool("deleted").unwrap_or(false) {
                    return Err(Error::StreamDeleted { stream: stream.clone() });
                }
                for event in self.commit_events(&commit, from)? {
                    out.push(event);
                    if out.len() >= max_count {
                        return Ok(out);
                    }
                }
                rest_from = u64_of(&commit, "v1")? + 1;
                walked += 1;
                if walked == MAX_SLOT_WALK {
                    break;
                }
                next = self.commit_at(stream, rest_from).await?;
                if next.is_none() {
                    return Ok(out);
                }
            }
        }
        let filter = doc! {
            "stream": stream.key(),
            "$or": [ { "v1": { "$gte": as_i64(rest_from) } }, { "deleted": true } ],
        };
        let mut cursor = self
            .client
            .track(
                self.commits
                    .find(filter)
                    .sort(doc! { "v0": 1 })
                    .batch_size(u32::try_from(max_count.min(1000)).unwrap_or(1000))
                    .into_future(),
            )
            .await?;
        while let Some(commit) = self.client.track(cursor.try_next()).await? {
            if commit.get_bool("deleted").unwrap_or(false) {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            for event in self.commit_events(&commit, rest_from)? {
                out.push(event);
                if out.len() >= max_count {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let head = self.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(head.version)
    }

    #[instrument(skip(self, filter))]
    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        validate_position(from, &self.caps)?;
        let (mut commit_at, mut index_at) = split(from.offset);
        let mut events = Vec::new();
        let mut gap_since: Option<(u64, Instant)> = None;
        let mut scanned = 0usize;
        'pages: while events.len() < max_count && scanned < 10_000.max(max_count) {
            let commits: Vec<Document> = self
                .client
                .track(
                    self.commits
                        .find(doc! { "pos": { "$gte": as_i64(commit_at) } })
                        .sort(doc! { "pos": 1 })
                        .limit(READ_BATCH)
                        .into_future(),
                )
                .await?
                .try_collect()
                .await
                .map_err(crate::error::backend)?;
            if commits.is_empty() {
                break;
            }
            for commit in commits {
                let position = u64_of(&commit, "pos")?;
                if position > commit_at {
                    // Positions commit_at..position are reserved but not written. With events
                    // in hand, end the page before the gap; otherwise wait for the missing
                    // commit a bounded time, then close the gap.
                    if !events.is_empty() {
                        break 'pages;
                    }
                    match gap_since {
                        Some((at, since)) if at == commit_at && since.elapsed() >= self.gap_timeout => {
                            tracing::debug!(from = commit_at, to = position - 1, "closing a gap with fillers");
                            self.fill(commit_at, position - 1).await?;
                            gap_since = None;
                        }
                        Some((at, _)) if at == commit_at => tokio::time::sleep(GAP_POLL).await,
                        _ => {
                            gap_since = Some((commit_at, Instant::now()));
                            tokio::time::sleep(GAP_POLL).await;
                        }
                    }
                    continue 'pages;
                }
                scanned += 1;
                let live = !commit.get_bool("filler").unwrap_or(false) && !commit.get_bool("deleted").unwrap_or(false);
                let matches = live && {
                    let at = commit.get_str("at").unwrap_or_default();
                    let types: Vec<&str> = commit
                        .get_array("types")
                        .map(|a| a.iter().filter_map(Bson::as_str).collect())
                        .unwrap_or_default();
                    (filter.aggregate_types.is_empty() || filter.aggregate_types.iter().any(|t| t == at))
                        && (filter.event_types.is_empty()
                            || types.iter().any(|t| filter.event_types.iter().any(|f| f == t)))
                };
                if matches {
                    for event in self.commit_events(&commit, 0)? {
                        let index = event.position.offset & ((1 << EVENT_BITS) - 1);
                        if index < index_at {
                            continue;
                        }
                        if events.len() >= max_count {
                            break 'pages;
                        }
                        index_at = index + 1;
                        if filter.matches(&event.event_type, event.aggregate_type()) {
                            events.push(event);
                        }
                    }
                }
                commit_at = position + 1;
                index_at = 0;
                if events.len() >= max_count {
                    break 'pages;
                }
            }
        }
        let next = offset_of(commit_at, index_at).max(from.offset);
        Ok(AllPage {
            events,
            next: Position {
                partition: 0,
                offset: next,
            },
        })
    }

    #[instrument(skip(self))]
    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let since = DateTime::from_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        let mut cursor = self
            .client
            .track(
                self.commits
                    .find(doc! { "types": event_type, "ts": { "$gte": since }, "deleted": { "$ne": true } })
                    .sort(doc! { "pos": 1 })
                    .into_future(),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(commit) = self.client.track(cursor.try_next()).await? {
            for event in self.commit_events(&commit, 0)? {
                if event.event_type == event_type {
                    out.push(event);
                    if out.len() >= max_count {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let head = self.head(stream).await?;
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
            // positions keep the global log dense.
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

    #[instrument(skip(self), fields(stream = %stream))]
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let head = self.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if !expected.accepts(head.version) {
            return Err(Self::conflict(stream, expected, head.version));
        }
        // The tombstone takes the next version slot, so it races appends like a commit would.
        let v0 = head.version + 1;
        let mut tombstone = doc! {
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
        let position = self.reserve().await?;
        if let Inserted::SlotTaken(_) = self.insert_commit(stream, &mut tombstone, position).await? {
            let actual = self.head(stream).await?;
            if actual.deleted {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            return Err(Self::conflict(stream, expected, actual.version));
        }
        self.advance_hint(
            stream,
            Head {
                version: head.version,
                deleted: true,
            },
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
}
