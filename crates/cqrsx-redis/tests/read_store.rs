//! The read-store cases again, with secondary indexes on every filtered field, so the indexed
//! query paths answer exactly like the reference semantics; plus the per-store TTL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::query::Op;
use cqrsx_core::testkit::{self, Fixture};
use cqrsx_core::{Filter, Query, ReadStore};
use cqrsx_redis::{RedisClientManager, RedisEventStore, RedisProjectionStore, RedisReadStore, RedisSnapshotStore};

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
        Arc::new(RedisProjectionStore::new(client)),
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
    let store = store.with_default_ttl(Duration::from_secs(2));
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

/// Documents that expire leave sorted, limited queries (answered by the index) and counts; the
/// set of expiring ids follows every write, so a collection whose documents no longer expire
/// reads without comparing expiries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_documents_leave_top_queries_and_the_expiry_set_follows_writes() {
    use fred::interfaces::KeysInterface;
    let (client, store) = indexed("expiring").await;
    let exp = format!("{{{}:rm:expiring}}:exp", client.config().key_prefix);
    let exists = |key: String| {
        let client = client.clone();
        async move {
            let n: i64 = client.client().exists(key).await.expect("EXISTS");
            n
        }
    };
    let doc = |i: i64| cqrsx_core::Document {
        id: format!("d{i:02}"),
        data: serde_json::json!({"score": i % 8, "name": format!("n{i}")}),
    };
    let lasting: Vec<_> = (0..30).map(doc).collect();
    store.save_many(lasting.clone()).await.expect("save");
    assert_eq!(exists(exp.clone()).await, 0, "no document expires yet");
    // The best scores, tied among themselves, on documents that expire.
    for i in 0..5 {
        store
            .save_with_ttl(
                &format!("e{i}"),
                serde_json::json!({"score": 9}),
                Duration::from_secs(2),
            )
            .await
            .expect("save with ttl");
    }
    let top = |offset, limit| Query::all().sort_desc("score").page(offset, limit);
    let ids = |docs: Vec<cqrsx_core::Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(store.query(&top(0, 3)).await.expect("query")), ["e0", "e1", "e2"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get("e4").await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Expired but not yet removed: every answer is the lasting documents' alone.
    assert_eq!(exists(exp.clone()).await, 1, "expired documents not yet purged");
    for (offset, limit) in [(0, 1), (0, 3), (0, 5), (2, 4), (0, 40)] {
        let q = top(offset, limit);
        assert_eq!(store.query(&q).await.expect("query"), q.apply(lasting.clone()), "{q:?}");
    }
    let none = Query::all()
        .filter(Filter::new("score", Op::Gt, 100))
        .sort_desc("score")
        .page(0, 3);
    assert!(
        store.query(&none).await.expect("query").is_empty(),
        "a range that holds nothing"
    );
    assert_eq!(store.count(&[]).await.expect("count"), 30);
    // The count removed them: no expiry is left to compare.
    assert_eq!(exists(exp.clone()).await, 0, "a count purges expired documents");
    // An expiring document that is rewritten without expiry, or deleted, leaves the set.
    store
        .save_with_ttl("t1", serde_json::json!({"score": 1}), Duration::from_secs(60))
        .await
        .expect("ttl");
    store
        .save_with_ttl("t2", serde_json::json!({"score": 2}), Duration::from_secs(60))
        .await
        .expect("ttl");
    assert_eq!(exists(exp.clone()).await, 1);
    store.save("t1", serde_json::json!({"score": 1})).await.expect("save");
    assert!(store.delete("t2").await.expect("delete"));
    assert_eq!(
        exists(exp.clone()).await,
        0,
        "the expiry set follows rewrites and deletes"
    );
    assert_eq!(
        store.get("t1").await.expect("get"),
        Some(serde_json::json!({"score": 1}))
    );
}
