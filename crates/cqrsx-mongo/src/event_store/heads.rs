//! A stream's head: its version and whether it is deleted; and, where the server has no unique
//! index over arrays, the stream's event ids.
//!
//! Where the server answers queries from indexes and enforces unique array indexes (MongoDB,
//! DocumentDB), the head is the stream's last commit, found by one query on the `(stream, v0)`
//! index. Elsewhere (FerretDB 1.x, whose SQLite handler evaluates only `_id` equality in SQL and
//! scans for everything else) the head comes from a hint document read by `_id` (a lower bound
//! every writer advances) and is walked slot by slot, by `_id`, to the true head.
//!
//! Without unique array indexes, event ids are checked through id documents in the counters
//! collection, one per event, keyed by `_id` (stream key and event id) and naming the first
//! version of the commit that holds it: every lookup is by `_id`, so an append's check costs
//! the same at a million commits as at ten. They are written after their commit, and before
//! the hint passes it (two commands one after the other: FerretDB 1.x holds SQLite's write
//! lock through a multi-statement update, and writers racing on one stream then waited on it
//! past the socket timeout): whoever moves the hint to version H has written
//! the id documents of every commit up to H (its own, and those it walked past the hint it
//! read). So a writer that reads the hint first, then the id documents, and checks the ids of
//! every commit it walks past the hint, sees every commit holding one of its ids. A writer that
//! dies between its commit and that command leaves the hint behind its commit; the next writer
//! or reader that walks past it writes what is missing.

use std::future::IntoFuture;

use cqrsx_core::{Result, StreamId};
use futures::future::join_all;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;

use crate::client::{MongoClientManager, Tracked};
use crate::error::is_duplicate_key;
use crate::event_store::layout::{as_i64, slot_id, u64_of};

/// What a writer learns about a stream before it writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) version: u64,
    pub(crate) deleted: bool,
}

impl Head {
    /// The head a commit (or tombstone) leaves behind it.
    pub(crate) fn after(commit: &Document) -> Result<Self> {
        Ok(Head {
            version: u64_of(commit, "v1")?,
            deleted: commit.get_bool("deleted").unwrap_or(false),
        })
    }
}

/// What every head hint's `_id` starts with: the stream key follows.
const HINT_PREFIX: &str = "head\u{1f}";

/// The `_id` of a stream's head hint in the counters collection. It is the stream catalogue
/// too: every server gets one for each stream (see [`Heads::enter`]), and the ids sort as the
/// stream keys do (byte order, the servers' default for strings).
fn hint_id(stream: &StreamId) -> String {
    format!("{HINT_PREFIX}{}", stream.key())
}

/// The `_id` of an event id's document in the counters collection.
fn id_doc_id(stream: &StreamId, id: &str) -> String {
    format!("id\u{1f}{}\u{1f}{id}", stream.key())
}

/// Whether `commit` holds any of `ids`.
pub(crate) fn holds_any(commit: &Document, ids: &[String]) -> bool {
    commit
        .get_array("ids")
        .is_ok_and(|held| held.iter().filter_map(Bson::as_str).any(|h| ids.iter().any(|i| i == h)))
}

/// Finds heads, by an indexed query or by hints and `_id` walks.
pub(crate) struct Heads {
    client: MongoClientManager,
    commits: Collection<Document>,
    counters: Collection<Document>,
    /// Whether heads come from hints (servers without indexed queries or without unique array
    /// indexes: the id documents rely on the hint).
    hinted: bool,
    /// Whether event ids are checked through id documents (servers without unique array
    /// indexes).
    id_docs: bool,
}

impl Heads {
    pub(crate) fn new(
        client: MongoClientManager,
        commits: Collection<Document>,
        counters: Collection<Document>,
    ) -> Self {
        let caps = client.capabilities();
        Self {
            hinted: !caps.indexed_queries || !caps.unique_array_indexes,
            id_docs: !caps.unique_array_indexes,
            client,
            commits,
            counters,
        }
    }

    /// Whether this store finds heads through hints.
    pub(crate) fn hinted(&self) -> bool {
        self.hinted
    }

