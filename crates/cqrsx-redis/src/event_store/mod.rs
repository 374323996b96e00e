//! [`RedisEventStore`]: a log of commits per partition, an index of commits and a metadata hash
//! per stream, an index per event type — every key of a call declared, all of one call in one
//! hash slot.

mod append;
mod catalogue;
mod group_commit;
mod import;
mod layout;
mod read_all;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::raw::{AllPage, EventBackend, EventStoreCapabilities, Wake};
use cqrsx_core::{
    AppendResult, Checkpoint, Error, EventFilter, ExpectedVersion, NewEvent, Position, RecordedEvent, Result, StreamId,
    Timestamp,
};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::client::RedisClientManager;
use crate::error::protocol;
use crate::keys::Keys;
use crate::reply::{array, corrupt, int, status, text, u64_at};
use group_commit::Committer;

use crate::durability::AppendDurability;
use layout::Commit;
use tail::Tails;

/// The largest batch: a bound that keeps one script's run (which blocks the server) short.
const MAX_BATCH: usize = 5_000;

/// The Lua scripts, loaded once per server (and again after a restart, on `NOSCRIPT`).
pub(crate) struct Scripts {
    read_stream: Script,
    by_type: Script,
    truncate: Script,
    delete: Script,
    import: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            read_stream: Script::from_lua(concat!(
                include_str!("../lua/log.lua"),
                include_str!("../lua/small.lua"),
                include_str!("../lua/read_stream.lua")
            )),
            by_type: Script::from_lua(concat!(
                include_str!("../lua/log.lua"),
                include_str!("../lua/by_type.lua")
            )),
            truncate: Script::from_lua(concat!(
                include_str!("../lua/log.lua"),
                include_str!("../lua/small.lua"),
                include_str!("../lua/truncate.lua")
            )),
            delete: Script::from_lua(concat!(
                include_str!("../lua/log.lua"),
                include_str!("../lua/small.lua"),
                include_str!("../lua/delete.lua")
            )),
            import: Script::from_lua(import::SCRIPT),
        }
    }
}

/// The largest version of a small stream: one whose commits sit in its metadata hash (about 20
/// bytes each) rather than in a commit index of its own (a Redis Stream key, which costs about
/// 4.5 KB from its first entry). The append that takes a stream past it moves them.
pub const SMALL_STREAM_EVENTS: u64 = 120;

