//! The sharded runner's handle on the in-memory backend: bad input, one shard as the unsharded
//! projection, a rebuilt shard, replays of parked events held here and elsewhere, and status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore};
use cqrsx_core::projection::{
    ErrorPolicy, HandlerResult, RunnerOptions, Shard, ShardedHandle, ShardedRunner, MAX_SHARDS,
};
use cqrsx_core::{
    async_trait, Error, EventStore, ExpectedVersion, NewEvent, Position, Projection, ProjectionStore, RecordedEvent,
    StreamId, View,
};
use serde_json::json;

/// Counts each stream's events in a document of its own; fails on `n == 13` until fixed.
struct Counts {
    name: String,
    fixed: AtomicBool,
}

#[async_trait]
impl Projection for Counts {
    fn name(&self) -> &str {
        &self.name
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let n = serde_json::from_slice::<serde_json::Value>(&event.payload)?["n"].as_u64();
        if n == Some(13) && !self.fixed.load(Ordering::SeqCst) {
            return Err("thirteen".into());
        }
        let id = event.stream.id();
        let count = view.get(id).await?.and_then(|d| d["count"].as_u64()).unwrap_or(0);
        view.put(id, json!({ "count": count + 1 }))?;
        Ok(())
    }
}

struct World {
    events: Arc<InMemoryEventStore>,
    store: Arc<InMemoryProjectionStore>,
    projection: Arc<Counts>,
}

impl World {
    fn new(name: &str) -> Self {
        Self {
            events: Arc::new(InMemoryEventStore::new()),
            store: Arc::new(InMemoryProjectionStore::new()),
            projection: Arc::new(Counts {
                name: name.to_string(),
                fixed: AtomicBool::new(false),
            }),
        }
    }

    fn runner(&self, shards: u16) -> ShardedRunner {
        ShardedRunner::new(
            Arc::clone(&self.projection) as Arc<dyn Projection>,
            Arc::clone(&self.events) as Arc<dyn EventStore>,
            Arc::clone(&self.store) as Arc<dyn ProjectionStore>,
            shards,
        )
    }

    fn spawn(&self, shards: u16, owner: &str) -> ShardedHandle {
        let options = RunnerOptions::default()
            .with_owner(owner)
            .with_lease_ttl(Duration::from_millis(600))
            .with_errors(ErrorPolicy {
                backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
                ..ErrorPolicy::park_after(0)
            });
        self.runner(shards).with_options(options).spawn().expect("spawn")
    }

    /// Appends events `n` to stream `s{stream}`; the position of the last.
    async fn append(&self, stream: usize, ns: &[u64]) -> Position {
        let id = StreamId::new("Thing", format!("s{stream}")).expect("stream");
        let batch: Vec<NewEvent> = ns
            .iter()
            .map(|n| NewEvent::json("Counted", &json!({ "n": n })).expect("json"))
            .collect();
        self.events
            .append(&id, ExpectedVersion::Any, batch)
            .await
            .expect("append")
            .position
    }

