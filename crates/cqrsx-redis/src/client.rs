//! [`RedisClientManager`]: the fred pool, reconnects, health, metrics and the start-up
//! durability check.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::raw::OperationStats;
use cqrsx_core::{ConnectFailure, Error, Result};
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, Config as FredConfig, ReconnectPolicy, Server, ServerConfig};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Key, Value};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{parse_node, redact_url, RedisConfig};

/// Why a script call got no reply.
#[derive(Debug, Clone)]
pub(crate) enum ScriptCall {
    /// The server had lost the script; nothing ran, and the script is loaded again.
    Lost,
    /// Any other failure (fred's error, which can be cloned for every append of a group).
    Failed(fred::error::Error),
}

use crate::error::{backend, lost_script};

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

/// Where a config points, for errors (no credentials).
fn target(config: &RedisConfig) -> String {
    match (&config.url, config.cluster_nodes.is_empty()) {
        (Some(url), _) => redact_url(url),
        (None, false) => config.cluster_nodes.join(","),
        (None, true) => format!("{}:{}", config.host, config.port),
    }
}

/// Reads one RESP reply's first line (`+OK`, `-ERR …`, `$5`, …).
async fn reply_line(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(line)
}

/// A RESP command.
fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Speaks to one server the way the client will (AUTH, SELECT, PING) and says what is wrong,
/// by the RESP reply's kind and error code: nothing listening, no answer, not Redis, refused
/// credentials, refused database.
async fn probe_server(host: &str, port: u16, config: &FredConfig, target: &str) -> Result<()> {
    let fail = |failure, source: Option<cqrsx_core::raw::BoxError>| Error::Connect {
        failure,
        target: target.to_string(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| fail(ConnectFailure::from_io(e.kind()), Some(Box::new(e))))?;
    let mut steps: Vec<(Vec<u8>, ConnectFailure)> = Vec::new();
    if let Some(password) = &config.password {
        let auth = match &config.username {
            Some(user) => command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => command(&[b"AUTH", password.as_bytes()]),
        };
        steps.push((auth, ConnectFailure::Auth));
    }
    steps.push((command(&[b"PING"]), ConnectFailure::Auth));
    if let Some(db) = config.database.filter(|&db| db != 0) {
        steps.push((
            command(&[b"SELECT", db.to_string().as_bytes()]),
            ConnectFailure::Database,
        ));
    }
    for (request, refusal) in steps {
        let line = loop {
            stream
                .write_all(&request)
                .await
                .map_err(|e| fail(ConnectFailure::from_io(e.kind()), Some(Box::new(e))))?;
            let line = reply_line(&mut stream)
                .await
                .map_err(|e| fail(ConnectFailure::from_io(e.kind()), Some(Box::new(e))))?;
            // A server loading its data set answers every command so until it is done: asked
            // again until the connect timeout, past which it is a transient `Timeout`.
            if !line.starts_with(b"-LOADING") {
                break line;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        match line.first() {
            // A simple string or any other well-formed reply: this step passed.
            Some(b'+' | b'$' | b':' | b'*' | b'%' | b'_') => {}
            Some(b'-') => {
                let error = std::io::Error::other(text.trim_start_matches('-').to_string());
                return Err(fail(refusal, Some(Box::new(error))));
            }
            _ => {
                let error = std::io::Error::other(format!("the server answered {text:?}, not RESP"));
                return Err(fail(ConnectFailure::Protocol, Some(Box::new(error))));
            }
        }
    }
    Ok(())
}

/// Probes every configured server (a Cluster needs one seed to answer); the first failure
/// tells what went wrong when none answers.
async fn probe(config: &FredConfig, target: &str) -> Result<()> {
    let servers: Vec<(String, u16)> = match &config.server {
        ServerConfig::Centralized { server } => vec![(server.host.to_string(), server.port)],
        ServerConfig::Clustered { hosts, .. } => hosts.iter().map(|h| (h.host.to_string(), h.port)).collect(),
        _ => return Ok(()),
    };
    let mut failure = None;
    for (host, port) in servers {
        match probe_server(&host, port, config, target).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

impl RedisClientManager {
    /// Connects the pool, waits for it, and checks the server's durability settings.
    ///
    /// A first connection fails within the config's `connect_timeout` with an
    /// [`Error::Connect`] saying what went wrong — refused, timed out, unreachable,
    /// authentication, database, or a server that does not speak Redis. Once connected, the
    /// pool reconnects on its own after a server restart (commands wait for it).
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let fc = fred_config(&config)?;
        let target = target(&config);
        let deadline = config.connect_timeout;
        let timed_out = || Error::Connect {
            failure: ConnectFailure::Timeout,
            target: target.clone(),
            source: None,
        };
        tokio::time::timeout(deadline, probe(&fc, &target))
            .await
            .map_err(|_| timed_out())??;
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
            // fred reports a client's first connection here too: that one is no retry.
            let connected_before = AtomicBool::new(false);
            client.on_reconnect(move |server| {
                reconnects.fetch_add(1, Ordering::Relaxed);
                if connected_before.swap(true, Ordering::Relaxed) {
                    cqrsx_core::telemetry::record_backend_retry("redis", "reconnect");
                }
                tracing::info!(%server, "redis connection re-established");
                async { Ok(()) }
            });
            // A failover or a resharding: which primaries serve the cluster's slots now.
            client.on_cluster_change(|changes| {
                for change in changes {
                    tracing::info!(?change, "redis cluster changed");
                }
                async { Ok(()) }
            });
        }
        match tokio::time::timeout(deadline, pool.init()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    failure: ConnectFailure::Protocol,
                    target,
                    source: Some(Box::new(e)),
                })
            }
            Err(_) => {
                let _ = pool.quit().await;
                return Err(timed_out());
            }
        }
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

    /// Runs `script` with the keys and arguments `make` makes. If the server had lost the script
    /// (a restart, a failover, `SCRIPT FLUSH`), nothing ran: the script is loaded, and `make`
    /// makes them again for one more call. (fred's `evalsha_with_reload` clones every key and
    /// argument of every call for that rare second one; measured, that cost a single-event
    /// append 4–10 µs.)
    pub(crate) async fn run_script<K: Into<Key> + Send>(
        &self,
        script: &Script,
        make: impl Fn() -> (Vec<K>, Vec<Value>),
    ) -> Result<Value> {
        let (keys, args) = make();
        match self.call_script(script, keys, args).await {
            Err(ScriptCall::Lost) => {
                let (keys, args) = make();
                match self.call_script(script, keys, args).await {
                    Ok(v) => Ok(v),
                    Err(ScriptCall::Failed(e)) => Err(backend(e)),
                    Err(ScriptCall::Lost) => Err(Error::backend(
                        true,
                        std::io::Error::other("the server lost the script again as it was loaded"),
                    )),
                }
            }
            Err(ScriptCall::Failed(e)) => Err(backend(e)),
            Ok(v) => Ok(v),
        }
    }

    /// One call of `script` — the one path every script call of this crate takes. A server
    /// that had lost the script ran nothing: the script is loaded again and the call answers
    /// [`ScriptCall::Lost`], for the caller to make its keys and arguments again (they were
    /// moved into this call) and call once more.
    pub(crate) async fn call_script<K: Into<Key> + Send>(
        &self,
        script: &Script,
        keys: Vec<K>,
        args: Vec<Value>,
    ) -> std::result::Result<Value, ScriptCall> {
        self.call_script_on(self.client(), script, keys, args).await
    }

    /// [`call_script`](Self::call_script) on this pooled client (whose connection a `WAIT`
    /// after it must use).
    pub(crate) async fn call_script_on<K: Into<Key> + Send>(
        &self,
        client: &Client,
        script: &Script,
        keys: Vec<K>,
        args: Vec<Value>,
    ) -> std::result::Result<Value, ScriptCall> {
        match self.observe(script.evalsha(client, keys, args)).await {
            Err(e) if lost_script(&e) => {
                tracing::debug!(sha = %script.sha1(), "the server had lost a script; loading it");
                // (Not an operation of its own, as the lost call was not: the next call counts.)
                script.load(client).await.map_err(ScriptCall::Failed)?;
                Err(ScriptCall::Lost)
            }
            result => result.map_err(ScriptCall::Failed),
        }
    }

    /// Runs one Redis call, recording its latency (from this call on) and outcome.
    ///
    /// `track` and [`observe`](Self::observe) wrap the call's future instead of awaiting it in an
    /// `async fn` of their own: an `async fn` keeps its argument and the future it awaits in two
    /// places, and a fred call's future is 5 KB (measured: wrapping by `async fn` made an append's
    /// future 11 KB instead of 6, and a stream read's 16 KB).
    pub(crate) fn track<'a, T: 'a>(
        &'a self,
        call: impl Future<Output = FredResult<T>> + 'a,
    ) -> impl Future<Output = Result<T>> + 'a {
        self.observe(call).map(|result| result.map_err(backend))
    }

    /// [`track`](Self::track), keeping fred's error (which, unlike ours, can be cloned for every
    /// append of a group).
    pub(crate) fn observe<'a, T: 'a>(
        &'a self,
        call: impl Future<Output = FredResult<T>> + 'a,
    ) -> impl Future<Output = FredResult<T>> + 'a {
        let started = Instant::now();
        call.map(move |result| {
            // A call that met a lost script is made again once the script is loaded: only that
            // one counts.
            if !matches!(&result, Err(e) if lost_script(e)) {
                self.counters.calls.record(started.elapsed(), result.is_ok());
            }
            result
        })
    }

    /// Closes every connection.
    pub async fn quit(&self) -> Result<()> {
        self.pool.quit().await.map_err(backend)
    }
}
