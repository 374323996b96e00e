//! [`MongoReadStore`]: read models of one collection as `{_id, d: <document>, exp?}`. A query
//! the server answers exactly runs there whole (filters, sort, skip, limit, count); any other
//! is narrowed on the server and finished with the core's reference semantics.

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::query::{Direction, Op};
use cqrsx_core::raw::{validate_type_name, ReadBackend, ReadStoreCapabilities};
use cqrsx_core::{Document, Error, Filter, Query, Result};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, DateTime};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use serde_json::Value;

use crate::client::MongoClientManager;
use crate::error::corrupt;

/// The largest document accepted, in bytes of JSON (BSON's limit is 16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// A read-model collection in MongoDB.
///
/// Each document is stored as `{_id: <id>, d: <data>, exp: <expiry>?}` (a projection's view
/// adds the guard fields `_p`, `_f`, `_r`, and marks deleted documents `_del`). When every
/// filter of a query has an exact MongoDB form — equality, ranges, `In` and prefix with scalar
/// operands, each kept off array values, which MongoDB would match element by element — the
/// query runs on the server whole: filter, sort (then `_id`), skip, limit, or a count, one
/// command that transfers only what it returns. Other queries push down what can only widen
/// the answer and apply the core's reference semantics to what comes back, so every backend
/// answers alike.
///
/// Sort order across kinds is the core's (and MongoDB's): missing and null, numbers, strings,
/// objects, arrays, booleans. Within objects and arrays MongoDB compares content where the
/// reference treats them as equal (then by id): don't sort by fields that hold objects or
/// arrays if the order among those matters.
///
/// Expired documents are invisible at once; a TTL index removes them where the server has one
/// (FerretDB has none: see [`MongoReadStore::purge_expired`]).
pub struct MongoReadStore {
    client: MongoClientManager,
    docs: Collection<bson::Document>,
    default_ttl: Option<Duration>,
    floor: Option<Floor>,
}

/// Where a projection view's floor is kept: the sequence below which its documents were
/// written before the view was last dropped, and are not part of it (see
/// `MongoProjectionStore::drop_view`).
#[derive(Clone)]
pub(crate) struct Floor {
    pub(crate) state: Collection<bson::Document>,
    pub(crate) id: String,
}

