//! [`RedisReadStore`]: JSON documents of one collection, with optional TTL and secondary
//! indexes that answer filters, counts and sorted, limited queries on the server. What an index
//! cannot answer exactly is finished in memory with the core's reference semantics.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::query::{Direction, Op};
use cqrsx_core::raw::{lookup, validate_field_path, validate_type_name, ReadBackend, ReadStoreCapabilities};
use cqrsx_core::{Document, Error, Filter, Query, Result};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value as RValue;
use serde_json::Value;

use crate::client::RedisClientManager;
use crate::collection::{Collection, DocWrite};
use crate::error::protocol;
use crate::keys::Keys;
use crate::reply::{array, int, raw, text};

/// The largest document accepted, in bytes of JSON.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Documents fetched per `HMGET` when a query's candidates are too many for one reply.
const FETCH_CHUNK: usize = 512;

/// Candidates a query's script call returns with their documents; beyond this it returns the
/// ids and the documents follow in chunks, so no one call blocks the server for long.
const INLINE_DOCS: i64 = 1_000;

/// A read-model collection in Redis.
///
/// A collection is a fixed set of keys under its hash tag `T`: a hash of JSON documents by
/// id, a sorted set of ids scored by expiry (which tells live documents from expired ones:
/// reads never return those, and writes and counts remove a bounded number of them per call;
/// [`RedisReadStore::purge_expired`] removes all), the same for only the ids that expire (absent
/// when none does, so that reads need not compare expiries), and per indexed field sorted sets
/// of its numbers and strings. Every call is one script that
/// declares each key it touches. An equality, range or prefix filter on an indexed field picks
/// the candidates on the server; a count answered by one index, or a query sorted by one
/// numeric indexed field with a limit (top-N), is one call that transfers only what it
/// returns.
///
/// ```no_run
/// # async fn demo(client: cqrsx_redis::RedisClientManager) -> cqrsx_core::Result<()> {
/// use std::time::Duration;
/// use cqrsx_core::query::{Filter, Op, Query};
/// use cqrsx_core::ReadStore;
/// let users = cqrsx_redis::RedisReadStore::new(client, "users")?
///     .with_index("status")?
///     .with_default_ttl(Duration::from_secs(3600));
/// users.save("u-1", serde_json::json!({"status": "active", "age": 31})).await?;
/// let active = users.query(&Query::all().filter(Filter::new("status", Op::Eq, "active"))).await?;
/// # Ok(()) }
/// ```
pub struct RedisReadStore {
    client: RedisClientManager,
    collection: Collection,
    indexes: BTreeSet<String>,
    default_ttl: Option<Duration>,
}

impl std::fmt::Debug for RedisReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReadStore")
            .field("collection", &self.collection)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

/// The script of the collection operations that write (and count): the document libraries,
/// then the operations.
static WRITES: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(concat!(
        include_str!("lua/docs.lua"),
        include_str!("lua/docs_write.lua"),
        include_str!("lua/read_model.lua")
    ))
});

/// The script of the collection reads: the reading half of the document library alone, so that
/// a read does not make the writes' functions.
static READS: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(concat!(include_str!("lua/docs.lua"), include_str!("lua/query.lua"))));

/// The script of the top N by a numeric index: alone, with no library.
static TOP: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("lua/top.lua")));

/// A stored document: its JSON, which this store wrote.
fn parse(id: &str, json: &[u8]) -> Result<Document> {
    Ok(Document {
        data: serde_json::from_slice(json)
            .map_err(|e| Error::Integrity(format!("read model {id} is not JSON: {e}")))?,
        id: id.to_string(),
    })
}

/// Documents from a reply's `id, JSON` pairs (a JSON of nil: removed in the meantime), read
/// in place.
fn pairs(mut items: impl ExactSizeIterator<Item = RValue>) -> Result<Vec<Document>> {
    let mut docs = Vec::with_capacity(items.len() / 2);
    while let Some(id) = items.next() {
        let id = raw(&id)
            .and_then(|id| std::str::from_utf8(id).ok())
            .ok_or_else(|| protocol("a document id"))?;
        if let Some(json) = items.next().as_ref().and_then(raw) {
            docs.push(parse(id, json)?);
        }
    }
    Ok(docs)
}

/// A bound of a score range: `x`, `(x` (exclusive), `-inf`, `+inf`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: f64,
    inclusive: bool,
}

