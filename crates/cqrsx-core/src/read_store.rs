//! The [`ReadStore`] trait for read models (projections): JSON documents by id, with queries
//! (filters, sort, pagination), counts, batches and optional TTL.

use std::cmp::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::stream::validate_id;

/// A read model as stored: its id and JSON body (an object).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The read model's id.
    pub id: String,
    /// The body; always a JSON object.
    pub data: Value,
}

/// A comparison in a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (also true when the field is missing).
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal to one of the values of an array.
    In,
    /// A string that starts with the given string.
    Prefix,
    /// The field exists (value `true`) or does not (value `false`).
    Exists,
}

/// One condition on a field; `field` is a dotted path into the document (`address.city`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The dotted field path.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub value: Value,
}

impl Filter {
    /// A filter.
    pub fn new(field: impl Into<String>, op: Op, value: impl Into<Value>) -> Self {
        Self {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    /// `field == value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(field, Op::Eq, value)
    }

    /// Whether `doc` satisfies this filter (the in-memory semantics every backend matches).
    pub fn matches(&self, doc: &Value) -> bool {
        let field = lookup(doc, &self.field);
        match self.op {
            Op::Exists => field.is_some() == self.value.as_bool().unwrap_or(true),
            Op::Ne => field.is_none_or(|v| compare(v, &self.value) != Some(Ordering::Equal)),
            Op::In => match (&self.value, field) {
                (Value::Array(options), Some(v)) => options.iter().any(|o| compare(v, o) == Some(Ordering::Equal)),
                _ => false,
            },
            Op::Prefix => match (field, &self.value) {
                (Some(Value::String(s)), Value::String(p)) => s.starts_with(p.as_str()),
                _ => false,
            },
            op => match field.and_then(|v| compare(v, &self.value)) {
                Some(ord) => match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Gte => ord != Ordering::Less,
                    Op::Lt => ord == Ordering::Less,
                    Op::Lte => ord != Ordering::Greater,
                    _ => false,
                },
                None => false,
            },
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// The dotted field path.
    pub field: String,
    /// The direction.
    pub direction: Direction,
}

impl Sort {
    /// How two documents' values of this key order, in this key's direction.
    fn order(&self, a: Option<&Value>, b: Option<&Value>) -> Ordering {
        let ord = total_order(a, b);
        match self.direction {
            Direction::Asc => ord,
            Direction::Desc => ord.reverse(),
        }
    }
}

/// What [`ReadStore::query`] returns: all filters must hold (AND); then sort, skip, limit.
/// Documents tie-break on id, so pagination is stable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Conditions, all of which must hold.
    pub filters: Vec<Filter>,
    /// Sort keys, most significant first.
    pub sort: Vec<Sort>,
    /// Documents to skip.
    pub offset: u64,
    /// Most documents to return.
    pub limit: Option<u64>,
}

impl Query {
    /// Every document.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Adds an ascending sort key.
    pub fn sort_asc(mut self, field: impl Into<String>) -> Self {
        self.sort.push(Sort {
            field: field.into(),
            direction: Direction::Asc,
        });
        self
    }

    /// Adds a descending sort key.
    pub fn sort_desc(mut self, field: impl Into<String>) -> Self {
        self.sort.push(Sort {
            field: field.into(),
            direction: Direction::Desc,
        });
        self
    }

    /// Skips `offset` documents and returns at most `limit`.
    pub fn page(mut self, offset: u64, limit: u64) -> Self {
        self.offset = offset;
        self.limit = Some(limit);
        self
    }

    /// Checks field paths and each operator's operand: `Eq` and `Ne` take a string, number or
    /// boolean; the ranges a number or string; `In` an array of those; `Prefix` a string;
    /// `Exists` a boolean. Anything else (null, objects, arrays where a scalar is meant) is
    /// refused, on every backend alike.
    pub fn validate(&self) -> Result<()> {
        for f in &self.filters {
            validate_field_path(&f.field)?;
            let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let fits = match f.op {
                Op::Eq | Op::Ne => scalar(&f.value),
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => matches!(f.value, Value::Number(_) | Value::String(_)),
                Op::In => matches!(&f.value, Value::Array(items) if items.iter().all(scalar)),
                Op::Prefix => f.value.is_string(),
                Op::Exists => f.value.is_boolean(),
            };
            if !fits {
                return Err(Error::InvalidInput(format!(
                    "filter on {}: {:?} does not take {}",
                    f.field, f.op, f.value
                )));
            }
        }
        for s in &self.sort {
            validate_field_path(&s.field)?;
        }
        Ok(())
    }

