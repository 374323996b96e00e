//! Reads: a stream as one cursor over its commits, the global log as one cursor over positions
//! (closing gaps left by stalled writers with fillers), events by type.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use cqrsx_core::raw::AllPage;
use cqrsx_core::{Error, EventFilter, Position, RecordedEvent, Result, StreamId, Timestamp};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime, Document};

use crate::event_store::layout::{as_i64, commit_events, offset_of, slot_id, split, u64_of, EVENT_BITS};
use crate::event_store::MongoEventStore;

/// Commits a stream read follows by `_id` before it turns to one query, where the server
/// evaluates only `_id` filters efficiently (FerretDB 1.x): the tail after a snapshot is usually
/// a commit or two, and a query costs a pass over the collection there.
const MAX_SLOT_WALK: usize = 4;
/// How often a reader waiting on a gap looks again.
const GAP_POLL: Duration = Duration::from_millis(5);
/// Log entries (commits) one `read_all` call examines at most.
const READ_ALL_SCAN_BUDGET: usize = 10_000;

/// Checks that `commit` comes where a stream read from `from` expects it (`next`: the version
/// after the commit before, none yet at the first), and moves `next` past it.
fn follows(stream: &StreamId, commit: &Document, from: u64, next: &mut Option<u64>) -> Result<()> {
    if commit.get_bool("deleted").unwrap_or(false) {
        return Ok(());
    }
    let v0 = u64_of(commit, "v0")?;
    let v1 = u64_of(commit, "v1")?;
    let fits = match *next {
        Some(expected) => v0 == expected,
        None => v0 <= from.max(1),
    };
    if !fits {
        let at = next.unwrap_or(from.max(1));
        return Err(Error::Integrity(format!(
            "stream {stream}: version {at} is held by no commit (the next one starts at {v0})"
        )));
    }
    *next = Some(v1 + 1);
    Ok(())
}

impl MongoEventStore {
    /// The whole commit holding version slot `v0`, by `_id`.
    async fn commit_at(&self, stream: &StreamId, v0: u64) -> Result<Option<Document>> {
        let commit = self
            .client
            .track(self.commits.find_one(doc! { "_id": slot_id(stream, v0) }).into_future())
            .await?;
        if let Some(c) = &commit {
            // The slot's `_id` names the stream and the version: the document must agree.
            let (holder, at) = (c.get_str("stream").unwrap_or_default(), u64_of(c, "v0")?);
            if holder != stream.key() || at != v0 {
                return Err(Error::Integrity(format!(
                    "stream {stream}: the commit in slot {v0} says it is stream {holder:?}'s commit at version {at}"
                )));
            }
        }
        Ok(commit)
    }

    /// Checks, where heads are hinted, that a stream whose commits end at `version` was not
    /// known to be longer: the hint is a lower bound of the head, so one past `version` says a
    /// commit after it is gone.
    async fn ends_at(&self, stream: &StreamId, version: u64) -> Result<()> {
        let hint = self.heads.estimate(stream).await?;
        if hint.version > version {
            return Err(Error::Integrity(format!(
                "stream {stream}: its head is known to be at version {} or later, but its commits end at {version}",
                hint.version
            )));
        }
        Ok(())
    }

    /// Where heads are hinted: the first commits from `from` by `_id` (a short tail costs no
    /// query), and the version the rest starts at, if any is left.
    async fn tail_by_slots(&self, stream: &StreamId, from: u64) -> Result<(Vec<RecordedEvent>, Option<u64>)> {
        let mut out = Vec::new();
        let mut next = self.commit_at(stream, from).await?;
        if next.is_none() {
            if from == 1 {
                // Every stream's first commit sits in slot 1 (and stays there, truncated or not).
                self.ends_at(stream, 0).await?;
                return Ok((out, None));
            }
            // No commit starts there: one spans it, or the stream ends before it (the usual
            // case after a snapshot at the head).
            let head = self.heads.walk(stream, self.heads.estimate(stream).await?).await?;
            if head.deleted {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            return Ok((out, (head.version >= from).then_some(from)));
        }
        let mut walked = 0;
        while let Some(commit) = next.take() {
            if commit.get_bool("deleted").unwrap_or(false) {
                return Err(Error::StreamDeleted { stream: stream.clone() });
            }
            out.extend(commit_events(&commit, from)?);
            let rest = u64_of(&commit, "v1")? + 1;
            walked += 1;
            if walked == MAX_SLOT_WALK {
                return Ok((out, Some(rest)));
            }
            next = self.commit_at(stream, rest).await?;
            if next.is_none() {
                self.ends_at(stream, rest - 1).await?;
                return Ok((out, None));
            }
        }
        Ok((out, None))
    }

    /// One cursor over the stream's commits from version `from`, `batch` commits per round
    /// trip, flattened into events.
    fn cursor_from<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        let filter = doc! {
            "stream": stream.key(),
            "$or": [ { "v1": { "$gte": as_i64(from) } }, { "deleted": true } ],
        };
        let batch = u32::try_from(batch.clamp(1, 1000)).unwrap_or(1000);
        let open = async move {
            self.client
                .track(
                    self.commits
                        .find(filter)
                        .sort(doc! { "v0": 1 })
                        .batch_size(batch)
                        .into_future(),
                )
                .await
        };
        stream::once(open)
            .map_ok(move |cursor| {
                // Commits follow one another without a gap: the first holds `from`, each next
                // one starts after the one before (truncation keeps every commit's shell).
                let mut next = None;
                cursor
                    .map_err(crate::error::backend)
                    .and_then(move |commit| {
                        let checked = follows(stream, &commit, from, &mut next);
                        async move {
                            if commit.get_bool("deleted").unwrap_or(false) {
                                return Err(Error::StreamDeleted { stream: stream.clone() });
                            }
                            checked?;
                            commit_events(&commit, from)
                        }
                    })
                    .map_ok(|events| stream::iter(events.into_iter().map(Ok)))
                    .try_flatten()
            })
            .try_flatten()
            .boxed()
    }

