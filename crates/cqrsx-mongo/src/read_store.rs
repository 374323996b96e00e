//! [`MongoReadStore`]: read models of one collection as `{_id, d: <document>, exp?}`, with
//! filters pushed down to the server and the exact reference semantics applied on top.

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::{
    validate_document, validate_id, validate_type_name, Document, Error, Filter, Op, Query, ReadStore,
    ReadStoreCapabilities, Result,
};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, DateTime};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use serde_json::Value;
use tracing::instrument;

use crate::client::MongoClientManager;
use crate::error::corrupt;

/// The largest document accepted, in bytes of JSON (BSON's limit is 16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// A read-model collection in MongoDB.
///
/// Each document is stored as `{_id: <id>, d: <data>, exp: <expiry>?}`. Queries push every
/// filter that can only widen the answer down to the server (equality, `$in`, prefix regex,
/// ranges, existence), then apply the core's reference semantics, sort and pagination to what
/// comes back, so every backend answers alike. Expired documents are invisible at once; a TTL
/// index removes them where the server has one (FerretDB has none: see
/// [`MongoReadStore::purge_expired`]).
pub struct MongoReadStore {
    client: MongoClientManager,
    docs: Collection<bson::Document>,
    default_ttl: Option<Duration>,
}

impl std::fmt::Debug for MongoReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoReadStore")
            .field("collection", &self.docs.name())
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

fn to_bson(id: &str, data: &Value) -> Result<bson::Document> {
    match Bson::try_from(data.clone()) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(Error::InvalidInput(format!("read model {id} must be a JSON object"))),
        Err(e) => Err(Error::InvalidInput(format!(
            "read model {id} cannot be stored in BSON: {e}"
        ))),
    }
}

fn scalar(v: &Value) -> Option<Bson> {
    match v {
        Value::String(s) => Some(Bson::String(s.clone())),
        Value::Bool(b) => Some(Bson::Boolean(*b)),
        Value::Number(n) => n.as_i64().map(Bson::Int64).or_else(|| n.as_f64().map(Bson::Double)),
        _ => None,
    }
}

fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A server-side condition that matches at least every document the filter matches.
fn pushdown(filter: &Filter) -> Option<(String, Bson)> {
    let field = format!("d.{}", filter.field);
    let cond = match (&filter.op, &filter.value) {
        (Op::Eq, v) => doc! { "$eq": scalar(v)? },
        (Op::Gt, v) => doc! { "$gt": scalar(v)? },
        (Op::Gte, v) => doc! { "$gte": scalar(v)? },
        (Op::Lt, v) => doc! { "$lt": scalar(v)? },
        (Op::Lte, v) => doc! { "$lte": scalar(v)? },
        (Op::In, Value::Array(options)) => {
            let options: Option<Vec<Bson>> = options.iter().map(scalar).collect();
            doc! { "$in": options? }
        }
        (Op::Prefix, Value::String(p)) => doc! { "$regex": format!("^{}", escape_regex(p)) },
        (Op::Exists, Value::Bool(true)) => doc! { "$exists": true },
        _ => return None,
    };
    Some((field, Bson::Document(cond)))
}

impl MongoReadStore {
    /// The collection `collection` (with the config's prefix).
    pub fn new(client: MongoClientManager, collection: &str) -> Result<Self> {
        validate_type_name("collection", collection)?;
        let docs = client
            .database()
            .collection(&client.config().read_model_collection(collection));
        Ok(Self {
            client,
            docs,
            default_ttl: None,
        })
    }

    /// Every document saved with [`ReadStore::save`] expires after `ttl`.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// Creates the collection and its TTL index (where the server supports one). Idempotent.
    pub async fn initialize(&self) -> Result<()> {
        self.client.create_collection(self.docs.name()).await?;
        if self.client.capabilities().ttl_indexes {
            let options = IndexOptions::builder()
                .name("expiry".to_string())
                .expire_after(Duration::ZERO)
                .build();
            self.client
                .create_indexes(
                    self.docs.name(),
                    vec![IndexModel::builder().keys(doc! { "exp": 1 }).options(options).build()],
                )
                .await?;
        }
        Ok(())
    }

    /// Creates an index on a field of the documents (dotted path), optionally unique.
    pub async fn create_index(&self, field: &str, unique: bool) -> Result<String> {
        cqrsx_core::validate_field_path(field)?;
        let name = format!("d_{}", field.replace('.', "_"));
        let options = IndexOptions::builder().name(name.clone()).unique(unique).build();
        self.client
            .create_indexes(
                self.docs.name(),
                vec![IndexModel::builder()
                    .keys(doc! { format!("d.{field}"): 1 })
                    .options(options)
                    .build()],
            )
            .await?;
        Ok(name)
    }

    /// The names of the collection's indexes.
    pub async fn list_indexes(&self) -> Result<Vec<String>> {
        self.client.track(self.docs.list_index_names().into_future()).await
    }

