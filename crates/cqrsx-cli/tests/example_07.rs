//! Example 07 (the data lifecycle) on the backend each `cargo xtask test` group provides:
//! `CQRSX_TEST_REDIS_URL` (Redis standalone; `cluster::` on the Cluster), `CQRSX_TEST_MONGO_URI`
//! (MongoDB-wire), none (the in-memory store). The example's flow is its library's `run`; this
//! checks what it found, so "example 07 runs on every backend" is tested, not assumed.

use std::sync::Arc;

use example_data_lifecycle::{run, Backend, Setup, Summary};

const NAMESPACE: &str = "cqrsx_test_";

fn unique() -> String {
    format!("{NAMESPACE}{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[8..])
}

async fn redis(config: cqrsx_redis::RedisConfig) -> Backend {
    use cqrsx_redis::*;
    let client = RedisClientManager::connect(config.with_key_prefix(unique()))
        .await
        .expect("connect to redis");
    Backend {
        name: "redis",
        events: Arc::new(RedisEventStore::new(client.clone())),
        snapshots: Arc::new(RedisSnapshotStore::new(client.clone())),
        projections: Arc::new(RedisProjectionStore::new(client.clone())),
        keys: Arc::new(RedisKeyStore::new(client)),
    }
}

async fn mongo(uri: &str) -> Backend {
    use cqrsx_mongo::*;
    let mut config = MongoConfig::default().with_uri(uri).with_database(unique());
    if let Ok(assume) = std::env::var("CQRSX_TEST_MONGO_ASSUME") {
        config = config.with_assumed_capabilities(AssumedCapabilities::parse(&assume).expect("assume"));
    }
    let client = MongoClientManager::connect(config).await.expect("connect to MongoDB");
    client.initialize_event_sourcing_schema().await.expect("schema");
    let projections = MongoProjectionStore::new(client.clone());
    projections.initialize().await.expect("projection schema");
    Backend {
        name: "mongo",
        events: Arc::new(MongoEventStore::new(client.clone())),
        snapshots: Arc::new(MongoSnapshotStore::new(client.clone())),
        projections: Arc::new(projections),
        keys: Arc::new(MongoKeyStore::new(client)),
    }
}

fn memory() -> Backend {
    use cqrsx_core::memory::*;
    Backend {
        name: "in-memory",
        events: Arc::new(InMemoryEventStore::new()),
        snapshots: Arc::new(InMemorySnapshotStore::new()),
        projections: Arc::new(InMemoryProjectionStore::new()),
        keys: Arc::new(cqrsx_core::crypto::InMemoryKeyStore::new()),
    }
}

/// Runs the example on `app`, migrating into `target`, and checks every promise it prints.
async fn runs_as_promised(app: Backend, target: Backend) {
    let dir = std::env::temp_dir().join(unique());
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut said = Vec::new();
    let setup = Setup {
        app,
        target,
        dir: dir.clone(),
        progress: false,
    };
    let summary: Summary = run(setup, &mut |line| said.push(line))
        .await
        .unwrap_or_else(|e| panic!("example 07 failed: {e}\n{}", said.join("\n")));
    let said = said.join("\n");
    let f = &summary.forget;
    assert_eq!(f.versions, (3, 3), "{said}");
    assert!(f.same_event_ids, "{said}");
    assert_eq!(f.bob.email, "[erased]", "{said}");
    assert_eq!(f.bob.name, "[erased]", "{said}");
    assert_eq!(f.bob.plan, "pro", "not personal, kept: {said}");
    assert_eq!(f.ann.email, "ann@example.com", "{said}");
    assert!(!f.plaintext_in_raw_events, "{said}");
    assert_eq!(f.view_after_forget["email"], "[erased]", "{said}");
    assert_eq!(f.view_after_forget["plan"], "pro", "{said}");
    assert!(!f.plaintext_in_rebuilt_view, "{said}");
    assert_eq!(f.rebuilt_view["name"], "[erased]", "{said}");
    let a = &summary.archive;
    assert_eq!(a.totals.archived_streams, 6, "{said}");
    assert_eq!(a.totals.archived, 18, "{said}");
    assert_eq!(a.totals.held_back, 0, "{said}");
    assert_eq!(a.old_events_left_hot, 0, "{said}");
    assert!(a.old_orders_load_the_same, "{said}");
    assert_eq!(a.recent_events_removed, 0, "{said}");
    assert!(a.archived_order_takes_appends, "{said}");
    let m = &summary.migrate;
    assert_eq!(m.differences, 0, "{said}");
    assert!(
        m.written_during_copy > 0,
        "the source took writes during the copy: {said}"
    );
    assert!(m.source_events >= 120 + m.written_during_copy, "{said}");
    assert_eq!(m.projections.len(), 1, "{said}");
    assert!(m.order_reads_the_same, "{said}");
    assert!(m.migrated_view["lines"].as_u64().is_some_and(|n| n >= 3), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_07_runs_on_the_provided_backend() {
    if let Ok(url) = std::env::var("CQRSX_TEST_REDIS_URL") {
        let config = || cqrsx_redis::RedisConfig::default().with_url(&url);
        return runs_as_promised(redis(config()).await, redis(config()).await).await;
    }
    if let Ok(uri) = std::env::var("CQRSX_TEST_MONGO_URI") {
        return runs_as_promised(mongo(&uri).await, mongo(&uri).await).await;
    }
    runs_as_promised(memory(), memory()).await;
}

mod cluster {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn example_07_runs_on_redis_cluster() {
        let nodes = std::env::var("CQRSX_TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
            panic!("CQRSX_TEST_REDIS_CLUSTER_NODES is not set: run with `cargo xtask test --backend redis`")
        });
        let config = || {
            cqrsx_redis::RedisConfig::default()
                .with_cluster_nodes(nodes.split(',').map(str::to_string))
                .with_partitions(8)
        };
        super::runs_as_promised(super::redis(config()).await, super::redis(config()).await).await;
    }
}