fn score(bound: Option<Bound>, infinity: &str) -> String {
    match bound {
        None => infinity.to_string(),
        Some(Bound { value, inclusive: true }) => value.to_string(),
        Some(Bound { value, .. }) => format!("({value}"),
    }
}

/// The score range of numeric range filters on one field, if every filter is one.
fn numeric_range(filters: &[Filter], field: &str) -> Option<(Option<Bound>, Option<Bound>)> {
    let (mut lo, mut hi): (Option<Bound>, Option<Bound>) = (None, None);
    for f in filters {
        let x = (f.field == field).then(|| f.value.as_f64()).flatten()?;
        let tighter_lo = |b: Option<Bound>, new: Bound| match b {
            Some(old) if old.value > new.value || (old.value == new.value && !old.inclusive) => Some(old),
            _ => Some(new),
        };
        let tighter_hi = |b: Option<Bound>, new: Bound| match b {
            Some(old) if old.value < new.value || (old.value == new.value && !old.inclusive) => Some(old),
            _ => Some(new),
        };
        let at = |inclusive| Bound { value: x, inclusive };
        match f.op {
            Op::Eq => {
                lo = tighter_lo(lo, at(true));
                hi = tighter_hi(hi, at(true));
            }
            Op::Gt => lo = tighter_lo(lo, at(false)),
            Op::Gte => lo = tighter_lo(lo, at(true)),
            Op::Lt => hi = tighter_hi(hi, at(false)),
            Op::Lte => hi = tighter_hi(hi, at(true)),
            _ => return None,
        }
    }
    Some((lo, hi))
}

