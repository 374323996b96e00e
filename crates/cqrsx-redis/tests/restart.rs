//! A Redis killed while writers append, then started again on the same data: the client
//! reconnects, appends resume, and no acknowledged event is lost (AOF with fsync always).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_server_loses_no_acknowledged_event() {
    let mut server = common::LocalServer::start(&["--appendonly", "yes", "--appendfsync", "always", "--save", ""]);
    let port = server.port;

    let config = RedisConfig::default()
        .with_host("127.0.0.1", port)
        .with_key_prefix(common::unique_prefix())
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5), Duration::from_secs(5))
        // One call in flight per partition: appends that meet a call in flight (as they all do
        // while the server is down) go grouped, so the restart also breaks grouped calls, whose
        // every append must come back retryable.
        .with_append_concurrency(1);
    let client = RedisClientManager::connect(config).await.expect("connect");
    let durability = client.durability().await.expect("durability");
    assert!(durability.aof, "this server runs with AOF");
    let store = Arc::new(RedisEventStore::new(client.clone()));

    const WRITERS: usize = 4;
    const ROUNDS: u64 = 150;
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, failed) = (Arc::clone(&store), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new("Restart", format!("w{w}")).expect("stream");
            let mut failures = 0u32;
            for round in 0..ROUNDS {
                let events: Vec<NewEvent> = (0..2)
                    .map(|i| NewEvent::json("Tick", &serde_json::json!({"round": round, "i": i})).expect("json"))
                    .collect();
                // A retry re-sends the same event ids with the same expected version: if the
                // first attempt committed before the connection dropped, the retry is a no-op.
                loop {
                    match store
                        .append(&stream, ExpectedVersion::Exact(round * 2), events.clone())
                        .await
                    {
                        Ok(result) => {
                            assert_eq!(result.version, round * 2 + 2);
                            break;
                        }
                        Err(e) => {
                            // While the server is down an append fails as a retryable backend
                            // error (lost connection, timeout), nothing else.
                            assert!(
                                matches!(e, Error::Backend { retryable: true, .. }),
                                "only retryable backend errors while the server restarts: {e:?}"
                            );
                            failures += 1;
                            failed.fetch_add(1, Ordering::SeqCst);
                            assert!(failures < 500, "the client never recovered: {e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }));
    }
    // Kill the server once every writer has appended, start it again once appends failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for w in 0..WRITERS {
        let stream = StreamId::new("Restart", format!("w{w}")).expect("stream");
        while store.stream_version(&stream).await.expect("version") < 4 {
            assert!(tokio::time::Instant::now() < deadline, "writer {w} never appended");
            tokio::task::yield_now().await;
        }
    }
    server.kill();
    while failed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no append failed while the server was down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.run();
    let mut failures = 0;
    for t in tasks {
        failures += t.await.expect("writer");
    }

    for w in 0..WRITERS {
        let stream = StreamId::new("Restart", format!("w{w}")).expect("stream");
        let events = store.read_stream(&stream, 1, usize::MAX).await.expect("read");
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=ROUNDS * 2).collect::<Vec<_>>(),
            "writer {w}: every acknowledged event, once"
        );
    }
    let metrics = client.metrics();
    assert!(failures > 0, "appends failed while the server was down");
    assert!(metrics.reconnects > 0, "the pool reconnected on its own: {metrics:?}");
}
