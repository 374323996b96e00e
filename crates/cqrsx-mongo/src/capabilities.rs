//! What the server can do: [`ServerCapabilities`], detected when the client connects, and
//! [`AssumedCapabilities`], a testing aid that overrides them.

use cqrsx_core::{Error, Result};

/// What the server can do, detected at connect time (and, as a testing aid, overridden by
/// [`MongoConfig::assume`](crate::MongoConfig)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// Change streams (a replica set or sharded cluster): live subscriptions wake on them.
    pub change_streams: bool,
    /// TTL indexes (FerretDB 1.x has none; expiry is then enforced on read only).
    pub ttl_indexes: bool,
    /// `$inc` is atomic under concurrency (FerretDB 1.x loses concurrent increments; the event
    /// store then serialises its own reservations).
    pub atomic_counters: bool,
    /// Queries on fields other than `_id` use indexes (FerretDB 1.x with SQLite scans the
    /// collection; the event store then reads streams by `_id`).
    pub indexed_queries: bool,
    /// Unique indexes over array fields refuse a value held by another document (FerretDB 1.x
    /// does not enforce them; the event store then checks event ids with a query).
    pub unique_array_indexes: bool,
    /// Documents may hold arrays directly inside arrays (FerretDB 1.x refuses them; read
    /// models and views holding them are refused before the write, event payloads and metadata
    /// holding them are stored as bytes and text).
    pub nested_arrays: bool,
    /// The server's version string.
    pub version: String,
    /// Set when the server is FerretDB, with its version.
    pub ferretdb: Option<String>,
}

/// A testing aid, off by default: server capabilities to assume instead of the detected ones,
/// so that a code path meant for another server can run here (e.g. the plain MongoDB path on
/// FerretDB: `indexed_queries` and `atomic_counters` claimed). A capability the server does
/// not really have must only be claimed where it costs speed, never correctness: claiming
/// `atomic_counters` on a server whose `$inc` loses updates is safe because racing
/// reservations collide on the unique position index and retry; claiming `change_streams` or
/// `unique_array_indexes` where the server has none breaks what needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AssumedCapabilities {
    /// Overrides [`ServerCapabilities::atomic_counters`].
    pub atomic_counters: Option<bool>,
    /// Overrides [`ServerCapabilities::indexed_queries`].
    pub indexed_queries: Option<bool>,
    /// Overrides [`ServerCapabilities::ttl_indexes`].
    pub ttl_indexes: Option<bool>,
    /// Overrides [`ServerCapabilities::change_streams`].
    pub change_streams: Option<bool>,
    /// Overrides [`ServerCapabilities::unique_array_indexes`].
    pub unique_array_indexes: Option<bool>,
}

impl AssumedCapabilities {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The detected capabilities with these overrides.
    pub fn apply(self, mut detected: ServerCapabilities) -> ServerCapabilities {
        let set = |flag: &mut bool, value: Option<bool>| {
            if let Some(v) = value {
                *flag = v;
            }
        };
        set(&mut detected.atomic_counters, self.atomic_counters);
        set(&mut detected.indexed_queries, self.indexed_queries);
        set(&mut detected.ttl_indexes, self.ttl_indexes);
        set(&mut detected.change_streams, self.change_streams);
        set(&mut detected.unique_array_indexes, self.unique_array_indexes);
        detected
    }

    /// Parses `name[=true|false],...` (a bare name means true), e.g.
    /// `indexed_queries,atomic_counters`.
    ///
    /// ```
    /// use cqrsx_mongo::AssumedCapabilities;
    /// let a = AssumedCapabilities::parse("indexed_queries, atomic_counters=true, ttl_indexes=false")?;
    /// assert_eq!((a.indexed_queries, a.atomic_counters, a.ttl_indexes, a.change_streams), (Some(true), Some(true), Some(false), None));
    /// assert!(AssumedCapabilities::parse("transactions").is_err());
    /// # Ok::<(), cqrsx_core::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        let mut out = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => (part, "true"),
            };
            let value = match value {
                "true" => true,
                "false" => false,
                other => return Err(Error::Config(format!("capability {name}={other}: use true or false"))),
            };
            let slot = match name {
                "atomic_counters" => &mut out.atomic_counters,
                "indexed_queries" => &mut out.indexed_queries,
                "ttl_indexes" => &mut out.ttl_indexes,
                "change_streams" => &mut out.change_streams,
                "unique_array_indexes" => &mut out.unique_array_indexes,
                other => {
                    return Err(Error::Config(format!(
                        "unknown capability {other:?}: use atomic_counters, indexed_queries, ttl_indexes, \
                         change_streams or unique_array_indexes"
                    )))
                }
            };
            *slot = Some(value);
        }
        Ok(out)
    }
}
