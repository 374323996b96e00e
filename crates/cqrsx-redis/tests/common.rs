//! Shared test setup: the servers `cargo xtask test` provides.

#![allow(dead_code)]

use std::sync::Arc;

use cqrsx_core::testkit::Fixture;
use cqrsx_redis::{
    RedisClientManager, RedisConfig, RedisEventStore, RedisKeyStore, RedisProjectionStore, RedisReadStore,
    RedisSnapshotStore,
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
        Arc::new(RedisProjectionStore::new(client.clone())),
    )
    .with_label(label)
    .with_keys(Arc::new(RedisKeyStore::new(client)));
    // The repository cases run with the real snapshot manager, not the suite's basic strategy.
    let strategy = cqrsx_snapshot::testkit::manager_strategy(&fixture);
    fixture.with_strategy(strategy)
}

/// A `redis-server` of a test's own, on a free port, stopped when dropped. Needs the binary
/// `cargo xtask test` names in `CQRSX_TEST_REDIS_SERVER`.
pub struct LocalServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    bin: String,
    args: Vec<String>,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl LocalServer {
    /// Starts a server with these extra arguments.
    pub fn start(args: &[&str]) -> Self {
        let bin = required("CQRSX_TEST_REDIS_SERVER");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("cqrsx-local-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut server = Self {
            port,
            bin,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir,
            child: None,
        };
        server.run();
        server
    }

    /// Starts (again) the same server on the same port and data directory.
    pub fn run(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(&self.args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    /// Sends the server a signal (`STOP`, `CONT`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