impl Floor {
    /// The floor's sequence; 0 when the view was never dropped.
    pub(crate) async fn read(&self, client: &MongoClientManager) -> Result<i64> {
        let found = client
            .track(
                self.state
                    .find_one(doc! { "_id": &self.id })
                    .projection(doc! { "s": 1 })
                    .into_future(),
            )
            .await?;
        match found {
            None => Ok(0),
            Some(d) => d
                .get_i64("s")
                .map_err(|_| corrupt(format!("the drop floor {} has no sequence", self.id))),
        }
    }
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

/// The exact MongoDB form of a filter, if it has one: the same operator on scalar operands,
/// kept off array values (MongoDB matches an array when one element matches; the reference
/// compares the whole value, and no array equals or orders against a scalar).
fn exact(filter: &Filter) -> Option<bson::Document> {
    let (_, cond) = pushdown(filter)?;
    let exact_op = matches!(
        (&filter.op, &filter.value),
        (Op::Eq | Op::Gt | Op::Gte | Op::Lt | Op::Lte, v) if scalar(v).is_some()
    ) || matches!((&filter.op, &filter.value), (Op::In, Value::Array(options)) if options.iter().all(|o| scalar(o).is_some()))
        || matches!((&filter.op, &filter.value), (Op::Prefix, Value::String(_)));
    if !exact_op {
        return None;
    }
    let field = format!("d.{}", filter.field);
    Some(doc! { "$and": [ { field.clone(): cond }, { field: { "$not": { "$type": "array" } } } ] })
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
            floor: None,
        })
    }

    /// Every document saved with [`ReadStore::save`](cqrsx_core::ReadStore::save) expires after `ttl`.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl.min(cqrsx_core::raw::MAX_TTL)).filter(|t| !t.is_zero());
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
        cqrsx_core::raw::validate_field_path(field)?;
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
            .track_write(
                self.docs
                    .delete_many(doc! { "exp": { "$lte": DateTime::now() } })
                    .into_future(),
            )
            .await?;
        Ok(result.deleted_count)
    }

    /// The condition every live document meets: not deleted, not expired, and in a view, not
    /// written before the view was last dropped.
    async fn live(&self) -> Result<bson::Document> {
        let mut live = doc! {
            "_del": { "$ne": true },
            "$or": [ { "exp": { "$exists": false } }, { "exp": { "$gt": DateTime::now() } } ],
        };
        if let Some(floor) = &self.floor {
            let floor = floor.read(&self.client).await?;
            if floor > 0 {
                live.insert(
                    "$and",
                    vec![doc! { "$or": [ { "_s": { "$gte": floor } }, { "_s": { "$exists": false } } ] }],
                );
            }
        }
        Ok(live)
    }

    async fn write(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        let mut statements = Vec::with_capacity(docs.len());
        for d in &docs {
            statements.push((d.id.clone(), to_bson(&d.id, &d.data)?));
        }
        if statements.is_empty() {
            return Ok(());
        }
        let expires = match ttl {
            Some(t) => {
                let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
                Some(DateTime::from_millis(
                    DateTime::now().timestamp_millis().saturating_add(ms),
                ))
            }
            None => None,
        };
        // One `update` command with an upsert per document: one round trip for the batch.
        let updates: Vec<bson::Document> = statements
            .into_iter()
            .map(|(id, data)| {
                let mut stored = doc! { "d": data };
                if let Some(exp) = expires {
                    stored.insert("exp", exp);
                }
                doc! { "q": { "_id": id }, "u": stored, "upsert": true }
            })
            .collect();
        let reply = self
            .client
            .track_write(
                self.client
                    .database()
                    .run_command(doc! { "update": self.docs.name(), "updates": updates, "ordered": false }),
            )
            .await?;
        crate::error::check_write_reply(&reply, false)
    }

    /// The filter every read of live documents uses, with `extra` conditions.
    async fn filter(&self, extra: Vec<bson::Document>) -> Result<bson::Document> {
        let mut and = vec![self.live().await?];
        and.extend(extra);
        Ok(doc! { "$and": and })
    }

    fn decode(d: bson::Document) -> Result<Document> {
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
    }

    /// The query's exact server form, when every filter has one.
    async fn exact_filter(&self, filters: &[Filter]) -> Result<Option<bson::Document>> {
        let conditions: Option<Vec<bson::Document>> = filters.iter().map(exact).collect();
        match conditions {
            Some(conditions) => self.filter(conditions).await.map(Some),
            None => Ok(None),
        }
    }

    async fn candidates(&self, filters: &[Filter]) -> Result<Vec<Document>> {
        let widening = filters
            .iter()
            .filter_map(pushdown)
            .map(|(field, cond)| doc! { field: cond })
            .collect();
        let cursor = self
            .client
            .track(self.docs.find(self.filter(widening).await?).into_future())
            .await?;
        let raw: Vec<bson::Document> = cursor.try_collect().await.map_err(crate::error::backend)?;
        raw.into_iter().map(Self::decode).collect()
    }

    /// The query run whole on the server, when it can be exactly.
    async fn run_exact(&self, query: &Query) -> Result<Option<Vec<Document>>> {
        let Some(filter) = self.exact_filter(&query.filters).await? else {
            return Ok(None);
        };
        let mut sort = bson::Document::new();
        for key in &query.sort {
            let direction = if key.direction == Direction::Asc { 1 } else { -1 };
            sort.insert(format!("d.{}", key.field), direction);
        }
        sort.insert("_id", 1);
        let mut find = self.docs.find(filter).sort(sort).skip(query.offset);
        if let Some(limit) = query.limit {
            if limit == 0 {
                return Ok(Some(Vec::new()));
            }
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let cursor = self.client.track(find.into_future()).await?;
        let raw: Vec<bson::Document> = cursor.try_collect().await.map_err(crate::error::backend)?;
        raw.into_iter().map(Self::decode).collect::<Result<Vec<_>>>().map(Some)
    }

    /// A store over a projection view's collection (documents of other versions, tombstones
    /// and guards are the projection store's business).
    pub(crate) fn view(client: MongoClientManager, collection: &str, floor: Floor) -> Self {
        Self {
            docs: client.database().collection(collection),
            client,
            default_ttl: None,
            floor: Some(floor),
        }
    }
}

#[async_trait]
impl ReadBackend for MongoReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadStoreCapabilities {
            ttl: true,
            max_document_bytes: MAX_DOCUMENT_BYTES,
            nested_arrays: self.client.capabilities().nested_arrays,
        }
    }

    async fn save_docs(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        self.write(docs, ttl.or(self.default_ttl)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Value>> {
        let found = self
            .client
            .track(
                self.docs
                    .find_one(self.filter(vec![doc! { "_id": id }]).await?)
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

    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        if let Some(docs) = self.run_exact(query).await? {
            return Ok(docs);
        }
        Ok(query.apply(self.candidates(&query.filters).await?))
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        let query = Query::counting(filters)?;
        if let Some(filter) = self.exact_filter(filters).await? {
            return self.client.track(self.docs.count_documents(filter).into_future()).await;
        }
        Ok(query.count_matching(&self.candidates(filters).await?))
    }

    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        let result = self
            .client
            .track_write(
                self.docs
                    .delete_many(self.filter(vec![doc! { "_id": { "$in": ids } }]).await?)
                    .into_future(),
            )
            .await?;
        Ok(result.deleted_count)
    }
}
