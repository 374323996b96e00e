//! The backend a CLI test runs on, chosen by what `cargo xtask test` provides to the group:
//! `CQRSX_TEST_REDIS_URL` (Redis standalone), `CQRSX_TEST_REDIS_CLUSTER_NODES` (the `cluster::`
//! tests), `CQRSX_TEST_MONGO_URI` (MongoDB-wire), none (the in-memory store). On a server, the
//! commands run as the real `cqrsx` binary in its own process; on the in-memory store (which
//! another process cannot see) through the library's `run`, as a service embedding it would.

use std::process::Stdio;
use std::sync::Arc;

use clap::Parser;
use cqrsx_cli::{Cli, Stores};
use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore, InMemoryReadStore, InMemorySnapshotStore};
use cqrsx_core::ReadStore;
use serde_json::Value;

/// What every test namespace starts with; `cargo xtask test` removes these afterwards.
const TEST_NAMESPACE: &str = "cqrsx_test_";

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The `--json` output of a command that succeeded.
    #[track_caller]
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A failure: the exit code, and one line on stderr naming the problem.
    #[track_caller]
    pub fn failed(&self, code: u8, mentions: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(
            self.stdout.is_empty(),
            "a failed command prints nothing on stdout: {self:?}"
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:?}");
        assert!(lines[0].starts_with("cqrsx: "), "{self:?}");
        assert!(lines[0].contains(mentions), "{self:?} should mention {mentions:?}");
        assert!(!self.stderr.contains("panicked"), "{self:?}");
    }
}

/// The stores of one test, and how the CLI reaches them.
pub struct Harness {
    pub label: &'static str,
    pub stores: Stores,
    /// The connection options naming these stores (empty on the in-memory store).
    connection: Vec<String>,
    /// `CQRSX_*` variables the binary needs beyond its options.
    env: Vec<(String, String)>,
}

fn unique() -> String {
    format!(
        "{TEST_NAMESPACE}{}",
        &cqrsx_core::Uuid::now_v7().simple().to_string()[8..]
    )
}

impl Harness {
    /// The backend this test group provides.
    pub async fn provided() -> Self {
        if let Ok(url) = std::env::var("CQRSX_TEST_REDIS_URL") {
            let config = cqrsx_redis::RedisConfig::default()
                .with_url(&url)
                .with_key_prefix(unique());
            let connection = vec!["--redis".into(), url, "--prefix".into(), config.key_prefix.clone()];
            return Self::redis(config, connection, "redis standalone").await;
        }
        if let Ok(uri) = std::env::var("CQRSX_TEST_MONGO_URI") {
            return Self::mongo(&uri).await;
        }
        Self::memory()
    }

    /// The Redis Cluster of the `cluster::` tests (8 partitions over 3 masters).
    pub async fn cluster() -> Self {
        let nodes = std::env::var("CQRSX_TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
            panic!("CQRSX_TEST_REDIS_CLUSTER_NODES is not set: run with `cargo xtask test --backend redis`")
        });
        let config = cqrsx_redis::RedisConfig::default()
            .with_cluster_nodes(nodes.split(',').map(str::to_string))
            .with_key_prefix(unique())
            .with_partitions(8);
        let connection = vec![
            "--redis-cluster".into(),
            nodes,
            "--prefix".into(),
            config.key_prefix.clone(),
            "--partitions".into(),
            "8".into(),
        ];
        Self::redis(config, connection, "redis cluster").await
    }

    async fn redis(config: cqrsx_redis::RedisConfig, connection: Vec<String>, label: &'static str) -> Self {
        use cqrsx_redis::*;
        let client = RedisClientManager::connect(config).await.expect("connect to redis");
        let reads = client.clone();
        Self {
            label,
            stores: Stores {
                events: Arc::new(RedisEventStore::new(client.clone())),
                snapshots: Arc::new(RedisSnapshotStore::new(client.clone())),
                checkpoints: Arc::new(RedisProjectionStore::new(client)),
                read_models: Box::new(move |c| {
                    Ok(Arc::new(RedisReadStore::new(reads.clone(), c)?) as Arc<dyn ReadStore>)
                }),
            },
            connection,
            env: Vec::new(),
        }
    }

    async fn mongo(uri: &str) -> Self {
        use cqrsx_mongo::*;
        let database = unique();
        let mut config = MongoConfig::default().with_uri(uri).with_database(&database);
        let mut env = Vec::new();
        if let Ok(assume) = std::env::var("CQRSX_TEST_MONGO_ASSUME") {
            config = config.with_assumed_capabilities(AssumedCapabilities::parse(&assume).expect("assume"));
            env.push(("CQRSX_MONGO_ASSUME".into(), assume));
        }
        let client = MongoClientManager::connect(config).await.expect("connect to MongoDB");
        client.initialize_event_sourcing_schema().await.expect("schema");
        let checkpoints = MongoProjectionStore::new(client.clone());
        checkpoints.initialize().await.expect("projection schema");
        let reads = client.clone();
        Self {
            label: "mongo",
            stores: Stores {
                events: Arc::new(MongoEventStore::new(client.clone())),
                snapshots: Arc::new(MongoSnapshotStore::new(client.clone())),
                checkpoints: Arc::new(checkpoints),
                read_models: Box::new(move |c| {
                    Ok(Arc::new(MongoReadStore::new(reads.clone(), c)?) as Arc<dyn ReadStore>)
                }),
            },
            connection: vec!["--mongo".into(), uri.into(), "--database".into(), database],
            env,
        }
    }

    fn memory() -> Self {
        let reads = InMemoryReadStore::new();
        Self {
            label: "memory",
            stores: Stores {
                events: Arc::new(InMemoryEventStore::new()),
                snapshots: Arc::new(InMemorySnapshotStore::new()),
                checkpoints: Arc::new(InMemoryProjectionStore::new()),
                read_models: Box::new(move |_| Ok(Arc::new(reads.clone()) as Arc<dyn ReadStore>)),
            },
            connection: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Whether commands run as the binary (on a server) rather than in-process.
    pub fn out_of_process(&self) -> bool {
        !self.connection.is_empty()
    }

    /// Runs `cqrsx ARGS` against these stores.
    pub async fn cqrsx(&self, args: &[&str]) -> Ran {
        if self.out_of_process() {
            let mut all: Vec<String> = self.connection.clone();
            all.extend(args.iter().map(|a| a.to_string()));
            binary(all, self.env.clone()).await
        } else {
            in_process(&self.stores, args).await
        }
    }
}

/// Runs the `cqrsx` binary with no `CQRSX_*` variables but `env`.
pub async fn binary(args: Vec<String>, env: Vec<(String, String)>) -> Ran {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cqrsx"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CQRSX_")) {
        command.env_remove(name);
    }
    let out = command
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run cqrsx");
    Ran {
        code: out.status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(255),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command through the library over `stores`, as the binary would print it.
async fn in_process(stores: &Stores, args: &[&str]) -> Ran {
    let cli = match Cli::try_parse_from(std::iter::once("cqrsx").chain(args.iter().copied())) {
        Ok(cli) => cli,
        Err(e) => {
            let failure = cqrsx_cli::Failure::from(&e);
            return Ran {
                code: failure.code,
                stdout: String::new(),
                stderr: format!("cqrsx: {failure}\n"),
            };
        }
    };
    let mut out = Vec::new();
    let result = cqrsx_cli::run(&cli, stores, &mut out).await;
    let (code, stderr) = match result {
        Ok(()) => (0, String::new()),
        Err(f) => (f.code, format!("cqrsx: {f}\n")),
    };
    Ran {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr,
    }
}
