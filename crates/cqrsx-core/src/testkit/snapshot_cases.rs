//! Snapshot cases: contract item 7, at the store and at the repository.

use std::sync::Arc;

use super::support::{fresh_stream, unique, Counter, CounterEvent};
use super::Fixture;
use crate::error::Error;
use crate::event::Timestamp;
use crate::repository::Repository;
use crate::snapshot_store::SnapshotRecord;
use crate::stream::StreamId;

fn record(stream: &StreamId, version: u64, payload: &[u8]) -> SnapshotRecord {
    SnapshotRecord {
        stream: stream.clone(),
        version,
        content_type: "application/octet-stream".into(),
        schema_version: 1,
        payload: payload.to_vec(),
        created_at: Timestamp::now(),
    }
}

/// Contract 7 (store): an older snapshot never replaces a newer one; `latest` honours a
/// version bound; listing is newest first; pruning keeps the newest N; bad input is refused.
pub async fn snapshot_store_never_hides_a_newer_snapshot(f: Fixture) {
    let store = f.snapshots.as_ref();
    let s = fresh_stream("S7");
    assert!(store.latest(&s, None).await.expect("latest").is_none());
    store.save(record(&s, 5, b"five")).await.expect("save 5");
    store.save(record(&s, 10, b"ten")).await.expect("save 10");
    store.save(record(&s, 7, b"seven")).await.expect("save 7 after 10");
    let latest = store.latest(&s, None).await.expect("latest").expect("some");
    assert_eq!(
        (latest.version, latest.payload.as_slice()),
        (10, &b"ten"[..]),
        "an older snapshot never replaces a newer one"
    );
    assert_eq!(latest.content_type, "application/octet-stream");
    assert_eq!(latest.schema_version, 1);
    let bounded = store.latest(&s, Some(8)).await.expect("latest").expect("some");
    assert_eq!(bounded.version, 7);
    assert!(store.latest(&s, Some(4)).await.expect("latest").is_none());
    let listed: Vec<u64> = store.list(&s).await.expect("list").iter().map(|i| i.version).collect();
    assert_eq!(listed, vec![10, 7, 5], "newest first");
    store
        .save(record(&s, 10, b"ten again"))
        .await
        .expect("same version replaces");
    let latest = store.latest(&s, None).await.expect("latest").expect("some");
    assert_eq!(latest.payload, b"ten again");
    assert_eq!(store.list(&s).await.expect("list").len(), 3);
    assert_eq!(store.prune(&s, 2).await.expect("prune"), 1);
    let listed: Vec<u64> = store.list(&s).await.expect("list").iter().map(|i| i.version).collect();
    assert_eq!(listed, vec![10, 7]);
    let other = fresh_stream("S7");
    store.save(record(&other, 1, b"x")).await.expect("other stream");
    assert_eq!(store.delete_all(&s).await.expect("delete all"), 2);
    assert!(store.latest(&s, None).await.expect("latest").is_none());
    assert!(store.latest(&other, None).await.expect("other kept").is_some());
    let err = store.save(record(&s, 0, b"zero")).await.expect_err("version 0");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(
        store.list(&s).await.expect("list").is_empty(),
        "refused snapshot wrote nothing"
    );
}

/// Contract 7 (repository): a load with a snapshot equals a load by full replay; an unreadable
/// snapshot falls back to replay and is reported.
pub async fn snapshot_load_equals_full_replay(f: Fixture) {
    let with = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(Arc::clone(&f.strategy));
    let without = Repository::<Counter>::new(Arc::clone(&f.events));
    let id = unique("snap-");
    let mut root = with.create(&id).expect("create");
    for i in 0..57i64 {
        match i % 9 {
            0 => root.record(CounterEvent::Renamed(format!("n{i}"))),
            8 => root.record(CounterEvent::Reset),
            _ => root.record(CounterEvent::Added { by: i }),
        }
        if i % 4 == 3 {
            with.save(&mut root).await.expect("save");
        }
    }
    with.save(&mut root).await.expect("save");
    let stream = with.stream_id(&id).expect("stream");
    assert!(
        !f.snapshots.list(&stream).await.expect("list").is_empty(),
        "the strategy took snapshots"
    );

    let (snap, info) = with.load_with_info(&id).await.expect("load with snapshots");
    let replayed = without.load(&id).await.expect("load by replay");
    assert_eq!(snap.state(), replayed.state(), "snapshot + tail == full replay");
    assert_eq!(snap.version(), replayed.version());
    assert_eq!(snap.version(), 57);
    let used = info.snapshot_version.expect("a snapshot was used");
    assert!(used > 0 && used <= 57);
    assert_eq!(info.events_replayed, 57 - used);
    assert!(info.fallback.is_none());

    // Appending through the snapshot-loaded root continues from the right version.
    let mut snap = snap;
    snap.record(CounterEvent::Added { by: 1000 });
    with.save(&mut snap).await.expect("save after snapshot load");
    let replayed = without.load(&id).await.expect("load");
    assert_eq!(replayed.state().value, snap.state().value);

    // An unreadable snapshot at the head: the load falls back to replay and says so.
    let head = f.events.stream_version(&stream).await.expect("version");
    f.snapshots
        .save(SnapshotRecord {
            stream: stream.clone(),
            version: head,
            content_type: "application/json".into(),
            schema_version: 1,
            payload: b"\x00not a snapshot".to_vec(),
            created_at: Timestamp::now(),
        })
        .await
        .expect("save corrupt snapshot");
    let (fallback, info) = with.load_with_info(&id).await.expect("load falls back");
    assert_eq!(fallback.state(), replayed.state());
    assert!(info.fallback.is_some(), "the fallback is reported");
    assert_eq!(info.snapshot_version, None);
    assert_eq!(info.events_replayed, head);

    // A snapshot ahead of the stream (events lost since) is not trusted either.
    let short = unique("snap-");
    let mut root = with.create(&short).expect("create");
    root.record(CounterEvent::Added { by: 1 });
    with.save(&mut root).await.expect("save");
    let short_stream = with.stream_id(&short).expect("stream");
    let state = serde_json::to_vec(&Counter {
        value: 999,
        applied: 50,
        name: "ahead".into(),
    })
    .expect("json");
    f.snapshots
        .save(SnapshotRecord {
            stream: short_stream.clone(),
            version: 50,
            content_type: "application/json".into(),
            schema_version: 1,
            payload: state,
            created_at: Timestamp::now(),
        })
        .await
        .expect("save");
    let (loaded, info) = with.load_with_info(&short).await.expect("load");
    assert_eq!(loaded.state().value, 1);
    assert_eq!(loaded.version(), 1);
    assert!(info.fallback.is_some());
    assert_eq!(f.events.stream_version(&short_stream).await.expect("v"), 1);
}