/// A selection of candidates: mode, field slot, min, max (see `docs.lua`).
type Selection = (&'static str, i64, RValue, RValue);

impl RedisReadStore {
    /// The collection `collection` (a name of letters, digits, `_`, `-`, `.`).
    pub fn new(client: RedisClientManager, collection: &str) -> Result<Self> {
        validate_type_name("collection", collection)?;
        let keys = Keys::new(&client.config().key_prefix, 1);
        Ok(Self::over(client, keys.read_model(collection), BTreeSet::new()))
    }

    /// A store over the documents under `tag` (a projection's view).
    pub(crate) fn over(client: RedisClientManager, tag: String, indexes: BTreeSet<String>) -> Self {
        Self {
            collection: Collection::new(tag, &indexes),
            indexes,
            client,
            default_ttl: None,
        }
    }

    /// Maintains a secondary index on a field (dotted path). Equality, prefix and range filters
    /// on it pick candidates on the server, counts by it and queries sorted by it with a limit
    /// are answered there. Documents saved before the index was declared are indexed when next
    /// saved.
    pub fn with_index(mut self, field: &str) -> Result<Self> {
        validate_field_path(field)?;
        self.indexes.insert(field.to_string());
        self.collection = Collection::new(self.collection.tag().to_string(), &self.indexes);
        Ok(self)
    }

    /// Every document saved with [`ReadStore::save`](cqrsx_core::ReadStore::save) expires after `ttl`.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl.min(cqrsx_core::raw::MAX_TTL)).filter(|t| !t.is_zero());
        self
    }

    /// An operation that writes (write, count, purge): it takes the whole collection. `args`
    /// makes its arguments (again, if the server had lost the script).
    async fn call(&self, op: &str, args: impl Fn() -> Vec<RValue>) -> Result<RValue> {
        self.client
            .run_script(&WRITES, || {
                let mut all = vec![RValue::from(op)];
                all.extend(self.collection.descriptor());
                all.extend(args());
                (self.collection.keys(), all)
            })
            .await
    }

    /// A read (get, ids): it takes the keys of the field at `slot` only (0: none).
    async fn read(&self, op: &str, slot: i64, args: impl Fn() -> Vec<RValue>) -> Result<RValue> {
        self.client
            .run_script(&READS, || {
                let mut all = vec![RValue::from(op)];
                all.extend(args());
                (self.collection.read_keys(slot), all)
            })
            .await
    }

    /// The documents of the top N by the field at `slot` (see `top.lua`), and whether they are
    /// complete (every id tied with the last included) rather than a page in index order;
    /// `None` when the index cannot answer.
    async fn top_call(&self, slot: i64, args: impl Fn() -> Vec<RValue>) -> Result<Option<(bool, Vec<Document>)>> {
        let reply = self
            .client
            .run_script(&TOP, || (self.collection.read_keys(slot), args()))
            .await?;
        let mut items = array(reply)?.into_iter();
        let complete = match items.next().as_ref().and_then(text).as_deref() {
            Some("ok") => true,
            Some("page") => false,
            _ => return Ok(None),
        };
        let mut docs = Vec::with_capacity(items.len());
        for item in items {
            let joined = raw(&item).ok_or_else(|| protocol("a top-N document"))?;
            let (id, json) = joined
                .iter()
                .position(|&b| b == 0)
                .map(|nul| (&joined[..nul], &joined[nul + 1..]))
                .ok_or_else(|| protocol("a top-N document without its id"))?;
            let id = std::str::from_utf8(id).map_err(|_| protocol("a document id"))?;
            docs.push(parse(id, json)?);
        }
        Ok(Some((complete, docs)))
    }

    async fn write(&self, writes: Vec<DocWrite>) -> Result<u64> {
        if writes.is_empty() {
            return Ok(0);
        }
        let reply = self.call("write", || self.collection.write_args(&writes)).await?;
        int(&reply).ok_or_else(|| protocol("write reply"))
    }

    async fn put_docs(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        let mut writes = Vec::with_capacity(docs.len());
        for d in docs {
            let json = serde_json::to_string(&d.data).map_err(|e| Error::serialization("read model", e))?;
            writes.push(DocWrite::Put {
                id: d.id,
                json,
                ttl,
                data: d.data,
            });
        }
        self.write(writes).await.map(|_| ())
    }

    /// Documents by id, in order; `None` for those that are gone.
    async fn fetch(&self, ids: &[String]) -> Result<Vec<Option<Document>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FETCH_CHUNK) {
            let values: Vec<Option<String>> = self
                .client
                .track(self.client.client().hmget(self.collection.docs(), chunk.to_vec()))
                .await?;
            for (id, json) in chunk.iter().zip(values) {
                out.push(json.map(|json| parse(id, json.as_bytes())).transpose()?);
            }
        }
        Ok(out)
    }

    /// Removes up to a batch of expired documents and their index entries.
    async fn purge(&self) -> Result<u64> {
        let reply = self.call("purge", || vec![RValue::from(500)]).await?;
        int(&reply).ok_or_else(|| protocol("purge reply"))
    }

    /// Removes every document whose expiry has passed, a batch per call; how many. Reads never
    /// return expired documents, and writes remove a few each, so this is only needed to free
    /// memory in a collection that is rarely written.
    pub async fn purge_expired(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.purge().await?;
            total += n;
            if n < 500 {
                return Ok(total);
            }
        }
    }

    /// The cheapest exact selection of candidates for these filters.
    fn plan(&self, filters: &[Filter]) -> Selection {
        for f in filters {
            let Some(slot) = self.collection.slot(&f.field) else {
                continue;
            };
            match (&f.op, &f.value) {
                (Op::Eq | Op::Gt | Op::Gte | Op::Lt | Op::Lte, Value::Number(_)) => {
                    if let Some((lo, hi)) = numeric_range(std::slice::from_ref(f), &f.field) {
                        return ("score", slot, score(lo, "-inf").into(), score(hi, "+inf").into());
                    }
                }
                (Op::Eq, Value::String(s)) if !s.contains('\0') => {
                    let min = [b"[".as_slice(), s.as_bytes(), b"\0"].concat();
                    let max = [b"(".as_slice(), s.as_bytes(), b"\x01"].concat();
                    return ("lex", slot, RValue::Bytes(min.into()), RValue::Bytes(max.into()));
                }
                (Op::Prefix, Value::String(s)) if !s.contains('\0') => {
                    let min = [b"[".as_slice(), s.as_bytes()].concat();
                    let max = [b"(".as_slice(), s.as_bytes(), b"\xff"].concat();
                    return ("lex", slot, RValue::Bytes(min.into()), RValue::Bytes(max.into()));
                }
                _ => {}
            }
        }
        ("all", 0, "".into(), "".into())
    }

    /// Live candidates of a selection, with their documents.
    async fn candidates(&self, selection: Selection) -> Result<Vec<Document>> {
        let (mode, slot, min, max) = selection;
        let reply = self
            .read("ids", slot, || {
                vec![mode.into(), min.clone(), max.clone(), INLINE_DOCS.into()]
            })
            .await?;
        let mut items = array(reply)?.into_iter();
        match items.next().as_ref().and_then(text).as_deref() {
            Some("docs") => pairs(items),
            Some("ids") => {
                let ids: Vec<String> = items.filter_map(|v| text(&v)).collect();
                Ok(self.fetch(&ids).await?.into_iter().flatten().collect())
            }
            other => Err(protocol(format!("ids reply {other:?}"))),
        }
    }

    /// A query sorted by one numeric indexed field with a limit, answered by the index when
    /// the field holds only numbers; `None` when it cannot be.
    async fn top(&self, query: &Query) -> Result<Option<Vec<Document>>> {
        let ([sort], Some(limit)) = (query.sort.as_slice(), query.limit) else {
            return Ok(None);
        };
        let Some(slot) = self.collection.slot(&sort.field) else {
            return Ok(None);
        };
        let Some((lo, hi)) = numeric_range(&query.filters, &sort.field) else {
            return Ok(None);
        };
        let need = query.offset.saturating_add(limit);
        if need == 0 || need > 100_000 {
            return Ok(None);
        }
        let direction = match sort.direction {
            Direction::Asc => "asc",
            Direction::Desc => "desc",
        };
        let bounded = if query.filters.is_empty() { "0" } else { "1" };
        let args = |exact: &'static str| {
            vec![
                RValue::from_static_str(direction),
                score(lo, "-inf").into(),
                score(hi, "+inf").into(),
                i64::try_from(need).unwrap_or(i64::MAX).into(),
                RValue::from_static_str(bounded),
                RValue::from_static_str(exact),
            ]
        };
        let need = usize::try_from(need).unwrap_or(usize::MAX);
        let Some((complete, mut docs)) = self.top_call(slot, || args("0")).await? else {
            return Ok(None);
        };
        // A page holds the first `need` in index order and the next one: enough unless the
        // last ties with the next, which more ties with smaller ids may follow.
        if !complete && docs.len() > need {
            let number = |d: &Document| lookup(&d.data, &sort.field).and_then(Value::as_f64);
            let last = number(&docs[need - 1]);
            if last.is_none() || last == number(&docs[need]) {
                let Some((_, tied)) = self.top_call(slot, || args("1")).await? else {
                    return Ok(None);
                };
                docs = tied;
            } else {
                docs.truncate(need);
            }
        }
        Ok(Some(query.apply(docs)))
    }
}

