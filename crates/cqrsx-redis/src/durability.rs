//! [`AppendDurability`]: what an append waits for beyond the primary having it — replicas
//! (`WAIT`), the append-only file (`WAITAOF`) — and the wait itself.

use std::time::Duration;

use cqrsx_core::{Error, Result};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Key, Value};

use crate::client::RedisClientManager;

/// How long a durable append waits by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The longest wait accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(3_600);

/// What an append waits for before it answers, beyond the primary having carried it out.
///
/// Redis replicates asynchronously: an append the primary acknowledged is lost if the primary
/// dies before a replica got it and that replica is promoted (Cluster failover, Sentinel,
/// managed services). With a durability an append answers only once `replicas` replicas have
/// it (Redis `WAIT`), and with `aof` once the primary's append-only file — and those replicas'
/// — has it on disk (`WAITAOF`, Redis 7.2 and later). Past `timeout` it answers
/// [`Error::NotDurable`]: the primary carried the append out, and it may or may not survive a
/// failover. Sending the same append again (the same event ids) is safe: it is recognised as a
/// retry, writes nothing, and waits again.
///
/// The wait runs on the connection that carried the append (`WAIT` counts that connection's
/// writes), so a durable append goes in a call of its own, never in a group commit, and
/// commands pipelined behind it on that pooled connection wait with it.
///
/// ```
/// use std::time::Duration;
/// use cqrsx_redis::AppendDurability;
///
/// let durability = AppendDurability::replicas(1).with_timeout(Duration::from_millis(500));
/// assert_eq!(durability.replicas, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendDurability {
    /// Replicas that must have the append.
    #[serde(default)]
    pub replicas: u32,
    /// Whether the append-only files (the primary's, and those replicas') must have it on disk.
    #[serde(default)]
    pub aof: bool,
    /// How long to wait; then the append answers [`Error::NotDurable`].
    #[serde(default = "default_wait")]
    pub timeout: Duration,
}

fn default_wait() -> Duration {
    DEFAULT_WAIT
}

impl AppendDurability {
    /// Waits for `n` replicas to have each append.
    pub fn replicas(n: u32) -> Self {
        Self {
            replicas: n,
            aof: false,
            timeout: DEFAULT_WAIT,
        }
    }

    /// Waits for the primary's append-only file to have each append on disk (Redis 7.2+, with
    /// `appendonly yes`).
    pub fn aof() -> Self {
        Self {
            replicas: 0,
            aof: true,
            timeout: DEFAULT_WAIT,
        }
    }

