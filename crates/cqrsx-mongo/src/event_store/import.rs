//! Imports and the stream catalogue.
//!
//! An import is one commit document, landed as an append's (see `append.rs`): into the version
//! slot after `after`, so an append or another import racing for the stream's next version
//! collides with it there and exactly one wins, whole. Each event keeps its recorded-at: the
//! commit's time (`ts`, what `events_by_type` queries) is its latest event's, and an event
//! recorded at another time carries its own (`ts` in the event's subdocument).
//!
//! A stream this store has never seen, imported from a version past 0, first gets a shell in
//! slot 1 (where every stream's first commit sits, and where a racing first append collides
//! with it): a commit spanning versions 1 to `after`, all truncated, with no events — what
//! `import(stream, after, [])` leaves. Then the events land after it. A failure between the two
//! leaves that state, which a retried import continues.
//!
//! The catalogue is the head hints' documents (see `heads.rs`), written before a stream's first
//! commit; a listing reads each listed stream's head.

use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{AppendResult, Error, ExpectedVersion, NewEvent, Position, RecordedEvent, Result, StreamId};
use futures::{StreamExt, TryStreamExt};
use std::future::IntoFuture;

use mongodb::bson::{doc, DateTime};

use super::append::{retry_or_reused, Plan};
use super::layout::{as_i64, event_doc};
use super::MongoEventStore;

/// The event id a shell holds: no event's (those are UUIDs), and never the same as a
/// tombstone's (none), so a stream's unique index over its ids keeps them apart.
const SHELL_ID: &str = "truncated-before-import";

/// Heads a listing reads at once.
const PARALLEL_HEADS: usize = 16;

