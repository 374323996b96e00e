//! [`RedisReadStore`]: JSON documents of one collection, with optional TTL and secondary
//! indexes; what Redis cannot evaluate server-side is finished in memory with the core's
//! reference semantics.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::{
    validate_document, validate_field_path, validate_id, Document, Error, Filter, Op, Query, ReadStore,
    ReadStoreCapabilities, Result,
};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value as RValue;
use serde_json::Value;
use tracing::instrument;

use crate::client::RedisClientManager;
use crate::error::protocol;
use crate::event_store::{array, text};
use crate::keys::Keys;

/// The largest document accepted, in bytes of JSON.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// A read-model collection in Redis.
///
/// ```no_run
/// # async fn demo(client: cqrsx_redis::RedisClientManager) -> cqrsx_core::Result<()> {
/// use std::time::Duration;
/// use cqrsx_core::{Filter, Op, Query, ReadStore};
/// let users = cqrsx_redis::RedisReadStore::new(client, "users")?
///     .with_index("status")?
///     .with_default_ttl(Duration::from_secs(3600));
/// users.save("u-1", serde_json::json!({"status": "active", "age": 31})).await?;
/// let active = users.query(&Query::all().filter(Filter::new("status", Op::Eq, "active"))).await?;
/// # Ok(()) }
/// ```
pub struct RedisReadStore {
    client: RedisClientManager,
    tag: String,
    ids_key: String,
    indexes: BTreeSet<String>,
    default_ttl: Option<Duration>,
    script: Script,
}

impl std::fmt::Debug for RedisReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReadStore")
            .field("tag", &self.tag)
            .field("indexes", &self.indexes)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

/// How the candidates of a query are found.
enum Find {
    All,
    Score { field: String, min: String, max: String },
    Lex { field: String, min: String, max: String },
}

impl RedisReadStore {
    /// The collection `collection` (a name of letters, digits, `_`, `-`, `.`).
    pub fn new(client: RedisClientManager, collection: &str) -> Result<Self> {
        cqrsx_core::validate_type_name("collection", collection)?;
        let keys = Keys::new(&client.config().key_prefix, 1);
        let tag = keys.read_model(collection);
        Ok(Self {
            ids_key: format!("{tag}ids"),
            tag,
            client,
            indexes: BTreeSet::new(),
            default_ttl: None,
            script: Script::from_lua(include_str!("lua/read_model.lua")),
        })
    }

    /// Maintains a secondary index on a field (dotted path). Equality, prefix and range filters
    /// on it are answered from the index instead of a scan. Documents saved before the index
    /// was declared are indexed when next saved.
    pub fn with_index(mut self, field: &str) -> Result<Self> {
        validate_field_path(field)?;
        self.indexes.insert(field.to_string());
        Ok(self)
    }

