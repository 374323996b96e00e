//! The calls a repository load makes to its event store: a load from a snapshot taken at the
//! stream's head reads the stream once, and asks for the stream's version only when the read
//! cannot show that the stream still reaches the snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
use cqrsx_core::raw::{AllPage, EventStoreCapabilities};
use cqrsx_core::testkit::{BasicSnapshots, Counter, CounterEvent};
use cqrsx_core::{
    async_trait, AppendResult, Checkpoint, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    Repository, Result, StreamId, Timestamp,
};

/// The in-memory store, counting stream reads and version calls.
#[derive(Default)]
struct Counting {
    inner: InMemoryEventStore,
    reads: AtomicU64,
    versions: AtomicU64,
}

impl Counting {
    fn take(&self) -> (u64, u64) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.versions.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl EventStore for Counting {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.inner.capabilities()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream, from_version, max_count).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        self.versions.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_version(stream).await
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        self.inner.read_all(from, max_count, filter).await
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.events_by_type(event_type, since, max_count).await
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<cqrsx_core::raw::StreamInfo>> {
        self.inner.list_streams(after, max_count).await
    }

    async fn import(
        &self,
        stream: &StreamId,
        after: u64,
        events: Vec<RecordedEvent>,
    ) -> Result<cqrsx_core::AppendResult> {
        self.inner.import(stream, after, events).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        self.inner.truncate_before(stream, before).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn head(&self) -> Result<Checkpoint> {
        self.inner.head().await
    }
}

#[tokio::test]
async fn a_load_from_a_snapshot_at_the_head_reads_the_stream_once_and_no_version() {
    let events = Arc::new(Counting::default());
    let snapshots = Arc::new(BasicSnapshots::new(Arc::new(InMemorySnapshotStore::new()), 1));
    let repo = Repository::<Counter>::new(events.clone()).with_snapshots(snapshots);
    let mut root = repo.create("c-1").expect("create");
    for by in 1..=5 {
        root.record(CounterEvent::Added { by });
    }
    repo.save(&mut root).await.expect("save");
    events.take();

    // The snapshot is at the head (version 5).
    let (loaded, info) = repo.load_with_info("c-1").await.expect("load");
    assert_eq!((info.snapshot_version, info.events_replayed), (Some(5), 0));
    assert_eq!((loaded.version(), loaded.state().value), (5, 15));
    assert_eq!(events.take(), (1, 0), "one stream read, no version call");

    // Events after the snapshot: replayed, the snapshot's own event skipped.
    let stream = loaded.stream().clone();
    events
        .inner
        .append(
            &stream,
            ExpectedVersion::Exact(5),
            vec![cqrsx_core::EventCodec::new(cqrsx_core::ContentType::Json)
                .encode(&CounterEvent::Added { by: 10 }, cqrsx_core::Metadata::default())
                .expect("encode")],
        )
        .await
        .expect("append behind the snapshot");
    events.take();
    let (loaded, info) = repo.load_with_info("c-1").await.expect("load");
    assert_eq!((info.snapshot_version, info.events_replayed), (Some(5), 1));
    assert_eq!((loaded.version(), loaded.state().value), (6, 25));
    assert_eq!(events.take(), (1, 0));

    // The snapshot's own event truncated away, and nothing after it: the version call tells
    // that the stream still reaches the snapshot.
    let mut other = repo.create("c-2").expect("create");
    other.record(CounterEvent::Added { by: 2 });
    repo.save(&mut other).await.expect("save");
    events.inner.truncate_before(other.stream(), 2).await.expect("truncate");
    events.take();
    let (loaded, info) = repo.load_with_info("c-2").await.expect("load");
    assert_eq!((info.snapshot_version, info.fallback), (Some(1), None));
    assert_eq!((loaded.version(), loaded.state().value), (1, 2));
    assert_eq!(events.take(), (1, 1), "one stream read, one version call");
}
