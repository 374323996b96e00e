//! The retention case's tools: counter streams written with old or fresh recorded-at times,
//! snapshots at chosen versions, a projection that counts, writers that keep appending, and
//! what the stores hold, read raw.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::support::{Counter, CounterEvent, BASIC_CONTENT_TYPE};
use super::Fixture;
use crate::aggregate::Aggregate;
use crate::codec::EventCodec;
use crate::error::{Error, Result};
use crate::event::{EventFilter, Metadata, Position, RecordedEvent, Timestamp};
use crate::event_store::EventStore;
use crate::projection::{HandlerResult, Projection, View};
use crate::snapshot_store::SnapshotRecord;
use crate::stream::{ExpectedVersion, StreamId};

/// Ten days, in milliseconds: how old the case's old events are.
pub(super) const OLD_MS: u64 = 10 * 24 * 3600 * 1000;

/// The counter event of step `n` (every third a rename, so the state is not only a sum).
pub(super) fn counter_event(n: u64) -> CounterEvent {
    if n % 3 == 0 {
        CounterEvent::Renamed(format!("n{n}"))
    } else {
        CounterEvent::Added { by: n as i64 }
    }
}

/// Versions `from..=to` of `stream` as a copy from elsewhere, recorded `OLD_MS` ago.
fn old_events(stream: &StreamId, from: u64, to: u64) -> Vec<RecordedEvent> {
    let codec = EventCodec::default();
    let at = Timestamp(Timestamp::now().as_millis() - OLD_MS);
    (from..=to)
        .map(|v| {
            let new = codec
                .encode(&counter_event(v), Metadata::correlated(format!("c-{v}")))
                .expect("encode");
            RecordedEvent {
                event_id: new.event_id,
                stream: stream.clone(),
                version: v,
                position: Position::START,
                event_type: new.event_type,
                schema_version: new.schema_version,
                content_type: new.content_type,
                payload: new.payload,
                metadata: new.metadata,
                recorded_at: at,
            }
        })
        .collect()
}

/// Writes versions 1..=`old` recorded ten days ago (through `import`), then `old+1..=total`
/// appended now, in commits of 5.
pub(super) async fn write_stream(events: &Arc<dyn EventStore>, stream: &StreamId, old: u64, total: u64) {
    if old > 0 {
        events
            .import(stream, 0, old_events(stream, 1, old))
            .await
            .expect("import old events");
    }
    let codec = EventCodec::default();
    let mut version = old;
    while version < total {
        let upto = (version + 5).min(total);
        let batch = (version + 1..=upto)
            .map(|v| codec.encode(&counter_event(v), Metadata::default()).expect("encode"))
            .collect();
        events
            .append(stream, ExpectedVersion::from_loaded(version), batch)
            .await
            .expect("append");
        version = upto;
    }
}

/// The counter folded over `events`.
pub(super) fn fold(mut state: Counter, events: &[RecordedEvent]) -> Counter {
    let codec = EventCodec::default();
    for e in events {
        state.apply(&codec.decode::<CounterEvent>(e).expect("decode"));
    }
    state
}

/// Saves the state after `version` as the basic strategy's JSON snapshot.
pub(super) async fn snapshot_at(f: &Fixture, stream: &StreamId, version: u64) {
    let events = f.events.read_stream(stream, 1, version as usize).await.expect("read");
    assert_eq!(events.len() as u64, version, "snapshot of {stream} needs every event");
    let state = fold(Counter::default(), &events);
    f.snapshots
        .save(SnapshotRecord {
            stream: stream.clone(),
            version,
            content_type: BASIC_CONTENT_TYPE.into(),
            schema_version: 1,
            payload: serde_json::to_vec(&state).expect("json"),
            created_at: Timestamp::now(),
        })
        .await
        .expect("save snapshot");
}

/// The state a load through a snapshot gives: the latest snapshot, then the events after it.
pub(super) async fn load_by_snapshot(f: &Fixture, store: &dyn EventStore, stream: &StreamId) -> Result<(Counter, u64)> {
    let record = f
        .snapshots
        .latest(stream, None)
        .await?
        .ok_or_else(|| Error::NotFound(format!("snapshot of {stream}")))?;
    let state: Counter = serde_json::from_slice(&record.payload).map_err(|e| Error::serialization("snapshot", e))?;
    let tail = store.read_stream(stream, record.version + 1, usize::MAX).await?;
    let version = tail.last().map_or(record.version, |e| e.version);
    Ok((fold(state, &tail), version))
}

/// How many events of each stream the projection applied, and the last version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    count: u64,
    last: u64,
}

/// Counts every event of the case's aggregate types, per stream.
pub(super) struct SeenProjection {
    pub(super) name: String,
    pub(super) types: Vec<String>,
}

#[async_trait]
impl Projection for SeenProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(self.types.clone())
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let id = event.stream.key().replace('/', ":");
        let mut seen: Seen = view.get_model(&id).await?.unwrap_or_default();
        seen.count += 1;
        seen.last = event.version;
        view.put_model(&id, &seen)?;
        Ok(())
    }
}

/// Writers appending one event at a time to their streams until stopped, counting appends.
pub(super) struct Writers {
    stop: Arc<AtomicBool>,
    pub(super) appended: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub(super) fn start(events: &Arc<dyn EventStore>, streams: &[StreamId]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let tasks = streams
            .iter()
            .map(|stream| {
                let (events, stream, stop, appended) = (
                    Arc::clone(events),
                    stream.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&appended),
                );
                tokio::spawn(async move {
                    let codec = EventCodec::default();
                    let mut version = events.stream_version(&stream).await.expect("version");
                    while !stop.load(Ordering::SeqCst) {
                        let event = codec
                            .encode(&counter_event(version + 1), Metadata::default())
                            .expect("encode");
                        let done = events
                            .append(&stream, ExpectedVersion::Exact(version), vec![event])
                            .await
                            .expect("a writer's append during retention");
                        version = done.version;
                        appended.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self { stop, appended, tasks }
    }

    /// Waits until the writers appended `n` events in all.
    pub(super) async fn wait_for(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.appended.load(Ordering::SeqCst) < n {
            assert!(tokio::time::Instant::now() < deadline, "writers stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("writer task");
        }
        self.appended.load(Ordering::SeqCst)
    }
}

/// What the hot store holds of each stream: its version (or deleted) and its events.
pub(super) async fn raw(
    events: &dyn EventStore,
    streams: &[StreamId],
) -> BTreeMap<StreamId, (Option<u64>, Vec<RecordedEvent>)> {
    let mut out = BTreeMap::new();
    for s in streams {
        let entry = match events.stream_version(s).await {
            Ok(v) => (Some(v), events.read_stream(s, 1, usize::MAX).await.expect("read")),
            Err(Error::StreamDeleted { .. }) => (None, Vec::new()),
            Err(e) => panic!("version of {s}: {e}"),
        };
        out.insert(s.clone(), entry);
    }
    out
}

/// Every field but the position.
pub(super) fn same_event(a: &RecordedEvent, b: &RecordedEvent) -> bool {
    (
        a.event_id,
        &a.stream,
        a.version,
        &a.event_type,
        a.schema_version,
        a.content_type,
        &a.payload,
        &a.metadata,
        a.recorded_at,
    ) == (
        b.event_id,
        &b.stream,
        b.version,
        &b.event_type,
        b.schema_version,
        b.content_type,
        &b.payload,
        &b.metadata,
        b.recorded_at,
    )
}
