//! The raw-driver baselines the MongoDB rows are measured against: per-event inserts, the very
//! commit document ours stores, and that commit after the same checks.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use cqrsx_core::NewEvent;
use futures::TryStreamExt;
use mongodb::bson::{doc, Binary, Bson, Document};

use super::super::store::{decode_raw, AppendBaseline, RawBaseline};
use super::error;
use crate::cmd::Result;

pub(super) struct RawInsert {
    pub(super) collection: mongodb::Collection<Document>,
}

/// The document the baseline stores for one event: the fields our commit holds per event, the
/// JSON payload as a sub-document like ours.
pub(super) fn raw_doc(key: &str, e: &NewEvent) -> Result<Document> {
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
impl AppendBaseline for RawInsert {
    fn name(&self, batch: usize) -> String {
        if batch == 1 {
            "insert_one".into()
        } else {
            format!("insert_many of {batch}")
        }
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        if let [single] = batch {
            self.collection.insert_one(raw_doc(key, single)?).await.map_err(error)?;
            return Ok(());
        }
        let docs = batch.iter().map(|e| raw_doc(key, e)).collect::<Result<Vec<_>>>()?;
        self.collection.insert_many(docs).await.map_err(error)?;
        Ok(())
    }
}

#[async_trait]
impl RawBaseline for RawInsert {
    async fn read(&self, key: &str) -> Result<usize> {
        let docs: Vec<Document> = self
            .collection
            .find(doc! { "k": key })
            .await
            .map_err(error)?
            .try_collect()
            .await
            .map_err(error)?;
        for d in &docs {
            let event_type = d.get_str("t").map_err(error)?;
            // The payload as the variant's content, decoded the way ours is: through JSON.
            let payload = match d.get("p") {
                Some(p) => serde_json::to_vec(&p.clone().into_relaxed_extjson()).map_err(error)?,
                None => d.get_binary_generic("pb").map_err(error)?.clone(),
            };
            decode_raw(event_type, &payload)?;
        }
        Ok(docs.len())
    }
}

/// The commit baseline: the raw driver's `insert_one` of the same commit document ours stores
/// (slot `_id`, stream, versions, ids, types, time, position, events as sub-documents), into a
/// collection with the same unique indexes, which are its checks — a version slot taken, a
/// position taken, an event id reused are all refused by the server, as ours are. Each writer
/// is the only writer of its stream, so it knows its version without asking, and positions
/// come from a counter in this process: one command per append, the least that stores the same
/// document with the same guarantees from one process.
pub(super) struct RawCommit {
    pub(super) collection: mongodb::Collection<Document>,
    pub(super) position: AtomicI64,
    pub(super) versions: Mutex<std::collections::HashMap<String, i64>>,
}

impl RawCommit {
    pub(super) async fn new(db: &mongodb::Database) -> Result<Self> {
        let collection = db.collection::<Document>("raw_commits");
        let unique = |keys: Document, name: &str, partial: bool| {
            let mut options = mongodb::options::IndexOptions::builder()
                .name(name.to_string())
                .unique(true)
                .build();
            if partial {
                options.partial_filter_expression = Some(doc! { "stream": { "$exists": true } });
            }
            mongodb::IndexModel::builder().keys(keys).options(options).build()
        };
        for index in [
            unique(doc! { "stream": 1, "v0": 1 }, "stream_v0", true),
            unique(doc! { "pos": 1 }, "position", false),
            unique(doc! { "stream": 1, "ids": 1 }, "stream_ids_unique", true),
        ] {
            collection.create_index(index).await.map_err(error)?;
        }
        Ok(Self {
            collection,
            position: AtomicI64::new(0),
            versions: Mutex::default(),
        })
    }

    fn commit(&self, key: &str, batch: &[NewEvent]) -> Result<Document> {
        let n = batch.len() as i64;
        let v0 = {
            let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
            let v = versions.entry(key.to_string()).or_insert(0);
            *v += n;
            *v - n + 1
        };
        let mut types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let events = batch
            .iter()
            .map(|e| {
                let mut d = raw_doc(key, e)?;
                d.remove("k");
                d.insert("sv", i64::from(e.schema_version));
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(doc! {
            "_id": format!("{key}\u{1f}{v0}"),
            "stream": key,
            "at": "BenchAppend",
            "v0": v0,
            "v1": v0 + n - 1,
            "ids": batch.iter().map(|e| e.event_id.to_string()).collect::<Vec<_>>(),
            "types": types,
            "ts": mongodb::bson::DateTime::now(),
            "pos": self.position.fetch_add(1, Ordering::Relaxed) + 1,
            "events": events,
        })
    }
}

#[async_trait]
impl AppendBaseline for RawCommit {
    fn name(&self, _batch: usize) -> String {
        "insert_one of the commit document, same indexes".into()
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let commit = self.commit(key, batch)?;
        self.collection.insert_one(commit).await.map_err(error)?;
        Ok(())
    }
}

/// The checked commit baseline: what a user of the raw driver would write for the same
/// guarantees across processes — the stream's head (an indexed `find`) and a position (`$inc`
/// of a counter) together, then the same commit document into a collection with the same
/// unique indexes. The same protocol as ours, without our store around it.
pub(super) struct RawCheckedCommit {
    pub(super) commit: RawCommit,
    pub(super) counters: mongodb::Collection<Document>,
}

#[async_trait]
impl AppendBaseline for RawCheckedCommit {
    fn name(&self, _batch: usize) -> String {
        "head find + $inc, then insert_one of the commit document".into()
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let head = self
            .commit
            .collection
            .find_one(doc! { "stream": key })
            .sort(doc! { "v0": -1 })
            .projection(doc! { "v1": 1 });
        let position = self
            .counters
            .find_one_and_update(doc! { "_id": "raw_position" }, doc! { "$inc": { "n": 1_i64 } })
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After);
        let (head, position) = tokio::join!(head.into_future(), position.into_future());
        let v1 = head.map_err(error)?.and_then(|d| d.get_i64("v1").ok()).unwrap_or(0);
        let pos = position
            .map_err(error)?
            .and_then(|d| d.get_i64("n").ok())
            .ok_or("the raw counter returned nothing")?;
        let mut commit = self.commit.commit(key, batch)?;
        let n = batch.len() as i64;
        commit.insert("_id", format!("{key}\u{1f}{}", v1 + 1));
        commit.insert("v0", v1 + 1);
        commit.insert("v1", v1 + n);
        commit.insert("pos", -pos);
        self.commit.collection.insert_one(commit).await.map_err(error)?;
        Ok(())
    }
}
