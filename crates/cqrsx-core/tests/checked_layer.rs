//! Core's checked layer: a backend that implements only the `raw` traits gets every input check
//! of the store traits. The backend here fails the test if any call reaches it, so each bad
//! input below must be refused by core alone — a new backend cannot forget a check.

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::projection::{LeaseHolder, ParkedEvent, ReplayRequests, ViewKey};
use cqrsx_core::query::{Op, Query};
use cqrsx_core::raw::{
    AllPage, EventBackend, EventStoreCapabilities, ProjectionBackend, ReadBackend, ReadStoreCapabilities,
    SnapshotBackend, MAX_NUMBER,
};
use cqrsx_core::raw::{Commit, Lease, ViewChange, ViewWrite};
use cqrsx_core::snapshot::{SnapshotInfo, SnapshotRecord};
use cqrsx_core::{
    async_trait, AppendResult, Checkpoint, Document, Error, EventFilter, EventStore, ExpectedVersion, Filter, NewEvent,
    Position, ProjectionStore, ReadStore, RecordedEvent, Result, SnapshotStore, StreamId, Timestamp,
};
use futures::StreamExt;
use serde_json::{json, Value};

/// A backend no call may reach.
struct Unreachable;

fn reached<T>(what: &str) -> Result<T> {
    panic!("{what} reached the backend: the checked layer let bad input through")
}

#[async_trait]
impl EventBackend for Unreachable {
    fn capabilities(&self) -> EventStoreCapabilities {
        EventStoreCapabilities {
            partitions: 2,
            max_event_bytes: 64,
            max_batch: 3,
            live_signal: false,
        }
    }
    async fn append(&self, _: &StreamId, _: ExpectedVersion, _: Vec<NewEvent>) -> Result<AppendResult> {
        reached("append")
    }
    async fn read_stream(&self, _: &StreamId, _: u64, _: usize) -> Result<Vec<RecordedEvent>> {
        reached("read_stream")
    }
    async fn stream_version(&self, _: &StreamId) -> Result<u64> {
        reached("stream_version")
    }
    async fn read_all(&self, _: Position, _: usize, _: &EventFilter) -> Result<AllPage> {
        reached("read_all")
    }
    async fn events_by_type(&self, _: &str, _: Timestamp, _: usize) -> Result<Vec<RecordedEvent>> {
        reached("events_by_type")
    }
    async fn list_streams(&self, _: Option<&StreamId>, _: usize) -> Result<Vec<cqrsx_core::raw::StreamInfo>> {
        reached("list_streams")
    }
    async fn import(&self, _: &StreamId, _: u64, _: Vec<RecordedEvent>) -> Result<cqrsx_core::AppendResult> {
        reached("import")
    }
    async fn truncate_before(&self, _: &StreamId, _: u64) -> Result<u64> {
        reached("truncate_before")
    }
    async fn delete_stream(&self, _: &StreamId, _: ExpectedVersion) -> Result<()> {
        reached("delete_stream")
    }
    async fn head(&self) -> Result<Checkpoint> {
        reached("head")
    }
}

#[async_trait]
impl ReadBackend for Unreachable {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadStoreCapabilities {
            ttl: false,
            max_document_bytes: 64,
            nested_arrays: false,
        }
    }
    async fn save_docs(&self, _: Vec<Document>, _: Option<Duration>) -> Result<()> {
        reached("save_docs")
    }
    async fn get(&self, _: &str) -> Result<Option<Value>> {
        reached("get")
    }
    async fn query(&self, _: &Query) -> Result<Vec<Document>> {
        reached("query")
    }
    async fn count(&self, _: &[Filter]) -> Result<u64> {
        reached("count")
    }
    async fn delete_many(&self, _: &[String]) -> Result<u64> {
        reached("delete_many")
    }
}

