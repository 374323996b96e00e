//! The stores an example runs on, chosen with `--backend memory|redis|mongo` or the
//! `CQRSX_EXAMPLE_BACKEND` variable (default: memory). Redis and MongoDB are compiled in with the
//! example's `redis` / `mongo` features and configured from the environment
//! (`CQRSX_REDIS_URL`, `CQRSX_MONGO_URI`, …).

use std::sync::Arc;

/// The README's code blocks, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

use cqrsx_core::crypto::KeyStore;
use cqrsx_core::{ContentType, Error, EventStore, ProjectionStore, ReadStore, Result, SnapshotStore};

/// The stores of one backend.
pub struct Stores {
    /// Which backend answered.
    pub name: &'static str,
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// A read store for collection `collection`.
    pub reads: Arc<dyn ReadStore>,
    /// Projection state: checkpoints, leases, views.
    pub checkpoints: Arc<dyn ProjectionStore>,
    /// Per-subject data keys (crypto-shredding, `cqrsx_core::crypto`).
    pub keys: Arc<dyn KeyStore>,
    /// The payload encoding the backend's config asks for.
    pub content_type: ContentType,
    /// The `cqrsx` command line's options that reach these stores (`None` in memory, which
    /// another process cannot see).
    pub cli: Option<String>,
}

/// The backend named by `--backend NAME` in the arguments or `CQRSX_EXAMPLE_BACKEND`.
pub fn requested() -> String {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--backend=").map(str::to_string))
        });
    from_args
        .or_else(|| std::env::var("CQRSX_EXAMPLE_BACKEND").ok())
        .unwrap_or_else(|| "memory".into())
}

/// A server URL without its credentials (`redis://:…@host` → `redis://…@host`).
#[cfg(any(feature = "redis", feature = "mongo"))]
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}…{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Connects the requested backend; `collection` names the read-model collection.
pub async fn connect(collection: &str) -> Result<Stores> {
    open(collection, None).await
}

/// Like [`connect`], but on a server under a namespace of this run's own (a key prefix or a
/// database named after `run`), so that earlier runs' events and views are not seen.
pub async fn connect_fresh(collection: &str, run: &str) -> Result<Stores> {
    open(collection, Some(run)).await
}

async fn open(collection: &str, fresh: Option<&str>) -> Result<Stores> {
    match requested().as_str() {
        "memory" => Ok(Stores {
            name: "in-memory",
            events: Arc::new(cqrsx_core::memory::InMemoryEventStore::new()),
            snapshots: Arc::new(cqrsx_core::memory::InMemorySnapshotStore::new()),
            reads: Arc::new(cqrsx_core::memory::InMemoryReadStore::new()),
            checkpoints: Arc::new(cqrsx_core::memory::InMemoryProjectionStore::new()),
            keys: Arc::new(cqrsx_core::crypto::InMemoryKeyStore::new()),
            content_type: ContentType::Json,
            cli: None,
        }),
        "redis" => redis(collection, fresh).await,
        "mongo" => mongo(collection, fresh).await,
        other => Err(Error::Config(format!(
            "unknown backend {other:?}: use memory, redis or mongo"
        ))),
    }
}

#[cfg(feature = "redis")]
async fn redis(collection: &str, fresh: Option<&str>) -> Result<Stores> {
    use cqrsx_redis::{
        RedisClientManager, RedisConfig, RedisEventStore, RedisProjectionStore, RedisReadStore, RedisSnapshotStore,
    };
    let mut config = RedisConfig::from_env()?;
    if let Some(run) = fresh {
        config.key_prefix = format!("{}-{run}", config.key_prefix);
    }
    let cli = match config.cluster_nodes.is_empty() {
        true => {
            let url = config
                .url
                .clone()
                .unwrap_or_else(|| format!("redis://{}:{}/{}", config.host, config.port, config.database));
            format!("--redis {} --prefix {}", redacted(&url), config.key_prefix)
        }
        false => format!(
            "--redis-cluster {} --prefix {}",
            config.cluster_nodes.join(","),
            config.key_prefix
        ),
    };
    let cli = format!("{cli} --partitions {}", config.partitions);
    let client = RedisClientManager::connect(config).await?;
    Ok(Stores {
        name: "redis",
        cli: Some(cli),
        events: Arc::new(RedisEventStore::new(client.clone())),
        snapshots: Arc::new(RedisSnapshotStore::new(client.clone())),
        reads: Arc::new(RedisReadStore::new(client.clone(), collection)?),
        checkpoints: Arc::new(RedisProjectionStore::new(client.clone())),
        keys: Arc::new(cqrsx_redis::RedisKeyStore::new(client.clone())),
        content_type: client.config().content_type,
    })
}

#[cfg(not(feature = "redis"))]
async fn redis(_collection: &str, _fresh: Option<&str>) -> Result<Stores> {
    Err(Error::Config(
        "this example was built without Redis: add `--features redis`".into(),
    ))
}

#[cfg(feature = "mongo")]
async fn mongo(collection: &str, fresh: Option<&str>) -> Result<Stores> {
    use cqrsx_mongo::{
        MongoClientManager, MongoConfig, MongoEventStore, MongoProjectionStore, MongoReadStore, MongoSnapshotStore,
    };
    let mut config = MongoConfig::from_env()?;
    if let Some(run) = fresh {
        config.database = format!("{}_{run}", config.database);
    }
    let mut cli = format!("--mongo {} --database {}", redacted(&config.uri), config.database);
    if !config.collection_prefix.is_empty() {
        cli.push_str(&format!(" --prefix {}", config.collection_prefix));
    }
    let client = MongoClientManager::connect(config).await?;
    client.initialize_event_sourcing_schema().await?;
    let checkpoints = MongoProjectionStore::new(client.clone());
    checkpoints.initialize().await?;
    Ok(Stores {
        name: "mongo",
        cli: Some(cli),
        events: Arc::new(MongoEventStore::new(client.clone())),
        snapshots: Arc::new(MongoSnapshotStore::new(client.clone())),
        reads: Arc::new(MongoReadStore::new(client.clone(), collection)?),
        checkpoints: Arc::new(checkpoints),
        keys: Arc::new(cqrsx_mongo::MongoKeyStore::new(client.clone())),
        content_type: client.config().content_type,
    })
}

#[cfg(not(feature = "mongo"))]
async fn mongo(_collection: &str, _fresh: Option<&str>) -> Result<Stores> {
    Err(Error::Config(
        "this example was built without MongoDB: add `--features mongo`".into(),
    ))
}
