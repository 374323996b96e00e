//! Event store cases on event ids: idempotent retries, ids unique per stream in any order,
//! reused ids refused by name.

use std::collections::HashSet;

use uuid::Uuid;

use super::event_cases::all_of_aggregate_type;
use super::support::{ev, evs, fresh_stream};
use super::Fixture;
use crate::error::Error;
use crate::event::{AppendResult, NewEvent};
use crate::event_store::EventStore;
use crate::stream::{ExpectedVersion, StreamId};

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
