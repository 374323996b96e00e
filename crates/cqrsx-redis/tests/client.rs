//! The client manager against a real server: ping, metrics, the durability check.

mod common;

use cqrsx_core::{ConnectFailure, EventStore, ExpectedVersion, NewEvent, StreamId};
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
    // Five appends, one script call each (none waited to be grouped: one writer).
    assert_eq!(after.operations, before.operations + 5, "{before:?} → {after:?}");
    assert!(after.p50 > std::time::Duration::ZERO && after.p99 >= after.p50);
}

/// An append's and a stream read's futures hold one fred call, not copies of it: an `async fn`
/// that takes a future and awaits it keeps both (every append's future is boxed, and was twice
/// this size when the metrics wrapper was such a function).
#[tokio::test]
async fn a_call_future_holds_one_fred_call() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Sized", "s-1").expect("stream");
    let one_call = {
        use fred::interfaces::LuaInterface;
        let call = client.client().evalsha::<fred::types::Value, _, _, _>(
            "0000",
            vec!["k".to_string()],
            vec!["a".to_string()],
        );
        std::mem::size_of_val(&call)
    };
    let e = NewEvent::json("Counted", &1).expect("json");
    let append = store.append(&stream, ExpectedVersion::Any, vec![e]);
    let read = store.read_stream(&stream, 1, 10);
    for (what, size) in [
        ("append", std::mem::size_of_val(&*append)),
        ("read", std::mem::size_of_val(&*read)),
    ] {
        assert!(
            size < one_call + 2048,
            "{what}: {size} B against {one_call} B of one fred call"
        );
    }
}

#[tokio::test]
async fn durability_check_names_each_risk_of_the_server() {
    // Two servers of the test's own, with known settings: no AOF and no RDB, then AOF on.
    let bare = common::LocalServer::start(&["--save", "", "--appendonly", "no"]);
    let client = RedisClientManager::connect(RedisConfig::default().with_host("127.0.0.1", bare.port))
        .await
        .expect("connect");
    let report = client.durability().await.expect("durability");
    assert_eq!(
        (
            report.aof,
            report.rdb_schedule.as_str(),
            report.maxmemory_policy.as_str()
        ),
        (false, "", "noeviction")
    );
    let risks = report.risks();
    assert_eq!(risks.len(), 1, "{risks:?}");
    assert!(risks[0].contains("no AOF and no RDB"), "{risks:?}");

    let durable = common::LocalServer::start(&["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]);
    let client = RedisClientManager::connect(RedisConfig::default().with_host("127.0.0.1", durable.port))
        .await
        .expect("connect");
    let report = client.durability().await.expect("durability");
    assert!(report.aof);
    let risks = report.risks();
    assert_eq!(risks.len(), 1, "only eviction is a risk: {risks:?}");
    assert!(risks[0].contains("allkeys-lru"), "{risks:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Connects with the default timeouts; the error, and how long it took.
async fn refused_with(config: RedisConfig) -> (cqrsx_core::Error, std::time::Duration) {
    let started = std::time::Instant::now();
    let err = RedisClientManager::connect(config).await.expect_err("must not connect");
    (err, started.elapsed())
}

fn failure(err: &cqrsx_core::Error) -> Option<ConnectFailure> {
    match err {
        cqrsx_core::Error::Connect { failure, .. } => Some(*failure),
        _ => None,
    }
}

#[tokio::test]
async fn a_first_connection_fails_fast_with_what_went_wrong() {
    let bound = std::time::Duration::from_secs(5);
    // Nothing listens.
    let port = free_port();
    let (err, took) = refused_with(RedisConfig::default().with_host("127.0.0.1", port)).await;
    assert_eq!(failure(&err), Some(ConnectFailure::Refused), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(took < bound, "{took:?}");

    // A server with a password: a wrong one and a missing one.
    let locked = common::LocalServer::start(&["--save", "", "--requirepass", "s3cret"]);
    let (err, took) = refused_with(
        RedisConfig::default()
            .with_host("127.0.0.1", locked.port)
            .with_password("wrong"),
    )
    .await;
    assert_eq!(failure(&err), Some(ConnectFailure::Auth), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "no password in the error: {err}");
    assert!(took < bound, "{took:?}");
    let (err, took) = refused_with(RedisConfig::default().with_host("127.0.0.1", locked.port)).await;
    assert_eq!(failure(&err), Some(ConnectFailure::Auth), "{err:?}");
    assert!(took < bound, "{took:?}");
    let ok = RedisClientManager::connect(
        RedisConfig::default()
            .with_host("127.0.0.1", locked.port)
            .with_password("s3cret"),
    )
    .await
    .expect("the right password connects");
    ok.ping().await.expect("ping");

    // A database index the server does not have (16 by default).
    let (err, took) = refused_with(
        RedisConfig::default()
            .with_host("127.0.0.1", locked.port)
            .with_password("s3cret")
            .with_database(99),
    )
    .await;
    assert_eq!(failure(&err), Some(ConnectFailure::Database), "{err:?}");
    assert!(took < bound, "{took:?}");

    // A port that accepts and never answers, and one that answers something else than RESP.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let silent_port = silent.local_addr().expect("addr").port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (err, took) = refused_with(RedisConfig::default().with_host("127.0.0.1", silent_port)).await;
    assert_eq!(failure(&err), Some(ConnectFailure::Timeout), "{err:?}");
    assert!(took < bound, "{took:?}");
    keep.abort();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let http_port = http.local_addr().expect("addr").port();
    let answer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = http.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let (err, took) = refused_with(RedisConfig::default().with_host("127.0.0.1", http_port)).await;
    assert_eq!(failure(&err), Some(ConnectFailure::Protocol), "{err:?}");
    assert!(took < bound, "{took:?}");
    answer.abort();
    // A server still loading its data set (a large AOF after a restart): not a refusal of the
    // credentials, but a server not ready yet.
    let loading = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let loading_port = loading.local_addr().expect("addr").port();
    let answer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = loading.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0
                        || socket
                            .write_all(b"-LOADING Redis is loading the dataset in memory\r\n")
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let (err, took) = refused_with(RedisConfig::default().with_host("127.0.0.1", loading_port)).await;
    assert_eq!(failure(&err), Some(ConnectFailure::Timeout), "{err:?}");
    assert!(took < bound, "{took:?}");
    answer.abort();
    cqrsx_core::testkit::report(
        "redis standalone",
        "connect catalogue: 7 kinds (refused, wrong password, no password, database, silent port, not RESP, loading)",
    );
}