    /// The count document of stream `s{stream}` in its shard's view.
    async fn count(&self, handle: &ShardedHandle, stream: usize) -> Option<u64> {
        let id = StreamId::new("Thing", format!("s{stream}")).expect("stream");
        let shards = handle.keys().len() as u16;
        let key = if shards == 1 {
            &handle.keys()[0]
        } else {
            &handle.keys()[usize::from(Shard::of_stream(id.key(), shards))]
        };
        let doc = self.store.get(key, id.id()).await.expect("get");
        doc.and_then(|d| d["count"].as_u64())
    }
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_shard_counts_and_names_are_refused_before_anything_runs() {
    let world = World::new("counts");
    for shards in [0, MAX_SHARDS + 1] {
        let refused = world.runner(shards).spawn();
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{shards} shards");
    }
    let long = World::new(&"x".repeat(124));
    assert!(matches!(long.runner(16).spawn(), Err(Error::InvalidInput(_))));
    let named_as_shard = World::new("counts.s0of2");
    assert!(matches!(named_as_shard.runner(2).spawn(), Err(Error::InvalidInput(_))));
    assert!(
        world.store.views().await.expect("views").is_empty(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shard_is_the_unsharded_projection_with_a_standby() {
    let world = World::new("single");
    let a = world.spawn(1, "a");
    assert_eq!(a.keys()[0].projection(), "single");
    assert_eq!(a.keys()[0].shard(), None);
    until("a holds the projection", || a.held().len() == 1).await;
    let b = world.spawn(1, "b");
    let last = world.append(0, &[1, 2, 3]).await;
    a.wait_until_caught_up(last, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert_eq!(world.count(&a, 0).await, Some(3));
    assert!(b.held().is_empty() && b.slot().is_none(), "b stands by");
    assert!(a.members().await.expect("members").is_empty());
    a.stop().await.expect("stop");
    until("b takes over", || b.held().len() == 1).await;
    let last = world.append(0, &[4]).await;
    b.wait_until_caught_up(last, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert_eq!(world.count(&b, 0).await, Some(4));
    b.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_shard_applies_its_streams_again_from_the_start_once() {
    let world = World::new("rebuilt");
    let handle = world.spawn(2, "solo");
    until("both shards held", || handle.held().len() == 2).await;
    let mut last = Position::default();
    for s in 0..8 {
        last = world.append(s, &[1, 2]).await;
    }
    handle
        .wait_until_caught_up(last, Duration::from_secs(30))
        .await
        .expect("caught up");
    let before = handle.status().await.expect("status");
    let token = before[0].holder.as_ref().map(|h| h.token).expect("held");
    handle.rebuild_shard(0).await.expect("rebuild");
    assert!(matches!(handle.rebuild_shard(2).await, Err(Error::InvalidInput(_))));
    // The holder is fenced, takes the lease again and applies shard 0 from the first event.
    let started = Instant::now();
    loop {
        let status = handle.status().await.expect("status");
        let rebuilt = status[0].holder.as_ref().is_some_and(|h| h.token > token)
            && status[0].checkpoint.as_ref().is_some_and(|c| c.covers(last));
        if rebuilt {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "shard 0 was not rebuilt: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in 0..8 {
        assert_eq!(world.count(&handle, s).await, Some(2), "stream s{s}");
    }
    handle.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_are_replayed_here_and_by_request_elsewhere() {
    let world = World::new("replayed");
    let a = world.spawn(2, "a");
    until("a holds both", || a.held().len() == 2).await;
    let b = world.spawn(2, "b");
    until("one shard each", || a.held().len() == 1 && b.held().len() == 1).await;
    // A poison event in a stream of each shard.
    let mut poisoned = Vec::new();
    let mut last = Position::default();
    for s in 0..16 {
        let id = StreamId::new("Thing", format!("s{s}")).expect("stream");
        let shard = Shard::of_stream(id.key(), 2);
        if !poisoned.iter().any(|(_, sh)| *sh == shard) {
            poisoned.push((s, shard));
            last = world.append(s, &[1, 13, 2]).await;
        }
    }
    assert_eq!(poisoned.len(), 2);
    a.wait_until_caught_up(last, Duration::from_secs(30))
        .await
        .expect("caught up");
    let status = a.status().await.expect("status");
    assert_eq!(status.iter().map(|s| s.parked).collect::<Vec<_>>(), [1, 1]);
    assert!(status.iter().all(|s| s.total_lag() == 0), "{status:?}");
    world.projection.fixed.store(true, Ordering::SeqCst);
    let replays = a.replay_parked().await.expect("replay");
    assert_eq!(replays.replayed, 1, "the shard a holds, at once");
    assert_eq!(replays.requested.len(), 1, "the shard b holds, by request: {replays:?}");
    let started = Instant::now();
    while a.status().await.expect("status").iter().any(|s| s.parked > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "b did not replay on request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (s, _) in poisoned {
        assert_eq!(world.count(&a, s).await, Some(3), "stream s{s}");
    }
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}
