//! [`InMemoryEventStore`]: streams and one global log behind a lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::checked::EventBackend;
use crate::checkpoint::{Checkpoint, Wake};
use crate::error::{Error, Result};
use crate::event::{AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::EventStoreCapabilities;
use crate::import::StreamInfo;
use crate::stream::{ExpectedVersion, StreamId};

/// Log entries one `read_all` call looks at, at most.
const READ_ALL_SCAN_BUDGET: usize = 100_000;

#[derive(Default)]
struct Stream {
    /// Events still readable, from `first_kept` on.
    events: Vec<Arc<RecordedEvent>>,
    version: u64,
    deleted: bool,
    /// Each event id's version.
    ids: HashMap<Uuid, u64>,
    /// Each commit's event count and result, by its first version.
    commits: HashMap<u64, (u64, AppendResult)>,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Stream>,
    /// Every event ever appended, by position - 1. Truncated and deleted events stay here and
    /// are skipped on read, so positions stay dense.
    log: Vec<Arc<RecordedEvent>>,
}

impl State {
    fn is_live(&self, event: &RecordedEvent) -> bool {
        self.streams
            .get(event.stream.key())
            .is_some_and(|s| !s.deleted && s.events.first().is_some_and(|first| first.version <= event.version))
    }
}

/// An event store in process memory. Cheap to clone: clones share the same data.
///
/// ```
/// use cqrsx_core::{memory::InMemoryEventStore, EventStore, ExpectedVersion, NewEvent, StreamId};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::new("User", "u-1")?;
/// let event = NewEvent::json("UserCreated", &serde_json::json!({"email": "a@b.c"}))?;
/// let done = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
/// assert_eq!(done.version, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InMemoryEventStore {
    state: Arc<RwLock<State>>,
    /// The length of the log, for live subscriptions to wait on.
    committed: Arc<watch::Sender<u64>>,
    caps: EventStoreCapabilities,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            committed: Arc::new(watch::channel(0).0),
            caps: EventStoreCapabilities {
                live_signal: true,
                ..EventStoreCapabilities::default()
            },
        }
    }
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryEventStore").finish_non_exhaustive()
    }
}