    /// Drops an index by name.
    pub async fn drop_index(&self, name: &str) -> Result<()> {
        self.client.track(self.docs.drop_index(name).into_future()).await
    }

    /// Runs a raw aggregation pipeline over the stored documents (`{_id, d, exp}`: fields of the
    /// read model are under `d.`), for what query criteria cannot say.
    pub async fn aggregate(&self, pipeline: Vec<bson::Document>) -> Result<Vec<bson::Document>> {
        let cursor = self.client.track(self.docs.aggregate(pipeline).into_future()).await?;
        cursor.try_collect().await.map_err(crate::error::backend)
    }

    /// Deletes expired documents (needed only where the server has no TTL index).
    pub async fn purge_expired(&self) -> Result<u64> {
        let result = self
            .client
            .track(
                self.docs
                    .delete_many(doc! { "exp": { "$lte": DateTime::now() } })
                    .into_future(),
            )
            .await?;
        Ok(result.deleted_count)
    }

    fn live() -> bson::Document {
        doc! { "$or": [ { "exp": { "$exists": false } }, { "exp": { "$gt": DateTime::now() } } ] }
    }

    async fn write(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        let mut prepared = Vec::with_capacity(docs.len());
        for d in &docs {
            validate_document(&d.id, &d.data, MAX_DOCUMENT_BYTES)?;
            prepared.push((d.id.clone(), to_bson(&d.id, &d.data)?));
        }
        let expires = ttl.map(|t| DateTime::from_millis(DateTime::now().timestamp_millis() + t.as_millis() as i64));
        for (id, data) in prepared {
            let mut stored = doc! { "_id": &id, "d": data };
            if let Some(exp) = expires {
                stored.insert("exp", exp);
            }
            self.client
                .track(
                    self.docs
                        .replace_one(doc! { "_id": &id }, stored)
                        .upsert(true)
                        .into_future(),
                )
                .await?;
        }
        Ok(())
    }

    async fn candidates(&self, filters: &[Filter]) -> Result<Vec<Document>> {
        let mut and = vec![Self::live()];
        for f in filters {
            if let Some((field, cond)) = pushdown(f) {
                and.push(doc! { field: cond });
            }
        }
        let cursor = self
            .client
            .track(self.docs.find(doc! { "$and": and }).into_future())
            .await?;
        let raw: Vec<bson::Document> = cursor.try_collect().await.map_err(crate::error::backend)?;
        raw.into_iter()
            .map(|d| {
                let id = d
                    .get_str("_id")
                    .map_err(|_| corrupt("read model without string id"))?
                    .to_string();
                let data = d
                    .get_document("d")
                    .map_err(|_| corrupt(format!("read model {id} without data")))?;
                Ok(Document {
                    data: Bson::Document(data.clone()).into_relaxed_extjson(),
                    id,
                })
            })
            .collect()
    }
}

#[async_trait]
impl ReadStore for MongoReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadStoreCapabilities {
            ttl: true,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }

    #[instrument(skip(self, data))]
    async fn save(&self, id: &str, data: Value) -> Result<()> {
        self.write(vec![Document { id: id.into(), data }], self.default_ttl)
            .await
    }

    #[instrument(skip(self, data))]
    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::InvalidInput("a TTL must be longer than zero".into()));
        }
        self.write(vec![Document { id: id.into(), data }], Some(ttl)).await
    }

    #[instrument(skip(self))]
    async fn get(&self, id: &str) -> Result<Option<Value>> {
        validate_id("read model id", id)?;
        let found = self
            .client
            .track(
                self.docs
                    .find_one(doc! { "$and": [ { "_id": id }, Self::live() ] })
                    .into_future(),
            )
            .await?;
        found
            .map(|d| {
                d.get_document("d")
                    .map(|data| Bson::Document(data.clone()).into_relaxed_extjson())
                    .map_err(|_| corrupt(format!("read model {id} without data")))
            })
            .transpose()
    }

    #[instrument(skip(self))]
    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.delete_many(&[id.to_string()]).await? > 0)
    }

    #[instrument(skip(self, query))]
    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        query.validate()?;
        Ok(query.apply(self.candidates(&query.filters).await?))
    }

    #[instrument(skip(self, filters))]
    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        let query = Query::counting(filters)?;
        Ok(query.count_matching(&self.candidates(filters).await?))
    }

    #[instrument(skip(self, docs), fields(count = docs.len()))]
    async fn save_many(&self, docs: Vec<Document>) -> Result<()> {
        self.write(docs, self.default_ttl).await
    }

    #[instrument(skip(self, ids), fields(count = ids.len()))]
    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        for id in ids {
            validate_id("read model id", id)?;
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let result = self
            .client
            .track(
                self.docs
                    .delete_many(doc! { "$and": [ { "_id": { "$in": ids } }, Self::live() ] })
                    .into_future(),
            )
            .await?;
        Ok(result.deleted_count)
    }
}
