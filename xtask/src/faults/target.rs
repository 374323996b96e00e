//! What the fault suite runs against: a backend's address and layout (passed to the worker
//! processes as JSON), its stores, and raw reads of a projection's state that go around the
//! library's own read paths.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::{Checkpoint, EventStore, ProjectionStore};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cmd::Result;

/// A backend as the fault suite uses it; every scenario gets a fresh namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Target {
    /// A standalone Redis.
    Redis {
        url: String,
        partitions: u32,
        prefix: String,
    },
    /// A Redis Cluster.
    Cluster {
        nodes: String,
        partitions: u32,
        prefix: String,
    },
    /// A MongoDB-wire server.
    Mongo { uri: String, database: String },
}

/// The stores of a target, and raw access to what they wrote.
pub struct Stores {
    pub events: Arc<dyn EventStore>,
    pub checkpoints: Arc<dyn ProjectionStore>,
    pub raw: Raw,
}

/// Direct access to the server, for reads that do not go through the code under test.
pub enum Raw {
    Redis {
        client: fred::clients::Client,
        prefix: String,
    },
    Mongo {
        database: mongodb::Database,
    },
}

impl Target {
    /// The same server under a fresh namespace.
    pub fn fresh(&self, label: &str) -> Target {
        let id = &cqrsx_core::Uuid::now_v7().simple().to_string()[12..];
        match self {
            Target::Redis { url, partitions, .. } => Target::Redis {
                url: url.clone(),
                partitions: *partitions,
                prefix: format!("cqrsx_test_fault_{label}_{id}"),
            },
            Target::Cluster { nodes, partitions, .. } => Target::Cluster {
                nodes: nodes.clone(),
                partitions: *partitions,
                prefix: format!("cqrsx_test_fault_{label}_{id}"),
            },
            Target::Mongo { uri, .. } => Target::Mongo {
                uri: uri.clone(),
                database: format!("cqrsx_test_fault_{label}_{id}"),
            },
        }
    }

    /// The same target with `partitions` partitions (Redis).
    pub fn with_partitions(&self, partitions: u32) -> Target {
        match self.clone() {
            Target::Redis { url, prefix, .. } => Target::Redis {
                url,
                partitions,
                prefix,
            },
            Target::Cluster { nodes, prefix, .. } => Target::Cluster {
                nodes,
                partitions,
                prefix,
            },
            other => other,
        }
    }

    /// The stores, connecting again until the server answers (it may be restarting) for at most
    /// `within`.
    pub async fn connect(&self, within: Duration) -> Result<Stores> {
        let deadline = Instant::now() + within;
        loop {
            match self.try_connect().await {
                Ok(stores) => return Ok(stores),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("cannot connect to {self:?}: {e}")),
            }
        }
    }

    async fn try_connect(&self) -> Result<Stores> {
        match self {
            Target::Redis { .. } | Target::Cluster { .. } => {
                use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore, RedisProjectionStore};
                let (config, prefix) = match self {
                    Target::Redis {
                        url,
                        partitions,
                        prefix,
                    } => (
                        RedisConfig::default()
                            .with_url(url)
                            .with_partitions(*partitions)
                            .with_key_prefix(prefix),
                        prefix,
                    ),
                    Target::Cluster {
                        nodes,
                        partitions,
                        prefix,
                    } => (
                        RedisConfig::default()
                            .with_cluster_nodes(nodes.split(',').map(str::to_string))
                            .with_partitions(*partitions)
                            .with_key_prefix(prefix),
                        prefix,
                    ),
                    Target::Mongo { .. } => unreachable!("matched above"),
                };
                // Short timeouts, as a service that wants to notice an outage would set: a
                // command to a server that is down fails after a second instead of ten.
                let second = Duration::from_secs(1);
                let client =
                    RedisClientManager::connect(config.with_pool_size(4).with_timeouts(second, second, second))
                        .await
                        .map_err(|e| e.to_string())?;
                Ok(Stores {
                    events: Arc::new(RedisEventStore::new(client.clone())),
                    checkpoints: Arc::new(RedisProjectionStore::new(client.clone())),
                    raw: Raw::Redis {
                        client: client.client().clone(),
                        prefix: prefix.clone(),
                    },
                })
            }
            Target::Mongo { uri, database } => {
                use cqrsx_mongo::{MongoClientManager, MongoConfig, MongoEventStore, MongoProjectionStore};
                let config = MongoConfig::default()
                    .with_uri(uri)
                    .with_database(database)
                    .with_gap_timeout(Duration::from_millis(500))
                    .with_timeouts(Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(2));
                let client = MongoClientManager::connect(config).await.map_err(|e| e.to_string())?;
                client
                    .initialize_event_sourcing_schema()
                    .await
                    .map_err(|e| e.to_string())?;
                let checkpoints = MongoProjectionStore::new(client.clone());
                checkpoints.initialize().await.map_err(|e| e.to_string())?;
                Ok(Stores {
                    events: Arc::new(MongoEventStore::new(client.clone())),
                    checkpoints: Arc::new(checkpoints),
                    raw: Raw::Mongo {
                        database: client.database().clone(),
                    },
                })
            }
        }
    }
}

const SEP: char = '\u{1f}';

impl Raw {
    fn redis_key(prefix: &str, projection: &str, what: &str) -> String {
        format!("{{{prefix}:pj:{projection}}}:{what}")
    }

