//! MongoDB rows: our store against raw driver writes on the same server — an `insert_one` of
//! the very commit document ours stores, into a collection with the same unique indexes (the
//! checks: version slot, position, event ids), and the per-event inserts of the same events —
//! and raw finds with the same decoding; and what calls cost in server commands and
//! sequential round trips, and bytes stored per event (`collStats`). On FerretDB 2 +
//! DocumentDB (the default server here, an index-backed engine) the times mean something; on
//! FerretDB 1.x (SQLite) they grow with each collection.

use std::sync::Arc;

use cqrsx_core::query::Op;
use cqrsx_core::testkit::Counter;
use cqrsx_core::{EventStore, ExpectedVersion, Filter, NewEvent, Query, ReadStore, Repository, StreamId};
use cqrsx_mongo::{
    AssumedCapabilities, CommandCount, MongoClientManager, MongoConfig, MongoEventStore, MongoProjectionStore,
    MongoReadStore, MongoSnapshotStore,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::store::{decode_raw, Subject};
use super::{keep, median, time, BenchRow, Fact, Scale, Section};
mod baselines;

use crate::cmd::Result;
use baselines::{RawCheckedCommit, RawCommit, RawInsert};

/// Bytes a collection takes per stored event: its data size and its indexes, by `collStats`.
async fn bytes_per_event(db: &mongodb::Database, collection: &str, events: u64) -> Result<(f64, f64)> {
    let stats = db
        .run_command(doc! { "collStats": collection })
        .await
        .map_err(|e| format!("collStats {collection}: {e}"))?;
    let number = |key: &str| match stats.get(key) {
        Some(Bson::Int32(v)) => f64::from(*v),
        Some(Bson::Int64(v)) => *v as f64,
        Some(Bson::Double(v)) => *v,
        _ => 0.0,
    };
    let events = events.max(1) as f64;
    Ok((number("size") / events, number("totalIndexSize") / events))
}

pub(super) fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The least round trips over `attempts` calls (a busy machine only makes commands sent
/// together look sequential), and the commands of the last.
async fn least_cost<F, Fut>(client: &MongoClientManager, attempts: u64, mut call: F) -> Result<CommandCount>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut least: Option<CommandCount> = None;
    for attempt in 0..attempts {
        let before = client.commands();
        call(attempt).await?;
        let cost = client.commands() - before;
        if least.is_none_or(|l| cost.round_trips < l.round_trips) {
            least = Some(cost);
        }
    }
    least.ok_or_else(|| "no attempts".into())
}

fn trips(c: CommandCount) -> String {
    format!("{} commands, {} round trips", c.commands, c.round_trips)
}

/// Server commands and sequential round trips per uncontended append of each kind.
async fn append_facts(
    client: &MongoClientManager,
    store: &MongoEventStore,
    run_id: &str,
    path: &str,
    facts: &mut Vec<Fact>,
) -> Result<()> {
    let run_id = &format!("{run_id}-{}", path.len());
    let stream = StreamId::new("BenchTrips", run_id).map_err(error)?;
    let one = |v: u64| NewEvent::json("Tick", &v).map_err(error);
    // Warm up: the counter document and the pool's connections.
    for v in 0..4 {
        store
            .append(&stream, ExpectedVersion::Exact(v), vec![one(v)?])
            .await
            .map_err(error)?;
    }
    let exact = least_cost(client, 10, |a| {
        let stream = stream.clone();
        async move {
            store
                .append(&stream, ExpectedVersion::Exact(4 + a), vec![one(a)?])
                .await
                .map_err(error)?;
            Ok(())
        }
    })
    .await?;
    let any = least_cost(client, 10, |a| {
        let stream = stream.clone();
        async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![one(a)?])
                .await
                .map_err(error)?;
            Ok(())
        }
    })
    .await?;
    let fresh = least_cost(client, 10, |a| async move {
        let stream = StreamId::new("BenchTrips", format!("{run_id}-new{a}")).map_err(error)?;
        store
            .append(&stream, ExpectedVersion::NoStream, vec![one(a)?])
            .await
            .map_err(error)?;
        Ok(())
    })
    .await?;
    let raw = "1 command, 1 round trip";
    for (kind, cost) in [("Exact", exact), ("Any", any), ("NoStream", fresh)] {
        facts.push(Fact::new(
            "mongo",
            format!("append {kind}, uncontended, {path}"),
            trips(cost),
            "insert_one",
            raw,
            "least round trips of 10",
        ));
    }
    Ok(())
}

