//! Capability detection: what the server does, probed on a scratch collection the first time
//! a process connects to it, never read from its name. See [`ServerCapabilities`] for what each
//! probe does.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cqrsx_core::Result;
use futures::future::join_all;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};

use crate::capabilities::ServerCapabilities;
use crate::client::{MongoClientManager, Tracked};
use crate::error::is_duplicate_key;

/// Increments the atomic-counter probe races at once.
const RACING_INCREMENTS: i64 = 16;

/// What this process detected, per connection string: the probes write and build indexes, so
/// they run once per server and process, not on every connect.
fn detected() -> &'static Mutex<HashMap<String, ServerCapabilities>> {
    static DETECTED: OnceLock<Mutex<HashMap<String, ServerCapabilities>>> = OnceLock::new();
    DETECTED.get_or_init(Mutex::default)
}

/// The server's capabilities: from this process's earlier detection on the same connection
/// string, else probed now.
pub(crate) async fn capabilities(client: &MongoClientManager) -> Result<ServerCapabilities> {
    let key = client.config().uri.clone();
    if let Some(known) = detected().lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(known.clone());
    }
    let caps = probe(client).await?;
    detected()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, caps.clone());
    Ok(caps)
}

/// Runs every probe on a collection of its own, dropped afterwards.
async fn probe(client: &MongoClientManager) -> Result<ServerCapabilities> {
    let admin = client.client().database("admin");
    let hello = client.track(admin.run_command(doc! { "hello": 1 })).await?;
    let build = client.track(admin.run_command(doc! { "buildInfo": 1 })).await?;
    let name = format!(
        "{}cqrsx_probe_{}",
        client.config().collection_prefix,
        cqrsx_core::Uuid::now_v7().simple()
    );
    let probe: Collection<Document> = client.database().collection(&name);
    // Before the collection exists: a real replica set opens a change stream on it all the same.
    let change_streams = client.track(probe.watch().into_future()).await.is_ok();
    client.create_collection(&name).await?;
    let caps = ServerCapabilities {
        change_streams,
        transactions: transactions(client, &probe).await,
        sessions: hello
            .get("logicalSessionTimeoutMinutes")
            .is_some_and(|v| !matches!(v, Bson::Null)),
        max_wire_version: match hello.get("maxWireVersion") {
            Some(Bson::Int32(v)) => i64::from(*v),
            Some(Bson::Int64(v)) => *v,
            _ => 0,
        },
        nested_arrays: client
            .track(probe.insert_one(doc! { "_id": "nested", "a": [[1_i32]] }).into_future())
            .await
            .is_ok(),
        unique_array_indexes: unique_array_indexes(client, &probe).await,
        indexed_queries: indexed_queries(client, &probe).await,
        atomic_counters: atomic_counters(client, &probe).await,
        ttl_indexes: client
            .create_indexes_quietly(
                &name,
                IndexModel::builder()
                    .keys(doc! { "exp": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("cqrsx_probe_ttl".to_string())
                            .expire_after(Duration::from_secs(3600))
                            .build(),
                    )
                    .build(),
            )
            .await,
        version: build.get_str("version").unwrap_or_default().to_string(),
        // FerretDB 1.x: `ferretdbVersion`; 2.x: `ferretdb: { version }`.
        ferretdb: build
            .get_str("ferretdbVersion")
            .ok()
            .or_else(|| {
                build
                    .get_document("ferretdb")
                    .ok()
                    .and_then(|f| f.get_str("version").ok())
            })
            .map(str::to_string),
    };
    if let Err(e) = client.track(probe.drop().into_future()).await {
        tracing::warn!(collection = %name, error = %e, "could not drop the capability probe's collection");
    }
    Ok(caps)
}

/// Two documents sharing an element of a uniquely indexed array field: the second is refused
/// with a duplicate key where the index holds every element.
async fn unique_array_indexes(client: &MongoClientManager, probe: &Collection<Document>) -> bool {
    let index = IndexModel::builder()
        .keys(doc! { "u": 1 })
        .options(
            // Partial, as the event store's own index over event ids is: the probe's other
            // documents have no `u`.
            IndexOptions::builder()
                .name("cqrsx_probe_u".to_string())
                .unique(true)
                .partial_filter_expression(doc! { "u": { "$exists": true } })
                .build(),
        )
        .build();
    if !client.create_indexes_quietly(probe.name(), index).await {
        return false;
    }
    if client
        .track(
            probe
                .insert_one(doc! { "_id": "u1", "u": [1_i32, 2_i32] })
                .into_future(),
        )
        .await
        .is_err()
    {
        return false;
    }
    match client
        .track_raw(
            probe
                .insert_one(doc! { "_id": "u2", "u": [2_i32, 3_i32] })
                .into_future(),
        )
        .await
    {
        Err(Tracked::Driver(e)) => is_duplicate_key(&e),
        _ => false,
    }
}

/// Whether the plan of a range query with a sort on an indexed field, hinted to the index,
/// names the index (MongoDB's `IXSCAN` stage does, as does DocumentDB's PostgreSQL plan; a
/// server that scans — FerretDB 1.x answers `SCAN <table>` — names none).
async fn indexed_queries(client: &MongoClientManager, probe: &Collection<Document>) -> bool {
    let index = IndexModel::builder()
        .keys(doc! { "k": 1 })
        .options(IndexOptions::builder().name("cqrsx_probe_k".to_string()).build())
        .build();
    if !client.create_indexes_quietly(probe.name(), index).await {
        return false;
    }
    let docs: Vec<Document> = (0..8_i32).map(|k| doc! { "_id": format!("k{k}"), "k": k }).collect();
    if client.track(probe.insert_many(docs).into_future()).await.is_err() {
        return false;
    }
    let explain = doc! {
        // Hinted: a cost-based planner may prefer a scan of so small a collection, and the
        // question is whether the server can use the index at all.
        "explain": {
            "find": probe.name(),
            "filter": { "k": { "$gte": 5_i32 } },
            "sort": { "k": 1 },
            "limit": 1,
            "hint": "cqrsx_probe_k",
        },
        "verbosity": "queryPlanner",
    };
    match client.track(client.database().run_command(explain).into_future()).await {
        Ok(mut plan) => {
            // The command's echo names the hinted index: only the plan counts.
            plan.remove("command");
            names(&Bson::Document(plan), "cqrsx_probe_k")
        }
        Err(_) => false,
    }
}

/// Whether `value` holds the string `name` anywhere.
fn names(value: &Bson, name: &str) -> bool {
    match value {
        Bson::String(s) => s == name,
        Bson::Document(d) => d.values().any(|v| names(v, name)),
        Bson::Array(a) => a.iter().any(|v| names(v, name)),
        _ => false,
    }
}

/// Increments of one counter raced at once: atomic where every increment returns a value of
/// its own and the counter ends at their number. A server that loses updates usually shows it
/// here; one whose losses the probe misses is still used correctly (racing positions collide
/// on the unique position index and reserve again), only slower.
async fn atomic_counters(client: &MongoClientManager, probe: &Collection<Document>) -> bool {
    if client
        .track(probe.insert_one(doc! { "_id": "n", "n": 0_i64 }).into_future())
        .await
        .is_err()
    {
        return false;
    }
    let increments = (0..RACING_INCREMENTS).map(|_| async {
        let updated = client
            .track(
                probe
                    .find_one_and_update(doc! { "_id": "n" }, doc! { "$inc": { "n": 1_i64 } })
                    .return_document(ReturnDocument::After)
                    .into_future(),
            )
            .await;
        match updated {
            Ok(Some(d)) => match d.get("n") {
                Some(Bson::Int64(n)) => Some(*n),
                Some(Bson::Int32(n)) => Some(i64::from(*n)),
                _ => None,
            },
            _ => None,
        }
    });
    let mut seen: Vec<Option<i64>> = join_all(increments).await;
    seen.sort_unstable();
    seen.dedup();
    let expected: Vec<Option<i64>> = (1..=RACING_INCREMENTS).map(Some).collect();
    seen == expected
}

/// One transaction committed (its insert must be there) and one aborted (its insert must not
/// be): a server that ignores transactions, or refuses `commitTransaction` (FerretDB 2 answers
/// 59 though its `hello` announces sessions and a wire version from which drivers assume
/// transactions), or refuses transaction numbers (a standalone `mongod`), has none.
async fn transactions(client: &MongoClientManager, probe: &Collection<Document>) -> bool {
    let attempt = async {
        let mut session = client.client().start_session().await?;
        session.start_transaction().await?;
        probe
            .insert_one(doc! { "_id": "tx_commit" })
            .session(&mut session)
            .await?;
        session.commit_transaction().await?;
        session.start_transaction().await?;
        probe
            .insert_one(doc! { "_id": "tx_abort" })
            .session(&mut session)
            .await?;
        session.abort_transaction().await?;
        let committed = probe.find_one(doc! { "_id": "tx_commit" }).await?.is_some();
        let aborted = probe.find_one(doc! { "_id": "tx_abort" }).await?.is_some();
        Ok::<bool, mongodb::error::Error>(committed && !aborted)
    };
    match client.track(attempt).await {
        Ok(works) => works,
        Err(e) => {
            tracing::debug!(error = %e, "no multi-document transactions");
            false
        }
    }
}
