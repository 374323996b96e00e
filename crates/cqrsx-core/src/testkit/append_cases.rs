//! Event store cases that write: expected versions, concurrent writers, atomic batches,
//! idempotent retries, truncation and deletion, refused input.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::Barrier;
use uuid::Uuid;

use super::event_cases::{all_of_aggregate_type, assert_conflict, versions};
use super::support::{ev, evs, fresh_stream, payload_n, unique, Counter};
use super::Fixture;
use crate::error::Error;
use crate::event::{AppendResult, ContentType, EventFilter, NewEvent, Position};
use crate::event_store::EventStore;
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
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (store, s, start, end) = (Arc::clone(&f.events), s.clone(), Arc::clone(&start), Arc::clone(&end));
        tasks.push(tokio::spawn(async move {
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
        }));
    }
    let mut winners: BTreeMap<u64, usize> = BTreeMap::new();
    for t in tasks {
        for round in t.await.expect("writer task") {
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

/// Contract 4: appending the same event ids again (a retry after a lost reply) succeeds with
/// the original result and writes nothing new, even with a now-stale expected version.
pub async fn retried_append_is_idempotent(f: Fixture) {
    let store = f.events.as_ref();
    let s = fresh_stream("C4");
    let batch = evs("Idem", 1, 3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first");
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("retry");
    assert_eq!(again.version, first.version, "retry returns the original version");
    assert_eq!(again.position, first.position, "retry returns the original position");
    store
        .append(&s, ExpectedVersion::Exact(3), evs("Idem", 4, 1))
        .await
        .expect("next");
    let late = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("late retry");
    assert_eq!(late.version, 3);
    let single = vec![ev("Idem", 5)];
    let one = store
        .append(&s, ExpectedVersion::Any, single.clone())
        .await
        .expect("single");
    let one_again = store
        .append(&s, ExpectedVersion::Any, single)
        .await
        .expect("single retry");
    assert_eq!(one, one_again);
    let events = store.read_stream(&s, 1, 100).await.expect("read");
    assert_eq!(events.len(), 5, "no duplicates");
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 5);
    for (e, original) in events.iter().zip(&batch) {
        assert_eq!(e.event_id, original.event_id);
    }
    let all = all_of_aggregate_type(store, s.aggregate_type()).await;
    assert_eq!(all.events.len(), 5, "the global log has no duplicates either");
    // Ids that match a commit only partly are not a retry: refused as a reused id, not as a
    // conflict (retrying cannot help), and nothing written.
    let cases = [
        (
            "a later id of a commit first",
            vec![batch[2].clone(), ev("Idem", 99)],
            batch[2].event_id,
        ),
        (
            "a new id first",
            vec![ev("Idem", 98), batch[1].clone()],
            batch[1].event_id,
        ),
        (
            "a commit's ids out of order",
            vec![batch[1].clone(), batch[0].clone(), batch[2].clone()],
            batch[1].event_id,
        ),
        (
            "a commit's first ids only",
            vec![batch[0].clone(), batch[1].clone()],
            batch[0].event_id,
        ),
    ];
    for (what, mixed, reused) in cases {
        for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(5)] {
            match store.append(&s, expected, mixed.clone()).await {
                Err(Error::EventIdReused { stream, event_id }) => {
                    assert_eq!(stream, s, "{what}");
                    assert_eq!(event_id, reused, "{what}: the error names the reused id");
                }
                other => panic!("{what} ({expected}): expected EventIdReused, got {other:?}"),
            }
        }
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), 5);
    // Event ids are unique per stream: the same id in another stream is another event.
    let other = fresh_stream("C4");
    let elsewhere = store
        .append(&other, ExpectedVersion::NoStream, vec![batch[0].clone()])
        .await
        .expect("an id of another stream is accepted");
    assert_eq!(elsewhere.version, 1);
    assert_ne!(elsewhere.position, first.position);
}

/// An event whose id is `id`.
fn with_id(n: u64, id: u128) -> NewEvent {
    ev("Any", n).with_id(Uuid::from_u128(id))
}

/// Appends each batch with the exact expected version, as commits of their own.
async fn commit_each(
    store: &dyn EventStore,
    s: &StreamId,
    batches: impl IntoIterator<Item = Vec<NewEvent>>,
) -> Vec<(Vec<NewEvent>, AppendResult)> {
    let mut version = store.stream_version(s).await.expect("version");
    let mut commits = Vec::new();
    for batch in batches {
        let result = store
            .append(s, ExpectedVersion::Exact(version), batch.clone())
            .await
            .expect("append");
        version = result.version;
        commits.push((batch, result));
    }
    commits
}

/// Retries every commit, with a stale expected version: each returns its original result.
async fn assert_retries(store: &dyn EventStore, s: &StreamId, commits: &[(Vec<NewEvent>, AppendResult)], when: &str) {
    for (i, (batch, original)) in commits.iter().enumerate() {
        let again = store
            .append(s, ExpectedVersion::NoStream, batch.clone())
            .await
            .unwrap_or_else(|e| panic!("{when}: retry of commit {i}: {e}"));
        assert_eq!(&again, original, "{when}: retry of commit {i}");
    }
}

/// Appends that reuse an id are refused by name, whatever the expected version.
async fn assert_reused(store: &dyn EventStore, s: &StreamId, cases: Vec<(&str, Vec<NewEvent>, Uuid)>, version: u64) {
    for (what, batch, reused) in cases {
        for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(version)] {
            match store.append(s, expected, batch.clone()).await {
                Err(Error::EventIdReused { event_id, .. }) => {
                    assert_eq!(event_id, reused, "{what}: the error names the reused id")
                }
                other => panic!("{what} ({expected}): expected EventIdReused, got {other:?}"),
            }
        }
    }
    assert_eq!(
        store.stream_version(s).await.expect("version"),
        version,
        "refusals write nothing"
    );
}

