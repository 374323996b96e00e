//! Retention against a writer that lands exactly between the run's plan and its delete, and a
//! crash between archiving and truncating.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::archive::{Archive, StoreArchive};
use cqrsx_core::memory::InMemoryEventStore;
use cqrsx_core::raw::{AllPage, EventStoreCapabilities, StreamInfo};
use cqrsx_core::retention::{HoldReason, RetentionJob, RetentionPolicy, StreamAction};
use cqrsx_core::{
    async_trait, AppendResult, Checkpoint, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    Result, StreamId, Timestamp,
};

/// A store where a writer appends to the stream just before each delete, once; or whose
/// truncation fails once (a crash after archiving).
struct Racy {
    inner: InMemoryEventStore,
    write_before_delete: AtomicBool,
    fail_truncate: AtomicBool,
}

#[async_trait]
impl EventStore for Racy {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.inner.capabilities()
    }
    async fn append(&self, s: &StreamId, e: ExpectedVersion, ev: Vec<NewEvent>) -> Result<AppendResult> {
        self.inner.append(s, e, ev).await
    }
    async fn read_stream(&self, s: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(s, from, max).await
    }
    async fn stream_version(&self, s: &StreamId) -> Result<u64> {
        self.inner.stream_version(s).await
    }
    async fn read_all(&self, from: Position, max: usize, filter: &EventFilter) -> Result<AllPage> {
        self.inner.read_all(from, max, filter).await
    }
    async fn events_by_type(&self, t: &str, since: Timestamp, max: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.events_by_type(t, since, max).await
    }
    async fn truncate_before(&self, s: &StreamId, before: u64) -> Result<u64> {
        if self.fail_truncate.swap(false, Ordering::SeqCst) {
            return Err(cqrsx_core::Error::backend(true, "crashed before truncating"));
        }
        self.inner.truncate_before(s, before).await
    }
    async fn delete_stream(&self, s: &StreamId, e: ExpectedVersion) -> Result<()> {
        if self.write_before_delete.swap(false, Ordering::SeqCst) {
            let v = self.inner.stream_version(s).await?;
            let event = NewEvent::json("Late", &serde_json::json!({"n": 1}))?;
            self.inner.append(s, ExpectedVersion::Exact(v), vec![event]).await?;
        }
        self.inner.delete_stream(s, e).await
    }
    async fn list_streams(&self, after: Option<&StreamId>, max: usize) -> Result<Vec<StreamInfo>> {
        self.inner.list_streams(after, max).await
    }
    async fn import(&self, s: &StreamId, after: u64, ev: Vec<RecordedEvent>) -> Result<AppendResult> {
        self.inner.import(s, after, ev).await
    }
    async fn head(&self) -> Result<Checkpoint> {
        self.inner.head().await
    }
}

async fn seeded(write_before_delete: bool, fail_truncate: bool) -> Result<(Arc<Racy>, StreamId)> {
    let store = Arc::new(Racy {
        inner: InMemoryEventStore::new(),
        write_before_delete: AtomicBool::new(write_before_delete),
        fail_truncate: AtomicBool::new(fail_truncate),
    });
    let stream = StreamId::new("Gone", "g1")?;
    let events = (1..=4)
        .map(|n| NewEvent::json("Added", &serde_json::json!({ "n": n })))
        .collect::<Result<Vec<_>>>()?;
    store.append(&stream, ExpectedVersion::NoStream, events).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok((store, stream))
}

#[tokio::test]
async fn a_stream_written_before_its_delete_is_kept_and_reported() -> Result<()> {
    let (store, stream) = seeded(true, false).await?;
    let cold = Arc::new(InMemoryEventStore::new());
    let report = RetentionJob::new(store.clone())
        .with_archive(Arc::new(StoreArchive::new(cold.clone())))
        .with_policy(RetentionPolicy::new("Gone")?.delete_untouched_after(Duration::from_millis(1)))?
        .run()
        .await?;
    let entry = report.stream(&stream).expect("reported");
    assert_eq!(entry.action, StreamAction::Kept);
    assert_eq!(entry.removed, 0);
    assert!(matches!(
        entry.held_back[..],
        [cqrsx_core::retention::HeldBack {
            from_version: 1,
            to_version: 4,
            reason: HoldReason::WrittenDuringRun { seen: 4, actual: 5 }
        }]
    ));
    assert_eq!(store.stream_version(&stream).await?, 5, "the stream lives on");
    assert_eq!(store.read_stream(&stream, 1, 10).await?.len(), 5);
    assert_eq!(report.totals.deleted, 0);
    Ok(())
}