#[async_trait]
impl SnapshotBackend for Unreachable {
    fn max_snapshot_bytes(&self) -> usize {
        64
    }
    async fn save(&self, _: SnapshotRecord) -> Result<()> {
        reached("save snapshot")
    }
    async fn latest(&self, _: &StreamId, _: Option<u64>) -> Result<Option<SnapshotRecord>> {
        reached("latest")
    }
    async fn list(&self, _: &StreamId) -> Result<Vec<SnapshotInfo>> {
        reached("list")
    }
    async fn prune(&self, _: &StreamId, _: usize) -> Result<u64> {
        reached("prune")
    }
    async fn delete_all(&self, _: &StreamId) -> Result<u64> {
        reached("delete_all")
    }
}

#[async_trait]
impl ProjectionBackend for Unreachable {
    fn nested_arrays(&self) -> bool {
        false
    }
    async fn acquire(&self, _: &ViewKey, _: &str, _: Duration) -> Result<Option<Lease>> {
        reached("acquire")
    }
    async fn renew(&self, _: &Lease, _: Duration) -> Result<()> {
        reached("renew")
    }
    async fn release(&self, _: &Lease) -> Result<()> {
        reached("release")
    }
    async fn checkpoint(&self, _: &ViewKey) -> Result<Option<Checkpoint>> {
        reached("checkpoint")
    }
    async fn get(&self, _: &ViewKey, _: &str) -> Result<Option<Value>> {
        reached("get view document")
    }
    async fn commit(&self, _: &Lease, _: Commit) -> Result<()> {
        reached("commit")
    }
    async fn parked(&self, _: &ViewKey) -> Result<Vec<ParkedEvent>> {
        reached("parked")
    }
    async fn active_version(&self, _: &str) -> Result<Option<u32>> {
        reached("active_version")
    }
    async fn activate(&self, _: &Lease) -> Result<()> {
        reached("activate")
    }
    async fn drop_view(&self, _: &ViewKey) -> Result<()> {
        reached("drop_view")
    }
    fn view(&self, _: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        reached("view")
    }
    async fn views(&self) -> Result<Vec<ViewKey>> {
        reached("views")
    }
    async fn holder(&self, _: &ViewKey) -> Result<Option<LeaseHolder>> {
        reached("holder")
    }
    async fn request_replay(&self, _: &ViewKey) -> Result<u64> {
        reached("request_replay")
    }
    async fn replay_requests(&self, _: &ViewKey) -> Result<ReplayRequests> {
        reached("replay_requests")
    }
    async fn replay_handled(&self, _: &ViewKey, _: u64, _: u64) -> Result<()> {
        reached("replay_handled")
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T>) {
    match result {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

fn event(bytes: usize) -> NewEvent {
    NewEvent::json("Happened", &"x".repeat(bytes)).expect("event")
}

#[tokio::test]
async fn every_bad_event_store_input_is_refused_before_the_backend() {
    let store = Unreachable;
    let s = StreamId::new("Order", "1").expect("stream");
    let any = ExpectedVersion::Any;
    refused("empty append", EventStore::append(&store, &s, any, vec![]).await);
    refused(
        "over max_batch",
        EventStore::append(&store, &s, any, (0..4).map(|_| event(1)).collect()).await,
    );
    refused(
        "over max_event_bytes",
        EventStore::append(&store, &s, any, vec![event(100)]).await,
    );
    let twice = event(1);
    refused(
        "an id twice",
        EventStore::append(&store, &s, any, vec![twice.clone(), twice]).await,
    );
    let huge = ExpectedVersion::Exact(MAX_NUMBER + 1);
    refused(
        "expected over MAX_NUMBER",
        EventStore::append(&store, &s, huge, vec![event(1)]).await,
    );
    refused(
        "read from over MAX_NUMBER",
        EventStore::read_stream(&store, &s, MAX_NUMBER + 1, 1).await,
    );
    let cursor = store
        .stream_events(&s, MAX_NUMBER + 1, 10)
        .next()
        .await
        .expect("one item");
    refused("stream_events from over MAX_NUMBER", cursor);
    let missing_partition = Position {
        partition: 2,
        offset: 1,
    };
    refused(
        "a partition it lacks",
        EventStore::read_all(&store, missing_partition, 1, &EventFilter::default()).await,
    );
    let bad_filter = EventFilter {
        event_types: vec!["".into()],
        ..EventFilter::default()
    };
    refused(
        "a bad filter",
        EventStore::read_all(&store, Position::start_of(0), 1, &bad_filter).await,
    );
    refused(
        "a bad type",
        EventStore::events_by_type(&store, "", Timestamp::now(), 1).await,
    );
    refused(
        "truncate over MAX_NUMBER",
        EventStore::truncate_before(&store, &s, MAX_NUMBER + 1).await,
    );
    refused(
        "delete expecting over MAX_NUMBER",
        EventStore::delete_stream(&store, &s, huge).await,
    );
}

#[tokio::test]
async fn every_bad_read_store_input_is_refused_before_the_backend() {
    let store = Unreachable;
    refused("empty id", ReadStore::save(&store, "", json!({})).await);
    refused(
        "over max_document_bytes",
        ReadStore::save(&store, "a", json!({ "x": "y".repeat(100) })).await,
    );
    refused(
        "nested arrays",
        ReadStore::save(&store, "a", json!({ "x": [[1]] })).await,
    );
    refused(
        "ttl where none",
        ReadStore::save_with_ttl(&store, "a", json!({}), Duration::from_secs(1)).await,
    );
    refused("get of an empty id", ReadStore::get(&store, "").await);
    refused("delete of an empty id", ReadStore::delete(&store, "").await);
    let bad = Query::all().filter(Filter::new("a", Op::In, json!(1)));
    refused("a bad query", ReadStore::query(&store, &bad).await);
    refused(
        "a bad count",
        ReadStore::count(&store, &[Filter::new("", Op::Eq, json!(1))]).await,
    );
    let docs = vec![
        Document {
            id: "ok".into(),
            data: json!({}),
        },
        Document {
            id: "".into(),
            data: json!({}),
        },
    ];
    refused("one bad document of many", ReadStore::save_many(&store, docs).await);
    refused(
        "one bad id of many",
        ReadStore::delete_many(&store, &["ok".into(), "".into()]).await,
    );
    // Nothing to do reaches no backend either.
    ReadStore::save_many(&store, vec![]).await.expect("no documents");
    assert_eq!(ReadStore::delete_many(&store, &[]).await.expect("no ids"), 0);
}

#[tokio::test]
async fn every_bad_snapshot_and_projection_input_is_refused_before_the_backend() {
    let store = Unreachable;
    let record = |version, bytes: usize| SnapshotRecord {
        stream: StreamId::new("Order", "1").expect("stream"),
        version,
        content_type: "application/json".into(),
        schema_version: 1,
        payload: vec![0; bytes],
        created_at: Timestamp::now(),
    };
    refused("snapshot version 0", SnapshotStore::save(&store, record(0, 1)).await);
    refused(
        "snapshot over max bytes",
        SnapshotStore::save(&store, record(1, 100)).await,
    );

    let key = ViewKey::new("orders", 1).expect("key");
    let lease = Lease {
        key: key.clone(),
        owner: "me".into(),
        token: 1,
    };
    refused(
        "empty owner",
        ProjectionStore::acquire(&store, &key, "", Duration::from_secs(5)).await,
    );
    refused(
        "zero lease",
        ProjectionStore::acquire(&store, &key, "me", Duration::ZERO).await,
    );
    refused(
        "renew for zero",
        ProjectionStore::renew(&store, &lease, Duration::ZERO).await,
    );
    refused(
        "view document with an empty id",
        ProjectionStore::get(&store, &key, "").await,
    );
    let commit = |data: Value| Commit {
        writes: vec![ViewWrite {
            id: "doc".into(),
            change: ViewChange::Put { data, ttl: None },
            position: Position::start_of(0),
        }],
        parked: vec![],
        replayed: vec![],
        checkpoint: None,
    };
    refused(
        "a commit of nested arrays",
        ProjectionStore::commit(&store, &lease, commit(json!({ "a": [[1]] }))).await,
    );
    refused(
        "a commit of a non-object",
        ProjectionStore::commit(&store, &lease, commit(json!([1]))).await,
    );
    refused(
        "a replay request number over MAX_NUMBER",
        ProjectionStore::replay_handled(&store, &key, u64::MAX, 0).await,
    );
}
