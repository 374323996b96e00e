//! The read-store cases again, with secondary indexes on every filtered field, so the indexed
//! query paths answer exactly like the reference semantics; plus the per-store TTL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::testkit::{self, Fixture};
use cqrsx_core::{Filter, Op, Query, ReadStore};
use cqrsx_redis::{RedisCheckpointStore, RedisClientManager, RedisEventStore, RedisReadStore, RedisSnapshotStore};

async fn indexed(collection: &str) -> (RedisClientManager, RedisReadStore) {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let mut store = RedisReadStore::new(client.clone(), collection).expect("store");
    for field in ["a", "address.city", "age", "name", "nickname", "rank", "score"] {
        store = store.with_index(field).expect("index");
    }
    (client, store)
}

async fn indexed_fixture() -> Fixture {
    let (client, reads) = indexed("indexed").await;
    Fixture::new(
        Arc::new(RedisEventStore::new(client.clone())),
        Arc::new(RedisSnapshotStore::new(client.clone())),
        Arc::new(reads),
        Arc::new(RedisCheckpointStore::new(client)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexed_queries_match_reference_semantics() {
    testkit::read_store_query_matches_reference_semantics(indexed_fixture().await).await;
    testkit::read_store_crud(indexed_fixture().await).await;
    testkit::read_store_batches(indexed_fixture().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewriting_a_document_moves_its_index_entries() {
    let (_, store) = indexed("moves").await;
    store
        .save("u1", serde_json::json!({"name": "ann", "age": 30}))
        .await
        .expect("save");
    store
        .save("u1", serde_json::json!({"name": "bob", "age": 40}))
        .await
        .expect("save");
    let by = |field: &str, value: serde_json::Value| Query::all().filter(Filter::new(field, Op::Eq, value));
    assert!(store.query(&by("name", "ann".into())).await.expect("q").is_empty());
    assert!(store.query(&by("age", 30.into())).await.expect("q").is_empty());
    assert_eq!(store.query(&by("name", "bob".into())).await.expect("q").len(), 1);
    assert_eq!(store.query(&by("age", 40.into())).await.expect("q").len(), 1);
    assert!(store.delete("u1").await.expect("delete"));
    assert!(store.query(&by("name", "bob".into())).await.expect("q").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_store_ttl_expires_documents_and_their_index_entries() {
    let (_, store) = indexed("ttl").await;
    let store = store.with_default_ttl(Duration::from_millis(400));
    store
        .save("t1", serde_json::json!({"name": "temp"}))
        .await
        .expect("save");
    assert!(store.get("t1").await.expect("get").is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get("t1").await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = Query::all().filter(Filter::new("name", Op::Eq, "temp"));
    assert!(store.query(&q).await.expect("query").is_empty());
    assert_eq!(store.count(&[]).await.expect("count"), 0);
}
