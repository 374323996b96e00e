//! A server that lost its scripts (a restart, a failover, `SCRIPT FLUSH`) ran nothing of the call
//! that met it: the store loads the script again and makes the call once more from its inputs.
//!
//! One test per server, alone in its binary: it flushes the server's scripts, which would make
//! other tests running beside it meet a lost script twice in one call.

mod common;

use cqrsx_core::query::Op;
use cqrsx_core::{Document, EventStore, ExpectedVersion, Filter, NewEvent, Query, ReadStore, StreamId, Uuid};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore, RedisReadStore};
use fred::interfaces::LuaInterface;
use futures::future::join_all;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Lost", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

async fn flush(client: &RedisClientManager) {
    client.client().script_flush_cluster(false).await.expect("SCRIPT FLUSH");
}

/// Appends alone and queued in groups (one call in flight per partition, two partitions), then
/// reads of the streams, each after a flush: every append is stored once and every read answers.
async fn appends_and_stream_reads(client: &RedisClientManager) {
    let store = RedisEventStore::new(client.clone());
    for round in 0..3 {
        flush(client).await;
        let streams: Vec<StreamId> = (0..12)
            .map(|_| StreamId::new("Lost", format!("r{round}-{}", Uuid::now_v7().simple())).expect("stream"))
            .collect();
        let outcomes = join_all(
            streams
                .iter()
                .enumerate()
                .map(|(i, s)| store.append(s, ExpectedVersion::NoStream, events(1 + i % 3))),
        )
        .await;
        flush(client).await;
        for ((i, s), outcome) in streams.iter().enumerate().zip(outcomes) {
            let n = 1 + i % 3;
            let outcome = outcome.unwrap_or_else(|e| panic!("round {round}, {s}: {e}"));
            assert_eq!(outcome.version, n as u64, "{s}");
            let stored = store.read_stream(s, 1, 100).await.expect("read");
            assert_eq!(stored.len(), n, "{s} holds each event once");
        }
    }
}

/// A write, a top N, a selection, a get and a count, each after a flush.
async fn read_model_operations(client: &RedisClientManager) {
    let store = RedisReadStore::new(client.clone(), &format!("lost{}", Uuid::now_v7().simple()))
        .and_then(|s| s.with_index("score"))
        .and_then(|s| s.with_index("name"))
        .expect("store");
    let docs: Vec<_> = (0..20)
        .map(|i: i64| Document {
            id: format!("d{i:02}"),
            data: serde_json::json!({"score": i % 7, "name": format!("n{i}")}),
        })
        .collect();
    flush(client).await;
    store.save_many(docs.clone()).await.expect("a write");
    let top = Query::all().sort_desc("score").page(0, 5);
    flush(client).await;
    assert_eq!(store.query(&top).await.expect("a top N"), top.apply(docs.clone()));
    let by_name = Query::all().filter(Filter::new("name", Op::Eq, "n3"));
    flush(client).await;
    assert_eq!(
        store.query(&by_name).await.expect("a selection"),
        by_name.apply(docs.clone())
    );
    flush(client).await;
    assert_eq!(store.get("d04").await.expect("a get"), Some(docs[4].data.clone()));
    flush(client).await;
    assert_eq!(
        store.count(&[Filter::new("score", Op::Gte, 5)]).await.expect("a count"),
        docs.iter().filter(|d| d.data["score"].as_i64() >= Some(5)).count() as u64
    );
}

async fn every_call_goes_again_after_the_server_lost_its_scripts(config: RedisConfig) {
    let client = RedisClientManager::connect(config.with_append_concurrency(1).with_partitions(2))
        .await
        .expect("connect");
    appends_and_stream_reads(&client).await;
    read_model_operations(&client).await;
}

#[tokio::test]
async fn standalone_every_call_goes_again_after_the_server_lost_its_scripts() {
    every_call_goes_again_after_the_server_lost_its_scripts(common::standalone_config()).await;
}

/// Named `cluster::…` like every Cluster test, so the summary counts it on the Cluster row.
mod cluster {
    #[tokio::test]
    async fn every_call_goes_again_after_the_server_lost_its_scripts() {
        super::every_call_goes_again_after_the_server_lost_its_scripts(super::common::cluster_config()).await;
    }
}
