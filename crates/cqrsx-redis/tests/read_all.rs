//! `read_all` reads windows of positions: a page stops at the events asked for whatever the
//! size of the commits holding them, a hole that deleted streams left in the log is jumped over
//! in the same call, and a page costs round trips for what it returns, not for the log's length.

mod common;

use cqrsx_core::{EventFilter, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use cqrsx_redis::{RedisClientManager, RedisEventStore};

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Windowed", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_end_inside_large_commits_and_step_over_holes() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let (a, gone, b) = (
        StreamId::new("Win", "a").expect("stream"),
        StreamId::new("Gone", "big").expect("stream"),
        StreamId::new("Win", "b").expect("stream"),
    );
    store
        .append(&a, ExpectedVersion::NoStream, events(100))
        .await
        .expect("a");
    for _ in 0..3 {
        store
            .append(&gone, ExpectedVersion::Any, events(1_000))
            .await
            .expect("gone");
    }
    for _ in 0..5 {
        store.append(&b, ExpectedVersion::Any, events(1)).await.expect("b");
    }
    store.delete_stream(&gone, ExpectedVersion::Any).await.expect("delete");
    let all = EventFilter::all();
    let start = Position::start_of(store.partition_of(&a));

    // Ten events from inside a 100-event commit, in one round trip.
    let calls = client.metrics().operations;
    let page = store.read_all(start, 10, &all).await.expect("read");
    assert_eq!(client.metrics().operations - calls, 1, "one round trip for a page");
    let versions: Vec<u64> = page.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    assert_eq!(page.next.offset, start.offset + 10);

    // From the middle of that commit, across the 3,000 positions of the deleted stream: b's
    // events come back in the same call, the hole costing at most one more round trip whatever its
    // size (a window of 100 positions stepping through it would take 30), and `next` follows
    // the last of them.
    let from = Position {
        offset: start.offset + 95,
        ..start
    };
    let calls = client.metrics().operations;
    let page = store.read_all(from, 100, &all).await.expect("read");
    let trips = client.metrics().operations - calls;
    assert!(trips <= 2, "{trips} round trips: at most one more for the hole");
    let got: Vec<(String, u64)> = page
        .events
        .iter()
        .map(|e| (e.stream.id().to_string(), e.version))
        .collect();
    let mut want: Vec<(String, u64)> = (96..=100).map(|v| ("a".to_string(), v)).collect();
    want.extend((1..=5).map(|v| ("b".to_string(), v)));
    assert_eq!(got, want);
    let last = page.events.last().expect("events").position.offset;
    assert_eq!(page.next.offset, last + 1);

    // Past the end: nothing, and `next` does not move past the log's head.
    let page = store.read_all(page.next, 100, &all).await.expect("read");
    assert!(page.events.is_empty());
    assert_eq!(page.next.offset, last + 1);

    // An aggregate filter: the same page through it.
    let only_b = EventFilter::aggregate_types(["Win"]);
    let page = store.read_all(from, 3, &only_b).await.expect("read");
    let versions: Vec<(String, u64)> = page
        .events
        .iter()
        .map(|e| (e.stream.id().to_string(), e.version))
        .collect();
    assert_eq!(versions, vec![("a".into(), 96), ("a".into(), 97), ("a".into(), 98)]);
}
