//! Cases for the stream catalogue and for imports: what migration and archives build on.

use std::time::Duration;

use super::support::{ev, evs, unique};
use super::Fixture;
use crate::error::Error;
use crate::event::{ContentType, Metadata, NewEvent, RecordedEvent, Timestamp};
use crate::event_store::EventStore;
use crate::memory::InMemoryEventStore;
use crate::stream::{ExpectedVersion, StreamId};

/// Events of `stream` in `source`, written as three commits with metadata, both content types
/// and recorded-at times apart, then read back.
async fn source_events(source: &InMemoryEventStore, stream: &StreamId) -> Vec<RecordedEvent> {
    let meta = Metadata::correlated("corr-1")
        .with_causation("cause-1")
        .with("tenant", "acme")
        .with("n", 7);
    let first = vec![
        NewEvent::json("Opened", &serde_json::json!({"name": "a", "nested": {"x": [1, 2]}}))
            .expect("json")
            .with_metadata(meta.clone()),
        NewEvent::new("Packed", ContentType::MessagePack, vec![0x81, 0xa1, 0x6b, 0x05]).with_schema_version(3),
    ];
    source
        .append(stream, ExpectedVersion::NoStream, first)
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(15)).await;
    source
        .append(stream, ExpectedVersion::Exact(2), vec![ev("Moved", 3)])
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(15)).await;
    source
        .append(stream, ExpectedVersion::Exact(3), evs("Moved", 4, 2))
        .await
        .expect("append");
    source.read_stream(stream, 1, 100).await.expect("read source")
}

/// Every field but the position.
fn assert_same_event(copy: &RecordedEvent, original: &RecordedEvent) {
    assert_eq!(copy.event_id, original.event_id);
    assert_eq!(copy.stream, original.stream);
    assert_eq!(copy.version, original.version, "version of {}", original.event_id);
    assert_eq!(copy.event_type, original.event_type);
    assert_eq!(copy.schema_version, original.schema_version);
    assert_eq!(copy.content_type, original.content_type);
    assert_eq!(copy.payload, original.payload, "payload of {}", original.event_id);
    assert_eq!(copy.metadata, original.metadata, "metadata of {}", original.event_id);
    assert_eq!(
        copy.recorded_at, original.recorded_at,
        "recorded-at of {}",
        original.event_id
    );
}

