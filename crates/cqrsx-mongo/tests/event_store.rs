//! MongoDB-specific event store behaviour the conformance suite cannot reach: stalled writers
//! and gap fillers, a head hint that fell behind, the document size limit.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::{Error, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use cqrsx_mongo::MongoEventStore;
use mongodb::bson::{doc, Document};

fn event(n: u64) -> NewEvent {
    NewEvent::json("Noted", &serde_json::json!({ "n": n })).expect("json")
}

fn stream(name: &str) -> StreamId {
    StreamId::new("Gap", format!("{name}-{}", cqrsx_core::Uuid::now_v7().simple())).expect("stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_writer_never_makes_a_catch_up_reader_skip_its_commit() {
    let config = common::config();
    let gap_timeout = config.gap_timeout;
    let counters_name = config.counters_collection();
    let client = common::client(config).await;
    let client_counters = client.database().collection::<Document>(&counters_name);
    let fast: Arc<dyn EventStore> = Arc::new(MongoEventStore::new(client.clone()));
    // The stalled writer holds its reserved position until the test lets it insert.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stalled = MongoEventStore::new(client).with_insert_gate(Arc::clone(&gate));
    let (slow_stream, fast_stream) = (stream("slow"), stream("fast"));

    let slow = tokio::spawn({
        let s = slow_stream.clone();
        async move { stalled.append(&s, ExpectedVersion::NoStream, vec![event(0)]).await }
    });
    // Once the stalled writer has reserved its position (the counter shows it), write behind it.
    let counters = client_counters.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counter = counters
            .find_one(doc! { "_id": "global_position" })
            .await
            .expect("counter");
        if counter.and_then(|c| c.get_i64("n").ok()).unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled writer never reserved"
        );
        tokio::task::yield_now().await;
    }
    let mut fast_positions = Vec::new();
    for i in 1..=5 {
        let r = fast
            .append(&fast_stream, ExpectedVersion::Any, vec![event(i)])
            .await
            .expect("fast append");
        fast_positions.push(r.position);
    }

    // A catch-up reader from the start: it meets the gap, waits, fills it, and reads the fast
    // writer's commits; only then does the stalled writer insert — it meets the filler, so its
    // commit moves behind the others, where the reader must still see it.
    let mut seen = Vec::new();
    let mut from = Position::start_of(0);
    // A hang detector (the reader needs about one gap timeout): 240 of them, two minutes.
    let deadline = tokio::time::Instant::now() + gap_timeout * 240;
    while seen.len() < 6 && tokio::time::Instant::now() < deadline {
        if seen.len() == 5 && gate.available_permits() == 0 {
            gate.add_permits(1);
        }
        let page = fast.read_all(from, 100, &EventFilter::all()).await.expect("read_all");
        seen.extend(
            page.events
                .into_iter()
                .map(|e| (e.position, e.stream.clone(), e.event_id)),
        );
        from = page.next;
        if seen.len() < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let slow_result = slow.await.expect("task").expect("the stalled append still succeeds");
    assert_eq!(seen.len(), 6, "the reader saw all six commits: {seen:?}");
    let ids: BTreeSet<_> = seen.iter().map(|(_, _, id)| *id).collect();
    assert_eq!(ids.len(), 6, "each exactly once");
    let positions: Vec<Position> = seen.iter().map(|(p, _, _)| *p).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in position order");
    let (slow_position, _, _) = seen
        .iter()
        .find(|(_, s, _)| *s == slow_stream)
        .expect("the stalled commit was seen");
    assert_eq!(*slow_position, slow_result.position);
    assert!(
        slow_result.position > *fast_positions.last().expect("fast"),
        "the reader closed the stalled writer's first position, so its commit moved behind the others"
    );
    assert_eq!(fast.stream_version(&slow_stream).await.expect("version"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heads_come_from_the_declared_path() {
    let config = common::config();
    let client = common::client(config.clone()).await;
    let store = MongoEventStore::new(client.clone());
    let s = stream("hint");
    for i in 0..3 {
        store
            .append(&s, ExpectedVersion::from_loaded(i), vec![event(i)])
            .await
            .expect("append");
    }
    let counters = client.database().collection::<Document>(&config.counters_collection());
    let hint_id = format!("head\u{1f}{}", s.key());
    if client.capabilities().indexed_queries {
        // The plain path: heads come from one indexed query; the hint document is only the
        // stream catalogue's entry (`list_streams`), written before the first commit at 0 and
        // never advanced.
        let hint = counters.find_one(doc! { "_id": &hint_id }).await.expect("find");
        assert!(
            hint.as_ref().is_some_and(|h| h.get_i64("v") == Ok(0)),
            "the plain path keeps only the catalogue's entry, never a head: {hint:?}"
        );
        assert_eq!(store.stream_version(&s).await.expect("version"), 3);
        return;
    }
    // The hinted path: a writer that stopped between its insert and the hint update leaves the
    // hint behind, and the next writer walks to the true head and repairs it.
    let reset = counters
        .update_one(doc! { "_id": &hint_id }, doc! { "$set": { "v": 1_i64 } })
        .await
        .expect("reset hint");
    assert_eq!(reset.matched_count, 1, "the hint document exists");

    assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    let err = store
        .append(&s, ExpectedVersion::Exact(2), vec![event(9)])
        .await
        .expect_err("stale expectation");
    assert!(matches!(err, Error::Conflict { actual: 3, .. }), "{err}");
    let r = store
        .append(&s, ExpectedVersion::Exact(3), vec![event(3)])
        .await
        .expect("append at the true head");
    assert_eq!(r.version, 4);
    let hint = counters
        .find_one(doc! { "_id": &hint_id })
        .await
        .expect("find")
        .expect("hint");
    assert_eq!(hint.get_i64("v").expect("v"), 4, "the hint is repaired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_the_document_limit_is_refused_before_the_write() {
    let client = common::client(common::config()).await;
    let store = MongoEventStore::new(client);
    let s = stream("big");
    let chunk = "x".repeat(1024 * 1024);
    let events: Vec<NewEvent> = (0..17)
        .map(|i| NewEvent::json("Big", &serde_json::json!({ "i": i, "data": chunk })).expect("json"))
        .collect();
    let err = store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .expect_err("17 MB commit");
    assert!(
        matches!(err, Error::InvalidInput(ref m) if m.contains("document limit")),
        "{err}"
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_their_own_streams_all_land_at_distinct_positions() {
    // Every writer reserves from the one counter: on servers whose `$inc` loses concurrent
    // updates, many are handed the same position and must sort it out among themselves.
    let client = common::client(common::config()).await;
    let store: Arc<dyn EventStore> = Arc::new(MongoEventStore::new(client));
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let s = stream(&format!("w{w}"));
            let mut positions = Vec::new();
            for v in 0..30u64 {
                let r = store
                    .append(&s, ExpectedVersion::Exact(v), vec![event(w * 100 + v)])
                    .await
                    .expect("append");
                positions.push(r.position);
            }
            positions
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for p in t.await.expect("writer") {
            assert!(all.insert(p), "position {p:?} handed out twice");
        }
    }
    assert_eq!(all.len(), 16 * 30);
}

/// A runtime shut down while writers wait for positions ends: the writers' reservations are
/// failed, not handed on from one dropped task to the next (which once recursed until the
/// stack overflowed and aborted the process).
#[test]
fn a_runtime_shut_down_with_appends_in_flight_ends() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = runtime.block_on(async {
        let client = common::client(common::config()).await;
        Arc::new(MongoEventStore::new(client))
    });
    for round in 0..5 {
        let writers: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                runtime.spawn(async move {
                    let s = stream(&format!("shutdown-{round}-{i}"));
                    store.append(&s, ExpectedVersion::Any, vec![event(i)]).await
                })
            })
            .collect();
        if round < 4 {
            runtime.block_on(async { tokio::time::sleep(Duration::from_millis(5 * round)).await });
        } else {
            // The last round's writers are mid-reservation when the runtime goes.
            runtime.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        }
        drop(writers);
    }
    {
        // The driver's client closes its connections on a runtime.
        let _inside = runtime.enter();
        drop(store);
    }
    runtime.shutdown_timeout(Duration::from_secs(30));
}

/// An append cancelled after it reserved its position (its task aborted, as a request timeout
/// or a dropped client future would) releases the position at once: a filler is in raw storage
/// within seconds, with no reader having waited out a gap timeout to fill it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_append_releases_its_reserved_position() {
    let config = common::config();
    let (counters_name, commits_name) = (config.counters_collection(), config.events_collection());
    let client = common::client(config).await;
    let counters = client.database().collection::<Document>(&counters_name);
    let commits = client.database().collection::<Document>(&commits_name);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stalled = MongoEventStore::new(client).with_insert_gate(Arc::clone(&gate));
    let s = stream("cancelled");
    let task = tokio::spawn(async move { stalled.append(&s, ExpectedVersion::NoStream, vec![event(0)]).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reserved = loop {
        let counter = counters
            .find_one(doc! { "_id": "global_position" })
            .await
            .expect("counter");
        if let Some(n) = counter.and_then(|c| c.get_i64("n").ok()).filter(|n| *n >= 1) {
            break n;
        }
        assert!(tokio::time::Instant::now() < deadline, "the append never reserved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()), "the append was cancelled");
    // A hang detector, far longer than one release takes; no reader runs meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let filler = commits
            .find_one(doc! { "pos": reserved, "filler": true })
            .await
            .expect("find the filler");
        if filler.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {reserved} of the cancelled append was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        commits.count_documents(doc! { "pos": reserved }).await.expect("count"),
        1,
        "only the filler holds the position"
    );
}
