//! Acknowledged appends across a Redis Cluster failover: a cluster of its own (three primaries,
//! one replica each), writers appending, the primary of a busy slot SIGKILLed and its replica
//! promoted, again and again. Every append a writer was told succeeded is looked up afterwards
//! by its event id: without a durability some may be gone (Redis replicates asynchronously; the
//! number is printed), with `AppendDurability::replicas(1)` none may.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::LocalServer;
use cqrsx_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId, Uuid};
use cqrsx_redis::{AppendDurability, RedisClientManager, RedisConfig, RedisEventStore};

/// Failovers per run.
const FAILOVERS: usize = 5;
const WRITERS: usize = 8;
const STREAMS_PER_WRITER: usize = 4;

fn redis_cli() -> String {
    let server = std::env::var("CQRSX_TEST_REDIS_SERVER").expect("CQRSX_TEST_REDIS_SERVER");
    let beside = std::path::Path::new(&server).with_file_name("redis-cli");
    if beside.exists() {
        return beside.display().to_string();
    }
    "redis-cli".to_string()
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Six cluster nodes, made into three primaries with one replica each.
fn cluster() -> Vec<LocalServer> {
    let nodes: Vec<LocalServer> = (0..6)
        .map(|_| {
            LocalServer::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
        })
        .collect();
    let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = Command::new(redis_cli())
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    for node in &nodes {
        wait_until(Duration::from_secs(60), "the cluster is ok", || {
            cli(node.port, &["cluster", "info"]).contains("cluster_state:ok")
        });
    }
    nodes
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node (index) that is the primary of `key`'s slot, and the index of its replica.
fn primary_and_replica(nodes: &[LocalServer], key: &str) -> (usize, usize) {
    let slot = cli(nodes[0].port, &["cluster", "keyslot", key]).trim().to_string();
    for (i, node) in nodes.iter().enumerate() {
        let me = cli(node.port, &["cluster", "myid"]).trim().to_string();
        let info = cli(node.port, &["role"]);
        if !info.starts_with("master") {
            continue;
        }
        let slots = cli(node.port, &["cluster", "nodes"]);
        let mine = slots
            .lines()
            .find(|l| l.starts_with(&me))
            .unwrap_or_default()
            .to_string();
        let owns = mine.split_whitespace().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let s: u32 = slot.parse().unwrap_or(u32::MAX);
            lo.parse::<u32>().is_ok_and(|lo| lo <= s) && hi.parse::<u32>().is_ok_and(|hi| s <= hi)
        });
        if owns {
            let replica = nodes
                .iter()
                .position(|n| {
                    let line = cli(n.port, &["cluster", "nodes"]);
                    let id = cli(n.port, &["cluster", "myid"]).trim().to_string();
                    line.lines()
                        .any(|l| l.starts_with(&id) && l.contains("slave") && l.contains(&me) && !l.contains("fail"))
                })
                .expect("a live replica of the primary");
            return (i, replica);
        }
    }
    panic!("no primary owns slot {slot}");
}

/// What the writers were told: per stream, every acknowledged event id.
type Acknowledged = HashMap<StreamId, Vec<Uuid>>;

async fn run(durability: Option<AppendDurability>) -> (usize, usize, usize) {
    let mut nodes = cluster();
    let prefix = common::unique_prefix();
    let mut config = RedisConfig::default().with_key_prefix(&prefix);
    config.cluster_nodes = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    config.partitions = 3;
    let client = RedisClientManager::connect(config).await.expect("connect");
    let store = RedisEventStore::new(client.clone())
        .with_durability(durability)
        .expect("durability");
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, stop, appended) = (store.clone(), Arc::clone(&stop), Arc::clone(&appended));
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Acknowledged::new();
            let streams: Vec<StreamId> = (0..STREAMS_PER_WRITER)
                .map(|s| StreamId::new("Failover", format!("w{w}s{s}")).expect("stream"))
                .collect();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let stream = &streams[i % streams.len()];
                i += 1;
                let event = NewEvent::json("E", &i).expect("json");
                let id = event.event_id;
                // The same append (same id) until it is answered one way or the other.
                loop {
                    match store.append(stream, ExpectedVersion::Any, vec![event.clone()]).await {
                        Ok(_) => {
                            acknowledged.entry(stream.clone()).or_default().push(id);
                            appended.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(e) if e.is_retryable() || matches!(e, Error::NotDurable { .. }) => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            acknowledged
        }));
    }
    // A busy slot: partition 0's log, which every third stream's appends go through.
    let busy = store.stream_keys(&StreamId::new("Failover", "w0s0").expect("stream"))[2].clone();
    for round in 0..FAILOVERS {
        let before = appended.load(Ordering::SeqCst);
        let progressed = Instant::now() + Duration::from_secs(120);
        while appended.load(Ordering::SeqCst) < before + 200 {
            assert!(
                Instant::now() < progressed,
                "round {round}: the writers made no progress"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (primary, replica) = primary_and_replica(&nodes, &busy);
        nodes[primary].kill();
        let replica_port = nodes[replica].port;
        let promoted = || {
            cli(replica_port, &["role"]).starts_with("master")
                && cli(replica_port, &["cluster", "info"]).contains("cluster_state:ok")
        };
        // FORCE holds an election; a master that voted for this shard lately may refuse its
        // vote, so TAKEOVER (no election) follows if it is slow.
        let said = cli(replica_port, &["cluster", "failover", "force"]);
        assert!(said.contains("OK"), "round {round}: CLUSTER FAILOVER FORCE said {said}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !promoted() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !promoted() {
            let said = cli(replica_port, &["cluster", "failover", "takeover"]);
            assert!(
                said.contains("OK"),
                "round {round}: CLUSTER FAILOVER TAKEOVER said {said}"
            );
            wait_until(Duration::from_secs(60), "the replica is promoted", promoted);
        }
        // The old primary comes back (on its data and cluster config) as the new one's replica.
        nodes[primary].run();
        let port = nodes[primary].port;
        wait_until(Duration::from_secs(60), "the old primary rejoins as a replica", || {
            cli(port, &["role"]).starts_with("slave")
                && cli(port, &["info", "replication"]).contains("master_link_status:up")
        });
    }
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Acknowledged::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    let mut lost = 0;
    let mut total = 0;
    for (stream, ids) in &acknowledged {
        let stored: std::collections::HashSet<Uuid> = store
            .read_stream(stream, 1, usize::MAX)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        total += ids.len();
        lost += ids.iter().filter(|id| !stored.contains(id)).count();
    }
    client.quit().await.ok();
    (total, lost, FAILOVERS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_across_failovers() {
    let (plain_total, plain_lost, failovers) = run(None).await;
    cqrsx_core::testkit::report(
        "redis cluster failover",
        &format!(
            "without a durability: {plain_lost} of {plain_total} acknowledged appends lost over {failovers} failovers"
        ),
    );
    let durable = AppendDurability::replicas(1).with_timeout(Duration::from_secs(2));
    let (total, lost, failovers) = run(Some(durable)).await;
    cqrsx_core::testkit::report(
        "redis cluster failover",
        &format!("waiting for 1 replica: {lost} of {total} acknowledged appends lost over {failovers} failovers"),
    );
    assert!(plain_total > 0 && total > 0, "appends were acknowledged");
    assert_eq!(
        lost, 0,
        "acknowledged appends lost although each waited for its replica"
    );
}
