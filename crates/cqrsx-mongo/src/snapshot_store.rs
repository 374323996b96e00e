//! [`MongoSnapshotStore`]: one document per (stream, version).

use std::future::IntoFuture;

use async_trait::async_trait;
use cqrsx_core::raw::SnapshotBackend;
use cqrsx_core::snapshot::{SnapshotInfo, SnapshotRecord};
use cqrsx_core::{Result, StreamId, Timestamp};
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use mongodb::Collection;

use crate::client::MongoClientManager;
use crate::error::corrupt;

/// Snapshots above this size are refused before the write (the document limit is 16 MiB).
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;

/// The MongoDB snapshot store. Snapshots are keyed by stream and version, so saving an older
/// one never hides a newer one; [`SnapshotStore::prune`](cqrsx_core::SnapshotStore::prune) keeps the newest N.
pub struct MongoSnapshotStore {
    client: MongoClientManager,
    snapshots: Collection<Document>,
}

impl std::fmt::Debug for MongoSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSnapshotStore")
            .field("collection", &self.snapshots.name())
            .finish_non_exhaustive()
    }
}

fn id_of(stream: &StreamId, version: u64) -> String {
    // Zero-padded so ids sort like versions.
    format!("{}@{version:020}", stream.key())
}

fn num(d: &Document, key: &str) -> Result<u64> {
    match d.get(key) {
        Some(Bson::Int64(v)) => u64::try_from(*v).map_err(|_| corrupt(format!("snapshot {key} negative"))),
        Some(Bson::Int32(v)) => u64::try_from(*v).map_err(|_| corrupt(format!("snapshot {key} negative"))),
        _ => Err(corrupt(format!("snapshot field {key} missing"))),
    }
}

fn info(d: &Document) -> Result<SnapshotInfo> {
    Ok(SnapshotInfo {
        version: num(d, "v")?,
        content_type: d
            .get_str("c")
            .map_err(|_| corrupt("snapshot content type"))?
            .to_string(),
        schema_version: u32::try_from(num(d, "sv")?).unwrap_or(u32::MAX),
        size: num(d, "n")?,
        created_at: Timestamp(
            d.get_datetime("t")
                .map(|t| u64::try_from(t.timestamp_millis()).unwrap_or(0))
                .map_err(|_| corrupt("snapshot time"))?,
        ),
    })
}

impl MongoSnapshotStore {
    /// A snapshot store in the configured snapshots collection.
    pub fn new(client: MongoClientManager) -> Self {
        let snapshots = client.database().collection(&client.config().snapshots_collection());
        Self { client, snapshots }
    }
}

#[async_trait]
impl SnapshotBackend for MongoSnapshotStore {
    fn max_snapshot_bytes(&self) -> usize {
        MAX_SNAPSHOT_BYTES
    }

    async fn save(&self, snapshot: SnapshotRecord) -> Result<()> {
        let id = id_of(&snapshot.stream, snapshot.version);
        let doc = doc! {
            "_id": &id,
            "s": snapshot.stream.key(),
            "v": i64::try_from(snapshot.version).unwrap_or(i64::MAX),
            "c": &snapshot.content_type,
            "sv": i64::from(snapshot.schema_version),
            "n": snapshot.payload.len() as i64,
            "t": DateTime::from_millis(i64::try_from(snapshot.created_at.as_millis()).unwrap_or(i64::MAX)),
            "p": Binary { subtype: BinarySubtype::Generic, bytes: snapshot.payload },
        };
        self.client
            .track(
                self.snapshots
                    .replace_one(doc! { "_id": id }, doc)
                    .upsert(true)
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>> {
        let mut filter = doc! { "s": stream.key() };
        if let Some(max) = max_version {
            filter.insert("v", doc! { "$lte": i64::try_from(max).unwrap_or(i64::MAX) });
        }
        let found = self
            .client
            .track(self.snapshots.find_one(filter).sort(doc! { "v": -1 }).into_future())
            .await?;
        let Some(d) = found else { return Ok(None) };
        let i = info(&d)?;
        let payload = match d.get("p") {
            Some(Bson::Binary(b)) => b.bytes.clone(),
            _ => return Err(corrupt(format!("snapshot {} of {stream} has no payload", i.version))),
        };
        Ok(Some(SnapshotRecord {
            stream: stream.clone(),
            version: i.version,
            content_type: i.content_type,
            schema_version: i.schema_version,
            payload,
            created_at: i.created_at,
        }))
    }

    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        let docs: Vec<Document> = self
            .client
            .track(
                self.snapshots
                    .find(doc! { "s": stream.key() })
                    .sort(doc! { "v": -1 })
                    .projection(doc! { "p": 0 })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        docs.iter().map(info).collect()
    }

    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let kept: Vec<Document> = self
            .client
            .track(
                self.snapshots
                    .find(doc! { "s": stream.key() })
                    .sort(doc! { "v": -1 })
                    .skip(u64::try_from(keep).unwrap_or(u64::MAX))
                    .limit(1)
                    .projection(doc! { "v": 1 })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        let Some(newest_doomed) = kept.first() else {
            return Ok(0);
        };
        let threshold = num(newest_doomed, "v")?;
        let result = self
            .client
            .track(
                self.snapshots
                    .delete_many(
                        doc! { "s": stream.key(), "v": { "$lte": i64::try_from(threshold).unwrap_or(i64::MAX) } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(result.deleted_count)
    }

    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        let result = self
            .client
            .track(self.snapshots.delete_many(doc! { "s": stream.key() }).into_future())
            .await?;
        Ok(result.deleted_count)
    }
}
