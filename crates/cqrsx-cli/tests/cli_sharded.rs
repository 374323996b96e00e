//! The projection commands on a projection run as shards by two runner processes (two
//! `ShardedRunner`s with owners of their own): the name means every shard — status per shard
//! with its holder, checkpoint and lag, and the processes sharing it; parked events of every
//! shard; a replay each shard's holder handles; a rebuild of every shard — and one shard is
//! named as it is stored. Checked against the stores, on every backend row.

mod harness;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::{
    ErrorPolicy, HandlerResult, RunnerOptions, Shard, ShardedHandle, ShardedRunner, View, ViewKey,
};
use cqrsx_core::{async_trait, EventFilter, ExpectedVersion, NewEvent, Projection, RecordedEvent, StreamId};
use harness::Harness;
use serde_json::{json, Value};

const POISON: u64 = 666;
const SHARDS: u16 = 2;

/// Counts each stream's events; fails on `n == POISON` until fixed.
struct PerStream {
    name: String,
    aggregate: String,
    fixed: AtomicBool,
}

#[async_trait]
impl Projection for PerStream {
    fn name(&self) -> &str {
        &self.name
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.as_str()])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let n = serde_json::from_slice::<Value>(&event.payload)?["n"]
            .as_u64()
            .unwrap_or(0);
        if n == POISON && !self.fixed.load(Ordering::SeqCst) {
            return Err("poison event: the handler cannot apply it yet".into());
        }
        let id = event.stream.id();
        let count = view.get(id).await?.and_then(|d| d["count"].as_u64()).unwrap_or(0);
        view.put(id, json!({ "count": count + 1 }))?;
        Ok(())
    }
}

fn runner(h: &Harness, projection: &Arc<PerStream>, owner: &str) -> ShardedHandle {
    let options = RunnerOptions::default()
        .with_owner(owner)
        .with_lease_ttl(Duration::from_secs(2))
        .with_poll_between(Duration::from_millis(5), Duration::from_millis(50))
        .with_errors(ErrorPolicy {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..ErrorPolicy::park_after(1)
        });
    ShardedRunner::new(
        Arc::clone(projection) as Arc<dyn Projection>,
        Arc::clone(&h.stores.events),
        Arc::clone(&h.stores.checkpoints),
        SHARDS,
    )
    .with_options(options)
    .spawn()
    .expect("sharded runner")
}

/// Waits (a hang detector, sized for a loaded machine) until `done`.
async fn until<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_sharded_projection_cover_every_shard() {
    sharded_commands(Harness::provided().await).await;
}

/// The same on the Redis Cluster row.
mod cluster {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_on_a_sharded_projection_cover_every_shard() {
        super::sharded_commands(super::Harness::cluster().await).await;
    }
}

