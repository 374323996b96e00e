//! Event store cases that read: envelopes, catch-up, `read_all` pages, events by type, long
//! streams; and the read helpers the append cases share.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use uuid::Uuid;

use super::support::{ev, evs, fresh_stream, payload_n, unique, Counter, CounterEvent};
use super::Fixture;
use crate::codec::{Codec, EventCodec};
use crate::error::Error;
use crate::event::{ContentType, EventFilter, Metadata, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::EventStore;
use crate::repository::Repository;
use crate::stream::{ExpectedVersion, StreamId};

pub(super) fn assert_conflict(result: crate::Result<crate::AppendResult>, actual_version: u64, what: &str) {
    match result {
        Err(Error::Conflict { actual, .. }) => {
            assert_eq!(actual, actual_version, "{what}: conflict must carry the actual version")
        }
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

/// Every event of an aggregate type in the global log, over every partition, in pages.
pub(super) struct AllOf {
    pub(super) events: Vec<RecordedEvent>,
}

pub(super) async fn all_of_aggregate_type(store: &dyn EventStore, aggregate_type: &str) -> AllOf {
    read_global(store, &EventFilter::aggregate_types([aggregate_type])).await
}

pub(super) async fn read_global(store: &dyn EventStore, filter: &EventFilter) -> AllOf {
    let mut events = Vec::new();
    for p in 0..store.capabilities().partitions {
        let mut from = Position::start_of(p);
        loop {
            let page = store.read_all(from, 500, filter).await.expect("read all");
            events.extend(page.events);
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    AllOf { events }
}

pub(super) async fn versions(store: &dyn EventStore, stream: &StreamId) -> Vec<u64> {
    store
        .read_stream(stream, 1, usize::MAX)
        .await
        .expect("read stream")
        .iter()
        .map(|e| e.version)
        .collect()
}

/// Contract 5: reads return events in version order with every envelope field intact, in both
/// codecs; unknown types and corrupt payloads decode to `Serialization`, never a panic.
pub async fn read_returns_every_envelope_field_in_order(f: Fixture) {
    let store = f.events.as_ref();
    let s = StreamId::new(Counter::TYPE_FOR_TESTS, unique("c5-")).expect("stream");
    let before = Timestamp::now();
    let mut sent = Vec::new();
    for (i, ct) in [
        ContentType::Json,
        ContentType::MessagePack,
        ContentType::Json,
        ContentType::MessagePack,
    ]
    .into_iter()
    .enumerate()
    {
        let codec = EventCodec::new(ct);
        let event = if i % 2 == 0 {
            CounterEvent::Added { by: i as i64 - 7 }
        } else {
            CounterEvent::Renamed(format!("ü-{i}"))
        };
        let metadata = Metadata::correlated(format!("corr-{i}"))
            .with_causation(format!("cause-{i}"))
            .with("user", "ana")
            .with("n", i as u64)
            .with("nested", serde_json::json!({"a": [1, 2]}))
            // Numbers at the edges come back as the same numbers, on every backend.
            .with("u64_max", u64::MAX)
            .with("i64_min", i64::MIN)
            .with("float", 0.1)
            .with("grid", serde_json::json!([[1, 2], [3]]))
            .with("$odd.key", "kept")
            .with_traceparent(format!("00-{:032x}-{:016x}-01", i + 1, i + 1));
        sent.push((
            codec.encode(&event, metadata).expect("encode").with_schema_version(1),
            event,
        ));
    }
    sent.push((
        EventCodec::default()
            .encode(&CounterEvent::Reset, Metadata::default())
            .expect("encode"),
        CounterEvent::Reset,
    ));
    let batch: Vec<NewEvent> = sent.iter().map(|(e, _)| e.clone()).collect();
    store
        .append(&s, ExpectedVersion::NoStream, batch[..2].to_vec())
        .await
        .expect("append");
    store
        .append(&s, ExpectedVersion::Exact(2), batch[2..].to_vec())
        .await
        .expect("append");
    let after = Timestamp(Timestamp::now().0 + 1);
    let read = store.read_stream(&s, 1, 100).await.expect("read");
    assert_eq!(read.len(), sent.len());
    let mut last_position = Position::default();
    for (i, (got, (want, event))) in read.iter().zip(&sent).enumerate() {
        assert_eq!(got.version, i as u64 + 1, "version order");
        assert_eq!(got.event_id, want.event_id);
        assert_eq!(got.stream, s);
        assert_eq!(got.aggregate_type(), Counter::TYPE_FOR_TESTS);
        assert_eq!(got.event_type, want.event_type);
        assert_eq!(got.schema_version, want.schema_version);
        assert_eq!(got.content_type, want.content_type);
        assert_eq!(got.payload, want.payload, "payload bytes intact");
        assert_eq!(got.metadata, want.metadata, "metadata intact");
        assert!(
            got.recorded_at.0 + 1000 >= before.0 && got.recorded_at.0 <= after.0 + 1000,
            "recorded_at {:?} outside the append window",
            got.recorded_at
        );
        assert!(got.position > last_position, "positions increase in version order");
        last_position = got.position;
        let decoded: CounterEvent = EventCodec::default().decode(got).expect("decode");
        assert_eq!(&decoded, event);
    }
    let tail = store.read_stream(&s, 4, 100).await.expect("read from 4");
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), vec![4, 5]);
    let limited = store.read_stream(&s, 2, 2).await.expect("read limited");
    assert_eq!(limited.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2, 3]);
    assert!(store
        .read_stream(&fresh_stream("C5"), 1, 10)
        .await
        .expect("unknown stream")
        .is_empty());

    // Unknown event types and corrupt payloads, in both codecs: Serialization, not a panic.
    let bad = StreamId::new(Counter::TYPE_FOR_TESTS, unique("c5bad-")).expect("stream");
    let mut garbage = vec![NewEvent::json("NoSuchEvent", &serde_json::json!({"x": 1})).expect("json")];
    for ct in [ContentType::Json, ContentType::MessagePack] {
        garbage.push(NewEvent::new("Added", ct, vec![0xc1, 0xff, b'{', 0x00]));
        garbage.push(NewEvent::new(
            "Added",
            ct,
            ct.encode(&serde_json::json!({"by": "not a number"})).expect("encode"),
        ));
    }
    store
        .append(&bad, ExpectedVersion::NoStream, garbage)
        .await
        .expect("store accepts opaque bytes");
    for recorded in store.read_stream(&bad, 1, 10).await.expect("read") {
        let err = EventCodec::default()
            .decode::<CounterEvent>(&recorded)
            .expect_err("must not decode");
        assert!(matches!(err, Error::Serialization { .. }), "{err}");
    }
    let repo = Repository::<RenamedCounter>::new(Arc::clone(&f.events));
    let err = repo.load(bad.id()).await.expect_err("load of a corrupt stream");
    assert!(matches!(err, Error::Serialization { .. }), "{err}");
}

/// [`Counter`] under the aggregate type the corruption case writes to.
#[derive(Debug, Default)]
struct RenamedCounter(Counter);

impl Counter {
    const TYPE_FOR_TESTS: &'static str = "CounterC5";
}

impl crate::Aggregate for RenamedCounter {
    const TYPE: &'static str = Counter::TYPE_FOR_TESTS;
    type Event = CounterEvent;
    fn apply(&mut self, event: &CounterEvent) {
        self.0.apply(event);
    }
}

/// Contract 6: positions strictly increase in commit order, and a catch-up reader following
/// `read_all` from its last position sees every event exactly once while writers append.
pub async fn catch_up_reader_sees_every_event_once(f: Fixture) {
    const WRITERS_6: u64 = 4;
    const COMMITS: u64 = 40;
    let aggregate_type = unique("C6");
    let filter = EventFilter::aggregate_types([aggregate_type.clone()]);
    let partitions = f.events.capabilities().partitions;
    let mut writers = Vec::new();
    for w in 0..WRITERS_6 {
        let (store, aggregate_type) = (Arc::clone(&f.events), aggregate_type.clone());
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for c in 0..COMMITS {
                let s = StreamId::new(&aggregate_type, format!("w{w}-s{}", c % 3)).expect("stream");
                let batch = evs("Caught", w * 10_000 + c * 10, 1 + c % 3);
                ids.extend(batch.iter().map(|e| e.event_id));
                store.append(&s, ExpectedVersion::Any, batch).await.expect("append");
                if c % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            ids
        }));
    }
    let expected_total: u64 = WRITERS_6 * (0..COMMITS).map(|c| 1 + c % 3).sum::<u64>();
    let seen_total = Arc::new(AtomicU64::new(0));
    let writers_done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for p in 0..partitions {
        let (store, filter, seen_total, writers_done) = (
            Arc::clone(&f.events),
            filter.clone(),
            Arc::clone(&seen_total),
            Arc::clone(&writers_done),
        );
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut from = Position::start_of(p);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            let mut quiet_since = tokio::time::Instant::now();
            // Readers stop once every partition together has seen all events, or when nothing
            // new arrived for a while after the writers finished, or at the deadline; the
            // caller's checks then say what was missed.
            while seen_total.load(Ordering::SeqCst) < expected_total && tokio::time::Instant::now() < deadline {
                if writers_done.load(Ordering::SeqCst) && quiet_since.elapsed() > Duration::from_secs(3) {
                    break;
                }
                let page = store.read_all(from, 7, &filter).await.expect("read_all");
                assert!(page.next >= from, "next position never goes back");
                assert_eq!(page.next.partition, p);
                let mut last = seen.last().map(|e| e.position);
                for e in &page.events {
                    assert!(
                        Some(e.position) > last,
                        "positions must strictly increase: {} after {last:?}",
                        e.position
                    );
                    last = Some(e.position);
                }
                if page.events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else {
                    quiet_since = tokio::time::Instant::now();
                }
                seen_total.fetch_add(page.events.len() as u64, Ordering::SeqCst);
                seen.extend(page.events);
                from = page.next;
            }
            seen
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    writers_done.store(true, Ordering::SeqCst);
    assert_eq!(written.len() as u64, expected_total);
    let mut seen_ids = Vec::new();
    for r in readers {
        seen_ids.extend(r.await.expect("reader").into_iter().map(|e| e.event_id));
    }
    let distinct: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(distinct.len(), seen_ids.len(), "the reader saw an event twice");
    assert_eq!(distinct.len(), written.len(), "the reader must see every event");
    assert_eq!(distinct, written, "the reader must see exactly the written events");
    // Reading again from the start finds nothing new: no event appears late.
    let mut again = 0;
    for p in 0..partitions {
        let mut from = Position::start_of(p);
        loop {
            let page = f.events.read_all(from, 1000, &filter).await.expect("read_all");
            again += page.events.len() as u64;
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    assert_eq!(again, expected_total, "a second full read sees the same events");

    // Per stream, global positions follow version order.
    let s = StreamId::new(&aggregate_type, "w0-s0").expect("stream");
    let events = f.events.read_stream(&s, 1, usize::MAX).await.expect("read");
    for w in events.windows(2) {
        assert!(w[1].position > w[0].position && w[1].version == w[0].version + 1);
    }
}

/// Reads the whole global log with pages of `page` events, every partition in turn.
async fn read_all_paged(f: &Fixture, page: usize, filter: &EventFilter) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for partition in 0..f.events.capabilities().partitions {
        let mut from = Position::start_of(partition);
        loop {
            let got = f.events.read_all(from, page, filter).await.expect("read_all");
            assert!(got.events.len() <= page, "a page holds at most {page} events");
            assert!(got.next >= from, "the next position never goes back");
            if let (Some(first), Some(last)) = (got.events.first(), got.events.last()) {
                assert!(first.position >= from, "a page starts at or after its position");
                assert!(got.next > last.position, "the next page starts after this one");
            }
            let done = got.events.is_empty() && got.next == from;
            out.extend(got.events);
            if done {
                break;
            }
            from = got.next;
        }
    }
    out
}

/// `read_all` pages that end inside a batch resume at the next event of that batch, with and
/// without type filters: no event is skipped or repeated whatever the page size.
pub async fn read_all_pages_inside_batches(f: Fixture) {
    let streams: Vec<StreamId> = (0..3).map(|_| fresh_stream("PG")).collect();
    let mut n = 0;
    for _round in 0..3 {
        for s in &streams {
            let batch: Vec<NewEvent> = (0..7)
                .map(|k| {
                    n += 1;
                    ev(if k % 3 == 0 { "PgB" } else { "PgA" }, n)
                })
                .collect();
            f.events
                .append(s, ExpectedVersion::Any, batch)
                .await
                .expect("append batch");
        }
    }
    let key = |e: &RecordedEvent| (e.stream.key().to_string(), e.version);
    let filter = EventFilter::aggregate_types(["PG"]);
    let reference = read_all_paged(&f, 1_000, &filter).await;
    assert_eq!(reference.len(), 63, "every event once");
    let mut ns: Vec<u64> = reference.iter().map(|e| payload_n(&e.payload)).collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=63).collect::<Vec<_>>());
    let only_b = EventFilter {
        event_types: vec!["PgB".into()],
        ..EventFilter::aggregate_types(["PG"])
    };
    let reference_b: Vec<_> = reference.iter().filter(|e| e.event_type == "PgB").map(key).collect();
    assert_eq!(reference_b.len(), 27);
    for page in [1, 2, 3, 5] {
        let paged: Vec<_> = read_all_paged(&f, page, &filter).await.iter().map(key).collect();
        assert_eq!(paged, reference.iter().map(key).collect::<Vec<_>>(), "page size {page}");
        let paged_b: Vec<_> = read_all_paged(&f, page, &only_b).await.iter().map(key).collect();
        assert_eq!(paged_b, reference_b, "page size {page}, type filter");
    }
}

