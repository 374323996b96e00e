//! Group commit: when a partition already has its limit of small-append calls in flight
//! ([`RedisConfig::append_concurrency`](crate::RedisConfig::append_concurrency)), further small
//! appends to it wait, and go to Redis together, as one script call, when one of those calls
//! returns.
//!
//! Each partition is a lane. Below the limit an append is sent at once, alone, with no added
//! latency. Above it, appends queue; a returning call hands its turn to a task that sends
//! everything queued (up to [`MAX_GROUP`] appends) in one call, whose script checks and writes
//! each append in turn, exactly as it would alone, and replies to each. A small append's cost
//! is mostly the call (the round trip, Redis reading and dispatching a script), which a group
//! pays once. Appends of more than [`MAX_GROUPED_APPEND`] events always go at once.
//!
//! An append whose caller gives up while it is queued is still sent (as a command already sent
//! would still run); its reply is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cqrsx_core::{telemetry, Error, Result};
use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::{Key, Value};
use tokio::sync::oneshot;

use crate::client::{RedisClientManager, ScriptCall};
use crate::error::{backend, protocol};
use crate::reply::text;

/// The largest append that takes part in group commit. Larger ones always go at once, alone:
/// their cost is mostly their own writes, not the call, so grouping them saves little and holding
/// them back costs more (measured: batches of 10 and 100 appended faster ungrouped).
pub(crate) const MAX_GROUPED_APPEND: usize = 4;
/// The most appends one script call carries.
pub(crate) const MAX_GROUP: usize = 64;

/// One append: its keys (commit index, meta hash, type indexes) and its part of the script's
/// arguments (see `append.lua`).
pub(crate) struct Part {
    pub(crate) keys: Vec<String>,
    pub(crate) args: Vec<Value>,
    pub(crate) events: usize,
}

/// Why an append got no reply.
enum Failed {
    /// The server had lost the script (a restart, a failover, `SCRIPT FLUSH`): nothing ran. The
    /// script is loaded again, and the append may go again as it was.
    NoScript,
    Error(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Self::Error(e)
    }
}

/// One append's outcome in a call: its reply line (see `append.lua`).
type Outcome = std::result::Result<String, Failed>;

/// A call's failure, for every append of it.
impl From<ScriptCall> for Failed {
    fn from(failure: ScriptCall) -> Self {
        match failure {
            ScriptCall::Lost => Self::NoScript,
            ScriptCall::Failed(e) => Self::Error(backend(e)),
        }
    }
}

struct Waiting {
    part: Part,
    reply: oneshot::Sender<Outcome>,
}

enum Entry {
    Lead(Part),
    Wait(oneshot::Receiver<Outcome>),
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    queue: VecDeque<Waiting>,
}

/// The lanes of one event store, and what a call needs.
pub(crate) struct Committer {
    client: RedisClientManager,
    script: Script,
    /// Per partition: the log key, the position counter key and the stream catalogue key
    /// (made once; a call clones them by reference count).
    partition_keys: Vec<[Key; 3]>,
    /// Calls of one partition in flight before appends wait to be grouped.
    concurrency: usize,
    lanes: Vec<Mutex<Lane>>,
}

impl Committer {
    pub(crate) fn new(client: RedisClientManager, script: Script, partition_keys: Vec<[Key; 3]>) -> Self {
        let lanes = partition_keys.iter().map(|_| Mutex::default()).collect();
        Self {
            concurrency: client.config().append_concurrency.max(1),
            client,
            script,
            partition_keys,
            lanes,
        }
    }

    fn lane(&self, partition: usize) -> MutexGuard<'_, Lane> {
        // A panic while holding the lock leaves a consistent queue (every change is one push or
        // one drain), so a poisoned lock is safe to keep using.
        self.lanes[partition].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `part` to a stream of `partition`; the reply is the script's reply line for it. If the
    /// server had lost the script, nothing ran: the script is loaded, and the append goes once
    /// more, as `again` makes it. (A call sends its keys and arguments without keeping a copy
    /// for that rare second time.)
    pub(crate) async fn submit(
        self: &Arc<Self>,
        partition: usize,
        part: Part,
        again: impl FnOnce() -> Result<Part>,
    ) -> Result<String> {
        let outcome = match self.submit_once(partition, part).await {
            Err(Failed::NoScript) => {
                telemetry::record_backend_retry("redis", "append");
                self.submit_once(partition, again()?).await
            }
            outcome => outcome,
        };
        settled(outcome)
    }

    async fn submit_once(self: &Arc<Self>, partition: usize, part: Part) -> Outcome {
        if part.events > MAX_GROUPED_APPEND {
            return self.alone(partition, part).await;
        }
        match self.enter(partition, part) {
            Entry::Lead(part) => {
                let _turn = Turn {
                    committer: Arc::clone(self),
                    partition,
                    ran: true,
                };
                self.alone(partition, part).await
            }
            Entry::Wait(waiting) => waiting.await.unwrap_or_else(|_| Err(abandoned().into())),
        }
    }

