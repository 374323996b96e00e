//! Connection settings for Redis, standalone or Cluster.

use std::time::Duration;

use cqrsx_core::{ContentType, Error, Result};

/// Everything needed to reach Redis and lay out cqrsx's keys.
///
/// ```
/// use cqrsx_redis::RedisConfig;
/// let config = RedisConfig::default()
///     .with_host("10.0.0.5", 6380)
///     .with_password("s3cret")
///     .with_key_prefix("orders");
/// assert!(config.validate().is_ok());
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Host of a standalone server (ignored when `url` or `cluster_nodes` is set).
    pub host: String,
    /// Port of a standalone server.
    pub port: u16,
    /// A `redis://` URL; overrides host, port, password and database.
    pub url: Option<String>,
    /// Password (AUTH).
    pub password: Option<String>,
    /// Database number (standalone only; Cluster has database 0 only).
    pub database: u8,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Reconnect attempts before a command fails (0 = forever).
    pub max_retries: u32,
    /// Time allowed to open a connection.
    pub dial_timeout: Duration,
    /// Time allowed for the first connection as a whole (TCP, AUTH, SELECT, PING, the pool):
    /// past it, `connect` fails with a typed error instead of waiting for a server.
    pub connect_timeout: Duration,
    /// Time allowed for a command's reply.
    pub read_timeout: Duration,
    /// Time allowed to send a command (fred bounds the whole command by one timeout, so the
    /// larger of read and write timeout applies).
    pub write_timeout: Duration,
    /// Cluster seed nodes (`host:port`); when set, the client runs in Cluster mode.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key cqrsx writes, so several applications can share a server.
    pub key_prefix: String,
    /// Partitions of the global log. Each has its own hash tag, so on a Cluster they spread over
    /// the nodes; `read_all` is ordered within a partition.
    pub partitions: u32,
    /// Calls of small appends (up to 4 events) in flight at once per partition. Small appends
    /// beyond it wait for one of those calls to return and then go together, in one script call
    /// (group commit): under load this cuts Redis's work per append; a higher limit favours
    /// latency on slow links. Larger appends are never held back.
    pub append_concurrency: usize,
    /// Payload encoding of the repositories built from this config.
    pub content_type: ContentType,
    /// What every append of an event store built on this config waits for beyond the
    /// primary having it (replicas, the append-only file); none by default. See
    /// [`AppendDurability`](crate::AppendDurability), and
    /// [`RedisEventStore::with_durability`](crate::RedisEventStore::with_durability) for one
    /// call.
    pub append_durability: Option<crate::AppendDurability>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            url: None,
            password: None,
            database: 0,
            pool_size: 8,
            max_retries: 0,
            dial_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            cluster_nodes: Vec::new(),
            key_prefix: "cqrsx".into(),
            partitions: 1,
            append_concurrency: 4,
            content_type: ContentType::Json,
            append_durability: None,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("pool_size", &self.pool_size)
            .field("max_retries", &self.max_retries)
            .field("dial_timeout", &self.dial_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("cluster_nodes", &self.cluster_nodes)
            .field("key_prefix", &self.key_prefix)
            .field("partitions", &self.partitions)
            .field("append_concurrency", &self.append_concurrency)
            .field("content_type", &self.content_type)
            .field("append_durability", &self.append_durability)
            .finish()
    }
}

