//! A stream's head: its version and whether it is deleted.
//!
//! Where the server answers queries from indexes (MongoDB), the head is the stream's last
//! commit, found by one query on the `(stream, v0)` index. Where it does not (FerretDB 1.x,
//! whose SQLite handler evaluates only `_id` filters in SQL and scans for everything else),
//! the head comes from a hint document read by `_id` (a lower bound every writer advances) and
//! is walked slot by slot, by `_id`, to the true head.

use std::future::IntoFuture;

use cqrsx_core::{Result, StreamId};
use mongodb::bson::{doc, Document};
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

/// The `_id` of a stream's head hint in the counters collection.
fn hint_id(stream: &StreamId) -> String {
    format!("head\u{1f}{}", stream.key())
}

/// Finds heads, by an indexed query or by hints and `_id` walks.
pub(crate) struct Heads {
    client: MongoClientManager,
    commits: Collection<Document>,
    counters: Collection<Document>,
    /// Whether heads come from hints (servers without indexed queries).
    hinted: bool,
}

impl Heads {
    pub(crate) fn new(
        client: MongoClientManager,
        commits: Collection<Document>,
        counters: Collection<Document>,
    ) -> Self {
        Self {
            hinted: !client.capabilities().indexed_queries,
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
                    .projection(doc! { "v1": 1, "ids": 1, "pos": 1, "deleted": 1 })
                    .into_future(),
            )
            .await
    }

    /// Moves a head known to be a lower bound up to the true head. Where heads are hinted this
    /// follows slots by `_id` and advances a hint that had fallen behind; otherwise it asks.
    pub(crate) async fn walk(&self, stream: &StreamId, mut head: Head) -> Result<Head> {
        if !self.hinted {
            return self.last_commit(stream).await;
        }
        let start = head;
        while !head.deleted {
            let Some(commit) = self.slot(stream, head.version + 1).await? else {
                break;
            };
            head = Head::after(&commit)?;
        }
        if head != start {
            self.advance(stream, head).await;
        }
        Ok(head)
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

    /// Raises the hint to `head` (where heads are hinted). Failures only cost later writers a
    /// longer walk, so they are logged, not returned.
    pub(crate) async fn advance(&self, stream: &StreamId, head: Head) {
        if !self.hinted {
            return;
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