    /// The query [`ReadStore::count`] answers: these filters, validated.
    pub fn counting(filters: &[Filter]) -> Result<Self> {
        let query = Self {
            filters: filters.to_vec(),
            ..Self::default()
        };
        query.validate()?;
        Ok(query)
    }

    /// How many of `docs` pass every filter (sort and page do not apply to a count).
    pub fn count_matching<'a>(&self, docs: impl IntoIterator<Item = &'a Document>) -> u64 {
        docs.into_iter()
            .filter(|d| self.filters.iter().all(|f| f.matches(&d.data)))
            .count() as u64
    }

    /// Applies this query to documents in memory (used by the in-memory store and by backends
    /// for what their server cannot do). Works in place: no copy of the documents is made.
    pub fn apply(&self, docs: impl IntoIterator<Item = Document>) -> Vec<Document> {
        let mut out: Vec<Document> = docs.into_iter().collect();
        if !self.filters.is_empty() {
            out.retain(|d| self.filters.iter().all(|f| f.matches(&d.data)));
        }
        self.sort_documents(&mut out);
        let offset = usize::try_from(self.offset).unwrap_or(usize::MAX).min(out.len());
        out.drain(..offset);
        if let Some(limit) = self.limit {
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        out
    }

    /// Sorts by the query's keys, then by id. Documents already in order (as a server's index
    /// returns them, but for ties) cost one pass.
    pub fn sort_documents(&self, docs: &mut [Document]) {
        // Each document's sort values, looked up once: a comparison would look both up again
        // (measured: half the time of sorting ten small documents).
        let width = self.sort.len();
        let values: Vec<Option<&Value>> = docs
            .iter()
            .flat_map(|d| self.sort.iter().map(move |key| lookup(&d.data, &key.field)))
            .collect();
        let compare = |a: usize, b: usize| {
            self.sort
                .iter()
                .enumerate()
                .map(|(k, key)| key.order(values[a * width + k], values[b * width + k]))
                .find(|ord| ord.is_ne())
                .unwrap_or_else(|| docs[a].id.cmp(&docs[b].id))
        };
        if (1..docs.len()).all(|i| compare(i - 1, i).is_le()) {
            return;
        }
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.sort_by(|&a, &b| compare(a, b));
        permute(docs, order);
    }
}

/// Puts the document at `order[i]` at `i`, for every `i`, in place: one cycle of the
/// permutation at a time.
fn permute(docs: &mut [Document], mut order: Vec<usize>) {
    for start in 0..order.len() {
        let mut current = start;
        loop {
            let next = order[current];
            // A position whose document is in place points at itself.
            order[current] = current;
            if next == start {
                break;
            }
            docs.swap(current, next);
            current = next;
        }
    }
}

/// The value at a dotted path.
pub fn lookup<'v>(doc: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(doc, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// Compares two JSON values of the same kind (numbers numerically, strings bytewise, booleans);
/// `None` for different kinds.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn kind_rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Number(_)) => 1,
        Some(Value::String(_)) => 2,
        Some(Value::Object(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Bool(_)) => 5,
    }
}

/// A total order over optional JSON values for sorting: missing/null, numbers, strings, objects,
/// arrays, booleans (MongoDB's order).
pub fn total_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    kind_rank(a).cmp(&kind_rank(b)).then_with(|| match (a, b) {
        (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    })
}

/// Checks a dotted field path: non-empty segments, no `$`, no control characters.
pub fn validate_field_path(path: &str) -> Result<()> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(Error::InvalidInput(format!("field path {path:?} has an empty segment")));
    }
    if path.starts_with('$') || path.contains(".$") || path.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!("field path {path:?} is not allowed")));
    }
    Ok(())
}