    /// Every document saved with [`ReadStore::save`] expires after `ttl`.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    fn index_entries(&self, data: &Value) -> Vec<RValue> {
        let mut args = Vec::new();
        let mut count = 0i64;
        for field in &self.indexes {
            match cqrsx_core::lookup(data, field) {
                Some(Value::Number(n)) => {
                    if let Some(f) = n.as_f64() {
                        args.extend([RValue::from(field.as_str()), "n".into(), f.to_string().into()]);
                        count += 1;
                    }
                }
                Some(Value::String(s)) => {
                    args.extend([RValue::from(field.as_str()), "s".into(), s.as_str().into()]);
                    count += 1;
                }
                _ => {}
            }
        }
        let mut out = vec![RValue::from(count)];
        out.extend(args);
        out
    }

    async fn call(&self, args: Vec<RValue>) -> Result<RValue> {
        let client = self.client.client();
        let reply = self
            .client
            .track(
                self.script
                    .evalsha_with_reload(client, vec![self.ids_key.clone()], args),
            )
            .await?;
        Ok(reply)
    }

    async fn write(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        for d in &docs {
            validate_document(&d.id, &d.data, MAX_DOCUMENT_BYTES)?;
            if d.id.contains('\0') {
                return Err(Error::InvalidInput(format!("read model id {:?} contains NUL", d.id)));
            }
        }
        if docs.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1) as i64);
        let mut args: Vec<RValue> = vec![
            self.tag.as_str().into(),
            "save".into(),
            ttl_ms.into(),
            (docs.len() as i64).into(),
        ];
        for d in docs {
            let json = serde_json::to_string(&d.data).map_err(|e| Error::serialization("read model", e))?;
            let entries = self.index_entries(&d.data);
            args.push(d.id.into());
            args.push(json.into());
            args.extend(entries);
        }
        self.call(args).await?;
        Ok(())
    }

    /// The cheapest way to find candidates for these filters.
    fn plan(&self, filters: &[Filter]) -> Find {
        for f in filters.iter().filter(|f| self.indexes.contains(&f.field)) {
            match (&f.op, &f.value) {
                (Op::Eq, Value::Number(n)) => {
                    if let Some(x) = n.as_f64() {
                        return Find::Score {
                            field: f.field.clone(),
                            min: x.to_string(),
                            max: x.to_string(),
                        };
                    }
                }
                (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Value::Number(n)) => {
                    if let Some(x) = n.as_f64() {
                        let (min, max) = match f.op {
                            Op::Gt => (format!("({x}"), "+inf".to_string()),
                            Op::Gte => (x.to_string(), "+inf".to_string()),
                            Op::Lt => ("-inf".to_string(), format!("({x}")),
                            _ => ("-inf".to_string(), x.to_string()),
                        };
                        return Find::Score {
                            field: f.field.clone(),
                            min,
                            max,
                        };
                    }
                }
                (Op::Eq, Value::String(s)) => {
                    return Find::Lex {
                        field: f.field.clone(),
                        min: format!("[{s}\0"),
                        max: format!("[{s}\0\u{10FFFF}"),
                    };
                }
                (Op::Prefix, Value::String(s)) => {
                    return Find::Lex {
                        field: f.field.clone(),
                        min: format!("[{s}"),
                        max: format!("[{s}\u{10FFFF}"),
                    };
                }
                _ => {}
            }
        }
        Find::All
    }

    async fn candidates(&self, filters: &[Filter]) -> Result<Vec<Document>> {
        let (mode, field, min, max) = match self.plan(filters) {
            Find::All => ("all", String::new(), String::new(), String::new()),
            Find::Score { field, min, max } => ("score", field, min, max),
            Find::Lex { field, min, max } => ("lex", field, min, max),
        };
        let args: Vec<RValue> = vec![
            self.tag.as_str().into(),
            "find".into(),
            mode.into(),
            field.into(),
            min.into(),
            max.into(),
        ];
        let items = array(self.call(args).await?)?;
        let mut docs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(id), Some(json)) = (it.next(), it.next()) {
            let id = text(&id).ok_or_else(|| protocol("read model id"))?;
            let json = text(&json).ok_or_else(|| protocol("read model document"))?;
            let data = serde_json::from_str(&json).map_err(|e| Error::serialization(format!("read model {id}"), e))?;
            docs.push(Document { id, data });
        }
        Ok(docs)
    }
}

#[async_trait]
impl ReadStore for RedisReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadStoreCapabilities {
            ttl: true,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }

    #[instrument(skip(self, data))]
    async fn save(&self, id: &str, data: Value) -> Result<()> {
        self.write(
            vec![Document {
                id: id.to_string(),
                data,
            }],
            self.default_ttl,
        )
        .await
    }

    #[instrument(skip(self, data))]
    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::InvalidInput("a TTL must be longer than zero".into()));
        }
        self.write(
            vec![Document {
                id: id.to_string(),
                data,
            }],
            Some(ttl),
        )
        .await
    }

    #[instrument(skip(self))]
    async fn get(&self, id: &str) -> Result<Option<Value>> {
        validate_id("read model id", id)?;
        let client = self.client.client();
        let json: Option<String> = self.client.track(client.get(format!("{}d:{id}", self.tag))).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| Error::serialization(format!("read model {id}"), e)))
            .transpose()
    }

    #[instrument(skip(self))]
    async fn delete(&self, id: &str) -> Result<bool> {
        Ok(self.delete_many(&[id.to_string()]).await? > 0)
    }

    #[instrument(skip(self, query))]
    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        query.validate()?;
        let docs = self.candidates(&query.filters).await?;
        Ok(query.apply(docs))
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
        let mut args: Vec<RValue> = vec![self.tag.as_str().into(), "delete".into(), (ids.len() as i64).into()];
        args.extend(ids.iter().map(|id| RValue::from(id.as_str())));
        let reply = self.call(args).await?;
        crate::event_store::int(&reply).ok_or_else(|| protocol("delete count"))
    }
}