/// Contract 4, continued: ids are unique per stream whatever their order. Time-ordered ids
/// (the default), ids below every earlier one, descending and scattered ids are each accepted
/// once; a retry of any earlier commit, however far back and after truncation, returns its
/// result; a reused id is refused by name. (The Redis store keeps time-ordered ids without a
/// lookup per id, and indexes a stream's ids at its first append out of order: this walks
/// both layouts and the switch.)
pub async fn event_ids_are_unique_in_any_order(f: Fixture) {
    let store = f.events.as_ref();
    let s = fresh_stream("C4o");
    // 40 commits of 1 to 4 time-ordered events.
    let mut commits = commit_each(store, &s, (0..40).map(|c| evs("Ord", 0, c % 4 + 1))).await;
    assert_retries(store, &s, &commits, "time-ordered ids").await;
    let reuse_cases = |commits: &[(Vec<NewEvent>, AppendResult)]| {
        let id = |c: usize, i: usize| commits[c].0[i].clone();
        vec![
            (
                "the last id of an old commit, then a new one",
                vec![id(11, 3), ev("New", 0)],
                id(11, 3).event_id,
            ),
            (
                "a new id, then an old one",
                vec![ev("New", 0), id(2, 2)],
                id(2, 2).event_id,
            ),
            (
                "an old commit's first ids only",
                vec![id(22, 0), id(22, 1)],
                id(22, 0).event_id,
            ),
            (
                "an old commit and one more",
                vec![id(5, 0), id(5, 1), ev("New", 0)],
                id(5, 0).event_id,
            ),
            (
                "the first and the last ids",
                vec![id(0, 0), id(39, 3)],
                id(0, 0).event_id,
            ),
            (
                "many new ids and an old one among them",
                (0..30u128)
                    .map(|i| with_id(i as u64, 1000 + i * 7 % 30))
                    .chain([id(30, 1)])
                    .chain((0..9u128).map(|i| with_id(i as u64, 2000 + i)))
                    .collect(),
                id(30, 1).event_id,
            ),
        ]
    };
    let version = commits[39].1.version;
    assert_reused(store, &s, reuse_cases(&commits), version).await;

    // Ids below every id so far, increasing (new, accepted once); time-ordered ids again; fresh
    // ones in descending order; scattered ones.
    let later = [
        vec![with_id(1, 10), with_id(2, 20), with_id(3, 30)],
        evs("Ord", 0, 2),
        evs("Ord", 0, 3).into_iter().rev().collect(),
        vec![with_id(4, 25), with_id(5, 5), with_id(6, u128::MAX)],
    ];
    commits.extend(commit_each(store, &s, later).await);
    let version = commits.last().expect("commits").1.version;
    assert_eq!(version, 100 + 3 + 2 + 3 + 3);
    assert_retries(store, &s, &commits, "after ids out of order").await;
    let mut cases = reuse_cases(&commits);
    cases.push(("an id below the others", vec![with_id(7, 20)], Uuid::from_u128(20)));
    cases.push((
        "the largest id",
        vec![with_id(7, u128::MAX)],
        Uuid::from_u128(u128::MAX),
    ));
    cases.push((
        "new ids between old ones, then an old one",
        vec![with_id(7, 11), with_id(8, 21), with_id(9, 30)],
        Uuid::from_u128(30),
    ));
    assert_reused(store, &s, cases, version).await;
    let events = store.read_stream(&s, 1, 1000).await.expect("read");
    assert_eq!(events.len() as u64, version, "every commit once");
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "no id twice");
    let written: Vec<Uuid> = commits.iter().flat_map(|(b, _)| b.iter().map(|e| e.event_id)).collect();
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        written,
        "in commit order"
    );

    // A stream whose first commit is out of order, then a retry and an id in between.
    let t = fresh_stream("C4o");
    let first = vec![with_id(1, 50), with_id(2, 40), with_id(3, 30)];
    let result = store
        .append(&t, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("descending ids");
    assert_eq!(
        store
            .append(&t, ExpectedVersion::Any, first.clone())
            .await
            .expect("retry"),
        result
    );
    store
        .append(&t, ExpectedVersion::Exact(3), vec![with_id(4, 35)])
        .await
        .expect("an id between");
    assert_reused(
        store,
        &t,
        vec![("a middle id", vec![with_id(5, 40)], Uuid::from_u128(40))],
        4,
    )
    .await;

    // Truncation keeps the ids: retries of removed commits still return their result.
    let u = fresh_stream("C4o");
    let mut kept = commit_each(store, &u, (0..10).map(|c| evs("Ord", 0, c % 3 + 1))).await;
    let version = kept[9].1.version;
    store.truncate_before(&u, version - 2).await.expect("truncate");
    assert_retries(store, &u, &kept, "after truncation").await;
    let batch: Vec<NewEvent> = (1..=20u64).map(|i| with_id(i, u128::from(i) * 13 % 20 + 1)).collect();
    let result = store
        .append(&u, ExpectedVersion::Exact(version), batch.clone())
        .await
        .expect("ids out of order after truncation");
    kept.push((batch, result));
    assert_retries(store, &u, &kept, "after truncation and ids out of order").await;
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
