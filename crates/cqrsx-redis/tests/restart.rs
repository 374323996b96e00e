//! A Redis killed while writers append, then started again on the same data: the client
//! reconnects, appends resume, and no acknowledged event is lost (AOF with fsync always).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};

struct Server {
    bin: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_server_loses_no_acknowledged_event() {
    let bin = std::env::var("CQRSX_TEST_REDIS_SERVER")
        .expect("CQRSX_TEST_REDIS_SERVER (a redis-server binary) is not set: run with `cargo xtask test`");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let dir = std::env::temp_dir().join(format!("cqrsx-restart-{}", common::unique_prefix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut server = Server {
        bin,
        port,
        dir,
        child: None,
    };
    server.start();

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
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
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
                            assert!(e.is_retryable(), "only retryable errors while the server restarts: {e}");
                            failures += 1;
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
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start();
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
    assert!(
        metrics.reconnects > 0 || failures > 0,
        "the restart must have been noticed (reconnects {}, failed attempts {failures})",
        metrics.reconnects
    );
}