    /// Every event of the stream from `from` on: one query (after a short `_id` walk where heads
    /// are hinted).
    pub(crate) fn events_from<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        let from = from.max(1);
        if !self.heads.hinted() {
            return self.cursor_from(stream, from, batch);
        }
        stream::once(self.tail_by_slots(stream, from))
            .map_ok(move |(first, rest)| {
                let rest = match rest {
                    Some(rest) => self.cursor_from(stream, rest, batch),
                    None => stream::empty().boxed(),
                };
                stream::iter(first.into_iter().map(Ok)).chain(rest)
            })
            .try_flatten()
            .boxed()
    }

    pub(crate) async fn read_all_page(
        &self,
        from: Position,
        max_count: usize,
        filter: &EventFilter,
    ) -> Result<AllPage> {
        let (mut commit_at, mut index_at) = split(from.offset);
        let mut events = Vec::new();
        let mut gap_since: Option<(u64, Instant)> = None;
        let mut scanned = 0usize;
        let budget = READ_ALL_SCAN_BUDGET.max(max_count);
        let batch = u32::try_from(max_count.clamp(16, 1000)).unwrap_or(1000);
        'query: while events.len() < max_count && scanned < budget {
            let mut cursor = self
                .client
                .track(
                    self.commits
                        .find(doc! { "pos": { "$gte": as_i64(commit_at) } })
                        .sort(doc! { "pos": 1 })
                        .batch_size(batch)
                        .into_future(),
                )
                .await?;
            loop {
                let Some(commit) = self.client.track(cursor.try_next()).await? else {
                    // The end of the log.
                    break 'query;
                };
                let position = u64_of(&commit, "pos")?;
                if position > commit_at {
                    // Positions commit_at..position are reserved but not written. With events
                    // in hand, end the page before the gap; otherwise wait for the missing
                    // commit a bounded time, then close the gap.
                    if !events.is_empty() {
                        break 'query;
                    }
                    match gap_since {
                        Some((at, since)) if at == commit_at && since.elapsed() >= self.gap_timeout => {
                            tracing::debug!(from = commit_at, to = position - 1, "closing a gap with fillers");
                            self.positions.fill(commit_at, position - 1).await?;
                            gap_since = None;
                        }
                        Some((at, _)) if at == commit_at => tokio::time::sleep(GAP_POLL).await,
                        _ => {
                            gap_since = Some((commit_at, Instant::now()));
                            tokio::time::sleep(GAP_POLL).await;
                        }
                    }
                    continue 'query;
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
                    for event in commit_events(&commit, 0)? {
                        let index = event.position.offset & ((1 << EVENT_BITS) - 1);
                        if index < index_at {
                            continue;
                        }
                        if events.len() >= max_count {
                            break 'query;
                        }
                        index_at = index + 1;
                        if filter.matches(&event.event_type, event.aggregate_type()) {
                            events.push(event);
                        }
                    }
                }
                commit_at = position + 1;
                index_at = 0;
                if events.len() >= max_count || scanned >= budget {
                    break 'query;
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

    pub(crate) async fn by_type(
        &self,
        event_type: &str,
        since: Timestamp,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let since_ms = since;
        let since = DateTime::from_millis(as_i64(since.as_millis()));
        let mut cursor = self
            .client
            .track(
                self.commits
                    .find(doc! { "types": event_type, "ts": { "$gte": since }, "deleted": { "$ne": true } })
                    .sort(doc! { "pos": 1 })
                    .batch_size(u32::try_from(max_count.clamp(1, 1000)).unwrap_or(1000))
                    .into_future(),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(commit) = self.client.track(cursor.try_next()).await? {
            // (A commit's time is its latest event's: imported events keep times of their own.)
            for event in commit_events(&commit, 0)? {
                if event.event_type == event_type && event.recorded_at >= since_ms {
                    out.push(event);
                    if out.len() >= max_count {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}