/// Checks a read model before it is written: a valid id, an object body whose keys are not
/// empty, do not start with `$` and contain no `.` or NUL, whose integers fit in an `i64` (what
/// every backend stores exactly; larger ones would come back as floats from BSON), and a size
/// within `max_bytes` (measured exactly only for a document that could be near it).
pub fn validate_document(id: &str, data: &Value, max_bytes: usize) -> Result<()> {
    validate_id("read model id", id)?;
    if !data.is_object() {
        return Err(Error::InvalidInput(format!("read model {id} must be a JSON object")));
    }
    /// Checks names and integers, and returns an upper bound of the value's JSON size.
    fn check(value: &Value, depth: usize) -> Result<usize> {
        if depth > 100 {
            return Err(Error::InvalidInput("read model nests deeper than 100 levels".into()));
        }
        // A string's JSON is at most six bytes per byte (`\u00XX`) and its quotes.
        let string = |s: &str| 6 * s.len() + 2;
        match value {
            Value::Object(map) => {
                let mut bound = 2;
                for (k, v) in map {
                    if k.is_empty() || k.starts_with('$') || k.contains('.') || k.contains('\0') {
                        return Err(Error::InvalidInput(format!("field name {k:?} is not allowed")));
                    }
                    bound += string(k) + 2 + check(v, depth + 1)?;
                }
                Ok(bound)
            }
            Value::Array(items) => items
                .iter()
                .try_fold(2, |bound, v| Ok(bound + 1 + check(v, depth + 1)?)),
            Value::Number(n) if n.is_u64() && n.as_i64().is_none() => Err(Error::InvalidInput(format!(
                "integer {n} is over {} (i64::MAX), the largest every backend stores exactly; store it as a string",
                i64::MAX
            ))),
            Value::Number(_) => Ok(32),
            Value::String(s) => Ok(string(s)),
            Value::Bool(_) | Value::Null => Ok(5),
        }
    }
    if check(data, 0)? <= max_bytes {
        return Ok(());
    }
    // Only a document near the limit is measured exactly.
    let mut counted = ByteCount(0);
    serde_json::to_writer(&mut counted, data).map_err(|e| Error::serialization("read model", e))?;
    let size = counted.0;
    if size > max_bytes {
        return Err(Error::InvalidInput(format!(
            "read model {id} is {size} bytes, over the limit of {max_bytes}"
        )));
    }
    Ok(())
}

/// Counts the bytes written to it: a document's JSON size without building the JSON.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The longest TTL a read model or view document may have (100 years; every backend stores
/// its expiry exactly).
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks a TTL: longer than zero, at most [`MAX_TTL`].
pub fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Error::InvalidInput(format!(
            "a TTL must be longer than zero and at most {} days, got {ttl:?}",
            MAX_TTL.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// Checks a document against what a store can hold: [`validate_document`] within the store's
/// size limit, and no array directly inside an array where the store has none
/// ([`ReadStoreCapabilities::nested_arrays`]).
pub fn validate_document_for(id: &str, data: &Value, caps: &ReadStoreCapabilities) -> Result<()> {
    validate_document(id, data, caps.max_document_bytes)?;
    if !caps.nested_arrays && has_nested_arrays(data) {
        return Err(Error::InvalidInput(format!(
            "document {id} holds an array inside an array, which this server cannot store"
        )));
    }
    Ok(())
}

/// What a read store can do beyond the basics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStoreCapabilities {
    /// Whether documents can expire ([`ReadStore::save_with_ttl`]).
    pub ttl: bool,
    /// Largest accepted document, in bytes of JSON.
    pub max_document_bytes: usize,
    /// Whether documents may hold arrays directly inside arrays. Where not (FerretDB 1.x),
    /// such a document is refused with [`Error::InvalidInput`] before the write.
    pub nested_arrays: bool,
}

/// Whether a JSON value holds an array directly inside an array.
pub fn has_nested_arrays(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| v.is_array() || has_nested_arrays(v)),
        Value::Object(map) => map.values().any(has_nested_arrays),
        _ => false,
    }
}

/// Stores read models of one kind (one collection / key space).
#[async_trait]
pub trait ReadStore: Send + Sync {
    /// What this store can do.
    fn capabilities(&self) -> ReadStoreCapabilities;