    /// Also waits for `n` replicas (their append-only files, with [`AppendDurability::aof`]).
    pub fn with_replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }

    /// Waits at most `timeout` (1 ms ..= 1 hour).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `Config` unless it asks for something, within bounds.
    pub fn validate(&self) -> Result<()> {
        if self.replicas == 0 && !self.aof {
            return Err(Error::Config(
                "an append durability must ask for replicas or the append-only file".into(),
            ));
        }
        if self.replicas > 1_024 {
            return Err(Error::Config(format!(
                "an append durability asks for {} replicas: at most 1024",
                self.replicas
            )));
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_WAIT {
            return Err(Error::Config(format!(
                "an append durability's timeout must be 1 ms ..= 1 hour, got {:?}",
                self.timeout
            )));
        }
        Ok(())
    }

    /// What it asks for, in words.
    fn wanted(&self) -> String {
        match (self.aof, self.replicas) {
            (false, n) => format!("{n} replica(s)"),
            (true, 0) => "the append-only file".to_string(),
            (true, n) => format!("the append-only file and {n} replica(s)'"),
        }
    }

    /// Waits on `client` (the connection that carried the append; in a Cluster, to `node`, the
    /// primary of `key`'s slot that ran it) until this durability is reached: `Ok(None)` when it
    /// was, or what was reached when it was not.
    pub(crate) async fn wait(
        &self,
        manager: &RedisClientManager,
        client: &Client,
        key: &str,
        node: Option<Server>,
    ) -> Result<Option<String>> {
        match self.wait_on(manager, client, key, node).await {
            // The node that ran the append was demoted meanwhile (a failover): what it had
            // replicated is not known.
            Err(e) if e.to_string().contains("replica instances") => {
                Ok(Some("no answer: the node that took it was demoted to a replica".into()))
            }
            // The append was carried out; whether it reached its durability is not known.
            Err(Error::Backend { source, .. }) => Ok(Some(format!("no answer: {source}"))),
            other => other,
        }
    }

    async fn wait_on(
        &self,
        manager: &RedisClientManager,
        client: &Client,
        key: &str,
        node: Option<Server>,
    ) -> Result<Option<String>> {
        let client = match node {
            Some(node) => client.with_cluster_node(node),
            None => client.with_options(&fred::types::config::Options::default()),
        };
        let client = &client;
        let slot = Key::from(key).cluster_hash();
        let ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let replicas = i64::from(self.replicas);
        if self.aof {
            let command = CustomCommand::new_static("WAITAOF", ClusterHash::Custom(slot), true);
            let reply: Value = manager
                .track(client.custom(command, vec![Value::from(1), Value::from(replicas), Value::from(ms)]))
                .await
                .map_err(|e| refused("WAITAOF", e))?;
            let counts = match &reply {
                Value::Array(counts) => counts.iter().map(Value::as_i64).collect::<Option<Vec<_>>>(),
                _ => None,
            };
            return match counts.as_deref() {
                Some([local, got]) if *local >= 1 && *got >= replicas => Ok(None),
                Some([local, got]) => Ok(Some(format!(
                    "the primary's append-only file {}, {got} replica(s)",
                    if *local >= 1 { "has it" } else { "does not have it yet" }
                ))),
                _ => Err(Error::backend(
                    false,
                    std::io::Error::other(format!("WAITAOF replied {reply:?}")),
                )),
            };
        }
        let command = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), true);
        let got: i64 = manager
            .track(client.custom(command, vec![Value::from(replicas), Value::from(ms)]))
            .await?;
        Ok((got < replicas).then(|| format!("{got} replica(s)")))
    }

    /// `Config` when the server cannot give this durability: `WAITAOF` before Redis 7.2 or
    /// without `appendonly yes` (asked once, with a 1 ms wait, before anything is written).
    pub(crate) async fn check(&self, manager: &RedisClientManager, client: &Client, key: &str) -> Result<()> {
        if !self.aof {
            return Ok(());
        }
        let slot = Key::from(key).cluster_hash();
        let command = CustomCommand::new_static("WAITAOF", ClusterHash::Custom(slot), true);
        let _: Value = manager
            .track(client.custom(command, vec![Value::from(1), Value::from(0), Value::from(1)]))
            .await
            .map_err(|e| refused("WAITAOF", e))?;
        Ok(())
    }

    /// In a Cluster, the primary `client` routes `key`'s slot to (`None` elsewhere).
    pub(crate) fn node_of(client: &Client, key: &str) -> Option<Server> {
        let slot = Key::from(key).cluster_hash();
        client.cached_cluster_state()?.get_server(slot).cloned()
    }

    /// The error for an append that did not become durable in time.
    pub(crate) fn not_durable(
        &self,
        result: &cqrsx_core::AppendResult,
        stream: &cqrsx_core::StreamId,
        reached: String,
    ) -> Error {
        Error::NotDurable {
            stream: stream.clone(),
            version: result.version,
            position: result.position,
            reason: format!(
                "asked for {} within {:?}, reached {reached}",
                self.wanted(),
                self.timeout
            ),
        }
    }
}

/// A wait command the server refused (WAITAOF before Redis 7.2, or without `appendonly yes`):
/// a configuration that cannot be met, not a transient failure.
fn refused(command: &str, e: Error) -> Error {
    let message = e.to_string();
    match e {
        Error::Backend { source, .. } if message.contains("unknown command") || message.contains("appendonly") => Error::Config(format!(
            "the server refused {command} ({source}): an append durability with `aof` needs Redis 7.2 or later with `appendonly yes`"
        )),
        other => other,
    }
}
