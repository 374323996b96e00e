//! Connection and layout settings for MongoDB.

use std::time::Duration;

use cqrsx_core::{ContentType, Error, Result};

use crate::capabilities::AssumedCapabilities;

/// Everything needed to reach MongoDB and name cqrsx's collections.
///
/// ```
/// use cqrsx_mongo::MongoConfig;
/// let config = MongoConfig::default()
///     .with_uri("mongodb://app:s3cret@db1:27017/?replicaSet=rs0")
///     .with_database("shop")
///     .with_collection_prefix("orders_");
/// assert!(config.validate().is_ok());
/// assert_eq!(config.events_collection(), "orders_events");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MongoConfig {
    /// Connection string.
    pub uri: String,
    /// Database holding every cqrsx collection.
    pub database: String,
    /// Largest connection pool per server.
    pub max_pool_size: u32,
    /// Time allowed to open a connection, and for the first connection (TCP, handshake, a
    /// ping) as a whole: past it, `connect` fails with a typed error.
    pub connect_timeout: Duration,
    /// Time allowed for one operation's reply.
    pub socket_timeout: Duration,
    /// Time allowed to find a suitable server.
    pub server_selection_timeout: Duration,
    /// Prefix of every collection name.
    pub collection_prefix: String,
    /// Commits (events) collection, before the prefix.
    pub events_collection: String,
    /// Counter collection (global positions), before the prefix.
    pub counters_collection: String,
    /// Snapshot collection, before the prefix.
    pub snapshots_collection: String,
    /// How long a `read_all` reader waits for a reserved position's commit before it closes the
    /// gap with a filler.
    pub gap_timeout: Duration,
    /// Payload encoding of the repositories built from this config.
    pub content_type: ContentType,
    /// A testing aid: capabilities to assume instead of detecting them (none by default).
    pub assume: AssumedCapabilities,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "cqrsx".into(),
            max_pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            socket_timeout: Duration::from_secs(30),
            server_selection_timeout: Duration::from_secs(10),
            collection_prefix: String::new(),
            events_collection: "events".into(),
            counters_collection: "counters".into(),
            snapshots_collection: "snapshots".into(),
            gap_timeout: Duration::from_secs(2),
            content_type: ContentType::Json,
            assume: AssumedCapabilities::default(),
        }
    }
}

/// `mongodb://user:pass@host` → `mongodb://***@host`.
pub(crate) fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &uri[..scheme], &uri[at + 1..]),
        _ => uri.to_string(),
    }
}

impl std::fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("max_pool_size", &self.max_pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("socket_timeout", &self.socket_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("collection_prefix", &self.collection_prefix)
            .field("events_collection", &self.events_collection)
            .field("counters_collection", &self.counters_collection)
            .field("snapshots_collection", &self.snapshots_collection)
            .field("gap_timeout", &self.gap_timeout)
            .field("content_type", &self.content_type)
            .field("assume", &self.assume)
            .finish()
    }
}

fn valid_collection_part(name: &str) -> bool {
    !name.contains(['$', '\0']) && !name.starts_with("system.")
}

impl MongoConfig {
    /// The connection string.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// The database.
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// The largest pool per server.
    pub fn with_max_pool_size(mut self, size: u32) -> Self {
        self.max_pool_size = size;
        self
    }

    /// Connect, socket (per operation) and server-selection timeouts.
    pub fn with_timeouts(mut self, connect: Duration, socket: Duration, server_selection: Duration) -> Self {
        self.connect_timeout = connect;
        self.socket_timeout = socket;
        self.server_selection_timeout = server_selection;
        self
    }

