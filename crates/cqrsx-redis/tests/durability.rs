//! An append that waits for replicas (or the append-only file): acknowledged once they have it,
//! `NotDurable` — not a silent success — when they do not in time, and safe to send again.
//! A primary and a replica of the test's own; what each holds is read from the servers.

mod common;

use std::time::{Duration, Instant};

use common::LocalServer;
use cqrsx_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{AppendDurability, RedisClientManager, RedisConfig, RedisEventStore};
use fred::prelude::*;

async fn connect(port: u16, prefix: &str) -> RedisClientManager {
    let config = RedisConfig::default()
        .with_host("127.0.0.1", port)
        .with_key_prefix(prefix);
    RedisClientManager::connect(config).await.expect("connect")
}

/// How many entries the partition log holds on the server at `client`.
async fn log_len(client: &RedisClientManager, store: &RedisEventStore, stream: &StreamId) -> u64 {
    let log = store.stream_keys(stream)[2].clone();
    client.client().xlen(log).await.expect("xlen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_append_waits_for_its_replica_and_says_when_it_did_not_get_it() {
    let primary = LocalServer::start(&["--save", "", "--appendonly", "no"]);
    let port = primary.port.to_string();
    let replica = LocalServer::start(&["--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &port]);
    let prefix = common::unique_prefix();
    let client = connect(primary.port, &prefix).await;
    let on_replica = connect(replica.port, &prefix).await;
    // The replica is in sync before the test starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info: String = on_replica
            .client()
            .info(Some(fred::types::InfoKind::Replication))
            .await
            .expect("info");
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never came up: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let plain = RedisEventStore::new(client.clone());
    let durable = plain
        .with_durability(Some(
            AppendDurability::replicas(1).with_timeout(Duration::from_secs(30)),
        ))
        .expect("durability");
    let stream = StreamId::new("Durable", "a").expect("stream");
    let first = vec![NewEvent::json("E", &1).expect("json")];
    durable
        .append(&stream, ExpectedVersion::NoStream, first)
        .await
        .expect("a durable append with its replica up");
    assert_eq!(
        log_len(&on_replica, &plain, &stream).await,
        1,
        "the replica has it on answer"
    );

    // The replica frozen: the append is carried out, but not durable in time.
    replica.signal("STOP");
    let impatient = plain
        .with_durability(Some(
            AppendDurability::replicas(1).with_timeout(Duration::from_millis(300)),
        ))
        .expect("durability");
    let second = vec![NewEvent::json("E", &2).expect("json")];
    let started = Instant::now();
    let answer = impatient
        .append(&stream, ExpectedVersion::Exact(1), second.clone())
        .await;
    let waited = started.elapsed();
    replica.signal("CONT");
    let Err(error @ Error::NotDurable { version: 2, .. }) = answer else {
        panic!("expected NotDurable at version 2, got {answer:?}");
    };
    assert!(error.is_retryable(), "{error}");
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}, before its timeout"
    );
    assert!(error.to_string().contains("0 replica"), "{error}");
    // The primary has it (it may or may not survive a failover: the error says so).
    assert_eq!(plain.stream_version(&stream).await.expect("version"), 2);

    // Sent again, the same append is a retry: nothing more is written, and it waits again.
    let again = durable
        .append(&stream, ExpectedVersion::Exact(1), second)
        .await
        .expect("the retry, the replica back");
    assert_eq!(again.version, 2);
    assert_eq!(plain.stream_version(&stream).await.expect("version"), 2);
    assert_eq!(log_len(&on_replica, &plain, &stream).await, 2, "the replica has both");

    // A plain append does not wait.
    replica.signal("STOP");
    let started = Instant::now();
    plain
        .append(
            &stream,
            ExpectedVersion::Exact(2),
            vec![NewEvent::json("E", &3).expect("json")],
        )
        .await
        .expect("a plain append with the replica frozen");
    assert!(started.elapsed() < Duration::from_secs(20));
    replica.signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durability_the_server_cannot_give_is_a_config_error() {
    let server = LocalServer::start(&["--save", "", "--appendonly", "no"]);
    let client = connect(server.port, &common::unique_prefix()).await;
    let store = RedisEventStore::new(client.clone());
    for (what, durability) in [
        ("nothing asked", AppendDurability::replicas(0)),
        ("1025 replicas", AppendDurability::replicas(1_025)),
        (
            "a zero timeout",
            AppendDurability::replicas(1).with_timeout(Duration::ZERO),
        ),
        (
            "a timeout over an hour",
            AppendDurability::replicas(1).with_timeout(Duration::from_secs(3_601)),
        ),
    ] {
        assert!(
            matches!(store.with_durability(Some(durability)), Err(Error::Config(_))),
            "{what}"
        );
        let config = RedisConfig::default().with_append_durability(durability);
        assert!(matches!(config.validate(), Err(Error::Config(_))), "{what} (config)");
    }
    // The append-only file, on a server without it (or before Redis 7.2, without WAITAOF).
    let aof = store
        .with_durability(Some(AppendDurability::aof().with_timeout(Duration::from_millis(200))))
        .expect("durability");
    let stream = StreamId::new("Durable", "aof").expect("stream");
    let answer = aof
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::json("E", &1).expect("json")],
        )
        .await;
    assert!(
        matches!(&answer, Err(Error::Config(why)) if why.contains("7.2")),
        "{answer:?}"
    );
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        0,
        "nothing written"
    );
}
