//! [`MongoKeyStore`]: the wrapped data keys of `cqrsx_core::crypto`, one document per subject
//! and version.

use async_trait::async_trait;
use cqrsx_core::crypto::{validate_subject, KeyStore, StoredKey};
use cqrsx_core::{Error, Result, Timestamp};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use crate::client::{MongoClientManager, Tracked};
use crate::error::{corrupt, is_duplicate_key};

/// The collection's name after the configured prefix, unless [`MongoKeyStore::with_collection`]
/// says otherwise.
pub const DEFAULT_KEYS_COLLECTION: &str = "data_keys";

/// The MongoDB key store of encrypted payloads (feature `encryption`).
///
/// Every version of a subject's key is a document of its own whose `_id` names the subject
/// and version, so creating one is a plain insert that the unique `_id` decides: of two
/// processes creating the same version one wins, and both read the winner back. No counter
/// and no conditional update is involved, so it holds on FerretDB 1.x too. Forgetting writes a
/// tombstone document first, then deletes every version; a creation racing with it checks the
/// tombstone after its insert and takes its key back. An unreachable server is
/// [`Error::Backend`] or [`Error::Connect`], and nothing is written.
pub struct MongoKeyStore {
    client: MongoClientManager,
    keys: Collection<Document>,
}

impl std::fmt::Debug for MongoKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoKeyStore")
            .field("collection", &self.keys.name())
            .finish_non_exhaustive()
    }
}

fn key_id(subject: &str, version: u32) -> String {
    format!("k/{version:010}/{subject}")
}

fn tombstone_id(subject: &str) -> String {
    format!("f/{subject}")
}

impl MongoKeyStore {
    /// A key store in the collection `<prefix>data_keys`.
    pub fn new(client: MongoClientManager) -> Self {
        let name = client.config().read_model_collection(DEFAULT_KEYS_COLLECTION);
        Self::with_collection(client, &name)
    }

    /// A key store in the collection named `name` (no prefix added).
    pub fn with_collection(client: MongoClientManager, name: &str) -> Self {
        let keys = client.database().collection(name);
        Self { client, keys }
    }

    /// Creates the collection and its index (subject, version). Idempotent.
    pub async fn initialize(&self) -> Result<()> {
        self.client.create_collection(self.keys.name()).await?;
        let options = IndexOptions::builder().name("subject_version".to_string()).build();
        self.client
            .create_indexes(
                self.keys.name(),
                vec![IndexModel::builder()
                    .keys(doc! { "s": 1, "v": -1 })
                    .options(options)
                    .build()],
            )
            .await
    }

    fn stored(d: &Document) -> Result<StoredKey> {
        let subject = d
            .get_str("s")
            .map_err(|_| corrupt("data key without subject"))?
            .to_string();
        let version = match d.get("v") {
            Some(Bson::Int32(v)) => u32::try_from(*v).ok(),
            Some(Bson::Int64(v)) => u32::try_from(*v).ok(),
            _ => None,
        }
        .ok_or_else(|| corrupt(format!("data key of {subject:?} without version")))?;
        let wrapped = match d.get("w") {
            Some(Bson::Binary(b)) => b.bytes.clone(),
            _ => return Err(corrupt(format!("data key {version} of {subject:?} without key"))),
        };
        let master_key_id = d
            .get_str("m")
            .map_err(|_| corrupt(format!("data key {version} of {subject:?} without master key id")))?
            .to_string();
        let created_at = d
            .get_datetime("t")
            .map(|t| Timestamp(u64::try_from(t.timestamp_millis()).unwrap_or(0)))
            .map_err(|_| corrupt(format!("data key {version} of {subject:?} without time")))?;
        Ok(StoredKey {
            subject,
            version,
            master_key_id,
            wrapped,
            created_at,
        })
    }

    async fn find(&self, id: String) -> Result<Option<Document>> {
        self.client.track(self.keys.find_one(doc! { "_id": id })).await
    }
}

#[async_trait]
impl KeyStore for MongoKeyStore {
    async fn create_if_absent(&self, key: StoredKey) -> Result<StoredKey> {
        validate_subject(&key.subject)?;
        if self.forgotten(&key.subject).await? {
            return Err(Error::SubjectForgotten(key.subject));
        }
        let id = key_id(&key.subject, key.version);
        let document = doc! {
            "_id": &id,
            "s": &key.subject,
            "v": i64::from(key.version),
            "m": &key.master_key_id,
            "w": Binary { subtype: BinarySubtype::Generic, bytes: key.wrapped.clone() },
            "t": DateTime::from_millis(i64::try_from(key.created_at.as_millis()).unwrap_or(i64::MAX)),
        };
        match self.client.track_raw(self.keys.insert_one(document)).await {
            Ok(_) => {}
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into_error()),
        }
        if self.forgotten(&key.subject).await? {
            // Forgotten while this key was being created: take it back.
            self.client.track(self.keys.delete_one(doc! { "_id": &id })).await?;
            return Err(Error::SubjectForgotten(key.subject));
        }
        let stored = self
            .find(id)
            .await?
            .ok_or_else(|| corrupt(format!("the data key of {:?} vanished after its insert", key.subject)))?;
        Self::stored(&stored)
    }

    async fn get(&self, subject: &str, version: u32) -> Result<Option<StoredKey>> {
        validate_subject(subject)?;
        self.find(key_id(subject, version))
            .await?
            .as_ref()
            .map(Self::stored)
            .transpose()
    }

    async fn latest(&self, subject: &str) -> Result<Option<StoredKey>> {
        validate_subject(subject)?;
        let found = self
            .client
            .track(
                self.keys
                    .find_one(doc! { "s": subject, "v": { "$exists": true } })
                    .sort(doc! { "v": -1 }),
            )
            .await?;
        found.as_ref().map(Self::stored).transpose()
    }

    async fn forget(&self, subject: &str) -> Result<bool> {
        validate_subject(subject)?;
        let id = tombstone_id(subject);
        let tombstone = doc! { "_id": &id, "s": subject, "forgotten": true };
        self.client
            .track_write(self.keys.replace_one(doc! { "_id": &id }, tombstone).upsert(true))
            .await?;
        let deleted = self
            .client
            .track_write(self.keys.delete_many(doc! { "s": subject, "v": { "$exists": true } }))
            .await?;
        Ok(deleted.deleted_count > 0)
    }

    async fn forgotten(&self, subject: &str) -> Result<bool> {
        validate_subject(subject)?;
        Ok(self.find(tombstone_id(subject)).await?.is_some())
    }
}