/// Loading the large aggregate: commands, and its time against one raw `find` of the same
/// commit documents.
async fn load_facts(
    client: &MongoClientManager,
    store: &Arc<MongoEventStore>,
    run_id: &str,
    scale: Scale,
    rows: &mut Vec<BenchRow>,
    facts: &mut Vec<Fact>,
) -> Result<()> {
    let id = format!("{run_id}-load-{}", scale.large_aggregate);
    let size = scale.large_aggregate;
    let events: Arc<dyn EventStore> = store.clone();
    let repo = Repository::<Counter>::new(events);
    let commits = client
        .database()
        .collection::<Document>(&client.config().events_collection());
    let key = StreamId::new(<Counter as cqrsx_core::Aggregate>::TYPE, &id).map_err(error)?;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut cost = None;
    for _ in 0..scale.repeats {
        let before = client.commands();
        ours.push(
            time(1, async {
                let root = repo.load(&id).await.map_err(error)?;
                if root.version() < scale.large_aggregate as u64 {
                    return Err(format!("loaded version {}", root.version()));
                }
                Ok(())
            })
            .await?,
        );
        cost = Some(client.commands() - before);
        raw.push(
            time(1, async {
                let docs: Vec<Document> = commits
                    .find(doc! { "stream": key.key() })
                    .sort(doc! { "v0": 1 })
                    .await
                    .map_err(error)?
                    .try_collect()
                    .await
                    .map_err(error)?;
                // Each event decoded into the aggregate's event type, as a load does.
                let mut decoded = 0;
                for commit in &docs {
                    for event in commit.get_array("events").map_err(error)? {
                        let event = event.as_document().ok_or("an event is not a document")?;
                        let payload = match event.get("p") {
                            Some(p) => serde_json::to_vec(&p.clone().into_relaxed_extjson()).map_err(error)?,
                            None => event.get_binary_generic("pb").map_err(error)?.clone(),
                        };
                        decode_raw(event.get_str("t").map_err(error)?, &payload)?;
                        decoded += 1;
                    }
                }
                if decoded < size {
                    return Err(format!("the raw find decoded {decoded} of {size} events"));
                }
                Ok(())
            })
            .await?,
        );
    }
    keep(
        rows,
        BenchRow::new(
            "mongo",
            format!("load {size}-event aggregate, replay"),
            median(ours),
            "raw find of its commit documents + decode",
            median(raw),
        )
        .note("target ≥ 0.8"),
    );
    if let Some(cost) = cost {
        facts.push(Fact::new(
            "mongo",
            format!("load {size}-event aggregate"),
            format!(
                "{} queries + {} getMores",
                cost.commands - cost.get_mores,
                cost.get_mores
            ),
            "one find",
            "1 query + getMores",
            "",
        ));
    }
    Ok(())
}

