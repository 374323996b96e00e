//! The `cqrsx` commands against every backend row `cargo xtask test` runs: what each prints
//! (`--json`), checked against the stores; and bad input — an unknown stream or projection,
//! an unreachable server, a malformed option — a one-line error, its exit code, and nothing
//! written.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::{ErrorPolicy, ProjectionHandle, RunnerOptions, View, ViewKey};
use cqrsx_core::snapshot::SnapshotRecord;
use cqrsx_core::{
    async_trait, EventFilter, EventStore, ExpectedVersion, NewEvent, Projection, ProjectionRunner, RecordedEvent,
    StreamId, Timestamp,
};
use harness::{binary, Harness};
use serde_json::{json, Value};

const POISON: u64 = 666;

/// Counts each stream's events and sums their `n`; fails on `n == POISON` until fixed.
struct Tally {
    name: String,
    aggregate: String,
    fixed: AtomicBool,
}

#[async_trait]
impl Projection for Tally {
    fn name(&self) -> &str {
        &self.name
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.as_str()])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> cqrsx_core::projection::HandlerResult {
        let n = serde_json::from_slice::<Value>(&event.payload)?["n"]
            .as_u64()
            .unwrap_or(0);
        if n == POISON && !self.fixed.load(Ordering::SeqCst) {
            return Err("poison event: the handler cannot apply it yet".into());
        }
        let id = event.stream.id();
        let old = view.get(id).await?.unwrap_or_else(|| json!({ "count": 0, "sum": 0 }));
        let (count, sum) = (old["count"].as_u64().unwrap_or(0), old["sum"].as_u64().unwrap_or(0));
        view.put(id, json!({ "count": count + 1, "sum": sum + n }))?;
        Ok(())
    }
}

fn ev(event_type: &str, n: u64) -> NewEvent {
    NewEvent::json(event_type, &json!({ "n": n })).expect("event")
}

/// The world every command reads: two streams, one with a poison event; a projection running
/// with the poison event parked; a snapshot; a read-model collection.
struct World {
    h: Harness,
    aggregate: String,
    projection: Arc<Tally>,
    key: ViewKey,
    runner: Option<ProjectionHandle>,
}

async fn world() -> World {
    let h = Harness::provided().await;
    let suffix = &cqrsx_core::Uuid::now_v7().simple().to_string()[20..];
    let aggregate = format!("Acct{suffix}");
    let a = StreamId::new(&aggregate, "a").expect("stream");
    let b = StreamId::new(&aggregate, "b").expect("stream");
    let events = &h.stores.events;
    events
        .append(
            &a,
            ExpectedVersion::NoStream,
            vec![ev("Opened", 0), ev("Deposited", 5), ev("Deposited", 7)],
        )
        .await
        .expect("append");
    events
        .append(
            &b,
            ExpectedVersion::NoStream,
            vec![ev("Opened", 0), ev("Deposited", POISON)],
        )
        .await
        .expect("append");
    h.stores
        .snapshots
        .save(SnapshotRecord {
            stream: a.clone(),
            version: 3,
            content_type: "application/json".into(),
            schema_version: 1,
            payload: br#"{"balance":12}"#.to_vec(),
            created_at: Timestamp::now(),
        })
        .await
        .expect("snapshot");
    let accounts = (h.stores.read_models)("cli_accounts").expect("read store");
    accounts
        .save("a", json!({ "balance": 12, "owner": "ann" }))
        .await
        .expect("save");
    accounts
        .save("b", json!({ "balance": 3, "owner": "bob" }))
        .await
        .expect("save");

    let projection = Arc::new(Tally {
        name: format!("tally{suffix}"),
        aggregate: aggregate.clone(),
        fixed: AtomicBool::new(false),
    });
    let key = ViewKey::new(&projection.name, 1).expect("key");
    let options = RunnerOptions::default()
        .with_owner("cli-test-runner")
        .with_lease_ttl(Duration::from_secs(2))
        .with_poll_between(Duration::from_millis(5), Duration::from_millis(50))
        .with_errors(ErrorPolicy {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..ErrorPolicy::park_after(1)
        });
    let runner = ProjectionRunner::new(
        Arc::clone(&projection) as Arc<dyn Projection>,
        Arc::clone(&h.stores.events),
        Arc::clone(&h.stores.checkpoints),
    )
    .with_options(options)
    .spawn()
    .expect("runner");
    let w = World {
        h,
        aggregate,
        projection,
        key,
        runner: Some(runner),
    };
    w.until("the poison event is parked and the rest applied", |w| async move {
        let parked = w.h.stores.checkpoints.parked(&w.key).await.expect("parked").len();
        parked == 1 && w.doc("a").await == Some(json!({ "count": 3, "sum": 12 }))
    })
    .await;
    w
}