    /// Appends `part` in a call of its own on `client` (whose connection then carries a
    /// `WAIT`), as [`submit`](Self::submit) does otherwise.
    pub(crate) async fn submit_on(
        &self,
        client: &Client,
        partition: usize,
        part: Part,
        again: impl FnOnce() -> Result<Part>,
    ) -> Result<String> {
        let outcome = match self.alone_on(client, partition, part).await {
            Err(Failed::NoScript) => {
                telemetry::record_backend_retry("redis", "append");
                self.alone_on(client, partition, again()?).await
            }
            outcome => outcome,
        };
        settled(outcome)
    }

    /// One append in a call of its own.
    async fn alone(&self, partition: usize, part: Part) -> Outcome {
        self.alone_on(self.client.client(), partition, part).await
    }

    async fn alone_on(&self, client: &Client, partition: usize, part: Part) -> Outcome {
        let reply = self.call(client, partition, vec![part]).await?;
        Ok(replies(reply, 1)?
            .pop()
            .ok_or_else(|| protocol("no reply for the append"))?)
    }

    /// Takes a free call of the lane (this append goes alone, now), or queues.
    fn enter(&self, partition: usize, part: Part) -> Entry {
        let mut lane = self.lane(partition);
        if lane.in_flight >= self.concurrency {
            let (reply, waiting) = oneshot::channel();
            lane.queue.push_back(Waiting { part, reply });
            Entry::Wait(waiting)
        } else {
            lane.in_flight += 1;
            Entry::Lead(part)
        }
    }

    /// One script call for `parts`, all of `partition`; the reply holds one reply per part.
    async fn call(
        &self,
        client: &Client,
        partition: usize,
        parts: Vec<Part>,
    ) -> std::result::Result<Value, ScriptCall> {
        telemetry::record_group_commit("redis", parts.len());
        let [log, seq, catalogue] = &self.partition_keys[partition];
        let mut keys = Vec::with_capacity(3 + parts.iter().map(|p| p.keys.len()).sum::<usize>());
        keys.push(log.clone());
        keys.push(seq.clone());
        keys.push(catalogue.clone());
        let mut args = Vec::with_capacity(parts.iter().map(|p| p.args.len()).sum::<usize>());
        for part in parts {
            keys.extend(part.keys.into_iter().map(Key::from));
            args.extend(part.args);
        }
        self.client.call_script_on(client, &self.script, keys, args).await
    }
}

/// The per-append reply lines of a call's reply.
fn replies(reply: Value, expected: usize) -> Result<Vec<String>> {
    let reply = text(&reply).ok_or_else(|| protocol(format!("the append reply is not text: {reply:?}")))?;
    let replies: Vec<String> = if expected == 1 {
        vec![reply]
    } else {
        reply.split('\n').map(str::to_owned).collect()
    };
    if replies.len() != expected {
        return Err(protocol(format!(
            "{} replies for a group of {expected} appends",
            replies.len()
        )));
    }
    Ok(replies)
}

/// An append's outcome after its one more try on a lost script.
fn settled(outcome: Outcome) -> Result<String> {
    outcome.map_err(|failed| match failed {
        Failed::NoScript => Error::backend(
            true,
            std::io::Error::other("the server lost the append script again while it was being loaded"),
        ),
        Failed::Error(e) => e,
    })
}

fn abandoned() -> Error {
    Error::backend(
        true,
        std::io::Error::other("the append's group was abandoned (runtime shutting down)"),
    )
}

/// One call of a lane in flight; when it ends, the call is freed or passed to the next group.
struct Turn {
    committer: Arc<Committer>,
    partition: usize,
    /// False for a turn handed to a task that has not run yet. If such a turn is dropped, its
    /// task never ran (the runtime is shutting down), and it must not hand itself on again.
    ran: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lane = self.committer.lane(self.partition);
        if lane.queue.is_empty() {
            lane.in_flight -= 1;
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if self.ran => {
                drop(lane);
                let next = Turn {
                    committer: Arc::clone(&self.committer),
                    partition: self.partition,
                    ran: false,
                };
                runtime.spawn(next.run_group());
            }
            _ => {
                // No runtime to send them on: fail them rather than leave them waiting.
                let waiting: Vec<Waiting> = lane.queue.drain(..).collect();
                lane.in_flight -= 1;
                drop(lane);
                for w in waiting {
                    let _ = w.reply.send(Err(abandoned().into()));
                }
            }
        }
    }
}

impl Turn {
    /// Sends the next group of the lane, then passes the turn on (by dropping it).
    async fn run_group(mut self) {
        self.ran = true;
        let group: Vec<Waiting> = {
            let mut lane = self.committer.lane(self.partition);
            let take = lane.queue.len().min(MAX_GROUP);
            lane.queue.drain(..take).collect()
        };
        if group.is_empty() {
            return;
        }
        let (parts, waiting): (Vec<Part>, Vec<_>) = group.into_iter().map(|w| (w.part, w.reply)).unzip();
        let expected = parts.len();
        let client = self.committer.client.client();
        match self.committer.call(client, self.partition, parts).await {
            Err(failure) => {
                for reply in waiting {
                    let _ = reply.send(Err(failure.clone().into()));
                }
            }
            Ok(reply) => match replies(reply, expected) {
                Ok(values) => {
                    for (value, reply) in values.into_iter().zip(waiting) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    for reply in waiting {
                        let _ = reply.send(Err(protocol(message.clone()).into()));
                    }
                }
            },
        }
    }
}
