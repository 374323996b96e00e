//! The append: a commit document inserted into its version slot at a reserved position.
//!
//! Round trip 1, in parallel: a position (coalesced with this process's other writers) and the
//! head (none for `NoStream`). Round trip 2: the insert. A slot already taken means another
//! writer won (a conflict, or for `Any` a retry at the new head), or that this very batch
//! landed before (a retry after a lost reply); an event id already taken (the unique index over
//! the stream's ids refuses it) means a retry or a reused id; a position already taken (a
//! reader closed it, or the counter fell behind) means reserving again.
//!
//! Where the server has no unique index over arrays (FerretDB 1.x), the ids are checked
//! through id documents read by `_id` after the head hint (see `heads.rs`), and the ids of
//! every commit the append walks past the hint are checked too: one more round trip before the
//! insert, and one after it (the id documents and the hint's advance, in one command).

use std::future::IntoFuture;
use std::sync::Arc;

use cqrsx_core::{telemetry, AppendResult, Error, ExpectedVersion, NewEvent, Position, Result, StreamId};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};

use crate::backoff::collision_backoff;
use crate::client::Tracked;
use crate::error::is_duplicate_key;
use crate::event_store::heads::{holds_any, Head};
use crate::event_store::layout::{as_i64, event_doc, offset_of, slot_id, u64_of};
use crate::event_store::positions::{CounterContention, Positions};
use crate::event_store::MongoEventStore;

/// Commits are refused above this size, before the write: the server's limit is 16 MiB per
/// document, and the envelope fields need some room.
pub const MAX_COMMIT_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// How often a writer whose reserved position turned out taken reserves again. On MongoDB
/// that happens only when a reader closed the position; on servers whose `$inc` loses
/// concurrent updates (FerretDB 1.x) writers of several processes can be handed the same
/// position, and each round lets one of them through.
const MAX_RESERVATIONS: usize = 64;

/// How often an `Any` / `StreamExists` append re-reads a head that moved under it. Each lost
/// round means another writer's commit landed, so this only ends a writer that loses that
/// many times in a row (after jittered pauses) to others.
const MAX_APPEND_ROUNDS: usize = 512;

/// An `Any` / `StreamExists` append lost the race for the stream's next version every time.
#[derive(Debug, thiserror::Error)]
#[error("the stream's head kept moving: other writers won every attempt")]
pub struct StreamContention;

/// How an insert ended.
enum Inserted {
    /// The commit is stored from this position.
    Landed(u64),
    /// Another commit (returned) holds the version slot.
    SlotTaken(Document),
    /// A commit of the stream (returned) already holds some of the batch's event ids.
    IdsTaken(Document),
}

/// What an append (or an import) will write, worked out before any round trip.
pub(crate) struct Plan {
    ids: Vec<String>,
    commit: Document,
    expected: ExpectedVersion,
    /// The version the expectation names (0 for `NoStream`), if it names one.
    exact: Option<u64>,
    /// Whether the ids are checked before the head is known (a `NoStream` append where no
    /// unique index holds them).
    ids_early: bool,
    n: u64,
}

impl Plan {
    fn new(stream: &StreamId, expected: ExpectedVersion, events: &[NewEvent], unique_ids: bool) -> Result<Self> {
        let n = events.len() as u64;
        let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let docs = events.iter().map(event_doc).collect::<Result<Vec<_>>>()?;
        let commit = doc! {
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
        Self::from_commit(commit, ids, expected, n, unique_ids)
    }

    /// The plan of a commit document built by the caller (the fields of [`Plan::new`]'s; its
    /// `_id`, `v0`, `v1` and `pos` are set when it lands), holding `n` versions.
    pub(crate) fn from_commit(
        commit: Document,
        ids: Vec<String>,
        expected: ExpectedVersion,
        n: u64,
        unique_ids: bool,
    ) -> Result<Self> {
        let size = mongodb::bson::to_vec(&commit)
            .map_err(|e| Error::serialization("commit", e))?
            .len();
        if size > MAX_COMMIT_BYTES {
            return Err(Error::InvalidInput(format!(
                "a commit of {size} bytes exceeds MongoDB's document limit ({MAX_COMMIT_BYTES} bytes): split the batch"
            )));
        }

        let exact = match expected {
            ExpectedVersion::Exact(v) => Some(v),
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => None,
        };
        // Where ids are checked through id documents, they are read after the hint (see
        // heads.rs) — but a `NoStream` append reads no hint: it goes to slot 1, and when that
        // is taken, `conflict_or_retry` reads the hint and the id documents again.
        let ids_early = exact == Some(0) && !unique_ids;
        Ok(Self {
            ids,
            commit,
            expected,
            exact,
            ids_early,
            n,
        })
    }
}

/// A reserved position the append has not used yet. Released — filled, so readers need not
/// wait for it — by [`Reservation::release`] when the append ends, or on drop when the append
/// was cancelled halfway (then by a task of its own, as `Drop` cannot wait).
struct Reservation {
    positions: Arc<Positions>,
    position: Option<u64>,
}

impl Reservation {
    /// The position, for an insert that will use it (and from then on answers for it).
    fn take(&mut self) -> Option<u64> {
        self.position.take()
    }

