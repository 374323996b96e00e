//! Global positions: the counter document commits reserve their numbers from, coalesced so that
//! concurrent writers of one process share one `$inc`, and the fillers that close numbers no
//! commit will use.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex, PoisonError};

use cqrsx_core::{Error, Result};
use mongodb::bson::{doc, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use tokio::sync::oneshot;

use crate::client::{MongoClientManager, Tracked};
use crate::error::{corrupt, is_duplicate_key};
use crate::event_store::layout::{as_i64, filler_id, u64_of, MAX_COMMIT};

/// The counter document holding the last reserved commit number.
pub(crate) const POSITION_COUNTER: &str = "global_position";

/// The position counter stayed contended through every retry.
#[derive(Debug, thiserror::Error)]
#[error("could not reserve global positions: the counter document is contended")]
pub struct CounterContention;

/// A reservation failed; every writer waiting on it gets this (driver errors cannot be cloned).
#[derive(Debug, thiserror::Error)]
#[error("reserving a position failed: {0}")]
struct ReservationFailed(String);

struct Waiting {
    count: u64,
    reply: oneshot::Sender<Result<u64>>,
}

/// One `$inc` in flight. Dropped — sent, or given up by its caller — it passes on to a task of
/// its own while reservations are queued, else frees its place.
struct Turn(Arc<Positions>);

impl Turn {
    async fn send(self) {
        let batch = std::mem::take(&mut self.0.lane().queue);
        if !batch.is_empty() {
            self.0.send_batch(batch).await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lane = self.0.lane();
        if lane.queue.is_empty() {
            lane.in_flight -= 1;
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // The batch leaves the queue here, before the task exists: a runtime that is
                // shutting down drops the task unpolled, and with it the batch (its writers
                // are told) and the turn, which then finds the queue empty — no new task
                // from the drop of the last.
                let batch: Vec<Waiting> = lane.queue.drain(..).collect();
                drop(lane);
                let turn = Turn(Arc::clone(&self.0));
                runtime.spawn(async move {
                    turn.0.send_batch(batch).await;
                    drop(turn);
                });
            }
            Err(_) => {
                // No runtime to send them on: fail them rather than leave them waiting.
                let waiting: Vec<Waiting> = lane.queue.drain(..).collect();
                lane.in_flight -= 1;
                drop(lane);
                for w in waiting {
                    let _ = w.reply.send(Err(Error::backend(
                        true,
                        ReservationFailed("the runtime is shutting down".into()),
                    )));
                }
            }
        }
    }
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    queue: Vec<Waiting>,
}

/// How many `$inc` of one store may be in flight at once where the server's `$inc` is atomic.
const CONCURRENT_INCREMENTS: usize = 4;

/// Reserves commit numbers. A few `$inc` are in flight per store at a time; reservations that
/// arrive meanwhile wait and go together as one `$inc` of their sum, each getting its own
/// numbers, which keeps the counter document — a sharded cluster's write hot spot — to few
/// updates. Where the server's `$inc` loses concurrent updates (FerretDB 1.x, declared by
/// [`crate::ServerCapabilities::atomic_counters`]) one is in flight at a time, so that this
/// process's increments never race; writers of other processes that still collide meet on the
/// unique position index and reserve again.
pub(crate) struct Positions {
    client: MongoClientManager,
    counters: Collection<Document>,
    commits: Collection<Document>,
    concurrent: usize,
    lane: Mutex<Lane>,
}

impl Positions {
    pub(crate) fn new(
        client: MongoClientManager,
        counters: Collection<Document>,
        commits: Collection<Document>,
    ) -> Self {
        let concurrent = match client.capabilities().atomic_counters {
            true => CONCURRENT_INCREMENTS,
            false => 1,
        };
        Self {
            client,
            counters,
            commits,
            concurrent,
            lane: Mutex::default(),
        }
    }

    fn lane(&self) -> std::sync::MutexGuard<'_, Lane> {
        // Every change under the lock is one push or one drain: a poisoned lock is consistent.
        self.lane.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `count` consecutive commit numbers; returns the first.
    pub(crate) async fn reserve(self: &Arc<Self>, count: u64) -> Result<u64> {
        let (reply, waiting) = oneshot::channel();
        let lead = {
            let mut lane = self.lane();
            lane.queue.push(Waiting { count, reply });
            let free = lane.in_flight < self.concurrent;
            if free {
                lane.in_flight += 1;
            }
            free
        };
        if lead {
            // This caller sends the batch itself (no hop through another task); its turn passes
            // to a task of its own when more arrived meanwhile, or when the caller gives up.
            Turn(Arc::clone(self)).send().await;
        }
        waiting.await.unwrap_or_else(|_| {
            Err(Error::backend(
                true,
                ReservationFailed("the reservation was abandoned (runtime shutting down)".into()),
            ))
        })
    }

    /// Sends one batch of what is queued as one `$inc` of its sum.
    async fn send_batch(&self, batch: Vec<Waiting>) {
        let total: u64 = batch.iter().map(|w| w.count).sum();
        cqrsx_core::telemetry::record_group_commit("mongo", batch.len());
        match self.increment(total).await {
            Ok(last) => {
                let mut next = last + 1 - total;
                for w in batch {
                    let _ = w.reply.send(Ok(next));
                    next += w.count;
                }
            }
            Err(e) => {
                let (retryable, message) = (e.is_retryable(), e.to_string());
                for w in batch {
                    let _ = w
                        .reply
                        .send(Err(Error::backend(retryable, ReservationFailed(message.clone()))));
                }
            }
        }
    }

    /// One `$inc` of `count`; the counter's new value.
    async fn increment(&self, count: u64) -> Result<u64> {
        for _ in 0..3 {
            let result = self
                .client
                .track_raw(
                    self.counters
                        .find_one_and_update(
                            doc! { "_id": POSITION_COUNTER },
                            doc! { "$inc": { "n": as_i64(count) } },
                        )
                        .upsert(true)
                        .return_document(ReturnDocument::After)
                        .into_future(),
                )
                .await;
            match result {
                Ok(Some(d)) => {
                    let n = u64_of(&d, "n")?;
                    if n > MAX_COMMIT {
                        return Err(Error::InvalidInput(format!(
                            "the global log is full: commit numbers are limited to {MAX_COMMIT}"
                        )));
                    }
                    return Ok(n);
                }
                Ok(None) => return Err(corrupt("the position counter upsert returned nothing")),
                // Two first-ever upserts can race on the counter's _id; the loser retries.
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into_error()),
            }
        }
        Err(Error::backend(true, CounterContention))
    }

    /// The last reserved commit number (0 before the first).
    pub(crate) async fn last(&self) -> Result<u64> {
        let counter = self
            .client
            .track(self.counters.find_one(doc! { "_id": POSITION_COUNTER }).into_future())
            .await?;
        match counter {
            Some(d) => u64_of(&d, "n"),
            None => Ok(0),
        }
    }

    /// Moves the counter to at least `taken`, a number found in use (after readers filled
    /// numbers, or where `$inc` lost an update): one `_id` update.
    pub(crate) async fn bump(&self, taken: u64) -> Result<()> {
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

    /// Closes numbers `first..=last` with fillers where no commit landed. A duplicate key means
    /// the number is taken by a real commit, which is what a reader waited for.
    pub(crate) async fn fill(&self, first: u64, last: u64) -> Result<()> {
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
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {
                // Taken by a commit — unless another unique index refused the filler (the
                // error's code does not say which), which would leave readers waiting on the
                // gap for ever: check that every number is held now.
                let held = self
                    .client
                    .track(
                        self.commits
                            .count_documents(doc! { "pos": { "$gte": as_i64(first), "$lte": as_i64(last) } })
                            .into_future(),
                    )
                    .await?;
                if held < last - first + 1 {
                    return Err(corrupt(format!(
                        "fillers for commit numbers {first}..={last} were refused as duplicates, but only {held} \
                         of them are held: a unique index other than the position's refuses fillers ({e})"
                    )));
                }
                Ok(())
            }
            Err(e) => Err(e.into_error()),
        }
    }

    /// Releases a reserved number a writer will not use, so readers need not wait for it.
    pub(crate) async fn release(&self, position: u64) {
        if let Err(e) = self.fill(position, position).await {
            tracing::warn!(error = %e, position, "could not release a reserved position; readers will fill it");
        }
    }
}