/// An import keeps every field but the position (assigned in call order), starts a stream
/// truncated in its source at its first version, sets the version of a stream with no events
/// left, is a no-op when resumed with a batch already there, and refuses conflicts, reused ids,
/// tombstones and malformed batches without writing.
pub async fn import_keeps_ids_versions_times_and_metadata(f: Fixture) {
    let target = &f.events;
    let source = InMemoryEventStore::new();
    let ty = unique("Imp");
    let whole = StreamId::new(&ty, "whole").expect("stream");
    let events = source_events(&source, &whole).await;
    assert_eq!(events.len(), 5);

    // The whole stream in two calls (3, then 2), positions in call order.
    let done = target
        .import(&whole, 0, events[..3].to_vec())
        .await
        .expect("import 1-3");
    assert_eq!(done.version, 3);
    let done = target
        .import(&whole, 3, events[3..].to_vec())
        .await
        .expect("import 4-5");
    assert_eq!(done.version, 5);
    let copied = target.read_stream(&whole, 1, 100).await.expect("read copy");
    assert_eq!(copied.len(), 5);
    for (copy, original) in copied.iter().zip(&events) {
        assert_same_event(copy, original);
    }
    assert!(
        copied
            .windows(2)
            .all(|w| w[0].position.partition != w[1].position.partition || w[0].position.offset < w[1].position.offset),
        "positions follow the import order"
    );
    assert_eq!(done.position, copied[4].position);
    assert_eq!(target.stream_version(&whole).await.expect("version"), 5);

    // Resumed: the same batch again writes nothing and returns its result.
    let head = target.head().await.expect("head");
    let again = target.import(&whole, 3, events[3..].to_vec()).await.expect("resume");
    assert_eq!(again, done);
    assert_eq!(
        target.head().await.expect("head"),
        head,
        "a resumed import writes nothing"
    );
    // Split differently, what is there is still a resume; a batch past a gap is a conflict.
    let again = target
        .import(&whole, 2, events[2..].to_vec())
        .await
        .expect("resume 3-5");
    assert_eq!(again, done);
    let mut later = events[4].clone();
    later.version = 8;
    later.event_id = crate::Uuid::now_v7();
    let err = target.import(&whole, 7, vec![later]).await;
    assert!(matches!(err, Err(Error::Conflict { actual: 5, .. })), "{err:?}");
    // An id already in the stream, at another version.
    let mut reused = events[0].clone();
    reused.version = 6;
    let err = target.import(&whole, 5, vec![reused]).await;
    assert!(matches!(err, Err(Error::EventIdReused { .. })), "{err:?}");
    // Other ids at versions the stream holds are not a resume.
    let mut forged = events[3..].to_vec();
    forged[0].event_id = crate::Uuid::now_v7();
    let err = target.import(&whole, 3, forged).await;
    assert!(
        matches!(err, Err(Error::EventIdReused { .. } | Error::Conflict { .. })),
        "{err:?}"
    );
    assert_eq!(
        target.head().await.expect("head"),
        head,
        "refused imports write nothing"
    );
    // Appends continue after an imported stream.
    let next = target
        .append(&whole, ExpectedVersion::Exact(5), vec![ev("Moved", 6)])
        .await
        .expect("append after import");
    assert_eq!(next.version, 6);

    // A source truncated before version 3 starts the copy at 3.
    let truncated = StreamId::new(&ty, "truncated").expect("stream");
    let tail: Vec<RecordedEvent> = events[2..]
        .iter()
        .map(|e| RecordedEvent {
            stream: truncated.clone(),
            ..e.clone()
        })
        .collect();
    target.import(&truncated, 2, tail.clone()).await.expect("import tail");
    assert_eq!(target.stream_version(&truncated).await.expect("version"), 5);
    let read = target.read_stream(&truncated, 1, 100).await.expect("read");
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3, 4, 5]);
    for (copy, original) in read.iter().zip(&tail) {
        assert_same_event(copy, original);
    }
    let next = target
        .append(&truncated, ExpectedVersion::Exact(5), vec![ev("Moved", 6)])
        .await
        .expect("append");
    assert_eq!(next.version, 6);

    // A source stream with every event truncated: only its version.
    let emptied = StreamId::new(&ty, "emptied").expect("stream");
    target.import(&emptied, 9, Vec::new()).await.expect("import version");
    assert_eq!(target.stream_version(&emptied).await.expect("version"), 9);
    assert!(target.read_stream(&emptied, 1, 10).await.expect("read").is_empty());
    let next = target
        .append(&emptied, ExpectedVersion::Exact(9), vec![ev("Moved", 10)])
        .await
        .expect("append");
    assert_eq!(next.version, 10);

    // Recorded-at is the source's, for reads by type too.
    let since = events[2].recorded_at;
    let by_type: Vec<_> = target
        .events_by_type("Moved", since, 1000)
        .await
        .expect("by type")
        .into_iter()
        .filter(|e| e.stream.aggregate_type() == ty)
        .collect();
    assert!(
        by_type.iter().all(|e| e.recorded_at >= since),
        "events_by_type honours recorded-at"
    );
    let far_future = Timestamp(events[4].recorded_at.as_millis() + 3_600_000);
    let none: Vec<_> = target
        .events_by_type("Packed", far_future, 1000)
        .await
        .expect("by type")
        .into_iter()
        .filter(|e| e.stream.aggregate_type() == ty)
        .collect();
    assert!(none.is_empty(), "an imported event is not newer than its recorded-at");

    // A tombstone refuses imports; bad batches are refused before anything is written.
    let gone = StreamId::new(&ty, "gone").expect("stream");
    target
        .append(&gone, ExpectedVersion::NoStream, vec![ev("Moved", 1)])
        .await
        .expect("append");
    target
        .delete_stream(&gone, ExpectedVersion::Exact(1))
        .await
        .expect("delete");
    let gone_events: Vec<RecordedEvent> = events[1..2]
        .iter()
        .map(|e| RecordedEvent {
            stream: gone.clone(),
            version: 2,
            ..e.clone()
        })
        .collect();
    let err = target.import(&gone, 1, gone_events).await;
    assert!(matches!(err, Err(Error::StreamDeleted { .. })), "{err:?}");
    let head = target.head().await.expect("head");
    let fresh = StreamId::new(&ty, "bad").expect("stream");
    let wrong_stream = target.import(&fresh, 0, events[..1].to_vec()).await;
    let gap = target
        .import(&whole, 0, vec![events[0].clone(), events[2].clone()])
        .await;
    let nothing = target.import(&fresh, 0, Vec::new()).await;
    for (what, err) in [
        ("another stream's event", wrong_stream),
        ("a gap", gap),
        ("nothing", nothing),
    ] {
        assert!(matches!(err, Err(Error::InvalidInput(_))), "{what}: {err:?}");
    }
    assert_eq!(target.head().await.expect("head"), head, "bad imports write nothing");
    assert_eq!(target.stream_version(&fresh).await.expect("version"), 0);
}

/// The catalogue lists every stream once, in key order, with its version and tombstone, also
/// streams with no events left, and pages by `after`.
pub async fn stream_catalogue_lists_every_stream(f: Fixture) {
    let store = &f.events;
    let ty = unique("Cat");
    let mut expected = Vec::new();
    for (i, id) in ["b", "a", "c-1", "c", "d", "e"].into_iter().enumerate() {
        let stream = StreamId::new(&ty, id).expect("stream");
        let n = i as u64 + 1;
        store
            .append(&stream, ExpectedVersion::NoStream, evs("Counted", 1, n))
            .await
            .expect("append");
        let deleted = id == "d";
        if deleted {
            store
                .delete_stream(&stream, ExpectedVersion::Exact(n))
                .await
                .expect("delete");
        }
        if id == "e" {
            store.truncate_before(&stream, n + 1).await.expect("truncate all");
        }
        expected.push((stream.key().to_string(), n, deleted));
    }
    expected.sort();
    let mut listed = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = store.list_streams(after.as_ref(), 2).await.expect("list");
        assert!(page.len() <= 2, "a page holds at most max_count");
        for info in &page {
            if let Some(a) = &after {
                assert!(info.stream.key() > a.key(), "{} listed after {}", info.stream, a);
            }
        }
        let last = page.last().map(|i| i.stream.clone());
        listed.extend(page.iter().filter(|i| i.stream.aggregate_type() == ty).cloned());
        let short = page.len() < 2;
        after = last;
        if short {
            break;
        }
    }
    let got: Vec<_> = listed
        .iter()
        .map(|i| (i.stream.key().to_string(), i.version, i.deleted))
        .collect();
    assert_eq!(
        got, expected,
        "every stream once, in key order, with version and tombstone"
    );
    assert!(store.list_streams(None, 0).await.expect("list 0").is_empty());
}
