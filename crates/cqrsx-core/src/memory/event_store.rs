//! [`InMemoryEventStore`]: streams and one global log behind a lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::{validate_append, validate_position, EventStore, EventStoreCapabilities};
use crate::stream::{ExpectedVersion, StreamId};

#[derive(Default)]
struct Stream {
    /// Events still readable, from `first_kept` on.
    events: Vec<Arc<RecordedEvent>>,
    version: u64,
    deleted: bool,
    ids: HashMap<Uuid, u64>,
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
#[derive(Clone, Default)]
pub struct InMemoryEventStore {
    state: Arc<RwLock<State>>,
    caps: EventStoreCapabilities,
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

/// If `events` were already appended to `stream` in this order, the original result.
fn previous_append(stream: &Stream, stream_id: &StreamId, events: &[NewEvent]) -> Result<Option<AppendResult>> {
    let Some(&first) = stream.ids.get(&events[0].event_id) else {
        return Ok(None);
    };
    let same = events
        .iter()
        .enumerate()
        .all(|(i, e)| stream.ids.get(&e.event_id) == Some(&(first + i as u64)));
    if !same {
        return Err(Error::Conflict {
            stream: stream_id.clone(),
            expected: ExpectedVersion::Exact(first - 1),
            actual: stream.version,
        });
    }
    let last = first + events.len() as u64 - 1;
    let position = stream
        .events
        .iter()
        .find(|e| e.version == last)
        .map(|e| e.position)
        .unwrap_or_default();
    Ok(Some(AppendResult {
        version: last,
        position,
    }))
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        validate_append(&events, &self.caps)?;
        let mut state = self.write()?;
        let state = &mut *state;
        let entry = state.streams.entry(stream.key().to_owned()).or_default();
        if entry.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if let Some(done) = previous_append(entry, stream, &events)? {
            return Ok(done);
        }
        if !expected.accepts(entry.version) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: entry.version,
            });
        }
        let now = Timestamp::now();
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
        validate_position(from, &self.caps)?;
        let state = self.read()?;
        let start = usize::try_from(from.offset.max(1) - 1).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut next = Position::start_of(0).max(from);
        for event in state.log.iter().skip(start) {
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
        if s.deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if !expected.accepts(s.version) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: s.version,
            });
        }
        s.deleted = true;
        s.events.clear();
        s.ids.clear();
        Ok(())
    }
}