    /// A prefix for every collection name (`orders_` → `orders_events`, …).
    pub fn with_collection_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = prefix.into();
        self
    }

    /// Custom names for the commits, counters and snapshots collections.
    pub fn with_collections(
        mut self,
        events: impl Into<String>,
        counters: impl Into<String>,
        snapshots: impl Into<String>,
    ) -> Self {
        self.events_collection = events.into();
        self.counters_collection = counters.into();
        self.snapshots_collection = snapshots.into();
        self
    }

    /// How long a reader waits on a gap before filling it.
    pub fn with_gap_timeout(mut self, gap_timeout: Duration) -> Self {
        self.gap_timeout = gap_timeout;
        self
    }

    /// The payload encoding of repositories built from this config.
    pub fn with_content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// A testing aid: assume these capabilities instead of the detected ones.
    pub fn with_assumed_capabilities(mut self, assume: AssumedCapabilities) -> Self {
        self.assume = assume;
        self
    }

    /// The full name of the commits collection.
    pub fn events_collection(&self) -> String {
        format!("{}{}", self.collection_prefix, self.events_collection)
    }

    /// The full name of the counters collection.
    pub fn counters_collection(&self) -> String {
        format!("{}{}", self.collection_prefix, self.counters_collection)
    }

    /// The full name of the snapshots collection.
    pub fn snapshots_collection(&self) -> String {
        format!("{}{}", self.collection_prefix, self.snapshots_collection)
    }

    /// The full name of a read-model collection.
    pub fn read_model_collection(&self, name: &str) -> String {
        format!("{}{name}", self.collection_prefix)
    }

    /// Reads `CQRSX_MONGO_URI`, `CQRSX_MONGO_DATABASE`, `CQRSX_MONGO_POOL_SIZE`,
    /// `CQRSX_MONGO_PREFIX`, `CQRSX_MONGO_CONNECT_TIMEOUT_MS` and (a testing aid)
    /// `CQRSX_MONGO_ASSUME` over the defaults, then validates.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`MongoConfig::from_env`] over any source of variables (a map, a test's table).
    /// Durations are whole milliseconds: `CQRSX_MONGO_CONNECT_TIMEOUT_MS`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::default();
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        if let Some(uri) = var("CQRSX_MONGO_URI") {
            config.uri = uri;
        }
        if let Some(db) = var("CQRSX_MONGO_DATABASE") {
            config.database = db;
        }
        if let Some(size) = var("CQRSX_MONGO_POOL_SIZE") {
            config.max_pool_size = size
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_MONGO_POOL_SIZE={size} is not a number")))?;
        }
        if let Some(prefix) = var("CQRSX_MONGO_PREFIX") {
            config.collection_prefix = prefix;
        }
        if let Some(assume) = var("CQRSX_MONGO_ASSUME") {
            config.assume = AssumedCapabilities::parse(&assume)?;
        }
        if let Some(ms) = var("CQRSX_MONGO_CONNECT_TIMEOUT_MS") {
            config.connect_timeout = ms
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| Error::Config(format!("CQRSX_MONGO_CONNECT_TIMEOUT_MS={ms} is not a number of ms")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings, naming the first wrong one.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if !(self.uri.starts_with("mongodb://") || self.uri.starts_with("mongodb+srv://")) {
            return fail(format!(
                "uri {} must start with mongodb:// or mongodb+srv://",
                redact_uri(&self.uri)
            ));
        }
        if self.database.is_empty()
            || self.database.len() > 63
            || self
                .database
                .contains(['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0'])
        {
            return fail(format!("database name {:?} is not valid", self.database));
        }
        if self.max_pool_size == 0 {
            return fail("max_pool_size must be at least 1".into());
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("socket_timeout", self.socket_timeout),
            ("server_selection_timeout", self.server_selection_timeout),
            ("gap_timeout", self.gap_timeout),
        ] {
            if d.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if !valid_collection_part(&self.collection_prefix) {
            return fail(format!("collection prefix {:?} is not valid", self.collection_prefix));
        }
        let names = [
            ("events_collection", &self.events_collection),
            ("counters_collection", &self.counters_collection),
            ("snapshots_collection", &self.snapshots_collection),
        ];
        for (field, name) in names {
            if name.is_empty() || !valid_collection_part(name) {
                return fail(format!("{field} {name:?} is not a valid collection name"));
            }
        }
        let full = [
            self.events_collection(),
            self.counters_collection(),
            self.snapshots_collection(),
        ];
        if full[0] == full[1] || full[0] == full[2] || full[1] == full[2] {
            return fail("events, counters and snapshots collections must have different names".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_named() {
        let cases = [
            (MongoConfig::default().with_uri("http://x"), "uri"),
            (MongoConfig::default().with_database("a.b"), "database"),
            (MongoConfig::default().with_max_pool_size(0), "max_pool_size"),
            (
                MongoConfig::default().with_collections("e", "e", "s"),
                "different names",
            ),
            (
                MongoConfig::default().with_collections("", "c", "s"),
                "events_collection",
            ),
            (MongoConfig::default().with_collection_prefix("a$"), "prefix"),
            (MongoConfig::default().with_gap_timeout(Duration::ZERO), "gap_timeout"),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let config = MongoConfig::default().with_uri("mongodb://u:topsecret@h:1");
        let debug = format!("{config:?}");
        assert!(!debug.contains("topsecret") && debug.contains("***@h:1"), "{debug}");
    }
}