    /// The stream's true head.
    pub(crate) async fn head(&self, stream: &StreamId) -> Result<Head> {
        if self.hinted {
            let hint = self.hint(stream).await?;
            return self.walk(stream, hint).await;
        }
        self.last_commit(stream).await
    }

    /// The head after the stream's last commit, by one indexed query.
    async fn last_commit(&self, stream: &StreamId) -> Result<Head> {
        let last = self
            .client
            .track(
                self.commits
                    .find_one(doc! { "stream": stream.key() })
                    .sort(doc! { "v0": -1 })
                    .projection(doc! { "v1": 1, "deleted": 1 })
                    .into_future(),
            )
            .await?;
        match last {
            Some(commit) => Head::after(&commit),
            None => Ok(Head::default()),
        }
    }

    /// A lower bound of the stream's head: the hint where heads are hinted, the true head
    /// otherwise (one query either way).
    pub(crate) async fn estimate(&self, stream: &StreamId) -> Result<Head> {
        if self.hinted {
            self.hint(stream).await
        } else {
            self.head(stream).await
        }
    }

    /// The commit holding version slot `v0` of the stream, by `_id` (the fields a writer needs).
    pub(crate) async fn slot(&self, stream: &StreamId, v0: u64) -> Result<Option<Document>> {
        self.client
            .track(
                self.commits
                    .find_one(doc! { "_id": slot_id(stream, v0) })
                    .projection(doc! { "v0": 1, "v1": 1, "ids": 1, "pos": 1, "deleted": 1 })
                    .into_future(),
            )
            .await
    }

    /// Moves the hint (or a head no higher than the hint) up to the true head. Where heads are
    /// hinted this follows slots by `_id` and advances a hint that had fallen behind (with the
    /// id documents of the commits it passed); otherwise it asks.
    pub(crate) async fn walk(&self, stream: &StreamId, head: Head) -> Result<Head> {
        let mut walked = Vec::new();
        let end = self.walk_collecting(stream, head, &mut walked).await?;
        if end != head {
            self.advance(stream, end, &walked).await;
        }
        Ok(end)
    }

    /// Moves a head known to be a lower bound up to the true head, adding each commit it
    /// passes (with its ids) to `walked`; advances nothing (the caller knows whether `walked`
    /// covers everything from the hint on).
    pub(crate) async fn walk_collecting(
        &self,
        stream: &StreamId,
        mut head: Head,
        walked: &mut Vec<Document>,
    ) -> Result<Head> {
        if !self.hinted {
            return self.last_commit(stream).await;
        }
        while !head.deleted {
            let Some(commit) = self.slot(stream, head.version + 1).await? else {
                break;
            };
            head = Head::after(&commit)?;
            walked.push(commit);
        }
        Ok(head)
    }

    /// Where ids are checked through id documents: the commit holding any of `ids` among those
    /// whose id documents are written (read after the hint: see the module's docs).
    pub(crate) async fn id_holder(&self, stream: &StreamId, ids: &[String]) -> Result<Option<Document>> {
        if !self.id_docs {
            return Ok(None);
        }
        // One read by `_id` per id: FerretDB 1.x evaluates only `_id` equality in SQL (an `$in`
        // over `_id` scans). Sent together, but no more at once than the pool has connections:
        // each read's timeout starts when it is sent, and a large batch's reads must not wait
        // for a connection while their clocks run.
        let parallel = usize::try_from(self.client.config().max_pool_size)
            .unwrap_or(1)
            .clamp(1, 16);
        let mut first: Option<u64> = None;
        for chunk in ids.chunks(parallel) {
            let lookups = chunk.iter().map(|id| {
                self.client.track(
                    self.counters
                        .find_one(doc! { "_id": id_doc_id(stream, id) })
                        .into_future(),
                )
            });
            for found in join_all(lookups).await {
                if let Some(d) = found? {
                    let v0 = u64_of(&d, "c")?;
                    first = Some(first.map_or(v0, |f| f.min(v0)));
                }
            }
        }
        match first {
            Some(v0) => self.slot(stream, v0).await,
            None => Ok(None),
        }
    }