    /// Inserts or replaces a document.
    async fn save(&self, id: &str, data: Value) -> Result<()>;

    /// Inserts or replaces a document that expires after `ttl` (it is invisible to every read
    /// from then on). Stores whose [`ReadStoreCapabilities::ttl`] is false refuse with
    /// [`Error::InvalidInput`]; a zero TTL is refused too.
    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()>;

    /// A document by id.
    async fn get(&self, id: &str) -> Result<Option<Value>>;

    /// Deletes a document; returns whether it existed.
    async fn delete(&self, id: &str) -> Result<bool>;

    /// Documents matching the query.
    async fn query(&self, query: &Query) -> Result<Vec<Document>>;

    /// How many documents match all `filters`.
    async fn count(&self, filters: &[Filter]) -> Result<u64>;

    /// Inserts or replaces many documents; all are validated before any is written.
    async fn save_many(&self, docs: Vec<Document>) -> Result<()>;

    /// Deletes many documents; returns how many existed.
    async fn delete_many(&self, ids: &[String]) -> Result<u64>;
}

/// Typed access to any [`ReadStore`].
#[async_trait]
pub trait ReadStoreExt: ReadStore {
    /// Saves a serializable read model.
    async fn save_model<T: Serialize + Sync>(&self, id: &str, model: &T) -> Result<()> {
        let data = serde_json::to_value(model).map_err(|e| Error::serialization("read model", e))?;
        self.save(id, data).await
    }

    /// Loads a read model.
    async fn load_model<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>> {
        match self.get(id).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| Error::serialization(format!("read model {id}"), e)),
            None => Ok(None),
        }
    }
}

impl<T: ReadStore + ?Sized> ReadStoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order `sort_documents` must give: each key in turn, looked up at every comparison,
    /// then the id.
    fn naive(query: &Query, docs: &mut [Document]) {
        docs.sort_by(|a, b| {
            query
                .sort
                .iter()
                .map(|key| key.order(lookup(&a.data, &key.field), lookup(&b.data, &key.field)))
                .find(|ord| ord.is_ne())
                .unwrap_or_else(|| a.id.cmp(&b.id))
        });
    }

    #[test]
    fn sorting_looks_each_value_up_once_and_orders_as_the_keys_say() {
        let mut seed: u64 = 7;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for size in [0usize, 1, 2, 3, 10, 200] {
            let docs: Vec<Document> = (0..size)
                .map(|i| {
                    let mut data = serde_json::json!({ "name": format!("n{}", next(5)) });
                    if next(4) > 0 {
                        data["score"] = serde_json::json!(next(7));
                    }
                    if next(3) == 0 {
                        data["nested"] = serde_json::json!({ "x": format!("v{}", next(3)) });
                    }
                    Document {
                        id: format!("d{}", (i * 37) % 101),
                        data,
                    }
                })
                .collect();
            for query in [
                Query::all().sort_desc("score"),
                Query::all().sort_asc("score").sort_desc("name"),
                Query::all().sort_asc("nested.x").sort_asc("score"),
                Query::all(),
            ] {
                let mut got = docs.clone();
                query.sort_documents(&mut got);
                let mut want = docs.clone();
                naive(&query, &mut want);
                assert_eq!(got, want, "{size} documents, sorted by {:?}", query.sort);
                // In order already, and in order but for ties (as a server's index returns a
                // page in reverse): the one-pass check must tell them apart.
                query.sort_documents(&mut got);
                assert_eq!(got, want, "{size} sorted documents, sorted by {:?}", query.sort);
                let tied = |a: &Document, b: &Document| {
                    (query.sort.iter()).all(|k| k.order(lookup(&a.data, &k.field), lookup(&b.data, &k.field)).is_eq())
                };
                let mut ties_reversed: Vec<Document> =
                    want.chunk_by(tied).flat_map(|run| run.iter().rev().cloned()).collect();
                // (Ids repeat here, so documents equal on keys and id compare by content.)
                let mut expected = ties_reversed.clone();
                naive(&query, &mut expected);
                query.sort_documents(&mut ties_reversed);
                assert_eq!(
                    ties_reversed, expected,
                    "{size} documents with ties reversed, sorted by {:?}",
                    query.sort
                );
            }
        }
    }
}