/// A top-10 sorted query and a count over read models: commands, documents returned, and
/// time against a raw `find` with the same sort and limit.
async fn read_model_rows(
    client: &MongoClientManager,
    models: usize,
    rows: &mut Vec<BenchRow>,
    facts: &mut Vec<Fact>,
) -> Result<()> {
    let store = MongoReadStore::new(client.clone(), "benchrm").map_err(error)?;
    store.initialize().await.map_err(error)?;
    for chunk in (0..models).collect::<Vec<_>>().chunks(500) {
        let docs = chunk
            .iter()
            .map(|i| cqrsx_core::Document {
                id: format!("m{i}"),
                data: serde_json::json!({ "score": (i * 7_919) % 1_000_003, "name": format!("model {i}") }),
            })
            .collect();
        store.save_many(docs).await.map_err(error)?;
    }
    let top = Query::all().sort_desc("score").page(0, 10);
    let raw = client
        .database()
        .collection::<Document>(&client.config().read_model_collection("benchrm"));
    let queries = 50;
    let before = client.commands();
    let first = store.query(&top).await.map_err(error)?;
    let cost = client.commands() - before;
    let ours = time(queries, async {
        for _ in 0..queries {
            store.query(&top).await.map_err(error)?;
        }
        Ok(())
    })
    .await?;
    let base = time(queries, async {
        for _ in 0..queries {
            let docs: Vec<Document> = raw
                .find(doc! {})
                .sort(doc! { "d.score": -1 })
                .limit(10)
                .await
                .map_err(error)?
                .try_collect()
                .await
                .map_err(error)?;
            if docs.len() != 10 {
                return Err(format!("the raw find returned {} documents", docs.len()));
            }
        }
        Ok(())
    })
    .await?;
    keep(
        rows,
        BenchRow::new(
            "mongo",
            format!("read-model top 10 by a field, {models} models"),
            ours,
            "raw find, same sort and limit",
            base,
        ),
    );
    facts.push(Fact::new(
        "mongo",
        format!("read-model top 10 of {models}"),
        format!("{}; {} documents returned", trips(cost), first.len()),
        "raw find",
        "1 command, 10 documents",
        "",
    ));
    let range = [Filter::new("score", Op::Gte, 500_000)];
    let before = client.commands();
    store.count(&range).await.map_err(error)?;
    let cost = client.commands() - before;
    facts.push(Fact::new(
        "mongo",
        format!("read-model count of a range, {models} models"),
        trips(cost),
        "count_documents",
        "1 command",
        "",
    ));
    Ok(())
}

/// Bytes stored per event, ours (one commit document per append) against the baselines'.
async fn storage_facts(client: &MongoClientManager, facts: &mut Vec<Fact>) -> Result<()> {
    let db = client.database();
    let events_in = |name: String| async move {
        let pipeline = vec![
            doc! { "$project": { "n": { "$size": { "$ifNull": ["$events", []] } } } },
            doc! { "$group": { "_id": Bson::Null, "n": { "$sum": "$n" } } },
        ];
        let totals: Vec<Document> = db
            .collection::<Document>(&name)
            .aggregate(pipeline)
            .await
            .map_err(error)?
            .try_collect()
            .await
            .map_err(error)?;
        Ok::<u64, String>(match totals.first().and_then(|d| d.get("n")) {
            Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        })
    };
    let ours_name = client.config().events_collection();
    let ours_events = events_in(ours_name.clone()).await?;
    let commit_events = events_in("raw_commits".into()).await?;
    let raw_events = db
        .collection::<Document>("raw_events")
        .count_documents(doc! {})
        .await
        .map_err(error)?;
    let (ours_data, ours_index) = bytes_per_event(db, &ours_name, ours_events).await?;
    let (commit_data, commit_index) = bytes_per_event(db, "raw_commits", commit_events).await?;
    let (raw_data, raw_index) = bytes_per_event(db, "raw_events", raw_events).await?;
    facts.push(Fact::new(
        "mongo",
        format!("bytes stored per event (collStats, {ours_events} events)"),
        format!("{ours_data:.0} B + {ours_index:.0} B of indexes"),
        "raw commit documents",
        format!("{commit_data:.0} B + {commit_index:.0} B"),
        format!("one document per event (raw insert): {raw_data:.0} B + {raw_index:.0} B of indexes"),
    ));
    Ok(())
}