    /// Enters the stream in the catalogue before its first commit (or tombstone) is written:
    /// creates its head hint at version 0 unless it has one (a lower bound still; where heads
    /// are not hinted, nothing reads it as one). Written before the commit, so a stream that
    /// has commits is never missing from the catalogue; one whose first writer failed is listed
    /// at version 0 until it is written, and [`Heads::catalogue`] leaves such streams out.
    pub(crate) async fn enter(&self, stream: &StreamId) -> Result<()> {
        let result = self
            .client
            .track_raw(
                self.counters
                    .update_one(doc! { "_id": hint_id(stream) }, doc! { "$max": { "v": 0_i64 } })
                    .upsert(true)
                    .into_future(),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // A racing first writer created it.
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    /// Up to `max_count` stream keys of the catalogue after `after` (exclusive), in key order:
    /// the head hints' ids, by a range over `_id` sorted by `_id`.
    pub(crate) async fn catalogue(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<String>> {
        let from = match after {
            Some(a) => doc! { "$gt": format!("{HINT_PREFIX}{}", a.key()) },
            None => doc! { "$gte": HINT_PREFIX },
        };
        let mut range = from;
        // The next character after the separator ends the hints' range.
        range.insert("$lt", "head\u{20}");
        let found: Vec<Document> = self
            .client
            .track(
                self.counters
                    .find(doc! { "_id": range })
                    .projection(doc! { "_id": 1 })
                    .sort(doc! { "_id": 1 })
                    .limit(i64::try_from(max_count).unwrap_or(i64::MAX))
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        found
            .iter()
            .map(|d| {
                d.get_str("_id")
                    .ok()
                    .and_then(|id| id.strip_prefix(HINT_PREFIX))
                    .map(str::to_string)
                    .ok_or_else(|| crate::error::corrupt(format!("a head hint with the id {:?}", d.get("_id"))))
            })
            .collect()
    }

    /// The stream's hint: a lower bound of its head, read by `_id`.
    async fn hint(&self, stream: &StreamId) -> Result<Head> {
        let found = self
            .client
            .track(self.counters.find_one(doc! { "_id": hint_id(stream) }).into_future())
            .await?;
        match found {
            None => Ok(Head::default()),
            Some(d) => Ok(Head {
                version: u64_of(&d, "v")?,
                deleted: d.get_bool("deleted").unwrap_or(false),
            }),
        }
    }

    /// Raises the hint to `head` (where heads are hinted), after writing the id documents of
    /// `commits` (where ids are checked through them): the hint never passes a commit whose ids
    /// are not written. Failures only cost later writers a longer
    /// walk, so they are logged, not returned.
    pub(crate) async fn advance(&self, stream: &StreamId, head: Head, commits: &[Document]) {
        if !self.hinted {
            return;
        }
        let mut id_docs = Vec::new();
        if self.id_docs {
            for commit in commits {
                let Ok(v0) = u64_of(commit, "v0") else {
                    continue;
                };
                for id in commit.get_array("ids").map(|a| a.as_slice()).unwrap_or_default() {
                    if let Some(id) = id.as_str() {
                        id_docs.push(doc! { "_id": id_doc_id(stream, id), "c": as_i64(v0) });
                    }
                }
            }
        }
        if !id_docs.is_empty() {
            // Unordered: an id document another writer wrote first (for the same commit) is
            // refused as a duplicate and the others still land.
            match self
                .client
                .track_raw(self.counters.insert_many(id_docs).ordered(false).into_future())
                .await
            {
                Ok(_) => {}
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {}
                Err(e) => {
                    // Not advancing the hint keeps it behind the commits whose ids are unwritten.
                    tracing::warn!(stream = %stream, error = %e.into_error(), "could not write id documents");
                    return;
                }
            }
        }
        let mut update = doc! { "$max": { "v": as_i64(head.version) } };
        if head.deleted {
            update.insert("$set", doc! { "deleted": true });
        }
        for _ in 0..2 {
            let result = self
                .client
                .track_raw(
                    self.counters
                        .update_one(doc! { "_id": hint_id(stream) }, update.clone())
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
}
