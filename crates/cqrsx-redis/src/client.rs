//! [`RedisClientManager`]: the fred pool, reconnects, health, metrics and the start-up
//! durability check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::raw::OperationStats;
use cqrsx_core::{Error, Result};
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, Config as FredConfig, ReconnectPolicy, Server, ServerConfig};
use fred::types::{ClusterHash, CustomCommand};

use crate::config::{parse_node, RedisConfig};
use crate::error::backend;

#[derive(Default)]
struct Counters {
    calls: OperationStats,
    reconnects: Arc<AtomicU64>,
}

/// A point-in-time view of the client's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisMetrics {
    /// Store operations issued.
    pub operations: u64,
    /// Operations that failed with a backend error.
    pub errors: u64,
    /// Reconnections of any pooled connection.
    pub reconnects: u64,
    /// Median latency over the recent window.
    pub p50: Duration,
    /// 95th percentile latency.
    pub p95: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// What the server says about durability, read at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilityReport {
    /// `appendonly` is `yes`.
    pub aof: bool,
    /// The `save` schedule (empty when RDB snapshots are off).
    pub rdb_schedule: String,
    /// The `maxmemory-policy`.
    pub maxmemory_policy: String,
}

impl DurabilityReport {
    /// Warnings about how events could be lost under these settings.
    pub fn risks(&self) -> Vec<String> {
        let mut risks = Vec::new();
        if self.maxmemory_policy != "noeviction" {
            risks.push(format!(
                "maxmemory-policy is {}: Redis may evict event keys under memory pressure; use noeviction",
                self.maxmemory_policy
            ));
        }
        if !self.aof {
            risks.push(if self.rdb_schedule.is_empty() {
                "no AOF and no RDB snapshots: every event is lost when Redis restarts".to_string()
            } else {
                format!(
                    "no AOF (RDB schedule {:?}): acknowledged events since the last RDB snapshot are lost on a crash; \
                     set appendonly yes",
                    self.rdb_schedule
                )
            });
        }
        risks
    }
}

/// The connection pool every Redis store shares, with metrics.
///
/// Cheap to clone. Built from a [`RedisConfig`], in standalone or Cluster mode.
#[derive(Clone)]
pub struct RedisClientManager {
    pool: Pool,
    config: Arc<RedisConfig>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for RedisClientManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClientManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn fred_config(config: &RedisConfig) -> Result<FredConfig> {
    let mut fc = match &config.url {
        Some(url) => FredConfig::from_url(url).map_err(|e| Error::Config(format!("redis url: {e}")))?,
        None => FredConfig::default(),
    };
    if !config.cluster_nodes.is_empty() {
        let hosts = config
            .cluster_nodes
            .iter()
            .map(|n| parse_node(n).map(|(h, p)| Server::new(h, p)))
            .collect::<Result<Vec<_>>>()?;
        fc.server = ServerConfig::Clustered {
            hosts,
            policy: ClusterDiscoveryPolicy::default(),
        };
    } else if config.url.is_none() {
        fc.server = ServerConfig::new_centralized(config.host.clone(), config.port);
        fc.database = (config.database != 0).then_some(config.database);
    }
    if config.password.is_some() {
        fc.password.clone_from(&config.password);
    }
    // Commands wait for a reconnect instead of failing at once: a restarted server is the
    // normal case the store must ride through.
    fc.fail_fast = false;
    Ok(fc)
}

impl RedisClientManager {
    /// Connects the pool, waits for it, and checks the server's durability settings.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let fc = fred_config(&config)?;
        let command_timeout = config.read_timeout.max(config.write_timeout);
        let dial_timeout = config.dial_timeout;
        let max_retries = config.max_retries;
        let pool = Builder::from_config(fc)
            .with_connection_config(|c| {
                c.connection_timeout = dial_timeout;
                c.max_command_attempts = 3;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(max_retries, 50, 2_000, 2))
            .build_pool(config.pool_size)
            .map_err(|e| Error::Config(format!("redis client: {e}")))?;
        let counters = Arc::new(Counters::default());
        for client in pool.clients() {
            let reconnects = Arc::clone(&counters.reconnects);
            client.on_reconnect(move |server| {
                reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%server, "redis connection re-established");
                async { Ok(()) }
            });
        }
        pool.init().await.map_err(backend)?;
        let manager = Self {
            pool,
            config: Arc::new(config),
            counters,
        };
        match manager.durability().await {
            Ok(report) => {
                for risk in report.risks() {
                    tracing::warn!(risk = %risk, "redis durability");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read redis persistence settings"),
        }
        Ok(manager)
    }

    /// The config this manager was built from.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// A pooled client.
    pub fn client(&self) -> &Client {
        self.pool.next()
    }

    /// A connected client of its own (not from the pool), for blocking commands such as the
    /// live tail's `XREAD BLOCK`, which would hold up a pooled connection.
    pub(crate) async fn dedicated(&self) -> Result<Client> {
        let client = self.client().clone_new();
        client.init().await.map_err(backend)?;
        Ok(client)
    }

    /// Round-trips a PING.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        self.track(self.client().ping::<String>(None)).await?;
        Ok(started.elapsed())
    }

    /// Reads `appendonly`, `save` and `maxmemory-policy` from the server.
    pub async fn durability(&self) -> Result<DurabilityReport> {
        let get = |name: &'static str| async move {
            let cmd = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
            let reply: Vec<String> = self.client().custom(cmd, vec!["GET", name]).await.map_err(backend)?;
            Ok::<_, Error>(reply.get(1).cloned().unwrap_or_default())
        };
        Ok(DurabilityReport {
            aof: get("appendonly").await? == "yes",
            rdb_schedule: get("save").await?,
            maxmemory_policy: get("maxmemory-policy").await?,
        })
    }

    /// Current metrics.
    pub fn metrics(&self) -> RedisMetrics {
        let latencies = self.counters.calls.latencies();
        RedisMetrics {
            operations: self.counters.calls.operations(),
            errors: self.counters.calls.errors(),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            p50: latencies.p50,
            p95: latencies.p95,
            p99: latencies.p99,
        }
    }

    /// Runs one Redis call, recording its latency and outcome.
    pub(crate) async fn track<T>(&self, call: impl std::future::Future<Output = FredResult<T>>) -> Result<T> {
        self.observe(call).await.map_err(backend)
    }

    /// [`track`](Self::track), keeping fred's error (which, unlike ours, can be cloned for every
    /// append of a group).
    pub(crate) async fn observe<T>(&self, call: impl std::future::Future<Output = FredResult<T>>) -> FredResult<T> {
        let started = Instant::now();
        let result = call.await;
        self.counters.calls.record(started.elapsed(), result.is_ok());
        result
    }

    /// Closes every connection.
    pub async fn quit(&self) -> Result<()> {
        self.pool.quit().await.map_err(backend)
    }
}
