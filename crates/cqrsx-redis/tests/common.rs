//! Shared test setup: the servers `cargo xtask test` provides.

#![allow(dead_code)]

use std::sync::Arc;

use cqrsx_core::testkit::Fixture;
use cqrsx_redis::{
    RedisCheckpointStore, RedisClientManager, RedisConfig, RedisEventStore, RedisReadStore, RedisSnapshotStore,
};

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run these tests with `cargo xtask test --backend redis`, which provides the servers")
    })
}

/// What every test key prefix starts with; `cargo xtask test` deletes these keys afterwards.
pub const TEST_NAMESPACE: &str = "cqrsx_test_";

/// A unique key prefix, so tests never see each other's keys.
pub fn unique_prefix() -> String {
    format!("{}{}", TEST_NAMESPACE, cqrsx_core::Uuid::now_v7().simple())
}

/// Standalone Redis from `CQRSX_TEST_REDIS_URL`.
pub fn standalone_config() -> RedisConfig {
    RedisConfig::default()
        .with_url(required("CQRSX_TEST_REDIS_URL"))
        .with_key_prefix(unique_prefix())
        .with_pool_size(4)
}

/// The 3-node Cluster from `CQRSX_TEST_REDIS_CLUSTER_NODES`, with 8 partitions spread over it.
pub fn cluster_config() -> RedisConfig {
    let nodes = required("CQRSX_TEST_REDIS_CLUSTER_NODES");
    RedisConfig::default()
        .with_cluster_nodes(nodes.split(',').map(str::to_string))
        .with_key_prefix(unique_prefix())
        .with_partitions(8)
        .with_pool_size(4)
}

/// A fixture over fresh stores.
pub async fn fixture_for(config: RedisConfig) -> Fixture {
    let label = if config.is_cluster() {
        "redis cluster"
    } else {
        "redis standalone"
    };
    let client = RedisClientManager::connect(config).await.expect("connect to redis");
    let fixture = Fixture::new(
        Arc::new(RedisEventStore::new(client.clone())),
        Arc::new(RedisSnapshotStore::new(client.clone())),
        Arc::new(RedisReadStore::new(client.clone(), "conformance").expect("read store")),
        Arc::new(RedisCheckpointStore::new(client)),
    )
    .with_label(label);
    // The repository cases run with the real snapshot manager, not the suite's basic strategy.
    let strategy = cqrsx_snapshot::testkit::manager_strategy(&fixture);
    fixture.with_strategy(strategy)
}
