//! Event store cases that write: expected versions, concurrent writers, atomic batches,
//! truncation and deletion, refused input (idempotent retries are in `id_cases`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::Barrier;
use uuid::Uuid;

use super::event_cases::{all_of_aggregate_type, assert_conflict, versions};
use super::support::{ev, evs, fresh_stream, payload_n, unique, Counter};
use super::Fixture;
use crate::error::Error;
use crate::event::{ContentType, EventFilter, NewEvent, Position};
use crate::repository::Repository;
use crate::stream::{ExpectedVersion, StreamId};

/// Contract 1: a wrong expected version fails with `Conflict` carrying the actual version,
/// including versions ahead of the head and inside an earlier batch; nothing is written.
pub async fn append_with_wrong_expected_version_conflicts(f: Fixture) {
    let store = f.events.as_ref();
    let s = fresh_stream("C1");
    assert_conflict(
        store.append(&s, ExpectedVersion::StreamExists, evs("E", 1, 1)).await,
        0,
        "StreamExists on a new stream",
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(3), evs("E", 1, 1)).await,
        0,
        "Exact(3) on a new stream",
    );
    let r = store
        .append(&s, ExpectedVersion::NoStream, evs("E", 1, 3))
        .await
        .expect("first batch");
    assert_eq!(r.version, 3);
    assert_conflict(
        store.append(&s, ExpectedVersion::NoStream, evs("E", 9, 1)).await,
        3,
        "NoStream on an existing stream",
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(2), evs("E", 9, 1)).await,
        3,
        "inside the earlier batch",
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(1), evs("E", 9, 2)).await,
        3,
        "start of the earlier batch",
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(4), evs("E", 9, 1)).await,
        3,
        "ahead of the head",
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::Exact(100), evs("E", 9, 1)).await,
        3,
        "far ahead of the head",
    );
    assert_eq!(
        versions(store, &s).await,
        vec![1, 2, 3],
        "conflicting appends wrote nothing"
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    let r = store
        .append(&s, ExpectedVersion::Exact(3), evs("E", 4, 2))
        .await
        .expect("exact head");
    assert_eq!(r.version, 5);
    let r = store
        .append(&s, ExpectedVersion::StreamExists, evs("E", 6, 1))
        .await
        .expect("stream exists");
    assert_eq!(r.version, 6);
    let r = store
        .append(&s, ExpectedVersion::Any, evs("E", 7, 1))
        .await
        .expect("any");
    assert_eq!(r.version, 7);
    let payloads: Vec<u64> = store
        .read_stream(&s, 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| payload_n(&e.payload))
        .collect();
    assert_eq!(payloads, vec![1, 2, 3, 4, 5, 6, 7]);
}