/// MongoDB rows on the server at `uri`, in a database of their own.
pub async fn rows(uri: &str, scale: Scale) -> Result<Section> {
    let run_id = format!("b{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[12..]);
    let config = MongoConfig::default()
        .with_uri(uri)
        .with_database(format!("bench{run_id}"))
        .with_max_pool_size(32);
    let client = MongoClientManager::connect(config).await.map_err(error)?;
    client.initialize_event_sourcing_schema().await.map_err(error)?;
    let raw = client.database().collection::<Document>("raw_events");
    raw.create_index(mongodb::IndexModel::builder().keys(doc! { "k": 1 }).build())
        .await
        .map_err(error)?;
    let checkpoints = MongoProjectionStore::new(client.clone());
    checkpoints.initialize().await.map_err(error)?;
    let store = Arc::new(MongoEventStore::new(client.clone()));
    let mut facts = Vec::new();
    let caps = client.capabilities().clone();
    append_facts(&client, &store, &run_id, "this server's path", &mut facts).await?;
    if caps.indexed_queries && caps.unique_array_indexes {
        // FerretDB 1.x's fallbacks (hinted heads, id documents), taken on purpose here.
        let fallback = AssumedCapabilities {
            indexed_queries: Some(false),
            unique_array_indexes: Some(false),
            ..Default::default()
        };
        let other = MongoClientManager::connect(client.config().clone().with_assumed_capabilities(fallback))
            .await
            .map_err(error)?;
        let other_store = MongoEventStore::new(other.clone());
        append_facts(
            &other,
            &other_store,
            &run_id,
            "fallback path (FerretDB 1.x's)",
            &mut facts,
        )
        .await?;
    }
    facts.push(Fact::new("mongo", "capabilities detected", caps.summary(), "", "", ""));
    let server = match (&caps.ferretdb, caps.indexed_queries) {
        (Some(v), true) => format!("FerretDB {v} on an index-backed engine"),
        (Some(v), false) => format!("FerretDB {v}: its times grow with each collection (every query scans)"),
        (None, _) => format!("MongoDB {}", caps.version),
    };
    let raw_commit = Arc::new(RawCommit::new(client.database()).await?);
    let raw_checked = Arc::new(RawCheckedCommit {
        commit: RawCommit::new(client.database()).await?,
        counters: client.database().collection::<Document>("raw_counters"),
    });
    let subject = Subject {
        backend: "mongo".into(),
        events: store.clone(),
        snapshots: super::snapshot_strategy(Arc::new(MongoSnapshotStore::new(client.clone()))),
        checkpoints: Arc::new(checkpoints),
        baseline: Arc::new(RawInsert { collection: raw }),
        comparable: vec![raw_commit, raw_checked],
        run_id: run_id.clone(),
    };
    // FerretDB (SQLite) answers about 15 commands a second here once the collection has a few
    // thousand commits (every query scans it): far fewer appends there, or the append rows
    // alone take hours. Its times say little about MongoDB anyway; the command counts do.
    let store_scale = if client.capabilities().indexed_queries {
        scale
    } else {
        Scale {
            append_events: scale.append_events.min(160),
            append_rounds: 1,
            projection_events: scale.projection_events.min(1_000),
            latency_appends: scale.latency_appends.min(4),
            ..scale
        }
    };
    let mut rows = super::subject_rows_lenient(&subject, store_scale, &mut facts).await?;
    // After a crash of a server backend, PostgreSQL recovers before it answers again (the
    // bench's WAL can take a while): wait for it, boundedly, before the next rows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while client
        .database()
        .run_command(doc! { "find": "raw_events", "limit": 1 })
        .await
        .is_err()
    {
        if std::time::Instant::now() > deadline {
            return Err("the server did not come back within 300 s".into());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    if let Some(first) = rows.first_mut() {
        first.note = format!("{}; {server}", first.note);
    }
    load_facts(&client, &store, &run_id, scale, &mut rows, &mut facts).await?;
    // FerretDB scans the collection for every upsert: a smaller collection there.
    let models = if client.capabilities().indexed_queries {
        scale.read_models
    } else {
        2_000
    };
    read_model_rows(&client, models, &mut rows, &mut facts).await?;
    storage_facts(&client, &mut facts).await?;
    let _ = client.database().drop().await;
    Ok(Section { rows, facts })
}