/// `GetEventsByType` of the Go cqrsx package: events of one type since a time, oldest first, with their
/// stream, version and position; mixed-type batches, earlier events and deleted streams.
pub async fn events_by_type_since_a_time(f: Fixture) {
    let store = f.events.as_ref();
    let wanted = unique("Wanted");
    let other = unique("Other");
    let a = fresh_stream("C10");
    let b = fresh_stream("C10");
    let gone = fresh_stream("C10");
    store
        .append(&a, ExpectedVersion::Any, vec![ev(&wanted, 0)])
        .await
        .expect("append before the time");
    // Recorded times are in milliseconds, and streams may sit on different partitions: commits
    // a few milliseconds apart make "oldest first" one order on every layout.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
    tick().await;
    let since = Timestamp::now();
    store
        .append(&a, ExpectedVersion::Any, vec![ev(&wanted, 1), ev(&other, 2)])
        .await
        .expect("append");
    tick().await;
    store
        .append(&gone, ExpectedVersion::Any, vec![ev(&wanted, 90)])
        .await
        .expect("append to a stream deleted below");
    tick().await;
    store
        .append(
            &b,
            ExpectedVersion::Any,
            vec![ev(&other, 5), ev(&wanted, 3), ev(&other, 6), ev(&wanted, 7)],
        )
        .await
        .expect("append a mixed batch");
    tick().await;
    store
        .append(&a, ExpectedVersion::Any, vec![ev(&wanted, 4)])
        .await
        .expect("append");
    store.delete_stream(&gone, ExpectedVersion::Any).await.expect("delete");
    let found = store.events_by_type(&wanted, since, 100).await.expect("by type");
    assert_eq!(
        found.iter().map(|e| payload_n(&e.payload)).collect::<Vec<_>>(),
        vec![1, 3, 7, 4],
        "events of the type since the time, in commit order, none of a deleted stream"
    );
    assert!(found.iter().all(|e| e.event_type == wanted && e.recorded_at >= since));
    // Each is the very event its stream holds: same version, position and id.
    for event in &found {
        let held = store
            .read_stream(&event.stream, event.version, 1)
            .await
            .expect("read back");
        assert_eq!(held.first(), Some(event), "event {} of {}", event.version, event.stream);
    }
    assert_eq!(
        found.iter().map(|e| (e.stream.clone(), e.version)).collect::<Vec<_>>(),
        vec![(a.clone(), 2), (b.clone(), 2), (b.clone(), 4), (a.clone(), 4)]
    );
    let first_two = store.events_by_type(&wanted, since, 2).await.expect("limited");
    assert_eq!(
        first_two.iter().map(|e| payload_n(&e.payload)).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let everything = store
        .events_by_type(&wanted, Timestamp(0), 100)
        .await
        .expect("since the epoch");
    assert_eq!(
        everything
            .iter()
            .filter(|e| e.stream == a || e.stream == b)
            .map(|e| payload_n(&e.payload))
            .collect::<Vec<_>>(),
        vec![0, 1, 3, 7, 4]
    );
    let future = Timestamp(Timestamp::now().0 + 60_000);
    assert!(store
        .events_by_type(&wanted, future, 100)
        .await
        .expect("future")
        .is_empty());
    let filtered = read_global(store, &EventFilter::event_types([other.clone()])).await;
    assert_eq!(filtered.events.len(), 3, "read_all filters by event type");
}

/// Long streams read as a `Stream`, a page at a time, in order.
pub async fn long_stream_reads_in_pages(f: Fixture) {
    let s = fresh_stream("C11");
    for b in 0..12 {
        f.events
            .append(&s, ExpectedVersion::Exact(b * 100), evs("Long", b * 100 + 1, 100))
            .await
            .expect("append");
    }
    let all: Vec<RecordedEvent> = f.events.stream_events(&s, 1, 128).try_collect().await.expect("stream");
    assert_eq!(all.len(), 1200);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as u64 + 1 && payload_n(&e.payload) == i as u64 + 1));
    let tail: Vec<RecordedEvent> = f.events.stream_events(&s, 1150, 7).try_collect().await.expect("stream");
    assert_eq!(tail.first().map(|e| e.version), Some(1150));
    assert_eq!(tail.len(), 51);

    // One large batch (over any per-call chunking a backend does), then its retry.
    let big = evs("Long", 1201, 2_500);
    let first = f
        .events
        .append(&s, ExpectedVersion::Exact(1200), big.clone())
        .await
        .expect("large batch");
    assert_eq!(first.version, 3_700);
    let again = f
        .events
        .append(&s, ExpectedVersion::Any, big)
        .await
        .expect("retried large batch");
    assert_eq!(again, first, "the retry of a large batch is idempotent");
    let all: Vec<RecordedEvent> = f.events.stream_events(&s, 1, 1000).try_collect().await.expect("stream");
    assert_eq!(all.len(), 3_700);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as u64 + 1 && payload_n(&e.payload) == i as u64 + 1));
}