#[tokio::test]
async fn a_crash_between_archive_and_truncate_leaves_both_and_the_next_run_finishes() -> Result<()> {
    let (store, stream) = seeded(false, true).await?;
    let cold = Arc::new(InMemoryEventStore::new());
    let archive = Arc::new(StoreArchive::new(cold.clone()));
    let job = RetentionJob::new(store.clone())
        .with_archive(archive.clone())
        .with_policy(RetentionPolicy::new("Gone")?.archive_untouched_after(Duration::from_millis(1)))?;
    let first = job.run().await?;
    let entry = first.stream(&stream).expect("reported");
    assert!(entry.error.is_some(), "{entry:?}");
    assert_eq!((entry.archived, entry.removed, first.totals.errors), (4, 0, 1));
    assert_eq!(store.read_stream(&stream, 1, 10).await?.len(), 4, "still hot");
    assert_eq!(archive.archived_version(&stream).await?, 4, "and archived");
    let head = cold.head().await?;
    let second = job.run().await?;
    let entry = second.stream(&stream).expect("reported");
    assert_eq!(
        (entry.action, entry.archived, entry.removed),
        (StreamAction::Archived, 0, 4)
    );
    assert_eq!(cold.head().await?, head, "nothing archived twice");
    assert!(store.read_stream(&stream, 1, 10).await?.is_empty());
    assert_eq!(store.stream_version(&stream).await?, 4);
    Ok(())
}

/// A shard's checkpoint holds back only the streams that shard owns.
#[tokio::test]
async fn a_shard_holds_back_only_its_own_streams() -> Result<()> {
    use cqrsx_core::memory::{InMemoryProjectionStore, InMemorySnapshotStore};
    use cqrsx_core::projection::{Shard, ViewKey};
    use cqrsx_core::raw::Commit;
    use cqrsx_core::snapshot::SnapshotRecord;
    use cqrsx_core::{ProjectionStore, SnapshotStore};

    let events = Arc::new(InMemoryEventStore::new());
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    let projections = Arc::new(InMemoryProjectionStore::new());
    let mut streams = Vec::new();
    for i in 0..8 {
        let stream = StreamId::new("Order", format!("o{i}"))?;
        let batch = (1..=6)
            .map(|n| NewEvent::json("Added", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>>>()?;
        events.append(&stream, ExpectedVersion::NoStream, batch).await?;
        snapshots
            .save(SnapshotRecord {
                stream: stream.clone(),
                version: 4,
                content_type: "application/json".into(),
                schema_version: 1,
                payload: b"{}".to_vec(),
                created_at: Timestamp::now(),
            })
            .await?;
        streams.push(stream);
    }
    // Shard 0 of 2 has applied nothing; shard 1 everything.
    let head = events.head().await?;
    for (index, checkpoint) in [(0, Checkpoint::start(1)), (1, head)] {
        let key = ViewKey::sharded("orders", 1, Shard::new(index, 2)?)?;
        let lease = projections
            .acquire(&key, "test", Duration::from_secs(10))
            .await?
            .expect("lease");
        projections
            .commit(
                &lease,
                Commit {
                    checkpoint: Some(checkpoint),
                    ..Commit::default()
                },
            )
            .await?;
    }
    let report = RetentionJob::new(events.clone())
        .with_snapshots(snapshots)
        .with_projections(projections)
        .with_policy(RetentionPolicy::new("Order")?.keep_before_snapshot(1))?
        .run()
        .await?;
    let (mut held, mut removed) = (0, 0);
    for stream in &streams {
        let entry = report.stream(stream).expect("reported");
        if Shard::of_stream(stream.key(), 2) == 0 {
            held += 1;
            assert_eq!(entry.removed, 0, "{stream}");
            assert!(
                matches!(&entry.held_back[..], [h] if h.reason == HoldReason::Unapplied { projections: vec!["orders.s0of2".into()] } && (h.from_version, h.to_version) == (1, 3)),
                "{entry:?}"
            );
        } else {
            removed += 1;
            assert_eq!((entry.removed, entry.removed_below), (3, 4), "{stream}");
            assert!(entry.held_back.is_empty());
        }
    }
    assert!(held > 0 && removed > 0, "both shards own streams: {held} {removed}");
    Ok(())
}
