//! A stream's metadata hash (version and event ids) stays a compact listpack while appends are
//! single events, and becomes a hash table with the first batch of 16 or more: a batch looks up
//! and writes every one of its ids, which in a listpack is a scan each.

mod common;

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisEventStore};
use fred::prelude::*;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Laid", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

async fn encoding(client: &RedisClientManager, key: &str) -> String {
    client
        .client()
        .custom(fred::cmd!("OBJECT"), vec!["ENCODING", key])
        .await
        .expect("OBJECT ENCODING")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_id_hash_turns_into_a_hash_table_with_the_first_batch() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "s").expect("stream");
    let meta = store.stream_keys(&stream)[1].clone();
    for _ in 0..3 {
        store
            .append(&stream, ExpectedVersion::Any, events(1))
            .await
            .expect("single");
    }
    store
        .append(&stream, ExpectedVersion::Any, events(15))
        .await
        .expect("fifteen");
    assert_eq!(
        encoding(&client, &meta).await,
        "listpack",
        "small appends keep the listpack"
    );
    store
        .append(&stream, ExpectedVersion::Any, events(16))
        .await
        .expect("sixteen");
    assert_eq!(encoding(&client, &meta).await, "hashtable", "a batch of 16 converts it");
    store
        .append(&stream, ExpectedVersion::Any, events(1))
        .await
        .expect("single");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 35);
    let versions: Vec<u64> = store
        .read_stream(&stream, 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=35).collect::<Vec<_>>());
}