async fn sharded_commands(h: Harness) {
    let suffix = &cqrsx_core::Uuid::now_v7().simple().to_string()[20..];
    let aggregate = format!("Shd{suffix}");
    let name = format!("per_stream{suffix}");
    // Six streams, so both shards own some; one poison event.
    let streams: Vec<StreamId> = (0..6)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    for (i, s) in streams.iter().enumerate() {
        let n = if i == 3 { POISON } else { 1 };
        let events = vec![
            NewEvent::json("Tick", &json!({ "n": 1 })).expect("event"),
            NewEvent::json("Tick", &json!({ "n": n })).expect("event"),
        ];
        h.stores
            .events
            .append(s, ExpectedVersion::NoStream, events)
            .await
            .expect("append");
    }
    let poisoned = Shard::of_stream(streams[3].key(), SHARDS);
    let keys: Vec<ViewKey> = Shard::all(SHARDS)
        .expect("shards")
        .into_iter()
        .map(|s| ViewKey::sharded(&name, 1, s).expect("key"))
        .collect();
    let projection = Arc::new(PerStream {
        name: name.clone(),
        aggregate: aggregate.clone(),
        fixed: AtomicBool::new(false),
    });
    let a = runner(&h, &projection, "cli-process-a");
    let b = runner(&h, &projection, "cli-process-b");
    let store = Arc::clone(&h.stores.checkpoints);
    until("both processes hold a shard, and the poison event is parked", || {
        let (a, b, store, keys) = (&a, &b, &store, &keys);
        async move {
            let parked = store.parked(&keys[poisoned as usize]).await.expect("parked").len();
            a.held().len() == 1 && b.held().len() == 1 && parked == 1
        }
    })
    .await;
    until("every shard's checkpoint is at the head", || async {
        let status = h.cqrsx(&["--json", "projection", "status", &name]).await.json();
        status["lag"] == 0
    })
    .await;

    // Listed per shard; the processes' member slots are not views and are not listed.
    let list = h.cqrsx(&["--json", "projections", "list"]).await.json();
    let listed: BTreeSet<String> = list
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|p| p["projection"].as_str())
        .filter(|p| p.starts_with(&name))
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = keys.iter().map(|k| k.projection().to_string()).collect();
    assert_eq!(listed, want, "{}: {list}", h.label);

    // Status: each shard with its holder, checkpoint and lag; the two processes.
    let status = h.cqrsx(&["--json", "projection", "status", &name]).await.json();
    let shards = status["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), SHARDS as usize, "{status}");
    let holders: BTreeSet<&str> = shards.iter().filter_map(|s| s["holder"]["owner"].as_str()).collect();
    assert_eq!(holders, BTreeSet::from(["cli-process-a", "cli-process-b"]), "{status}");
    for (shard, key) in shards.iter().zip(&keys) {
        assert_eq!(shard["shard"], key.projection(), "{status}");
        let stored = store.checkpoint(key).await.expect("checkpoint").map(|c| c.to_string());
        assert_eq!(shard["checkpoint"].as_str(), stored.as_deref(), "{status}");
    }
    let members: BTreeSet<&str> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(members, BTreeSet::from(["cli-process-a", "cli-process-b"]), "{status}");
    assert_eq!(status["parked"], 1, "{status}");

    // One shard, named as stored, is any projection to the commands.
    let one = h
        .cqrsx(&["--json", "projection", "status", keys[poisoned as usize].projection()])
        .await
        .json();
    assert_eq!(one["parked"], 1, "{one}");

    // Parked: the poison event, with its shard.
    let parked = h.cqrsx(&["--json", "projection", "parked", &name]).await.json();
    let parked = parked.as_array().expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["shard"], keys[poisoned as usize].projection());
    assert_eq!(parked[0]["stream"], streams[3].key());

    // Replay: the shard's holder applies it once fixed.
    projection.fixed.store(true, Ordering::SeqCst);
    let replay = h
        .cqrsx(&["--json", "projection", "replay-parked", &name, "--wait", "60"])
        .await
        .json();
    assert_eq!(replay["replayed"], 1, "{replay}");
    assert!(store.parked(&keys[poisoned as usize]).await.expect("parked").is_empty());
    let doc = store.get(&keys[poisoned as usize], streams[3].id()).await.expect("doc");
    assert_eq!(doc, Some(json!({ "count": 2 })));

    // Rebuild: refused without --yes (nothing dropped), then every shard is dropped and built
    // again by its holder, to the same documents.
    let before = store.checkpoint(&keys[0]).await.expect("checkpoint");
    h.cqrsx(&["projection", "rebuild", &name]).await.failed(2, "--yes");
    assert_eq!(store.checkpoint(&keys[0]).await.expect("checkpoint"), before);
    let rebuilt = h
        .cqrsx(&["--json", "projection", "rebuild", &name, "--yes"])
        .await
        .json();
    assert_eq!(
        rebuilt["dropped"].as_array().map(Vec::len),
        Some(SHARDS as usize),
        "{rebuilt}"
    );
    until("every shard is rebuilt", || async {
        let mut all = true;
        for s in &streams {
            let key = &keys[Shard::of_stream(s.key(), SHARDS) as usize];
            all &= store.get(key, s.id()).await.expect("doc") == Some(json!({ "count": 2 }));
        }
        all
    })
    .await;
    // Each stream's document is in its own shard only.
    for s in &streams {
        let other = &keys[1 - Shard::of_stream(s.key(), SHARDS) as usize];
        assert_eq!(store.get(other, s.id()).await.expect("doc"), None, "{s}");
    }

    // An unknown version of it is not found.
    h.cqrsx(&["projection", "status", &name, "--version", "9"])
        .await
        .failed(3, "version 9");
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