    /// The view's live documents, read from the server's own structures.
    pub async fn view(&self, projection: &str) -> Result<BTreeMap<String, Value>> {
        match self {
            Raw::Redis { client, prefix } => {
                use fred::prelude::*;
                let docs: std::collections::HashMap<String, String> = client
                    .hgetall(Self::redis_key(prefix, projection, "v1:docs"))
                    .await
                    .map_err(|e| format!("raw view: {e}"))?;
                docs.into_iter()
                    .map(|(id, json)| {
                        serde_json::from_str(&json)
                            .map(|v| (id.clone(), v))
                            .map_err(|e| format!("raw view document {id}: {e}"))
                    })
                    .collect()
            }
            Raw::Mongo { database } => {
                let docs: Vec<Document> = database
                    .collection::<Document>(&format!("view_{projection}_v1"))
                    .find(doc! { "_del": { "$ne": true } })
                    .await
                    .map_err(|e| format!("raw view: {e}"))?
                    .try_collect()
                    .await
                    .map_err(|e| format!("raw view: {e}"))?;
                docs.into_iter()
                    .map(|d| {
                        let id = d
                            .get_str("_id")
                            .map_err(|_| "a raw view document without an id".to_string())?;
                        let data = d
                            .get_document("d")
                            .map_err(|_| format!("raw view document {id} without data"))?;
                        Ok((id.to_string(), Bson::Document(data.clone()).into_relaxed_extjson()))
                    })
                    .collect()
            }
        }
    }

    /// The stored checkpoint.
    pub async fn checkpoint(&self, projection: &str) -> Result<Option<Checkpoint>> {
        let stored: Option<String> = match self {
            Raw::Redis { client, prefix } => {
                use fred::prelude::*;
                client
                    .get(Self::redis_key(prefix, projection, "cp:1"))
                    .await
                    .map_err(|e| format!("raw checkpoint: {e}"))?
            }
            Raw::Mongo { database } => database
                .collection::<Document>("projections")
                .find_one(doc! { "_id": format!("cp{SEP}{projection}{SEP}1") })
                .await
                .map_err(|e| format!("raw checkpoint: {e}"))?
                .and_then(|d| d.get_str("cp").ok().map(str::to_string)),
        };
        stored
            .map(|s| s.parse().map_err(|e| format!("raw checkpoint {s:?}: {e}")))
            .transpose()
    }

    /// The parked events' positions (`partition:offset`) and their stored records.
    pub async fn parked(&self, projection: &str) -> Result<BTreeMap<String, Value>> {
        match self {
            Raw::Redis { client, prefix } => {
                use fred::prelude::*;
                let parked: std::collections::HashMap<String, String> = client
                    .hgetall(Self::redis_key(prefix, projection, "dl:1"))
                    .await
                    .map_err(|e| format!("raw dead letters: {e}"))?;
                parked
                    .into_iter()
                    .map(|(p, json)| Ok((p, serde_json::from_str(&json).map_err(|e| e.to_string())?)))
                    .collect()
            }
            Raw::Mongo { database } => {
                let docs: Vec<Document> = database
                    .collection::<Document>("projections")
                    .find(doc! { "kind": "parked", "p": projection, "live": true })
                    .await
                    .map_err(|e| format!("raw dead letters: {e}"))?
                    .try_collect()
                    .await
                    .map_err(|e| format!("raw dead letters: {e}"))?;
                Ok(docs
                    .into_iter()
                    .filter_map(|d| {
                        let id = d.get_str("_id").ok()?.rsplit(SEP).next()?.to_string();
                        Some((id, Bson::Document(d).into_relaxed_extjson()))
                    })
                    .collect())
            }
        }
    }

    /// Everything stored for a projection (its view, checkpoint, dead letters, leases and
    /// log), in one canonical text: two snapshots differ exactly when something was written.
    pub async fn snapshot(&self, projection: &str) -> Result<String> {
        match self {
            Raw::Redis { client, prefix } => {
                use fred::prelude::*;
                let key = |what: &str| Self::redis_key(prefix, projection, what);
                let docs: BTreeMap<String, String> = client.hgetall(key("v1:docs")).await.map_err(|e| e.to_string())?;
                let ids: Vec<(String, f64)> = client
                    .zrange(key("v1:ids"), 0, -1, None, false, None, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let parked: BTreeMap<String, String> = client.hgetall(key("dl:1")).await.map_err(|e| e.to_string())?;
                let cp: Option<String> = client.get(key("cp:1")).await.map_err(|e| e.to_string())?;
                let token: Option<String> = client.get(key("token:1")).await.map_err(|e| e.to_string())?;
                let active: Option<String> = client.get(key("active")).await.map_err(|e| e.to_string())?;
                Ok(format!("{docs:?}\n{ids:?}\n{parked:?}\n{cp:?}\n{token:?}\n{active:?}"))
            }
            Raw::Mongo { database } => {
                let mut out = String::new();
                let state: Vec<Document> = database
                    .collection::<Document>("projections")
                    .find(doc! { "$or": [ { "p": projection }, { "_id": { "$regex": format!("^[a-z]+{SEP}{projection}{SEP}") } } ] })
                    .sort(doc! { "_id": 1 })
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                let view: Vec<Document> = database
                    .collection::<Document>(&format!("view_{projection}_v1"))
                    .find(doc! {})
                    .sort(doc! { "_id": 1 })
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                for d in state.into_iter().chain(view) {
                    out.push_str(&Bson::Document(d).into_canonical_extjson().to_string());
                    out.push('\n');
                }
                Ok(out)
            }
        }
    }
}
