//! What the server can do: [`ServerCapabilities`], detected when the client connects, and
//! [`AssumedCapabilities`], a testing aid that overrides them.

use cqrsx_core::{Error, Result};

/// What the server can do, detected the first time a process connects to it (and, as a testing
/// aid, overridden by [`MongoConfig::assume`](crate::MongoConfig)).
///
/// Every capability is detected from what the server does, on a scratch collection
/// (`<prefix>cqrsx_probe_<id>`, dropped afterwards) in the configured database, never from the
/// server's name or version: a MongoDB-wire server may announce what it does not do. Each
/// field says how it is probed. Where a probe cannot run (no rights, an error) the capability is
/// taken as absent, and the store takes its slower path, which is correct everywhere. The
/// result is kept per connection string for the life of the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// Change streams (a replica set or sharded cluster): live subscriptions wake on them.
    /// Probed by opening one on the scratch collection: a standalone `mongod` refuses with 40573,
    /// FerretDB with 115 ("Stage $changeStream is not supported"). The `hello` reply is not
    /// asked: FerretDB 2 answers like a standalone server but so might a proxy in front of a
    /// replica set.
    pub change_streams: bool,
    /// Multi-document transactions that commit and roll back. Probed by committing one
    /// transaction's insert and aborting another's: true only if the first is there and the
    /// second is not. `hello`'s sessions and wire version are not enough: FerretDB 2 announces
    /// both (so drivers let a transaction start) but answers `commitTransaction` with 59
    /// (CommandNotFound), and applies the transaction's writes at once; a standalone `mongod`
    /// refuses transaction numbers (20). The stores never need transactions; this says whether
    /// a caller's own could work.
    pub transactions: bool,
    /// Whether `hello` announces logical sessions (`logicalSessionTimeoutMinutes`): what
    /// drivers, with [`max_wire_version`](Self::max_wire_version), take as transaction support.
    /// Reported, not relied on.
    pub sessions: bool,
    /// The `maxWireVersion` of `hello` (7 and up: drivers assume transactions on a replica set,
    /// and the Rust driver on any server announcing sessions). Reported, not relied on.
    pub max_wire_version: i64,
    /// TTL indexes: the server accepts an index with `expireAfterSeconds` (FerretDB 1.x answers
    /// NotImplemented). Whether and when it removes expired documents is not probed (MongoDB's
    /// monitor runs once a minute): reads hide expired read models on every server.
    pub ttl_indexes: bool,
    /// `$inc` is atomic under concurrency. Probed by racing 16 `findAndModify` increments of one
    /// counter: every one must return a value of its own and the counter end at 16 (FerretDB
    /// 1.x loses concurrent increments; the event store then serialises its own reservations). A
    /// server whose losses the race missed is still handled correctly, only slower: racing
    /// reservations collide on the unique position index and reserve again.
    ///
    /// The same server applies any conditional update of one document as a read and a write of
    /// its own, so a write the client gave up on could land after the writes that followed it:
    /// where this is false, writes that such a late copy could undo (view documents, the
    /// projection checkpoint, leases, read models) are awaited to their reply, past the socket
    /// timeout.
    pub atomic_counters: bool,
    /// Queries on fields other than `_id` use indexes. Probed by explaining a range query with
    /// a sort on an indexed field, hinted to its index: the plan must name the index (MongoDB's `IXSCAN` stage does,
    /// as does DocumentDB's PostgreSQL plan; FerretDB 1.x with SQLite scans the collection and
    /// names none). Without it the event store reads heads by `_id`.
    pub indexed_queries: bool,
    /// Unique indexes over array fields refuse a value held by another document. Probed by
    /// inserting two documents that share an element of a uniquely indexed array field: the
    /// second must be refused with a duplicate key (11000). FerretDB 1.x accepts it; the event
    /// store then checks event ids through id documents read by `_id`.
    pub unique_array_indexes: bool,
    /// Documents may hold arrays directly inside arrays. Probed by inserting one (FerretDB 1.x
    /// refuses it; read models and views holding them are then refused before the write, event
    /// payloads and metadata holding them are stored as bytes and text).
    pub nested_arrays: bool,
    /// The server's version string (`buildInfo`).
    pub version: String,
    /// Set when the server is FerretDB, with its version (`buildInfo`): for reports only,
    /// never used to decide a path.
    pub ferretdb: Option<String>,
}

impl ServerCapabilities {
    /// The capabilities the store's paths depend on, present and absent, for a log or a
    /// report: `indexed_queries, … | lacks transactions, …`.
    pub fn summary(&self) -> String {
        let all = [
            ("indexed_queries", self.indexed_queries),
            ("unique_array_indexes", self.unique_array_indexes),
            ("atomic_counters", self.atomic_counters),
            ("ttl_indexes", self.ttl_indexes),
            ("nested_arrays", self.nested_arrays),
            ("transactions", self.transactions),
            ("change_streams", self.change_streams),
        ];
        let has: Vec<&str> = all.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        let lacks: Vec<&str> = all.iter().filter(|(_, on)| !*on).map(|(n, _)| *n).collect();
        let mut out = if has.is_empty() {
            "none".to_string()
        } else {
            has.join(", ")
        };
        if !lacks.is_empty() {
            out.push_str(&format!("; lacks {}", lacks.join(", ")));
        }
        out.push_str(&format!(
            " (sessions {}, wire version {})",
            if self.sessions { "announced" } else { "not announced" },
            self.max_wire_version
        ));
        out
    }
}

/// A testing aid, off by default: server capabilities to assume instead of the detected ones,
/// so that a code path meant for another server can run here. Switching a capability off is
/// always safe — the store takes the fallback a server without it needs (e.g.
/// `indexed_queries=false,unique_array_indexes=false` runs FerretDB 1.x's paths on MongoDB, to
/// measure or test them). A capability the server does not have must only be claimed where it
/// costs speed, never correctness: claiming `atomic_counters` on a server whose `$inc` loses
/// updates is safe because racing reservations collide on the unique position index and retry;
/// claiming `change_streams` or `unique_array_indexes` where the server has none breaks what
/// needs them.
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
