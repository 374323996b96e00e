//! Group commit: appends queued behind a busy partition go to Redis in one script call, and each
//! still gets exactly the outcome it would have had alone.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cqrsx_core::{AppendResult, Error, EventStore, ExpectedVersion, NewEvent, Result, StreamId, Uuid};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};
use futures::future::join_all;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Grouped", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

/// A batch of two alternating event types: a commit that mixes types sends each type's offsets,
/// which the script must step over to reach the next append of its group.
fn mixed(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let event_type = if i % 2 == 0 { "Grouped" } else { "Mixed" };
            NewEvent::json(event_type, &serde_json::json!({ "i": i })).expect("json")
        })
        .collect()
}

fn stream(name: &str) -> StreamId {
    StreamId::new("Group", format!("{name}-{}", Uuid::now_v7().simple())).expect("stream id")
}

/// Runs every append concurrently on one store whose partitions allow one call in flight, so
/// all but the first of each partition queue up and go grouped.
async fn grouped_appends_each_get_their_own_outcome(config: RedisConfig) {
    let client = RedisClientManager::connect(config.with_append_concurrency(1))
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());

    let solo: Vec<(StreamId, usize)> = (0..32).map(|i| (stream("solo"), 1 + i % 4)).collect();
    let big: Vec<StreamId> = (0..2).map(|_| stream("big")).collect();
    let hot = stream("hot");
    let shared = stream("shared");
    let retried = stream("retried");
    let retry_batch = events(2);

    let before = client.metrics().operations;
    let mut calls: Vec<(&str, StreamId, ExpectedVersion, Vec<NewEvent>)> = Vec::new();
    for (s, n) in &solo {
        let batch = if *n >= 3 { mixed(*n) } else { events(*n) };
        calls.push(("solo", s.clone(), ExpectedVersion::Exact(0), batch));
    }
    for s in &big {
        // Large appends are never held back for a group; they run among the grouped ones.
        calls.push(("big", s.clone(), ExpectedVersion::NoStream, events(3_000)));
    }
    for _ in 0..8 {
        calls.push(("hot", hot.clone(), ExpectedVersion::Exact(0), events(1)));
    }
    for _ in 0..8 {
        calls.push(("shared", shared.clone(), ExpectedVersion::Any, events(1)));
    }
    for _ in 0..2 {
        calls.push((
            "retried",
            retried.clone(),
            ExpectedVersion::Exact(0),
            retry_batch.clone(),
        ));
    }
    let total = calls.len();
    let outcomes: Vec<(&str, StreamId, usize, Result<AppendResult>)> =
        join_all(calls.into_iter().map(|(kind, s, expected, batch)| {
            let store = &store;
            async move {
                let n = batch.len();
                let outcome = store.append(&s, expected, batch).await;
                (kind, s, n, outcome)
            }
        }))
        .await;
    let calls_made = client.metrics().operations - before;
    assert!(
        calls_made < total as u64 / 2,
        "{total} concurrent appends should go in a few grouped calls, took {calls_made}"
    );

    let mut positions = HashSet::new();
    let mut hot_wins = 0;
    let mut shared_versions = Vec::new();
    let mut retried_results = Vec::new();
    for (kind, s, n, outcome) in &outcomes {
        match (*kind, outcome) {
            ("solo", Ok(r)) => {
                assert_eq!(r.version, *n as u64, "{s}");
                let types: Vec<String> = store
                    .read_stream(s, 1, *n)
                    .await
                    .expect("read back")
                    .into_iter()
                    .map(|e| e.event_type)
                    .collect();
                let written = if *n >= 3 { mixed(*n) } else { events(*n) };
                let written: Vec<String> = written.into_iter().map(|e| e.event_type).collect();
                assert_eq!(types, written, "{s}");
            }
            ("big", Ok(r)) => assert_eq!(r.version, *n as u64, "{s}"),
            ("hot", Ok(r)) => {
                hot_wins += 1;
                assert_eq!(r.version, 1);
            }
            ("hot", Err(Error::Conflict { actual, .. })) => assert_eq!(*actual, 1),
            ("shared", Ok(r)) => shared_versions.push(r.version),
            ("retried", Ok(r)) => retried_results.push(*r),
            (kind, other) => panic!("{kind} append to {s}: {other:?}"),
        }
        if let Ok(r) = outcome {
            // Every written event sits where its reply says.
            let read = store.read_stream(s, r.version, 1).await.expect("read back");
            assert_eq!(read.len(), 1, "{s} v{}", r.version);
            assert_eq!(read[0].position, r.position, "{s} v{}", r.version);
            if *kind != "retried" {
                assert!(positions.insert(r.position), "position {:?} given twice", r.position);
            }
        }
    }
    assert_eq!(hot_wins, 1, "exactly one of the racing Exact(0) appends wins");
    shared_versions.sort_unstable();
    assert_eq!(shared_versions, (1..=8).collect::<Vec<u64>>());
    // The same batch twice in one group: written once, and the repeat is told where it went.
    assert_eq!(retried_results.len(), 2);
    assert_eq!(retried_results[0], retried_results[1]);
    assert_eq!(store.stream_version(&retried).await.expect("version"), 2);
}

#[tokio::test]
async fn standalone_grouped_appends_each_get_their_own_outcome() {
    grouped_appends_each_get_their_own_outcome(common::standalone_config()).await;
}

/// Named `cluster::…` like every Cluster test, so the summary counts it on the Cluster row.
mod cluster {
    #[tokio::test]
    async fn grouped_appends_each_get_their_own_outcome() {
        super::grouped_appends_each_get_their_own_outcome(super::common::cluster_config()).await;
    }
}

#[tokio::test]
async fn callers_that_give_up_do_not_stall_the_partition() {
    let client = RedisClientManager::connect(common::standalone_config().with_append_concurrency(1))
        .await
        .expect("connect");
    let store = std::sync::Arc::new(RedisEventStore::new(client));
    let mut kept = Vec::new();
    let mut abandoned = Vec::new();
    for i in 0..40 {
        let store = std::sync::Arc::clone(&store);
        let s = stream("quit");
        let task = tokio::spawn(async move {
            let result = store.append(&s, ExpectedVersion::Exact(0), events(2)).await;
            (s, result)
        });
        if i % 2 == 0 {
            kept.push(task);
        } else {
            abandoned.push(task);
        }
    }
    for task in &abandoned {
        task.abort();
    }
    for task in kept {
        let (s, result) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a kept append finishes")
            .expect("task");
        assert_eq!(result.expect("append").version, 2, "{s}");
    }
    let after = stream("after");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(&after, ExpectedVersion::NoStream, events(1)),
    )
    .await
    .expect("the partition still takes appends")
    .expect("append");
    assert_eq!(r.version, 1);
}
