//! The client manager against a real server: ping, metrics, the durability check.

mod common;

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};

#[tokio::test]
async fn ping_and_metrics_count_operations() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    client.ping().await.expect("ping");
    let before = client.metrics();
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Metric", "m-1").expect("stream");
    for v in 0..5 {
        let e = NewEvent::json("Counted", &serde_json::json!({"v": v})).expect("json");
        store
            .append(&stream, ExpectedVersion::Exact(v), vec![e])
            .await
            .expect("append");
    }
    let after = client.metrics();
    assert!(after.operations >= before.operations + 5, "{before:?} → {after:?}");
    assert!(after.p50 > std::time::Duration::ZERO && after.p99 >= after.p50);
}

#[tokio::test]
async fn durability_check_reports_the_test_servers_risks() {
    // xtask's servers run without AOF or RDB: exactly what the start-up check must flag.
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let report = client.durability().await.expect("durability");
    let risks = report.risks();
    if report.aof {
        assert!(risks.iter().all(|r| !r.contains("AOF")), "{risks:?}");
    } else {
        assert!(
            risks.iter().any(|r| r.contains("AOF")),
            "no AOF must be reported: {risks:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_server_fails_with_a_backend_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let config = RedisConfig::default()
        .with_host("127.0.0.1", port)
        .with_max_retries(1)
        .with_timeouts(
            std::time::Duration::from_millis(300),
            std::time::Duration::from_millis(500),
            std::time::Duration::from_millis(500),
        );
    let err = RedisClientManager::connect(config)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, cqrsx_core::Error::Backend { .. }), "{err:?}");
}