impl World {
    fn runner(&self) -> &ProjectionHandle {
        self.runner.as_ref().expect("the runner runs")
    }

    async fn stop(&mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop().await.expect("stop");
        }
    }

    async fn doc(&self, id: &str) -> Option<Value> {
        self.h
            .stores
            .checkpoints
            .get(&self.key, id)
            .await
            .expect("view document")
    }

    /// Waits (a hang detector, sized for a loaded machine) until `done`.
    async fn until<'a, F, Fut>(&'a self, what: &str, done: F)
    where
        F: Fn(&'a World) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self).await {
            assert!(Instant::now() < deadline, "{}: {what} did not happen", self.h.label);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What an operator's mistakes must leave as it was.
    async fn state(&self) -> Value {
        let s = &self.h.stores;
        let requests = s.checkpoints.replay_requests(&self.key).await.expect("requests");
        json!({
            "views": s.checkpoints.views().await.expect("views").iter().map(ToString::to_string).collect::<Vec<_>>(),
            "head": s.events.head().await.expect("head").to_string(),
            "checkpoint": s.checkpoints.checkpoint(&self.key).await.expect("checkpoint").map(|c| c.to_string()),
            "parked": s.checkpoints.parked(&self.key).await.expect("parked").len(),
            "requests": [requests.requested, requests.handled],
            "a": self.doc("a").await,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_and_operate_the_store() {
    let mut w = world().await;
    let (t, name) = (w.aggregate.clone(), w.projection.name.clone());
    let (t, name) = (t.as_str(), name.as_str());
    let stream_a = format!("{t}/a");

    // Streams and events.
    let streams = w.h.cqrsx(&["--json", "streams", "list", "--type", t]).await.json();
    let listed: Vec<(String, Value)> = streams
        .as_array()
        .expect("array")
        .iter()
        .map(|s| (s["stream"].as_str().expect("stream").to_string(), s["version"].clone()))
        .collect();
    assert_eq!(listed, vec![(stream_a.clone(), json!(3)), (format!("{t}/b"), json!(2))]);
    let shown = w.h.cqrsx(&["--json", "stream", "show", &stream_a]).await.json();
    assert_eq!(shown["version"], 3);
    let types: Vec<&str> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["Opened", "Deposited", "Deposited"]);
    assert_eq!(shown["events"][2]["payload"], json!({ "n": 7 }));
    let from =
        w.h.cqrsx(&["--json", "stream", "show", &stream_a, "--from", "3"])
            .await
            .json();
    assert_eq!(from["events"].as_array().map(Vec::len), Some(1));
    let text = w.h.cqrsx(&["stream", "show", &stream_a]).await;
    assert!(
        text.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("VERSION  TYPE")),
        "{text:?}"
    );
    let deposits =
        w.h.cqrsx(&["--json", "events", "by-type", "Deposited", "--since", "1h"])
            .await
            .json();
    let ours = deposits
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["stream"].as_str().is_some_and(|s| s.starts_with(t)))
        .count();
    assert_eq!(ours, 3);
    let later =
        w.h.cqrsx(&[
            "--json",
            "events",
            "by-type",
            "Deposited",
            "--since",
            "2999-01-01T00:00:00Z",
        ])
        .await
        .json();
    assert_eq!(later, json!([]));
    let snapshots = w.h.cqrsx(&["--json", "snapshots", "list", &stream_a]).await.json();
    assert_eq!(snapshots.as_array().map(Vec::len), Some(1));
    assert_eq!(snapshots[0]["version"], 3);
    let rich =
        w.h.cqrsx(&[
            "--json",
            "read-models",
            "query",
            "cli_accounts",
            "--filter",
            "balance>=5",
            "--sort",
            "balance:desc",
        ])
        .await
        .json();
    assert_eq!(rich, json!([{ "id": "a", "data": { "balance": 12, "owner": "ann" } }]));
    let prefixed =
        w.h.cqrsx(&["--json", "read-models", "query", "cli_accounts", "--filter", "owner^=b"])
            .await
            .json();
    assert_eq!(prefixed[0]["id"], "b");

    // Projections.
    let list = w.h.cqrsx(&["--json", "projections", "list"]).await.json();
    let ours = list
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["projection"] == name)
        .cloned()
        .expect("listed");
    assert_eq!(
        (ours["version"].clone(), ours["active"].clone(), ours["parked"].clone()),
        (json!(1), json!(true), json!(1))
    );
    assert_eq!(ours["holder"]["owner"], "cli-test-runner");
    let status =
        w.h.cqrsx(&["--json", "projection", "status", name, "--sample", "0.2"])
            .await
            .json();
    assert_eq!(status["state"], "live", "{status}");
    assert_eq!(status["lag"], 0);
    assert_eq!(status["parked"], 1);
    assert_eq!(status["holder"]["token"], json!(w.runner().status().await.token));
    assert!(
        status["last_error"].as_str().is_some_and(|e| e.contains("poison")),
        "{status}"
    );
    assert!(status["events_per_sec"].as_f64().is_some(), "{status}");
    let parked = w.h.cqrsx(&["--json", "projection", "parked", name]).await.json();
    assert_eq!(parked[0]["stream"], format!("{t}/b"));
    assert_eq!(parked[0]["version"], 2);

    // Replay: still broken, then fixed — applied once, through the runner's handler.
    let replay = w.h.cqrsx(&["--json", "projection", "replay-parked", name]).await.json();
    assert_eq!(
        (
            replay["handled"].clone(),
            replay["replayed"].clone(),
            replay["still_parked"].clone()
        ),
        (json!(true), json!(0), json!(1))
    );
    w.projection.fixed.store(true, Ordering::SeqCst);
    let replay = w.h.cqrsx(&["--json", "projection", "replay-parked", name]).await.json();
    assert_eq!(
        (replay["replayed"].clone(), replay["still_parked"].clone()),
        (json!(1), json!(0)),
        "{replay}"
    );
    assert_eq!(w.doc("b").await, Some(json!({ "count": 2, "sum": POISON })));
    let nothing = w.h.cqrsx(&["--json", "projection", "replay-parked", name]).await.json();
    assert_eq!(nothing["request"], Value::Null, "nothing parked: nothing requested");

    // Rebuild: refused without --yes; with it, the runner builds the view again.
    let before = w.state().await;
    w.h.cqrsx(&["projection", "rebuild", name]).await.failed(2, "--yes");
    assert_eq!(w.state().await, before, "a refused rebuild drops nothing");
    let token = w.runner().status().await.token.expect("token");
    let rebuilt =
        w.h.cqrsx(&["--json", "projection", "rebuild", name, "--yes"])
            .await
            .json();
    assert_eq!(rebuilt["dropped"], true);
    w.until("the runner rebuilt the view", |w| async move {
        w.runner().status().await.token.is_some_and(|t| t > token)
            && w.doc("a").await == Some(json!({ "count": 3, "sum": 12 }))
            && w.doc("b").await == Some(json!({ "count": 2, "sum": POISON }))
    })
    .await;

    // Live tail: from the start, and an event appended while it follows.
    let all =
        w.h.cqrsx(&["--json", "stream", "tail", "--type", t, "--from", "start", "--max", "5"])
            .await;
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(all.stdout.lines().count(), 5, "{all:?}");
    let args = ["--json", "stream", "tail", "--type", t, "--max", "1", "--for", "60"];
    let tail = w.h.cqrsx(&args);
    let append = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.h.stores
            .events
            .append(
                &StreamId::new(t, "c").expect("stream"),
                ExpectedVersion::Any,
                vec![ev("Deposited", 9)],
            )
            .await
            .expect("append");
    };
    let (tail, ()) = tokio::join!(tail, append);
    let line: Value = serde_json::from_str(tail.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {tail:?}"));
    assert_eq!(
        (line["stream"].clone(), line["payload"].clone()),
        (json!(format!("{t}/c")), json!({ "n": 9 }))
    );

    w.stop().await;
    let status =
        w.h.cqrsx(&["--json", "projection", "status", name, "--sample", "0"])
            .await
            .json();
    assert_eq!(
        (status["state"].clone(), status["holder"].clone()),
        (json!("not running"), Value::Null)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_a_clear_exit_code_and_writes_nothing() {
    let mut w = world().await;
    let name = w.projection.name.clone();
    let name = name.as_str();
    let before = w.state().await;
    let t = w.aggregate.clone();
    w.h.cqrsx(&["stream", "show", &format!("{t}/nobody")])
        .await
        .failed(3, "no stream");
    w.h.cqrsx(&["stream", "show", "no-slash"]).await.failed(2, "Type/id");
    w.h.cqrsx(&["snapshots", "list", "no-slash"]).await.failed(2, "Type/id");
    w.h.cqrsx(&["projection", "status", "nope"])
        .await
        .failed(3, "no projection nope");
    w.h.cqrsx(&["projection", "parked", name, "--version", "9"])
        .await
        .failed(3, "no version 9");
    w.h.cqrsx(&["projection", "replay-parked", "nope"])
        .await
        .failed(3, "no projection nope");
    w.h.cqrsx(&["projection", "rebuild", "nope", "--yes"])
        .await
        .failed(3, "no projection nope");
    w.h.cqrsx(&["projection", "status", "bad name!"])
        .await
        .failed(2, "bad name!");
    w.h.cqrsx(&["events", "by-type", "Deposited", "--since", "yesterday"])
        .await
        .failed(2, "--since");
    w.h.cqrsx(&["read-models", "query", "cli_accounts", "--filter", "balance"])
        .await
        .failed(2, "no operator");
    w.h.cqrsx(&["stream", "tail", "--from", "banana", "--max", "1"])
        .await
        .failed(2, "--from");
    w.h.cqrsx(&["projection", "status", name, "--sample=-1"])
        .await
        .failed(2, "--sample");
    w.h.cqrsx(&["snapshots", "list", &format!("{t}/nobody")])
        .await
        .failed(3, "no stream");
    w.h.cqrsx(&["read-models", "query", "cli_accounts", "--sort", "balance:down"])
        .await
        .failed(2, "asc or desc");
    w.h.cqrsx(&["read-models", "query", "cli_accounts", "--filter", "balance>"])
        .await
        .failed(2, "no value");
    w.h.cqrsx(&["streams", "list", "--limit", "0"])
        .await
        .failed(2, "--limit");
    w.h.cqrsx(&["events", "by-type", "Deposited", "--since", "1796639410"])
        .await
        .failed(2, "milliseconds");
    if w.h.label == "redis standalone" {
        // The store was written with one partition: a connection reading two says so.
        w.h.cqrsx(&["--partitions", "2", "projections", "list"])
            .await
            .failed(2, "--partitions");
    }
    // No runner: a replay request waits, and says who should handle it.
    w.stop().await;
    let before_stop = w.state().await;
    w.h.cqrsx(&["projection", "replay-parked", name, "--wait", "0.5"])
        .await
        .failed(4, "no runner holds its lease");
    let after = w.state().await;
    assert_eq!(
        after["requests"],
        json!([1, 0]),
        "the request stays for the next runner"
    );
    let mut unchanged = after.clone();
    unchanged["requests"] = before_stop["requests"].clone();
    assert_eq!(unchanged, before_stop);
    assert_eq!(
        before["views"], after["views"],
        "no command created a projection version"
    );
    assert_eq!(before["head"], after["head"], "no command appended");

    // Servers that cannot be reached, options that contradict: the binary itself.
    let run = |args: &[&str]| binary(args.iter().map(|a| a.to_string()).collect(), Vec::new());
    run(&["--redis", "redis://127.0.0.1:1", "projections", "list"])
        .await
        .failed(1, "redis://127.0.0.1:1");
    run(&["--mongo", "mongodb://127.0.0.1:1/", "streams", "list"])
        .await
        .failed(1, "127.0.0.1:1");
    run(&["projections", "list"])
        .await
        .failed(2, "--redis URL or --mongo URI");
    run(&["--redis", "redis://x", "--mongo", "mongodb://x", "projections", "list"])
        .await
        .failed(2, "not both");
    run(&["projection", "frobnicate"]).await.failed(2, "frobnicate");
    run(&[
        "--redis",
        "redis://127.0.0.1:1",
        "--redis-cluster",
        "127.0.0.1:2",
        "streams",
        "list",
    ])
    .await
    .failed(2, "not both");
    run(&["--redis", "redis://127.0.0.1:1", "--partitions", "0", "streams", "list"])
        .await
        .failed(2, "partitions");
    run(&["--redis", "notaurl", "streams", "list"])
        .await
        .failed(2, "redis://");
    run(&["--redis", "redis://x", "stream", "show"]).await.failed(2, "<ID>");
}

/// Tests of Redis's layout (the `redis_only::` tests run in the Redis standalone row only).
mod redis_only {
    use super::*;

    /// A Redis store written with more partitions than a connection reads: connecting says so
    /// before any command reads a partial store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_store_with_more_partitions_than_configured_is_refused() {
        let url = std::env::var("CQRSX_TEST_REDIS_URL")
            .unwrap_or_else(|_| panic!("CQRSX_TEST_REDIS_URL is not set: run with `cargo xtask test --backend redis`"));
        let prefix = format!("cqrsx_test_{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[8..]);
        let config = cqrsx_redis::RedisConfig::default()
            .with_url(&url)
            .with_key_prefix(&prefix)
            .with_partitions(4);
        let client = cqrsx_redis::RedisClientManager::connect(config).await.expect("connect");
        let events = cqrsx_redis::RedisEventStore::new(client);
        for i in 0..32 {
            let s = StreamId::new("Spread", format!("s{i}")).expect("stream");
            events
                .append(&s, ExpectedVersion::Any, vec![ev("E", i)])
                .await
                .expect("append");
        }
        let args = |partitions: &str| {
            [
                "--redis",
                &url,
                "--prefix",
                &prefix,
                "--partitions",
                partitions,
                "--json",
                "streams",
                "list",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
        };
        binary(args("2"), Vec::new())
            .await
            .failed(2, "more than the 2 partition(s)");
        let all = binary(args("4"), Vec::new()).await.json();
        assert_eq!(all.as_array().map(Vec::len), Some(32));
    }
}

mod cluster {
    use super::*;

    /// The commands on a Cluster: keys of one projection in one slot, the set of versions in
    /// another, streams over 8 partitions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_read_a_cluster() {
        let h = Harness::cluster().await;
        let suffix = &cqrsx_core::Uuid::now_v7().simple().to_string()[20..];
        let t = format!("Acct{suffix}");
        for i in 0..12 {
            let s = StreamId::new(&t, format!("s{i}")).expect("stream");
            h.stores
                .events
                .append(&s, ExpectedVersion::Any, vec![ev("Deposited", i)])
                .await
                .expect("append");
        }
        let streams = h.cqrsx(&["--json", "streams", "list", "--type", &t]).await.json();
        assert_eq!(streams.as_array().map(Vec::len), Some(12));
        let key = ViewKey::new(format!("p{suffix}"), 1).expect("key");
        let lease = h
            .stores
            .checkpoints
            .acquire(&key, "cluster-owner", Duration::from_secs(30))
            .await
            .expect("acquire")
            .expect("lease");
        let list = h.cqrsx(&["--json", "projections", "list"]).await.json();
        let ours = list
            .as_array()
            .expect("array")
            .iter()
            .find(|p| p["projection"] == key.projection())
            .cloned()
            .expect("listed");
        assert_eq!(ours["holder"]["owner"], "cluster-owner");
        assert_eq!(ours["holder"]["token"], lease.token);
        let tail = h
            .cqrsx(&[
                "--json", "stream", "tail", "--type", &t, "--from", "start", "--max", "12",
            ])
            .await;
        assert_eq!(tail.stdout.lines().count(), 12, "{tail:?}");
    }
}