/// `redis://user:pass@host` → `redis://***@host`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl RedisConfig {
    /// Every append waits for `durability` (see [`AppendDurability`](crate::AppendDurability)).
    pub fn with_append_durability(mut self, durability: crate::AppendDurability) -> Self {
        self.append_durability = Some(durability);
        self
    }

    /// A standalone server at `host:port`.
    pub fn with_host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    /// A `redis://` or `rediss://` URL.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The AUTH password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database number.
    pub fn with_database(mut self, database: u8) -> Self {
        self.database = database;
        self
    }

    /// The pool size.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Reconnect attempts (0 = forever).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Dial, read and write timeouts.
    pub fn with_timeouts(mut self, dial: Duration, read: Duration, write: Duration) -> Self {
        self.dial_timeout = dial;
        self.read_timeout = read;
        self.write_timeout = write;
        self
    }

    /// How long a first connection may take before it fails.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Cluster mode with these seed nodes (`host:port`).
    pub fn with_cluster_nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// The key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The number of global-log partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Small-append calls of one partition in flight before further ones are grouped.
    pub fn with_append_concurrency(mut self, calls: usize) -> Self {
        self.append_concurrency = calls;
        self
    }

    /// The payload encoding of repositories built from this config.
    pub fn with_content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Reads `CQRSX_REDIS_URL`, `CQRSX_REDIS_CLUSTER_NODES` (comma-separated),
    /// `CQRSX_REDIS_PASSWORD`, `CQRSX_REDIS_DB`, `CQRSX_REDIS_POOL_SIZE`, `CQRSX_REDIS_PREFIX`,
    /// `CQRSX_REDIS_PARTITIONS`, `CQRSX_REDIS_APPEND_CONCURRENCY`,
    /// `CQRSX_REDIS_CONNECT_TIMEOUT_MS` over the defaults, then validates.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`RedisConfig::from_env`] over any source of variables (a map, a test's table).
    /// Durations are whole milliseconds: `CQRSX_REDIS_CONNECT_TIMEOUT_MS`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::default();
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        if let Some(url) = var("CQRSX_REDIS_URL") {
            config.url = Some(url);
        }
        if let Some(nodes) = var("CQRSX_REDIS_CLUSTER_NODES") {
            config.cluster_nodes = nodes.split(',').map(|n| n.trim().to_string()).collect();
        }
        if let Some(password) = var("CQRSX_REDIS_PASSWORD") {
            config.password = Some(password);
        }
        if let Some(db) = var("CQRSX_REDIS_DB") {
            config.database = db
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_REDIS_DB={db} is not a number 0-255")))?;
        }
        if let Some(size) = var("CQRSX_REDIS_POOL_SIZE") {
            config.pool_size = size
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_REDIS_POOL_SIZE={size} is not a number")))?;
        }
        if let Some(prefix) = var("CQRSX_REDIS_PREFIX") {
            config.key_prefix = prefix;
        }
        if let Some(p) = var("CQRSX_REDIS_PARTITIONS") {
            config.partitions = p
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_REDIS_PARTITIONS={p} is not a number")))?;
        }
        if let Some(calls) = var("CQRSX_REDIS_APPEND_CONCURRENCY") {
            config.append_concurrency = calls
                .parse()
                .map_err(|_| Error::Config(format!("CQRSX_REDIS_APPEND_CONCURRENCY={calls} is not a number")))?;
        }
        if let Some(ms) = var("CQRSX_REDIS_CONNECT_TIMEOUT_MS") {
            config.connect_timeout = ms
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| Error::Config(format!("CQRSX_REDIS_CONNECT_TIMEOUT_MS={ms} is not a number of ms")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings, naming the first wrong one.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if let Some(durability) = &self.append_durability {
            durability.validate()?;
        }
        if self.pool_size == 0 || self.pool_size > 1024 {
            return fail(format!("pool_size must be 1..=1024, got {}", self.pool_size));
        }
        if self.partitions == 0 || self.partitions > 1024 {
            return fail(format!("partitions must be 1..=1024, got {}", self.partitions));
        }
        if self.append_concurrency == 0 || self.append_concurrency > 4096 {
            return fail(format!(
                "append_concurrency must be 1..=4096, got {}",
                self.append_concurrency
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return fail("key_prefix must be 1 to 64 characters".into());
        }
        if self
            .key_prefix
            .chars()
            .any(|c| matches!(c, '{' | '}' | ' ') || c.is_control())
        {
            return fail(format!(
                "key_prefix {:?} may not contain braces, spaces or control characters (it is part of a hash tag)",
                self.key_prefix
            ));
        }
        for (name, d) in [
            ("dial_timeout", self.dial_timeout),
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis-cluster://")) {
                return fail(format!(
                    "url {} must start with redis://, rediss:// or redis-cluster://",
                    redact_url(url)
                ));
            }
            fred::types::config::Config::from_url(url)
                .map_err(|e| Error::Config(format!("url {}: {e}", redact_url(url))))?;
        } else if self.cluster_nodes.is_empty() && self.host.is_empty() {
            return fail("host is empty".into());
        }
        for node in &self.cluster_nodes {
            parse_node(node)?;
        }
        if !self.cluster_nodes.is_empty() && self.database != 0 {
            return fail("Redis Cluster has database 0 only".into());
        }
        Ok(())
    }

    /// Whether this config connects to a Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty() || self.url.as_deref().is_some_and(|u| u.starts_with("redis-cluster://"))
    }
}

/// `host:port` → parts.
pub(crate) fn parse_node(node: &str) -> Result<(String, u16)> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("cluster node {node:?} is not host:port")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Config(format!("cluster node {node:?} has no valid port")))?;
    if host.is_empty() {
        return Err(Error::Config(format!("cluster node {node:?} has no host")));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_debug_hides_secrets() {
        let config = RedisConfig::default()
            .with_url("redis://user:hunter2@db:6379/1")
            .with_password("hunter2");
        config.validate().expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn invalid_settings_are_named() {
        let cases = [
            (RedisConfig::default().with_pool_size(0), "pool_size"),
            (RedisConfig::default().with_key_prefix("a{b}"), "key_prefix"),
            (RedisConfig::default().with_key_prefix(""), "key_prefix"),
            (RedisConfig::default().with_partitions(0), "partitions"),
            (RedisConfig::default().with_append_concurrency(0), "append_concurrency"),
            (RedisConfig::default().with_url("http://x"), "url"),
            (RedisConfig::default().with_cluster_nodes(["nohost"]), "cluster node"),
            (
                RedisConfig::default().with_cluster_nodes(["a:1"]).with_database(2),
                "database 0",
            ),
            (
                RedisConfig::default().with_timeouts(Duration::ZERO, Duration::from_secs(1), Duration::from_secs(1)),
                "dial_timeout",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle);
            assert!(matches!(err, Error::Config(_)));
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }
}
