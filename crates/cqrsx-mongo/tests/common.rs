//! Shared test setup: the server `cargo xtask test` provides.

#![allow(dead_code)]

use std::sync::Arc;

use cqrsx_core::testkit::{Fixture, Stress};
use cqrsx_mongo::{
    AssumedCapabilities, MongoClientManager, MongoConfig, MongoEventStore, MongoKeyStore, MongoProjectionStore,
    MongoReadStore, MongoSnapshotStore,
};

/// The server's URI from `CQRSX_TEST_MONGO_URI`.
pub fn uri() -> String {
    std::env::var("CQRSX_TEST_MONGO_URI").unwrap_or_else(|_| {
        panic!("CQRSX_TEST_MONGO_URI is not set: run these tests with `cargo xtask test --backend mongo`")
    })
}

/// What every test database name starts with; `cargo xtask test` drops them afterwards.
pub const TEST_NAMESPACE: &str = "cqrsx_test_";

/// A config on a database of its own, so tests never see each other's documents.
pub fn config() -> MongoConfig {
    config_at(&uri())
}

/// [`config`] on the server at `uri`.
pub fn config_at(uri: &str) -> MongoConfig {
    // A testing aid: capabilities switched off (or on) for a whole run, e.g. to run FerretDB
    // 1.x's fallback paths on a server that has what they replace.
    let assume = std::env::var("CQRSX_TEST_MONGO_ASSUME")
        .ok()
        .map(|a| AssumedCapabilities::parse(&a).expect("CQRSX_TEST_MONGO_ASSUME"))
        .unwrap_or_default();
    MongoConfig::default()
        .with_uri(uri)
        .with_database(format!(
            "{TEST_NAMESPACE}{}",
            &cqrsx_core::Uuid::now_v7().simple().to_string()[8..]
        ))
        .with_gap_timeout(std::time::Duration::from_millis(500))
        .with_assumed_capabilities(assume)
}

/// A connected client with the schema in place.
pub async fn client(config: MongoConfig) -> MongoClientManager {
    let client = MongoClientManager::connect(config).await.expect("connect to MongoDB");
    client.initialize_event_sourcing_schema().await.expect("schema");
    client
}

/// A fixture over fresh stores.
pub async fn fixture() -> Fixture {
    fixture_with(config()).await
}

/// A fixture over fresh stores with this config.
pub async fn fixture_with(config: MongoConfig) -> Fixture {
    let client = client(config).await;
    let reads = MongoReadStore::new(client.clone(), "conformance").expect("read store");
    reads.initialize().await.expect("read store init");
    let checkpoints = MongoProjectionStore::new(client.clone());
    checkpoints.initialize().await.expect("projection store init");
    // A server that scans for most reads or serialises its own counter (FerretDB 1.x: the
    // store's fallbacks) runs the stress cases lighter; one with indexes, unique array indexes
    // and atomic counters (MongoDB, FerretDB 2 + DocumentDB) runs them in full.
    let caps = client.capabilities();
    let stress = match caps.indexed_queries && caps.unique_array_indexes && caps.atomic_counters {
        true => Stress::FULL,
        false => Stress::LIGHT,
    };
    let keys = MongoKeyStore::new(client.clone());
    keys.initialize().await.expect("key store init");
    let fixture = Fixture::new(
        Arc::new(MongoEventStore::new(client.clone())),
        Arc::new(MongoSnapshotStore::new(client)),
        Arc::new(reads),
        Arc::new(checkpoints),
    )
    .with_stress(stress)
    .with_label("mongo")
    .with_keys(Arc::new(keys));
    // The repository cases run with the real snapshot manager, not the suite's basic strategy.
    let strategy = cqrsx_snapshot::testkit::manager_strategy(&fixture);
    fixture.with_strategy(strategy)
}

/// A TCP relay to the test server that holds every request it forwards for `delay`
/// milliseconds (0: none): a server, or a network, slower than the client's socket timeout.
pub async fn slow_relay(delay: Arc<std::sync::atomic::AtomicU64>) -> String {
    held_relay(delay, None).await
}

/// [`slow_relay`] that holds only the requests whose bytes contain `pattern` (all when `None`).
pub async fn held_relay(delay: Arc<std::sync::atomic::AtomicU64>, pattern: Option<Vec<u8>>) -> String {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri = uri();
    let host = uri
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .expect("a host in CQRSX_TEST_MONGO_URI")
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&host).await else {
                continue;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let delay = Arc::clone(&delay);
            let pattern = pattern.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    let ms = delay.load(Ordering::SeqCst);
                    let held = pattern
                        .as_ref()
                        .is_none_or(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice()));
                    if ms > 0 && held {
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
        }
    });
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}
