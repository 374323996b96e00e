//! The live tail's wake-up: per partition, a task on a connection of its own blocks in
//! `XREAD BLOCK` on the partition's log and publishes the last committed position, which every
//! waiting subscription of this store watches. Tasks start on the first wait and stop with the
//! store.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cqrsx_core::raw::Wake;
use cqrsx_core::{Checkpoint, Result};
use fred::prelude::*;
use fred::types::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::RedisClientManager;
use crate::keys::Keys;
use crate::reply::{array, int, text};

/// How long one `XREAD` blocks before it is sent again (well inside the command timeout).
const BLOCK: Duration = Duration::from_secs(2);

struct Tail {
    last: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

/// The tails of one event store's partitions.
pub(crate) struct Tails {
    client: RedisClientManager,
    keys: Keys,
    tails: Mutex<Vec<Option<Tail>>>,
}

impl Drop for Tails {
    fn drop(&mut self) {
        let tails = self.tails.get_mut().unwrap_or_else(PoisonError::into_inner);
        for tail in tails.iter().flatten() {
            tail.task.abort();
        }
    }
}

/// `<first position>-0` and the event count of a log entry → the entry id and the position of
/// its last event.
fn last_of(entry: &Value) -> Option<(String, u64)> {
    let Value::Array(parts) = entry else { return None };
    let id = text(parts.first()?)?;
    let first: u64 = id.split('-').next()?.parse().ok()?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let n = fields
        .chunks(2)
        .find(|kv| text(&kv[0]).as_deref() == Some("n"))
        .and_then(|kv| kv.get(1))
        .and_then(int)?;
    Some((id, first + n.saturating_sub(1)))
}

/// Follows one partition's log until aborted.
async fn follow(client: RedisClientManager, log: String, last: watch::Sender<u64>) {
    loop {
        let connection = match client.dedicated().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, log, "the live tail cannot connect; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let newest: FredResult<Value> = connection.xrevrange(&log, "+", "-", Some(1)).await;
        let mut id = match newest {
            Ok(reply) => match array(reply).ok().and_then(|entries| entries.first().and_then(last_of)) {
                Some((id, position)) => {
                    last.send_replace(position);
                    id
                }
                None => "0-0".to_string(),
            },
            Err(e) => {
                tracing::warn!(error = %e, log, "the live tail cannot read the log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let reply: FredResult<Value> = connection
                .xread(Some(256), Some(BLOCK.as_millis() as u64), log.as_str(), id.as_str())
                .await;
            match reply {
                Ok(Value::Null) => {}
                Ok(reply) => {
                    // [[log, [entry, ...]]] (RESP2) or {log: [entry, ...]} (RESP3).
                    let entries = match reply {
                        Value::Map(map) => map.inner().into_values().next().unwrap_or(Value::Null),
                        Value::Array(mut streams) => match streams.pop() {
                            Some(Value::Array(mut pair)) => pair.pop().unwrap_or(Value::Null),
                            _ => Value::Null,
                        },
                        _ => Value::Null,
                    };
                    if let Some((newest, position)) = array(entries).ok().and_then(|e| e.last().and_then(last_of)) {
                        id = newest;
                        last.send_replace(position);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, log, "the live tail's read failed; reconnecting");
                    let _ = connection.quit().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
}

impl Tails {
    pub(crate) fn new(client: RedisClientManager, keys: Keys) -> Self {
        let tails = (0..keys.partitions()).map(|_| None).collect();
        Self {
            client,
            keys,
            tails: Mutex::new(tails),
        }
    }

    /// The last committed position of `partition`, as its tail publishes it.
    fn watch(&self, partition: u32) -> watch::Receiver<u64> {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut tails[partition as usize];
        if let Some(tail) = slot.as_ref().filter(|t| !t.task.is_finished()) {
            return tail.last.clone();
        }
        let (tx, rx) = watch::channel(0);
        let task = tokio::spawn(follow(self.client.clone(), self.keys.log(partition), tx));
        *slot = Some(Tail { last: rx.clone(), task });
        rx
    }

    /// Waits until some partition's tail has seen a commit at or past the checkpoint.
    pub(crate) async fn wait(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        let waits = checkpoint.positions().map(|next| {
            let mut rx = self.watch(next.partition);
            Box::pin(async move {
                let _ = rx.wait_for(|&last| last >= next.offset).await;
            })
        });
        match tokio::time::timeout(timeout, futures::future::select_all(waits)).await {
            Ok(_) => Ok(Wake::Signalled),
            Err(_) => Ok(Wake::TimedOut),
        }
    }
}

impl std::fmt::Debug for Tails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tails").finish_non_exhaustive()
    }
}