impl InMemoryEventStore {
    /// An empty store with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store refusing payloads over `max_event_bytes`.
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.caps.max_event_bytes = max_event_bytes;
        self
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>> {
        self.state
            .read()
            .map_err(|_| Error::backend(false, "in-memory store lock poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>> {
        self.state
            .write()
            .map_err(|_| Error::backend(false, "in-memory store lock poisoned"))
    }
}

/// If `events` are exactly the events of one earlier commit of `stream`, in order (a retry),
/// that commit's result; an [`Error::EventIdReused`] if some of their ids are in the stream
/// but this is not such a retry.
fn previous_append(stream: &Stream, stream_id: &StreamId, events: &[NewEvent]) -> Result<Option<AppendResult>> {
    let reused = |event_id| Error::EventIdReused {
        stream: stream_id.clone(),
        event_id,
    };
    let Some(&first) = stream.ids.get(&events[0].event_id) else {
        return match events.iter().find(|e| stream.ids.contains_key(&e.event_id)) {
            Some(e) => Err(reused(e.event_id)),
            None => Ok(None),
        };
    };
    let in_order = events
        .iter()
        .enumerate()
        .all(|(i, e)| stream.ids.get(&e.event_id) == Some(&(first + i as u64)));
    match stream.commits.get(&first) {
        Some(&(len, result)) if in_order && len == events.len() as u64 => Ok(Some(result)),
        _ => Err(reused(events[0].event_id)),
    }
}

#[async_trait]
impl EventBackend for InMemoryEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut guard = self.write()?;
        let state = &mut *guard;
        let entry = state.streams.entry(stream.key().to_owned()).or_default();
        if entry.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if let Some(done) = previous_append(entry, stream, &events)? {
            return Ok(done);
        }
        expected.check(stream, entry.version, false)?;
        let now = Timestamp::now();
        let (first_version, count) = (entry.version + 1, events.len() as u64);
        let mut last = AppendResult {
            version: entry.version,
            position: Position::default(),
        };
        for event in events {
            let version = entry.version + 1;
            let position = Position {
                partition: 0,
                offset: state.log.len() as u64 + 1,
            };
            let recorded = Arc::new(RecordedEvent {
                event_id: event.event_id,
                stream: stream.clone(),
                version,
                position,
                event_type: event.event_type,
                schema_version: event.schema_version,
                content_type: event.content_type,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at: now,
            });
            entry.ids.insert(recorded.event_id, version);
            entry.events.push(Arc::clone(&recorded));
            entry.version = version;
            state.log.push(recorded);
            last = AppendResult { version, position };
        }
        entry.commits.insert(first_version, (count, last));
        let committed = state.log.len() as u64;
        drop(guard);
        // Appends publish outside the lock, so in any order: the head only moves forward (a
        // late publish of an earlier append must not take it back).
        self.committed.send_if_modified(|head| {
            let ahead = committed > *head;
            if ahead {
                *head = committed;
            }
            ahead
        });
        Ok(last)
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.read()?;
        let Some(s) = state.streams.get(stream.key()) else {
            return Ok(Vec::new());
        };
        if s.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        let start = s.events.partition_point(|e| e.version < from_version);
        Ok(s.events[start..]
            .iter()
            .take(max_count)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let state = self.read()?;
        match state.streams.get(stream.key()) {
            Some(s) if s.deleted => Err(Error::StreamDeleted { stream: stream.clone() }),
            Some(s) => Ok(s.version),
            None => Ok(0),
        }
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        let state = self.read()?;
        let start = usize::try_from(from.offset.max(1) - 1).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut next = Position::start_of(0).max(from);
        // A selective filter over a long log ends the page early rather than holding the lock.
        let budget = READ_ALL_SCAN_BUDGET.max(max_count);
        for event in state.log.get(start..).unwrap_or_default().iter().take(budget) {
            if events.len() >= max_count {
                break;
            }
            next = event.position.next();
            if filter.matches(&event.event_type, event.aggregate_type()) && state.is_live(event) {
                events.push((**event).clone());
            }
        }
        Ok(AllPage { events, next })
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.read()?;
        Ok(state
            .log
            .iter()
            .filter(|e| e.event_type == event_type && e.recorded_at >= since && state.is_live(e))
            .take(max_count)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let mut state = self.write()?;
        let Some(s) = state.streams.get_mut(stream.key()) else {
            return Ok(0);
        };
        if s.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        let cut = s.events.partition_point(|e| e.version < before);
        s.events.drain(..cut);
        Ok(cut as u64)
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let mut state = self.write()?;
        let s = state.streams.entry(stream.key().to_owned()).or_default();
        expected.check(stream, s.version, s.deleted)?;
        s.deleted = true;
        s.events.clear();
        s.ids.clear();
        s.commits.clear();
        Ok(())
    }

    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        let state = self.read()?;
        let after = after.map(StreamId::key);
        let mut keys: Vec<&String> = state
            .streams
            .keys()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .collect();
        keys.sort_unstable();
        keys.truncate(max_count);
        keys.into_iter()
            .map(|key| {
                let s = &state.streams[key];
                Ok(StreamInfo {
                    stream: StreamId::parse(key)?,
                    version: s.version,
                    deleted: s.deleted,
                })
            })
            .collect()
    }

    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        let mut guard = self.write()?;
        let state = &mut *guard;
        let entry = state.streams.entry(stream.key().to_owned()).or_default();
        if entry.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if entry.version != after && entry.version != 0 {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(after),
                actual: entry.version,
            });
        }
        if let Some(e) = events.iter().find(|e| entry.ids.contains_key(&e.event_id)) {
            return Err(Error::EventIdReused {
                stream: stream.clone(),
                event_id: e.event_id,
            });
        }
        entry.version = after;
        let mut last = AppendResult {
            version: after,
            position: Position::default(),
        };
        let (first_version, count) = (after + 1, events.len() as u64);
        for event in events {
            let position = Position {
                partition: 0,
                offset: state.log.len() as u64 + 1,
            };
            let recorded = Arc::new(RecordedEvent {
                stream: stream.clone(),
                position,
                ..event
            });
            entry.ids.insert(recorded.event_id, recorded.version);
            entry.events.push(Arc::clone(&recorded));
            entry.version = recorded.version;
            last = AppendResult {
                version: recorded.version,
                position,
            };
            state.log.push(recorded);
        }
        if count > 0 {
            entry.commits.insert(first_version, (count, last));
        }
        let committed = state.log.len() as u64;
        drop(guard);
        self.committed.send_if_modified(|head| {
            let ahead = committed > *head;
            if ahead {
                *head = committed;
            }
            ahead
        });
        Ok(last)
    }

    async fn head(&self) -> Result<Checkpoint> {
        Checkpoint::from_offsets([*self.committed.borrow() + 1])
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        let next = checkpoint.next(0).offset;
        let mut rx = self.committed.subscribe();
        let woke = tokio::time::timeout(timeout, async {
            rx.wait_for(|&committed| committed >= next).await.is_ok()
        })
        .await;
        Ok(match woke {
            Ok(_) => Wake::Signalled,
            Err(_) => Wake::TimedOut,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::InMemoryEventStore;
    use crate::{EventStore, ExpectedVersion, NewEvent, StreamId};

    /// Appends publish the head outside the store's lock: racing publishes must never leave it
    /// behind the log (a checkpoint of everything applied would then look ahead of the log).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_head_never_falls_behind_racing_appends() {
        let store = Arc::new(InMemoryEventStore::new());
        for round in 0..20 {
            let writers: Vec<_> = (0..16)
                .map(|w| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let stream = StreamId::new("Race", format!("r{round}w{w}")).expect("stream");
                        for i in 0..20 {
                            let event = NewEvent::json("Raced", &i).expect("event");
                            store
                                .append(&stream, ExpectedVersion::Any, vec![event])
                                .await
                                .expect("append");
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.expect("writer");
            }
            let written = (round + 1) * 16 * 20;
            assert_eq!(
                store.head().await.expect("head").next(0).offset,
                written + 1,
                "round {round}"
            );
        }
    }
}
