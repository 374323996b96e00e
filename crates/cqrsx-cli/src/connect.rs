//! Connecting the stores the options (or the `CQRSX_*` environment) name. Connecting writes
//! nothing: no schema, no indexes — the CLI reads a store its service set up.

use std::sync::Arc;

use crate::args::Connection;
use crate::{Failure, Stores};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Which backend the connection names.
enum Backend {
    Redis,
    Mongo,
}

fn backend(c: &Connection) -> Result<Backend, Failure> {
    let redis = c.redis.is_some() || c.redis_cluster.is_some();
    match (redis, c.mongo.is_some()) {
        (true, true) => Err(Failure::usage("name one store: --redis or --mongo, not both")),
        (true, false) => Ok(Backend::Redis),
        (false, true) => Ok(Backend::Mongo),
        (false, false) => {
            let redis = env("CQRSX_REDIS_URL").is_some() || env("CQRSX_REDIS_CLUSTER_NODES").is_some();
            match (redis, env("CQRSX_MONGO_URI").is_some()) {
                (true, false) => Ok(Backend::Redis),
                (false, true) => Ok(Backend::Mongo),
                (true, true) => Err(Failure::usage(
                    "both CQRSX_REDIS_URL and CQRSX_MONGO_URI are set: choose with --redis URL or --mongo URI",
                )),
                (false, false) => Err(Failure::usage(
                    "name a store: --redis URL or --mongo URI (or set CQRSX_REDIS_URL / CQRSX_MONGO_URI)",
                )),
            }
        }
    }
}

/// Connects the stores of the backend the options (else the environment) name.
pub async fn connect(c: &Connection) -> Result<Stores, Failure> {
    match backend(c)? {
        Backend::Redis => redis(c).await,
        Backend::Mongo => mongo(c).await,
    }
}

/// The environment, less the variables an option given on the command line overrides (so a
/// broken variable does not fail a command that does not use it).
fn lookup(overridden: Vec<&'static str>) -> impl Fn(&str) -> Option<String> {
    move |name: &str| (!overridden.contains(&name)).then(|| env(name)).flatten()
}

#[cfg(feature = "redis")]
async fn redis(c: &Connection) -> Result<Stores, Failure> {
    use cqrsx_redis::{
        RedisClientManager, RedisConfig, RedisEventStore, RedisProjectionStore, RedisReadStore, RedisSnapshotStore,
    };
    let hint = |e| {
        Failure::connecting(
            e,
            "--redis / --redis-cluster / --prefix / --partitions or CQRSX_REDIS_*",
        )
    };
    if c.database.is_some() {
        return Err(Failure::usage("--database is a MongoDB option; Redis takes --prefix"));
    }
    if c.redis.is_some() && c.redis_cluster.is_some() {
        return Err(Failure::usage(
            "name one Redis: --redis URL or --redis-cluster NODES, not both",
        ));
    }
    let mut overridden = Vec::new();
    if c.redis.is_some() || c.redis_cluster.is_some() {
        overridden.extend(["CQRSX_REDIS_URL", "CQRSX_REDIS_CLUSTER_NODES"]);
    } else if env("CQRSX_REDIS_URL").is_some() && env("CQRSX_REDIS_CLUSTER_NODES").is_some() {
        return Err(Failure::usage(
            "both CQRSX_REDIS_URL and CQRSX_REDIS_CLUSTER_NODES are set: choose with --redis or --redis-cluster",
        ));
    }
    if c.prefix.is_some() {
        overridden.push("CQRSX_REDIS_PREFIX");
    }
    if c.partitions.is_some() {
        overridden.push("CQRSX_REDIS_PARTITIONS");
    }
    let mut config = RedisConfig::from_lookup(lookup(overridden)).map_err(hint)?;
    if let Some(url) = &c.redis {
        config = config.with_url(url.as_str());
    }
    if let Some(nodes) = &c.redis_cluster {
        let nodes: Vec<&str> = nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        if nodes.is_empty() {
            return Err(Failure::usage(
                "--redis-cluster names no node: give host:port,host:port",
            ));
        }
        config = config.with_cluster_nodes(nodes);
    }
    if let Some(prefix) = &c.prefix {
        config = config.with_key_prefix(prefix.as_str());
    }
    if let Some(partitions) = c.partitions {
        config = config.with_partitions(partitions);
    }
    config.validate().map_err(hint)?;
    let client = RedisClientManager::connect(config).await.map_err(hint)?;
    let events = RedisEventStore::new(client.clone());
    events.check_partitions().await.map_err(hint)?;
    let reads = client.clone();
    Ok(Stores {
        events: Arc::new(events),
        snapshots: Arc::new(RedisSnapshotStore::new(client.clone())),
        checkpoints: Arc::new(RedisProjectionStore::new(client)),
        read_models: Box::new(move |collection| {
            Ok(Arc::new(RedisReadStore::new(reads.clone(), collection)?) as Arc<dyn cqrsx_core::ReadStore>)
        }),
    })
}

