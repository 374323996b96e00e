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
    let ids_index = if client.capabilities().unique_array_indexes {
        "stream_ids_unique"
    } else {
        "stream_ids"
    };
    for index in ["stream_v0", "position", ids_index, "types_time"] {
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
    // A hang detector, not a speed check.
    assert!(rtt.as_secs() < 60, "{rtt:?}");
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

    let caps = client.capabilities().clone();
    assert!(!caps.version.is_empty());
    // What each capability means on this server is checked against what it does in
    // tests/capabilities.rs.
}

/// A first connection that fails gives up after the config's connect timeout (1 s here) with
/// a typed error, instead of waiting out the driver's server selection (60 s here): the
/// bounds below (20 s) tell the two apart with room for a loaded machine.
fn failing(uri: String) -> MongoConfig {
    MongoConfig::default().with_uri(uri).with_timeouts(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(60),
    )
}

const FAST: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn a_closed_port_fails_fast_with_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let started = std::time::Instant::now();
    let err = MongoClientManager::connect(failing(format!("mongodb://127.0.0.1:{port}/")))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(
            err,
            Error::Connect {
                failure: cqrsx_core::ConnectFailure::Refused,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "the error says what was tried: {err}"
    );
    assert!(err.is_retryable(), "the server may come up");
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    let bad = MongoConfig::default().with_uri("postgres://x");
    assert!(matches!(bad.validate(), Err(Error::Config(_))));

    // A port that accepts and never answers, and one that answers something else.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let silent_port = silent.local_addr().expect("addr").port();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = MongoClientManager::connect(failing(format!("mongodb://127.0.0.1:{silent_port}/")))
        .await
        .expect_err("nothing answers there");
    assert!(
        matches!(
            err,
            Error::Connect {
                failure: cqrsx_core::ConnectFailure::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    keep.abort();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let http_port = http.local_addr().expect("addr").port();
    let answer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = http.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let started = std::time::Instant::now();
    let err = MongoClientManager::connect(failing(format!("mongodb://127.0.0.1:{http_port}/")))
        .await
        .expect_err("not MongoDB");
    assert!(
        matches!(
            err,
            Error::Connect {
                failure: cqrsx_core::ConnectFailure::Protocol,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    answer.abort();
    cqrsx_core::testkit::report(
        "mongo",
        "connect catalogue: 3 kinds (refused, silent port, not MongoDB)",
    );
}

/// Where the server does not apply a conditional update atomically (FerretDB 1.x), a write the
/// client gave up on at its socket timeout would go on at the server beside the writes after
/// it and could land last with what it read before them: there a write is awaited to its
/// reply, past the socket timeout. Where updates are atomic a stale write is refused by its
/// guard, and the timeout holds — and the write given up on still lands, which is why the
/// other kind of server cannot be allowed to give up. Both, on one server, by assuming the
/// capability each way through a relay that holds requests 1.5 s against a 0.4 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_awaited_past_the_socket_timeout_where_updates_are_not_atomic() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let delay = Arc::new(AtomicU64::new(0));
    let relay = common::slow_relay(Arc::clone(&delay)).await;
    for atomic in [false, true] {
        let assume = cqrsx_mongo::AssumedCapabilities::parse(&format!("atomic_counters={atomic}")).expect("assume");
        let config = common::config_at(&relay)
            .with_assumed_capabilities(assume)
            .with_timeouts(
                Duration::from_secs(10),
                Duration::from_millis(400),
                Duration::from_secs(20),
            );
        let database = config.database.clone();
        let client = MongoClientManager::connect(config)
            .await
            .expect("connect through the relay");
        assert_eq!(client.capabilities().atomic_counters, atomic);
        let reads = cqrsx_mongo::MongoReadStore::new(client.clone(), "slow").expect("read store");
        reads.initialize().await.expect("initialize");
        // The same read model, read from the server directly (not through the relay).
        let direct = mongodb::Client::with_uri_str(common::uri())
            .await
            .expect("direct client");
        let stored = direct
            .database(&database)
            .collection::<Document>(&client.config().read_model_collection("slow"));
        delay.store(1_500, Ordering::SeqCst);
        let started = Instant::now();
        let saved = cqrsx_core::ReadStore::save(&reads, "doc-1", serde_json::json!({ "n": 1 })).await;
        let took = started.elapsed();
        delay.store(0, Ordering::SeqCst);
        if atomic {
            let err = saved.expect_err("the socket timeout holds where updates are atomic");
            assert!(matches!(err, Error::Backend { retryable: true, .. }), "{err:?}");
            // Given up on by the client, the write still lands at the server.
            let deadline = Instant::now() + Duration::from_secs(60);
            while stored.find_one(mongodb::bson::doc! {}).await.expect("find").is_none() {
                assert!(Instant::now() < deadline, "the write given up on never landed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            saved.expect("a write is awaited past the socket timeout where updates are not atomic");
            assert!(took >= Duration::from_millis(1_400), "{took:?}");
            let doc = stored.find_one(mongodb::bson::doc! {}).await.expect("find");
            assert!(doc.is_some(), "the awaited write is stored");
        }
    }
}