/// Contract 2: writers racing with the same expected version — exactly one wins each round,
/// the losers see the winner's version, and no version is duplicated or skipped. Then writers
/// with `Any` race freely and still produce a dense stream.
pub async fn concurrent_writers_never_duplicate_or_skip_versions(f: Fixture) {
    let (writers, rounds) = (f.stress.writers, f.stress.rounds);
    let s = fresh_stream("C2");
    let start = Arc::new(Barrier::new(writers));
    let end = Arc::new(Barrier::new(writers));
    // Writers are taken as they finish: one that fails leaves the others waiting at a barrier,
    // and its failure must end the case (dropping the set aborts them), not hang it.
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (store, s, start, end) = (Arc::clone(&f.events), s.clone(), Arc::clone(&start), Arc::clone(&end));
        tasks.spawn(async move {
            let mut wins = Vec::new();
            for round in 0..rounds {
                start.wait().await;
                match store
                    .append(&s, ExpectedVersion::from_loaded(round), vec![ev("Won", writer as u64)])
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.version, round + 1, "writer {writer} round {round}");
                        wins.push(round);
                    }
                    Err(Error::Conflict { actual, .. }) => {
                        assert_eq!(
                            actual,
                            round + 1,
                            "writer {writer} round {round}: loser must see the winner"
                        );
                    }
                    Err(e) => panic!("writer {writer} round {round}: {e}"),
                }
                end.wait().await;
            }
            wins
        });
    }
    let mut winners: BTreeMap<u64, usize> = BTreeMap::new();
    while let Some(wins) = tasks.join_next().await {
        for round in wins.expect("writer task") {
            *winners.entry(round).or_default() += 1;
        }
    }
    assert_eq!(winners.len() as u64, rounds, "every round has a winner");
    assert!(
        winners.values().all(|&n| n == 1),
        "exactly one winner per round: {winners:?}"
    );
    assert_eq!(versions(f.events.as_ref(), &s).await, (1..=rounds).collect::<Vec<_>>());

    // Free-for-all with `Any`: the stream stays dense and holds every event exactly once.
    let s = fresh_stream("C2");
    let mut tasks = Vec::new();
    for writer in 0..writers as u64 {
        let (store, s) = (Arc::clone(&f.events), s.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .append(&s, ExpectedVersion::Any, vec![ev("Any", writer * 1000 + i)])
                    .await
                    .expect("append any");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let events = f.events.read_stream(&s, 1, usize::MAX).await.expect("read");
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=writers as u64 * 25).collect::<Vec<_>>()
    );
    let distinct: HashSet<u64> = events.iter().map(|e| payload_n(&e.payload)).collect();
    assert_eq!(distinct.len(), writers * 25, "no event lost or duplicated");
}

/// Contract 3: readers never see half a batch, and a failed batch leaves nothing.
pub async fn batch_append_is_all_or_nothing(f: Fixture) {
    const BATCH: u64 = 10;
    const BATCHES: u64 = 30;
    let s = fresh_stream("C3");
    let writer = {
        let (store, s) = (Arc::clone(&f.events), s.clone());
        tokio::spawn(async move {
            for b in 0..BATCHES {
                store
                    .append(
                        &s,
                        ExpectedVersion::Exact(b * BATCH),
                        evs("Batch", b * BATCH + 1, BATCH),
                    )
                    .await
                    .expect("batch");
            }
        })
    };
    loop {
        let seen = f.events.read_stream(&s, 1, usize::MAX).await.expect("read");
        assert_eq!(
            seen.len() as u64 % BATCH,
            0,
            "a reader saw half a batch: {} events",
            seen.len()
        );
        let all = all_of_aggregate_type(&*f.events, s.aggregate_type()).await;
        assert_eq!(
            all.events.len() as u64 % BATCH,
            0,
            "read_all saw half a batch: {} events",
            all.events.len()
        );
        if seen.len() as u64 == BATCH * BATCHES {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");

    // A batch refused for its last event writes none of its events.
    let caps = f.events.capabilities();
    let mut bad = evs("Batch", 1000, 3);
    bad.push(NewEvent::new(
        "Batch",
        ContentType::Json,
        vec![b' '; caps.max_event_bytes + 1],
    ));
    let err = f
        .events
        .append(&s, ExpectedVersion::Any, bad)
        .await
        .expect_err("oversized batch");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    // A batch refused for its version writes nothing either.
    let err = f
        .events
        .append(&s, ExpectedVersion::Exact(1), evs("Batch", 2000, 5))
        .await
        .expect_err("stale batch");
    assert!(err.is_conflict(), "{err}");
    let after = f.events.read_stream(&s, 1, usize::MAX).await.expect("read");
    assert_eq!(after.len() as u64, BATCH * BATCHES);
    assert!(
        after.iter().all(|e| payload_n(&e.payload) < 1000),
        "nothing of the failed batches"
    );
}

/// Contract 8: truncate-before removes old events but keeps the version; delete leaves a
/// tombstone that refuses appends and reads.
pub async fn truncate_and_delete_behave_as_documented(f: Fixture) {
    let store = f.events.as_ref();
    let s = fresh_stream("C8");
    store
        .append(&s, ExpectedVersion::NoStream, evs("T", 1, 4))
        .await
        .expect("append");
    store
        .append(&s, ExpectedVersion::Exact(4), evs("T", 5, 6))
        .await
        .expect("append");
    let removed = store.truncate_before(&s, 6).await.expect("truncate");
    assert_eq!(removed, 5);
    assert_eq!(versions(store, &s).await, vec![6, 7, 8, 9, 10]);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        10,
        "truncation keeps the version"
    );
    assert_conflict(
        store.append(&s, ExpectedVersion::NoStream, evs("T", 0, 1)).await,
        10,
        "truncated stream still exists",
    );
    store
        .append(&s, ExpectedVersion::Exact(10), evs("T", 11, 1))
        .await
        .expect("append after truncate");
    assert_eq!(
        store.truncate_before(&s, 3).await.expect("truncate again"),
        0,
        "nothing below 6 left"
    );
    let all = all_of_aggregate_type(store, s.aggregate_type()).await;
    assert_eq!(
        all.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10, 11],
        "read_all skips truncated events"
    );

    let err = store
        .delete_stream(&s, ExpectedVersion::Exact(3))
        .await
        .expect_err("stale delete");
    assert!(matches!(err, Error::Conflict { actual: 11, .. }), "{err}");
    store
        .delete_stream(&s, ExpectedVersion::Exact(11))
        .await
        .expect("delete");
    assert!(
        matches!(
            store.append(&s, ExpectedVersion::Any, evs("T", 12, 1)).await,
            Err(Error::StreamDeleted { .. })
        ),
        "deleted stream refuses appends"
    );
    assert!(matches!(
        store.append(&s, ExpectedVersion::NoStream, evs("T", 12, 1)).await,
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.read_stream(&s, 1, 10).await,
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.stream_version(&s).await,
        Err(Error::StreamDeleted { .. })
    ));
    let all = all_of_aggregate_type(store, s.aggregate_type()).await;
    assert!(all.events.is_empty(), "read_all skips deleted streams");
    let other = fresh_stream("C8");
    store
        .append(&other, ExpectedVersion::NoStream, evs("T", 1, 1))
        .await
        .expect("other streams unaffected");
}