/// The Redis event store.
///
/// Each partition has a log (a Redis Stream) with one entry per commit, at its first position,
/// holding the commit's events; the commit's events take the next dense positions. Each stream
/// has an index of its commits (first version → position, and the commit's event ids: in its
/// metadata hash while it holds at most [`SMALL_STREAM_EVENTS`] events, then a Redis Stream) and a
/// metadata hash (one field with the version and, while the stream's ids have only increased,
/// the largest event id — or the tombstone; the truncation point; or else each event id's
/// version); each event type has an index of the commits that hold it. Time-ordered (v7) ids, the default, need no lookup per
/// id: an append whose ids increase from above the largest is new, and retries are found by a
/// binary search over the commit index. An append is one Lua script that checks the
/// tombstone, the event ids and the expected version before its first write, then writes one
/// log entry, one index entry, one entry per event type and the hash. Redis runs a script
/// alone, so readers never see half a batch and positions never have gaps. Every key a script
/// touches is passed to it, and all share the partition's hash tag.
///
/// Live subscriptions wake on `XREAD BLOCK` on the partition logs (one connection per
/// partition per store, opened on the first wait).
#[derive(Clone)]
pub struct RedisEventStore {
    client: RedisClientManager,
    keys: Keys,
    scripts: Arc<Scripts>,
    committer: Arc<Committer>,
    tails: Arc<Tails>,
    caps: EventStoreCapabilities,
    durability: Option<AppendDurability>,
    /// Whether the server can give `durability` (asked before the first durable append).
    durability_checked: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("keys", &self.keys)
            .field("caps", &self.caps)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RedisEventStore {
    /// Checks the configured partition count against what the server holds: a position counter
    /// of the partition past the last configured one means the store was written with more
    /// partitions, and reads through this store would miss the streams kept there —
    /// [`Error::Config`] naming the setting. (A count set too high reads streams at the wrong
    /// keys too, which the log alone does not reveal: a tool that lists streams checks each
    /// one it finds in the log against its own key.)
    pub async fn check_partitions(&self) -> Result<()> {
        let configured = self.keys.partitions();
        let beyond: i64 = self
            .client
            .track(self.client.client().exists(self.keys.seq(configured)))
            .await?;
        if beyond > 0 {
            return Err(Error::Config(format!(
                "this store holds partition {configured}, so it was written with more than the {configured} partition(s) configured: set the service's count (CQRSX_REDIS_PARTITIONS)"
            )));
        }
        Ok(())
    }

    /// An event store over this client, laid out by its config (prefix, partitions).
    pub fn new(client: RedisClientManager) -> Self {
        let keys = Keys::new(&client.config().key_prefix, client.config().partitions);
        let caps = EventStoreCapabilities {
            partitions: keys.partitions(),
            max_batch: MAX_BATCH,
            live_signal: true,
            ..EventStoreCapabilities::default()
        };
        let partition_keys = (0..keys.partitions())
            .map(|p| [keys.log(p).into(), keys.seq(p).into(), keys.catalogue(p).into()])
            .collect();
        let append = Script::from_lua(append::SCRIPT);
        Self {
            durability: client.config().append_durability,
            durability_checked: Arc::default(),
            committer: Arc::new(Committer::new(client.clone(), append, partition_keys)),
            tails: Arc::new(Tails::new(client.clone(), keys.clone())),
            client,
            keys,
            scripts: Arc::new(Scripts::new()),
            caps,
        }
    }

    /// This store (sharing its connections and group commit) with every append waiting for
    /// `durability` beyond the primary having it — or for nothing, with `None`; for one call:
    /// `store.with_durability(Some(AppendDurability::replicas(1))).append(..)`. A `Config`
    /// error for a durability out of bounds.
    pub fn with_durability(&self, durability: Option<AppendDurability>) -> Result<Self> {
        if let Some(d) = &durability {
            d.validate()?;
        }
        Ok(Self {
            durability,
            durability_checked: Arc::default(),
            ..self.clone()
        })
    }

    /// The partition of a stream (its events' positions are in this partition's order).
    pub fn partition_of(&self, stream: &StreamId) -> u32 {
        self.keys.partition_of(stream.key())
    }

    /// Every key an append to `stream` touches (for operators and tests). They share one hash
    /// tag, so on a Cluster they are in one slot.
    pub fn stream_keys(&self, stream: &StreamId) -> Vec<String> {
        self.keys.append_keys(stream.key(), "<event type>")
    }

    /// The keys stream-level scripts take: commit index, meta hash, log, trimmed commits, the
    /// tiny streams' bucket, the partition's stream catalogue.
    fn stream_script_keys(&self, stream: &StreamId) -> (u32, Vec<String>) {
        let keys = self.keys.stream(stream.key());
        let p = keys.partition;
        (
            p,
            vec![
                keys.index,
                keys.meta,
                self.keys.log(p),
                self.keys.trim(p),
                keys.bucket,
                self.keys.catalogue(p),
            ],
        )
    }
}

fn count_arg(n: usize) -> Value {
    Value::from(i64::try_from(n.min(1_000_000)).unwrap_or(1_000_000))
}

fn number_arg(n: u64) -> Value {
    // Core's checked layer validated n ≤ MAX_NUMBER (2^53 − 1), which fits an i64.
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

#[async_trait]
impl EventBackend for RedisEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let (partition, part) = append::part(&self.keys, stream, expected, &events)?;
        let again = || append::part(&self.keys, stream, expected, &events).map(|(_, part)| part);
        let Some(durability) = self.durability else {
            let reply = self.committer.submit(partition as usize, part, again).await?;
            return append::outcome(&reply, stream, partition, expected, &events);
        };
        // Alone, on one connection: the wait counts that connection's writes.
        let client = self.client.client();
        let log = self.keys.log(partition);
        self.durability_checked
            .get_or_try_init(|| durability.check(&self.client, client, &log))
            .await?;
        let node = AppendDurability::node_of(client, &log);
        let reply = self
            .committer
            .submit_on(client, partition as usize, part, again)
            .await?;
        let result = append::outcome(&reply, stream, partition, expected, &events)?;
        // The slot moved during the append (a failover, a resharding): the node that ran it,
        // whose connection a wait must use, is not known.
        let moved = AppendDurability::node_of(client, &log) != node;
        let waited = match moved {
            true => Some("no answer: the stream's slot moved to another primary during the append".into()),
            false => durability.wait(&self.client, client, &log, node).await?,
        };
        match waited {
            None => Ok(result),
            Some(reached) => {
                tracing::warn!(%stream, version = result.version, %reached, "an append did not reach its durability in time");
                Err(durability.not_durable(&result, stream, reached))
            }
        }
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let partition = self.keys.partition_of(stream.key());
        let from = from_version.max(1);
        let reply = self
            .client
            .run_script(&self.scripts.read_stream, || {
                let (_, keys) = self.stream_script_keys(stream);
                (keys, vec![number_arg(from), count_arg(max_count)])
            })
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "corrupt" => Err(Error::Integrity(format!(
                "stream {stream}: {}",
                rest.first().and_then(text).unwrap_or_default()
            ))),
            "ok" => {
                let mut rest = rest.into_iter();
                let mut number = |what: &str| rest.next().as_ref().and_then(int).ok_or_else(|| protocol(what));
                let (from, version) = (number("read from")?, number("stream version")?);
                let mut out = Vec::new();
                // The next version the commits must hold: they run from `from` without a gap
                // or an overlap, each of this stream, up to its version.
                let mut next = from;
                for entry in rest {
                    let commit = Commit::parse(entry)?;
                    if commit.stream != *stream {
                        return Err(Error::Integrity(format!(
                            "stream {stream}: its commit at version {} points to a log entry of stream {}",
                            commit.v0, commit.stream
                        )));
                    }
                    if commit.v0 > next || commit.v0 + commit.count <= next {
                        return Err(Error::Integrity(format!(
                            "stream {stream}: version {next} is held by no commit (the next one holds {} to {})",
                            commit.v0,
                            commit.v0 + commit.count - 1
                        )));
                    }
                    next = commit.v0 + commit.count;
                    let skip = from.saturating_sub(commit.v0);
                    out.extend(commit.events(partition, |k, _| k >= skip)?);
                    if out.len() >= max_count {
                        out.truncate(max_count);
                        break;
                    }
                }
                let past = next > from && next > version + 1;
                let short = out.len() < max_count && from <= version && next != version + 1;
                if past || short {
                    return Err(Error::Integrity(format!(
                        "stream {stream} is at version {version}, but its commits from version {from} end at {}",
                        next - 1
                    )));
                }
                Ok(out)
            }
            other => Err(protocol(format!("read status {other}"))),
        }
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        match self.stream_state(stream).await? {
            (_, true) => Err(Error::StreamDeleted { stream: stream.clone() }),
            (version, false) => Ok(version),
        }
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        let from = from.max(Position::start_of(from.partition));
        if max_count == 0 {
            return Ok(AllPage {
                events: Vec::new(),
                next: from,
            });
        }
        self.read_log(from, max_count, filter).await
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let mut all = Vec::new();
        for p in 0..self.keys.partitions() {
            let reply = self
                .client
                .run_script(&self.scripts.by_type, || {
                    let keys = vec![self.keys.type_index(p, event_type), self.keys.log(p), self.keys.trim(p)];
                    (keys, vec![number_arg(since.as_millis()), count_arg(max_count)])
                })
                .await?;
            let items = array(reply)?;
            if let Some(e) = corrupt(&items, &format!("the {event_type} index of partition {p}")) {
                return Err(e);
            }
            let mut items = items.into_iter();
            while let (Some(entry), Some(runs), Some(index_id)) = (items.next(), items.next(), items.next()) {
                // The index entry's id: its milliseconds order commits across partitions.
                let millis = text(&index_id)
                    .and_then(|id| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()))
                    .ok_or_else(|| protocol("type index entry id"))?;
                let runs = text(&runs).ok_or_else(|| protocol("type index runs"))?;
                let ranges: Vec<(u64, u64)> = runs
                    .split(',')
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-')?;
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                let commit = Commit::parse(entry)?;
                let found = commit.events(p, |k, t| {
                    t == event_type && ranges.iter().any(|&(a, b)| (a..=b).contains(&k))
                })?;
                all.extend(found.into_iter().map(|e| (millis, e)));
            }
        }
        all.sort_by(|(a, x), (b, y)| {
            a.cmp(b)
                .then(x.position.partition.cmp(&y.position.partition))
                .then(x.position.offset.cmp(&y.position.offset))
        });
        Ok(all.into_iter().take(max_count).map(|(_, e)| e).collect())
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<cqrsx_core::raw::StreamInfo>> {
        self.catalogue_page(after, max_count).await
    }

    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        self.import_batch(stream, after, events).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let reply = self
            .client
            .run_script(&self.scripts.truncate, || {
                (self.stream_script_keys(stream).1, vec![number_arg(before)])
            })
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "corrupt" => Err(Error::Integrity(format!(
                "stream {stream}: its commit index is damaged"
            ))),
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "ok" => u64_at(&rest, 0),
            other => Err(protocol(format!("truncate status {other}"))),
        }
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let reply = self
            .client
            .run_script(&self.scripts.delete, || {
                (self.stream_script_keys(stream).1, vec![expected.to_wire().into()])
            })
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "corrupt" => Err(Error::Integrity(format!("stream {stream}: its metadata is damaged"))),
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "conflict" => Err(Error::conflict(stream, expected, u64_at(&rest, 0)?)),
            "ok" => Ok(()),
            other => Err(protocol(format!("delete status {other}"))),
        }
    }

    async fn head(&self) -> Result<Checkpoint> {
        let reads = (0..self.keys.partitions()).map(|p| {
            let client = self.client.client().clone();
            let key = self.keys.seq(p);
            async move { self.client.track(client.get::<Option<String>, _>(key)).await }
        });
        let mut next = Vec::new();
        for seq in futures::future::join_all(reads).await {
            let last = match seq? {
                None => 0,
                Some(s) => s
                    .parse::<u64>()
                    .map_err(|_| Error::Integrity(format!("position counter holds {s:?}")))?,
            };
            next.push(last + 1);
        }
        Checkpoint::from_offsets(next)
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        if checkpoint.partitions() != self.keys.partitions() {
            return Err(Error::InvalidInput(format!(
                "checkpoint covers {} partitions, the store has {}",
                checkpoint.partitions(),
                self.keys.partitions()
            )));
        }
        self.tails.wait(checkpoint, timeout).await
    }
}