#[async_trait]
impl ReadBackend for RedisReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadStoreCapabilities {
            ttl: true,
            max_document_bytes: MAX_DOCUMENT_BYTES,
            nested_arrays: true,
        }
    }

    async fn save_docs(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()> {
        self.put_docs(docs, ttl.or(self.default_ttl)).await
    }

    async fn get(&self, id: &str) -> Result<Option<Value>> {
        let reply = self.read("get", 0, || vec![RValue::from(id)]).await?;
        match raw(&reply) {
            Some(json) => Ok(Some(parse(id, json)?.data)),
            None => Ok(None),
        }
    }

    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        if let Some(docs) = self.top(query).await? {
            return Ok(docs);
        }
        let docs = self.candidates(self.plan(&query.filters)).await?;
        Ok(query.apply(docs))
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        let query = Query::counting(filters)?;
        let selection = self.plan(filters);
        // One filter that the index answers exactly, or none: counted on the server.
        if filters.len() <= 1 && (filters.is_empty() || selection.0 != "all") {
            let (mode, slot, min, max) = selection;
            let reply = self
                .call("count", || vec![mode.into(), slot.into(), min.clone(), max.clone()])
                .await?;
            return int(&reply).ok_or_else(|| protocol("count reply"));
        }
        Ok(query.count_matching(&self.candidates(selection).await?))
    }

    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        let writes = ids.iter().map(|id| DocWrite::Delete { id: id.clone() }).collect();
        self.write(writes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_filters_on_one_field_narrow_to_the_tightest_bounds() {
        let f = |op, v: f64| Filter::new("age", op, v);
        let (lo, hi) = numeric_range(&[f(Op::Gte, 18.0), f(Op::Gt, 20.0), f(Op::Lt, 65.0)], "age").expect("range");
        assert_eq!(score(lo, "-inf"), "(20");
        assert_eq!(score(hi, "+inf"), "(65");
        let (lo, hi) = numeric_range(&[f(Op::Eq, 3.5)], "age").expect("range");
        assert_eq!((score(lo, "-inf"), score(hi, "+inf")), ("3.5".into(), "3.5".into()));
        assert!(numeric_range(&[Filter::eq("age", "x")], "age").is_none());
        assert!(numeric_range(&[f(Op::Ne, 1.0)], "age").is_none());
        assert!(numeric_range(&[Filter::new("other", Op::Gt, 1)], "age").is_none());
        assert_eq!(numeric_range(&[], "age"), Some((None, None)));
    }
}