impl MongoEventStore {
    /// [`cqrsx_core::EventStore::import`] on a batch core has checked.
    pub(crate) async fn import_commit(
        &self,
        stream: &StreamId,
        after: u64,
        recorded: Vec<RecordedEvent>,
    ) -> Result<AppendResult> {
        // The checks an import can make before it reserves a position (which moves the log's
        // head, so a refused import would look like a write): the stream's head, and the ids
        // it holds. A writer racing past them is met where an append meets it.
        let head = self.heads.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if head.version != after && head.version != 0 {
            return Err(Error::conflict(stream, ExpectedVersion::Exact(after), head.version));
        }
        if head.version == 0 && after > 0 {
            self.land_shell(stream, after).await?;
        }
        if recorded.is_empty() {
            return Ok(AppendResult {
                version: after,
                position: Position::default(),
            });
        }
        let latest = recorded.iter().map(|e| e.recorded_at.as_millis()).max().unwrap_or(0);
        let ids: Vec<String> = recorded.iter().map(|e| e.event_id.to_string()).collect();
        let mut types: Vec<&str> = recorded.iter().map(|e| e.event_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let types: Vec<String> = types.into_iter().map(str::to_string).collect();
        let mut docs = Vec::with_capacity(recorded.len());
        let mut events = Vec::with_capacity(recorded.len());
        for e in recorded {
            let at = e.recorded_at.as_millis();
            let event = NewEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                content_type: e.content_type,
                payload: e.payload,
                metadata: e.metadata,
            };
            let mut d = event_doc(&event)?;
            if at != latest {
                d.insert("ts", DateTime::from_millis(as_i64(at)));
            }
            docs.push(d);
            events.push(event);
        }
        let commit = doc! {
            "_id": 0_i64,
            "stream": stream.key(),
            "at": stream.aggregate_type(),
            "v0": 0_i64,
            "v1": 0_i64,
            "ids": ids.clone(),
            "types": types,
            "ts": DateTime::from_millis(as_i64(latest)),
            "events": docs,
        };
        if head.version > 0 {
            let holder = match self.unique_ids {
                true => self.ids_holder(stream, &ids).await?,
                // Where ids are checked through id documents: the head's walk wrote those of
                // every commit up to the head.
                false => self.heads.id_holder(stream, &ids).await?,
            };
            if let Some(holder) = holder {
                return retry_or_reused(stream, &events, &ids, &holder);
            }
        }
        let expected = match after {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        let n = events.len() as u64;
        let plan = Plan::from_commit(commit, ids, expected, n, self.unique_ids)?;
        self.append_planned(stream, &events, plan).await
    }

    /// Starts a stream never written at version `after`: a shell in slot 1 (see the module's
    /// docs). A shell already there (a racing import's) is fine; any other commit there means
    /// the stream was written after all, and the caller's next look at its head decides.
    async fn land_shell(&self, stream: &StreamId, after: u64) -> Result<()> {
        let shell = doc! {
            "_id": 0_i64,
            "stream": stream.key(),
            "at": stream.aggregate_type(),
            "v0": 0_i64,
            "v1": 0_i64,
            "ids": [SHELL_ID],
            "types": [],
            "ts": DateTime::now(),
            "events": [],
            "tr": as_i64(after),
        };
        let plan = Plan::from_commit(
            shell,
            vec![SHELL_ID.to_string()],
            ExpectedVersion::NoStream,
            after,
            self.unique_ids,
        )?;
        match self.append_planned(stream, &[], plan).await {
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let head = self.heads.head(stream).await?;
        if head.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if head.version != after {
            return Err(Error::conflict(stream, ExpectedVersion::Exact(after), head.version));
        }
        Ok(())
    }

    /// Enters every stream of the store in the stream catalogue
    /// ([`cqrsx_core::EventStore::list_streams`]): needed once for a store written before the
    /// catalogue existed on a server whose heads are not hinted (MongoDB, DocumentDB: there a
    /// stream got its head hint only from this version on); harmless otherwise. One pass over
    /// the commits (grouped by stream), then one upsert per stream. Safe beside writers: a
    /// hint is only ever created at version 0 or raised. Returns how many streams it found.
    pub async fn fill_catalogue(&self) -> Result<u64> {
        let cursor = self
            .client
            .track(
                self.commits
                    .aggregate(vec![
                        doc! { "$match": { "stream": { "$exists": true } } },
                        doc! { "$group": { "_id": "$stream" } },
                    ])
                    .into_future(),
            )
            .await?;
        let groups: Vec<mongodb::bson::Document> = cursor.try_collect().await.map_err(crate::error::backend)?;
        let streams = groups
            .iter()
            .map(|g| {
                let key = g
                    .get_str("_id")
                    .map_err(|_| crate::error::corrupt("a commit whose stream is not text"))?;
                StreamId::parse(key).map_err(|e| Error::Integrity(format!("a commit of stream {key:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let found = streams.len() as u64;
        futures::stream::iter(streams)
            .map(|stream| async move { self.heads.enter(&stream).await })
            .buffer_unordered(PARALLEL_HEADS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(found)
    }

    /// [`cqrsx_core::EventStore::list_streams`]: catalogue pages, each listed stream's head
    /// read, streams whose first write never landed (version 0, live) left out.
    pub(crate) async fn catalogue_page(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        let mut out = Vec::new();
        let mut from = after.cloned();
        while out.len() < max_count {
            let want = max_count - out.len();
            let keys = self.heads.catalogue(from.as_ref(), want).await?;
            let full = keys.len() == want;
            let streams = keys
                .iter()
                .map(|k| {
                    StreamId::parse(k).map_err(|e| Error::Integrity(format!("the stream catalogue names {k:?}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            from = streams.last().cloned();
            let infos: Vec<StreamInfo> = futures::stream::iter(streams)
                .map(|stream| async move {
                    let head = self.heads.head(&stream).await?;
                    Ok::<_, Error>(StreamInfo {
                        stream,
                        version: head.version,
                        deleted: head.deleted,
                    })
                })
                .buffered(PARALLEL_HEADS)
                .try_collect()
                .await?;
            out.extend(infos.into_iter().filter(|i| i.version > 0 || i.deleted));
            if !full {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_id_is_no_event_id() {
        assert!(cqrsx_core::Uuid::parse_str(SHELL_ID).is_err());
    }
}