    async fn release(mut self) {
        if let Some(p) = self.position.take() {
            self.positions.release(p).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(p) = self.position.take() {
            let positions = Arc::clone(&self.positions);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { positions.release(p).await });
            }
        }
    }
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

/// The batch's ids are in an earlier commit: its result when this is a retry of it, else the
/// first id it reuses.
pub(crate) fn retry_or_reused(
    stream: &StreamId,
    events: &[NewEvent],
    ids: &[String],
    earlier: &Document,
) -> Result<AppendResult> {
    if same_ids(earlier, ids) {
        return repeat(earlier, ids.len() as u64);
    }
    let held: Vec<&str> = earlier
        .get_array("ids")
        .map(|a| a.iter().filter_map(Bson::as_str).collect())
        .unwrap_or_default();
    let reused = events
        .iter()
        .zip(ids)
        .find(|(_, id)| held.contains(&id.as_str()))
        .map_or(events.first().map(|e| e.event_id).unwrap_or_default(), |(e, _)| {
            e.event_id
        });
    Err(Error::EventIdReused {
        stream: stream.clone(),
        event_id: reused,
    })
}

impl MongoEventStore {
    /// The commit of the stream that holds any of `ids`, by the unique index over them (where
    /// the server has one: the insert that meets it asks this).
    pub(crate) async fn ids_holder(&self, stream: &StreamId, ids: &[String]) -> Result<Option<Document>> {
        let mut found: Vec<Document> = self
            .client
            .track(
                self.commits
                    .find(doc! { "stream": stream.key(), "ids": { "$in": ids } })
                    .projection(doc! { "ids": 1, "v0": 1, "v1": 1, "pos": 1 })
                    .sort(doc! { "v0": 1 })
                    .limit(1)
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        Ok(found.pop())
    }

    /// Inserts `commit` (its `_id` is its version slot) at the reserved position, or at a newly
    /// reserved one when that one turns out to be taken. A position the commit did not land at
    /// is released when this returns.
    async fn insert_commit(
        &self,
        stream: &StreamId,
        commit: &mut Document,
        ids: &[String],
        mut reservation: Reservation,
    ) -> Result<Inserted> {
        let inserted = self.insert_reserved(stream, commit, ids, &mut reservation).await;
        reservation.release().await;
        inserted
    }

    async fn insert_reserved(
        &self,
        stream: &StreamId,
        commit: &mut Document,
        ids: &[String],
        reservation: &mut Reservation,
    ) -> Result<Inserted> {
        let v0 = u64_of(commit, "v0")?;
        for attempt in 0..MAX_RESERVATIONS {
            if attempt > 0 {
                // Writers that collided together would collide again in lockstep: spread them.
                telemetry::record_backend_retry("mongo", "append");
                tokio::time::sleep(collision_backoff(attempt)).await;
                reservation.position = Some(self.positions.reserve(1).await?);
            }
            let Some(position) = reservation.position else {
                return Err(Error::backend(true, CounterContention));
            };
            commit.insert("pos", as_i64(position));
            if let Some(gate) = self.insert_gate.as_ref().filter(|_| attempt == 0) {
                let _ = gate.acquire().await;
            }
            match self
                .client
                .track_raw(self.commits.insert_one(&*commit).into_future())
                .await
            {
                Ok(_) => {
                    reservation.take();
                    return Ok(Inserted::Landed(position));
                }
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {
                    // Which unique key: the ids (where an index holds them), the slot, or the
                    // position. Told apart by what the server holds (the error's code, 11000,
                    // says only that some unique index refused it; its wording and key values
                    // differ between servers). The ids first: a retry of an earlier commit also
                    // meets a taken slot, and must be answered as the retry it is.
                    let ids_check = async {
                        match self.unique_ids {
                            true => self.ids_holder(stream, ids).await,
                            false => Ok(None),
                        }
                    };
                    let (slot, earlier) = tokio::join!(self.heads.slot(stream, v0), ids_check);
                    if let Some(holder) = earlier? {
                        return Ok(Inserted::IdsTaken(holder));
                    }
                    if let Some(holder) = slot? {
                        return Ok(Inserted::SlotTaken(holder));
                    }
                    tracing::debug!(position, "reserved position is taken; reserving again");
                    // Another document holds it: it is not this append's to release.
                    reservation.take();
                    self.positions.bump(position).await?;
                }
                // The server refused the document: it did not land, so its position is
                // released (by the caller) at once for readers.
                Err(Tracked::Driver(e)) if crate::error::server_refused(&e) => {
                    return Err(crate::error::backend(e));
                }
                // The insert may or may not have landed; a reader fills the position if not,
                // and a retry with the same event ids is answered idempotently.
                Err(e) => {
                    reservation.take();
                    return Err(e.into_error());
                }
            }
        }
        Err(Error::backend(true, CounterContention))
    }

    /// A position this append reserved, released unless a commit lands at it.
    fn reservation(&self, position: u64) -> Reservation {
        Reservation {
            positions: Arc::clone(&self.positions),
            position: Some(position),
        }
    }

    /// Inserts a deleted stream's tombstone into its slot; false when another commit took it.
    pub(crate) async fn insert_tombstone(&self, stream: &StreamId, mut tombstone: Document) -> Result<bool> {
        let reservation = self.reservation(self.positions.reserve(1).await?);
        Ok(matches!(
            self.insert_commit(stream, &mut tombstone, &[], reservation).await?,
            Inserted::Landed(_)
        ))
    }

    /// Appends a batch: [`Plan`] (the commit document, checked for size), then the head and a
    /// position in parallel, then [`MongoEventStore::land`]. The position is reserved in a
    /// [`Reservation`], which fills it for readers when the append ends without using it —
    /// whichever way it ends, cancellation included.
    pub(crate) async fn append_commit(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let plan = Plan::new(stream, expected, &events, self.unique_ids)?;
        self.append_planned(stream, &events, plan).await
    }

    /// Lands a planned commit of `events` (see [`MongoEventStore::append_commit`]). A commit
    /// that starts a stream enters it in the catalogue first (see `Heads::enter`): with the
    /// head and the position where the append expects no stream, else just before its insert.
    pub(crate) async fn append_planned(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
        plan: Plan,
    ) -> Result<AppendResult> {
        let listing = async {
            match plan.exact {
                Some(0) => self.heads.enter(stream).await.map(|()| true),
                _ => Ok(false),
            }
        };
        let head_lookup = async {
            match plan.exact {
                // A first commit goes into slot 1 whatever the head: the insert tells.
                Some(0) => Ok(Head::default()),
                _ => self.heads.estimate(stream).await,
            }
        };
        let ids_lookup = async {
            match plan.ids_early {
                true => self.heads.id_holder(stream, &plan.ids).await,
                false => Ok(None),
            }
        };
        let (head, earlier, position, listed) =
            tokio::join!(head_lookup, ids_lookup, self.positions.reserve(1), listing);
        let mut reservation = self.reservation(position?);
        let answer = match (head, earlier, listed) {
            (Ok(head), Ok(None), Ok(listed)) => self.land(stream, events, plan, head, listed, &mut reservation).await,
            (Ok(_), Ok(Some(earlier)), Ok(_)) => retry_or_reused(stream, events, &plan.ids, &earlier),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        reservation.release().await;
        answer
    }

    /// Lands a planned commit: walks the head as far as the expectation needs, inserts the
    /// commit into its slot, and answers (the result, a conflict, a retry's earlier result).
    async fn land(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
        plan: Plan,
        mut head: Head,
        mut listed: bool,
        reservation: &mut Reservation,
    ) -> Result<AppendResult> {
        let Plan {
            ids,
            mut commit,
            expected,
            exact,
            ids_early,
            n,
        } = plan;
        // Commits seen past the hint: their ids are checked against the batch's, and their id
        // documents written before the hint passes them (servers without unique array indexes).
        let mut walked: Vec<Document> = Vec::new();
        if !self.unique_ids && !ids_early {
            if let Some(earlier) = self.heads.id_holder(stream, &ids).await? {
                return retry_or_reused(stream, events, &ids, &earlier);
            }
        }
        // Whether a commit this append walked past holds one of its ids (where no index tells).
        let held = |walked: &[Document]| -> Option<Document> {
            if self.unique_ids {
                return None;
            }
            walked.iter().find(|c| holds_any(c, &ids)).cloned()
        };
        for round in 0..MAX_APPEND_ROUNDS {
            if let Some(want) = exact {
                if head.version < want && !head.deleted {
                    head = self.heads.walk_collecting(stream, head, &mut walked).await?;
                }
                if let Some(earlier) = held(&walked) {
                    return retry_or_reused(stream, events, &ids, &earlier);
                }
                if head.version > want && !head.deleted {
                    // Slot want + 1 is taken: by this very commit when this is a retry.
                    return match self.heads.slot(stream, want + 1).await? {
                        Some(holder) if same_ids(&holder, &ids) => repeat(&holder, n),
                        _ => self.conflict_or_retry(stream, expected, head, events, &ids).await,
                    };
                }
            }
            if head.deleted {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            if !expected.accepts(head.version) {
                // A hinted head may lag behind a stream that exists.
                head = self.heads.walk_collecting(stream, head, &mut walked).await?;
                if let Some(earlier) = held(&walked) {
                    return retry_or_reused(stream, events, &ids, &earlier);
                }
                expected.check(stream, head.version, head.deleted)?;
            }
            if head.version == 0 && !listed {
                self.heads.enter(stream).await?;
                listed = true;
            }
            let v0 = head.version + 1;
            commit.insert("_id", slot_id(stream, v0));
            commit.insert("v0", as_i64(v0));
            commit.insert("v1", as_i64(head.version + n));
            let at = match reservation.take() {
                Some(p) => self.reservation(p),
                None => self.reservation(self.positions.reserve(1).await?),
            };
            match self.insert_commit(stream, &mut commit, &ids, at).await? {
                Inserted::Landed(landed) => {
                    let version = head.version + n;
                    walked.push(commit);
                    self.heads
                        .advance(
                            stream,
                            Head {
                                version,
                                deleted: false,
                            },
                            &walked,
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
                Inserted::IdsTaken(holder) => return retry_or_reused(stream, events, &ids, &holder),
                Inserted::SlotTaken(holder) => {
                    if same_ids(&holder, &ids) {
                        return repeat(&holder, n);
                    }
                    if !self.unique_ids && holds_any(&holder, &ids) {
                        return retry_or_reused(stream, events, &ids, &holder);
                    }
                    let after = Head::after(&holder)?;
                    walked.push(holder);
                    head = self.heads.walk_collecting(stream, after, &mut walked).await?;
                    if let Some(earlier) = held(&walked) {
                        return retry_or_reused(stream, events, &ids, &earlier);
                    }
                    if exact.is_some() {
                        if head.deleted {
                            return Err(Error::StreamDeleted { stream: stream.clone() });
                        }
                        return self.conflict_or_retry(stream, expected, head, events, &ids).await;
                    }
                    // The writers that lost this slot would race for the next one in lockstep.
                    telemetry::record_backend_retry("mongo", "append");
                    tokio::time::sleep(collision_backoff(round + 1)).await;
                }
            }
        }
        Err(Error::backend(true, StreamContention))
    }

    /// The answer to an exact expectation the stream has passed: a conflict — unless, where ids
    /// are checked through id documents, a commit whose id documents are not yet written
    /// (after the hint) holds the batch's ids: a retry of it, or a reused id.
    async fn conflict_or_retry(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        head: Head,
        events: &[NewEvent],
        ids: &[String],
    ) -> Result<AppendResult> {
        if self.unique_ids {
            let actual = self.heads.walk(stream, head).await?;
            return Err(Error::conflict(stream, expected, actual.version));
        }
        // The hint first, then the id documents: every commit is then either below the hint
        // (its id documents written) or walked.
        let mut walked = Vec::new();
        let hint = self.heads.estimate(stream).await?;
        if let Some(earlier) = self.heads.id_holder(stream, ids).await? {
            return retry_or_reused(stream, events, ids, &earlier);
        }
        let actual = self.heads.walk_collecting(stream, hint, &mut walked).await?;
        if let Some(earlier) = walked.iter().find(|c| holds_any(c, ids)) {
            return retry_or_reused(stream, events, ids, earlier);
        }
        if actual.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Err(Error::conflict(stream, expected, actual.version.max(head.version)))
    }
}
