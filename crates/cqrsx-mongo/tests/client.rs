//! The client manager on a real server: schema initialisation from many tasks at once, custom
//! collection names, ping, metrics and capability detection.

mod common;

use std::sync::Arc;

use cqrsx_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_mongo::{MongoClientManager, MongoConfig, MongoEventStore};
use futures::TryStreamExt;
use mongodb::bson::Document;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_init_from_eight_tasks_at_once_succeeds() {
    let config = common::config();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let config = config.clone();
        // Each task has its own client, as separate processes starting together would.
        tasks.push(tokio::spawn(async move {
            let client = MongoClientManager::connect(config).await?;
            client.initialize_event_sourcing_schema().await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("schema init succeeds under concurrency");
    }
    let client = common::client(config.clone()).await;
    let names: Vec<String> = client
        .database()
        .collection::<Document>(&config.events_collection())
        .list_index_names()
        .await
        .expect("indexes");
    for index in ["stream_v0", "position", "stream_ids", "types_time"] {
        assert!(names.iter().any(|n| n == index), "{index} in {names:?}");
    }
    let store = MongoEventStore::new(client);
    let s = StreamId::new("Init", "one").expect("stream");
    let r = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::json("A", &1).expect("json")],
        )
        .await
        .expect("append after init");
    assert_eq!(r.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_collection_names_and_prefixes_are_used() {
    let config = common::config().with_collection_prefix("billing_").with_collections(
        "ledger",
        "ledger_counters",
        "ledger_snapshots",
    );
    let client = common::client(config.clone()).await;
    let store = MongoEventStore::new(client.clone());
    let s = StreamId::new("Invoice", "i-1").expect("stream");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::json("Issued", &1).expect("json")],
        )
        .await
        .expect("append");
    let names = client.database().list_collection_names().await.expect("collections");
    for name in [
        config.events_collection(),
        config.snapshots_collection(),
        config.counters_collection(),
    ] {
        assert!(name.starts_with("billing_"), "{name}");
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let commits: Vec<Document> = client
        .database()
        .collection::<Document>(&config.events_collection())
        .find(mongodb::bson::doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    assert_eq!(commits.len(), 1, "the commit went to the custom collection");
    assert!(!names.contains(&"events".to_string()), "no default collection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_metrics_and_capabilities_describe_the_server() {
    let client = Arc::new(common::client(common::config()).await);
    let rtt = client.ping().await.expect("ping");
    assert!(rtt.as_secs() < 5);
    let store = MongoEventStore::new((*client).clone());
    let s = StreamId::new("Metrics", "m-1").expect("stream");
    let before = client.metrics();
    for i in 0..20u64 {
        store
            .append(
                &s,
                ExpectedVersion::from_loaded(i),
                vec![NewEvent::json("Tick", &i).expect("json")],
            )
            .await
            .expect("append");
    }
    let _ = store.append(&s, ExpectedVersion::NoStream, vec![]).await;
    let after = client.metrics();
    assert!(after.operations >= before.operations + 40, "{before:?} → {after:?}");
    assert!(after.p50 <= after.p95 && after.p95 <= after.p99, "{after:?}");
    assert!(after.p99 > std::time::Duration::ZERO);

    let caps = client.capabilities();
    assert!(!caps.version.is_empty());
    if caps.ferretdb.is_some() {
        // FerretDB 1.x has neither, and the stores must not need them.
        assert!(
            !caps.transactions && !caps.change_streams && !caps.ttl_indexes,
            "{caps:?}"
        );
    }
    assert_eq!(caps.transactions, caps.change_streams, "both need a replica set");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let config = MongoConfig::default().with_uri("mongodb://127.0.0.1:1/").with_timeouts(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_millis(200),
        std::time::Duration::from_millis(300),
    );
    let err = MongoClientManager::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, Error::Backend { .. } | Error::Config(_)), "{err}");
    let bad = MongoConfig::default().with_uri("postgres://x");
    assert!(matches!(bad.validate(), Err(Error::Config(_))));
}