/// Contract 9: bad input gets `InvalidInput` and writes nothing.
pub async fn bad_input_is_rejected_and_writes_nothing(f: Fixture) {
    let store = f.events.as_ref();
    for (ty, id) in [("", "x"), ("Bad Type", "x"), ("T", ""), ("T", "a\nb")] {
        assert!(
            matches!(StreamId::new(ty, id), Err(Error::InvalidInput(_))),
            "stream id {ty:?}/{id:?}"
        );
    }
    let s = fresh_stream("C9");
    let caps = store.capabilities();
    let mut cases: Vec<(&str, Vec<NewEvent>)> = vec![
        ("empty batch", vec![]),
        (
            "oversized payload",
            vec![NewEvent::new(
                "E",
                ContentType::Json,
                vec![b'1'; caps.max_event_bytes + 1],
            )],
        ),
        ("empty event type", vec![ev("", 1)]),
        ("invalid event type", vec![ev("has space", 1)]),
        ("nil event id", vec![ev("E", 1).with_id(Uuid::nil())]),
        ("schema version 0", vec![ev("E", 1).with_schema_version(0)]),
    ];
    let dup = ev("E", 1);
    cases.push(("duplicate ids in one batch", vec![dup.clone(), dup]));
    for (what, batch) in cases {
        match store.append(&s, ExpectedVersion::Any, batch).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{what}: expected InvalidInput, got {other:?}"),
        }
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 0, "nothing written");
    let all = all_of_aggregate_type(store, s.aggregate_type()).await;
    assert!(all.events.is_empty(), "nothing in the global log");
    let bad_partition = Position {
        partition: caps.partitions,
        offset: 1,
    };
    assert!(matches!(
        store.read_all(bad_partition, 10, &EventFilter::all()).await,
        Err(Error::InvalidInput(_))
    ));
    let repo = Repository::<Counter>::new(Arc::clone(&f.events));
    assert!(matches!(repo.load("").await, Err(Error::InvalidInput(_))));
    assert!(matches!(repo.load(&unique("missing-")).await, Err(Error::NotFound(_))));
}