#[cfg(not(feature = "redis"))]
async fn redis(_: &Connection) -> Result<Stores, Failure> {
    Err(Failure::usage("this cqrsx was built without Redis (feature `redis`)"))
}

/// Whether `database` exists on the server (`None` when the server does not say: no rights
/// to list databases, or not reachable, which connecting then reports). Asked before
/// connecting, because connecting probes the server in a scratch collection, and that would
/// create a database a typo named.
#[cfg(feature = "mongo")]
async fn database_exists(config: &cqrsx_mongo::MongoConfig) -> Option<bool> {
    let mut options = mongodb::options::ClientOptions::parse(&config.uri).await.ok()?;
    options.server_selection_timeout = Some(config.connect_timeout);
    options.connect_timeout = Some(config.connect_timeout);
    let client = mongodb::Client::with_options(options).ok()?;
    let names = client.list_database_names().await.ok()?;
    Some(names.contains(&config.database))
}

#[cfg(feature = "mongo")]
async fn mongo(c: &Connection) -> Result<Stores, Failure> {
    use cqrsx_mongo::{
        MongoClientManager, MongoConfig, MongoEventStore, MongoProjectionStore, MongoReadStore, MongoSnapshotStore,
    };
    let hint = |e| Failure::connecting(e, "--mongo / --database / --prefix or CQRSX_MONGO_*");
    if c.partitions.is_some() {
        return Err(Failure::usage("--partitions is a Redis option; MongoDB has one log"));
    }
    let mut overridden = Vec::new();
    for (given, name) in [
        (c.mongo.is_some(), "CQRSX_MONGO_URI"),
        (c.database.is_some(), "CQRSX_MONGO_DATABASE"),
        (c.prefix.is_some(), "CQRSX_MONGO_PREFIX"),
    ] {
        if given {
            overridden.push(name);
        }
    }
    let mut config = MongoConfig::from_lookup(lookup(overridden)).map_err(hint)?;
    if let Some(uri) = &c.mongo {
        config = config.with_uri(uri.as_str());
    }
    if let Some(database) = &c.database {
        config = config.with_database(database.as_str());
    }
    if let Some(prefix) = &c.prefix {
        config = config.with_collection_prefix(prefix.as_str());
    }
    config.validate().map_err(hint)?;
    if database_exists(&config).await == Some(false) {
        return Err(Failure::not_found(format!(
            "no database {} on this server (check --database or CQRSX_MONGO_DATABASE)",
            config.database
        )));
    }
    let client = MongoClientManager::connect(config).await.map_err(hint)?;
    let reads = client.clone();
    Ok(Stores {
        events: Arc::new(MongoEventStore::new(client.clone())),
        snapshots: Arc::new(MongoSnapshotStore::new(client.clone())),
        checkpoints: Arc::new(MongoProjectionStore::new(client)),
        read_models: Box::new(move |collection| {
            Ok(Arc::new(MongoReadStore::new(reads.clone(), collection)?) as Arc<dyn cqrsx_core::ReadStore>)
        }),
    })
}

#[cfg(not(feature = "mongo"))]
async fn mongo(_: &Connection) -> Result<Stores, Failure> {
    Err(Failure::usage("this cqrsx was built without MongoDB (feature `mongo`)"))
}
