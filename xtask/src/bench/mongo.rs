//! MongoDB rows: our store against raw driver inserts of the same documents (insert_one for
//! single events, insert_many for batches), on the same server, plus round trips per append.

use std::sync::Arc;

use async_trait::async_trait;
use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_mongo::{MongoClientManager, MongoConfig, MongoEventStore, MongoSnapshotStore};
use futures::TryStreamExt;
use mongodb::bson::{doc, Binary, Bson, Document};

use super::store::{store_rows, RawBaseline, Subject};
use super::{BenchRow, Scale};
use crate::cmd::Result;

struct RawInsert {
    collection: mongodb::Collection<Document>,
}

/// The document the baseline stores for one event: the fields our commit holds per event, the
/// JSON payload as a sub-document like ours.
fn raw_doc(key: &str, e: &NewEvent) -> Result<Document> {
    let mut d = doc! {
        "k": key,
        "i": e.event_id.to_string(),
        "t": &e.event_type,
        "c": e.content_type.as_str(),
    };
    match serde_json::from_slice::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|v| Bson::try_from(v).ok())
    {
        Some(payload) => d.insert("p", payload),
        None => d.insert(
            "pb",
            Binary {
                subtype: mongodb::bson::spec::BinarySubtype::Generic,
                bytes: e.payload.clone(),
            },
        ),
    };
    if !e.metadata.is_empty() {
        let json = e.metadata.to_json().map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        d.insert("m", Bson::try_from(value).map_err(|e| e.to_string())?);
    }
    Ok(d)
}

#[async_trait]
impl RawBaseline for RawInsert {
    fn name(&self, batch: usize) -> String {
        if batch == 1 {
            "insert_one".into()
        } else {
            format!("insert_many of {batch}")
        }
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        if let [single] = batch {
            self.collection
                .insert_one(raw_doc(key, single)?)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let docs = batch.iter().map(|e| raw_doc(key, e)).collect::<Result<Vec<_>>>()?;
        self.collection.insert_many(docs).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<usize> {
        let docs: Vec<Document> = self
            .collection
            .find(doc! { "k": key })
            .await
            .map_err(|e| e.to_string())?
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(docs.len())
    }
}

/// Server operations per single-event append with an exact expected version, uncontended.
async fn round_trips_per_append(client: &MongoClientManager, store: &MongoEventStore, run_id: &str) -> Result<f64> {
    let stream = StreamId::new("BenchTrips", run_id).map_err(|e| e.to_string())?;
    let appends = 50u64;
    let before = client.metrics().operations;
    for v in 0..appends {
        let event = NewEvent::json("Tick", &v).map_err(|e| e.to_string())?;
        store
            .append(&stream, ExpectedVersion::Exact(v), vec![event])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((client.metrics().operations - before) as f64 / appends as f64)
}

/// MongoDB rows on the server at `uri`, in a database of their own.
pub async fn rows(uri: &str, scale: Scale) -> Result<Vec<BenchRow>> {
    let run_id = format!("b{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[12..]);
    let config = MongoConfig::default()
        .with_uri(uri)
        .with_database(format!("bench{run_id}"))
        .with_max_pool_size(32);
    let client = MongoClientManager::connect(config).await.map_err(|e| e.to_string())?;
    client
        .initialize_event_sourcing_schema()
        .await
        .map_err(|e| e.to_string())?;
    let raw = client.database().collection::<Document>("raw_events");
    raw.create_index(mongodb::IndexModel::builder().keys(doc! { "k": 1 }).build())
        .await
        .map_err(|e| e.to_string())?;
    let store = Arc::new(MongoEventStore::new(client.clone()));
    let trips = round_trips_per_append(&client, &store, &run_id).await?;
    let server = match &client.capabilities().ferretdb {
        Some(v) => format!("FerretDB {v}"),
        None => format!("MongoDB {}", client.capabilities().version),
    };
    let subject = Subject {
        backend: "mongo".into(),
        events: store,
        snapshots: super::snapshot_strategy(Arc::new(MongoSnapshotStore::new(client.clone()))),
        baseline: Arc::new(RawInsert { collection: raw }),
        run_id: run_id.clone(),
    };
    let mut rows = store_rows(&subject, scale).await?;
    if let Some(first) = rows.first_mut() {
        first.note = format!(
            "{}; {server}; {trips:.1} server operations per uncontended append",
            first.note
        );
    }
    let _ = client.database().drop().await;
    Ok(rows)
}
