//! [`RedisEventStore`]: a Redis Stream per event stream, a metadata hash, and a log of commits
//! per partition, all written by one Lua script per append.

use async_trait::async_trait;
use cqrsx_core::{
    validate_append, validate_position, AllPage, AppendResult, ContentType, Error, EventFilter, EventStore,
    EventStoreCapabilities, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, Result, StreamId, Timestamp,
    Uuid,
};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;
use tracing::instrument;

use crate::client::RedisClientManager;
use crate::error::protocol;
use crate::group_commit::{Committer, Part};
use crate::keys::Keys;

/// How many log entries one `read_all` call examines at most, so a selective filter over a long
/// log cannot block the server; the page then ends early with `next` moved past what was seen.
const READ_ALL_SCAN_BUDGET: usize = 10_000;

/// The Lua scripts, loaded once per server (and again after a restart, on `NOSCRIPT`).
pub(crate) struct Scripts {
    read_stream: Script,
    read_all: Script,
    by_type: Script,
    truncate: Script,
    delete: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            read_stream: Script::from_lua(include_str!("lua/read_stream.lua")),
            read_all: Script::from_lua(include_str!("lua/read_all.lua")),
            by_type: Script::from_lua(include_str!("lua/by_type.lua")),
            truncate: Script::from_lua(include_str!("lua/truncate.lua")),
            delete: Script::from_lua(include_str!("lua/delete.lua")),
        }
    }
}

/// The Redis event store.
///
/// Append is one Lua script that checks the tombstone, the event ids (idempotent retries) and
/// the expected version before its first write, then adds the events to the stream, one entry
/// for the commit to the partition's log (at its first position; the commit's events take the
/// next dense positions), and one entry per commit to an index stream per event type. Redis
/// runs a script alone, so readers never see half a batch and positions never have gaps.
pub struct RedisEventStore {
    client: RedisClientManager,
    keys: Keys,
    scripts: std::sync::Arc<Scripts>,
    committer: std::sync::Arc<Committer>,
    caps: EventStoreCapabilities,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("keys", &self.keys)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

/// The largest batch: the script unpacks ids in chunks, so Lua's stack limit is not involved,
/// but a bound keeps one script's run (which blocks the server) short.
const MAX_BATCH: usize = 5_000;

impl RedisEventStore {
    /// An event store over this client, laid out by its config (prefix, partitions).
    pub fn new(client: RedisClientManager) -> Self {
        let keys = Keys::new(&client.config().key_prefix, client.config().partitions);
        let caps = EventStoreCapabilities {
            partitions: keys.partitions(),
            max_batch: MAX_BATCH,
            ..EventStoreCapabilities::default()
        };
        let partition_keys = (0..keys.partitions())
            .map(|p| [keys.log(p), keys.seq(p), keys.type_index_prefix(p)])
            .collect();
        let append = Script::from_lua(include_str!("lua/append.lua"));
        Self {
            committer: std::sync::Arc::new(Committer::new(client.clone(), append, partition_keys)),
            client,
            keys,
            scripts: std::sync::Arc::new(Scripts::new()),
            caps,
        }
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

    async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<Value>) -> Result<Value> {
        let client = self.client.client();
        self.client.track(script.evalsha_with_reload(client, keys, args)).await
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Integer(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

pub(crate) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(protocol(format!("expected an array, got {other:?}"))),
    }
}

/// `{status, ...}` → status and the rest.
fn status(v: Value) -> Result<(String, Vec<Value>)> {
    let mut items = array(v)?;
    if items.is_empty() {
        return Err(protocol("empty script reply"));
    }
    let rest = items.split_off(1);
    let status = text(&items[0]).ok_or_else(|| protocol("script status is not text"))?;
    Ok((status, rest))
}

fn u64_at(items: &[Value], i: usize) -> Result<u64> {
    items
        .get(i)
        .and_then(int)
        .ok_or_else(|| protocol(format!("missing number at {i}")))
}

/// Builds an envelope from a stream entry `[id, [field, value, ...]]`.
fn recorded(stream: &StreamId, partition: u32, entry: Value) -> Result<RecordedEvent> {
    let mut parts = array(entry)?.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(protocol("stream entry without id and fields"));
    };
    let id = text(&id).ok_or_else(|| protocol("entry id"))?;
    let version = id
        .split('-')
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| protocol(format!("entry id {id}")))?;
    recorded_from_fields(stream.clone(), partition, version, array(fields)?)
}

fn recorded_from_fields(stream: StreamId, partition: u32, version: u64, fields: Vec<Value>) -> Result<RecordedEvent> {
    let mut event_id = None;
    let mut event_type = None;
    let mut content_type = None;
    let mut schema_version = 1;
    let mut payload = Vec::new();
    let mut metadata = Metadata::default();
    let mut offset = 0;
    let mut recorded_at = 0;
    let mut it = fields.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        match text(&name).as_deref() {
            Some("i") => {
                let s = text(&value).ok_or_else(|| protocol("event id"))?;
                event_id = Some(
                    Uuid::parse_str(&s).map_err(|e| Error::serialization(format!("event id {s} in {stream}"), e))?,
                );
            }
            Some("t") => event_type = text(&value),
            Some("c") => {
                let s = text(&value).ok_or_else(|| protocol("content type"))?;
                content_type = Some(ContentType::parse(&s)?);
            }
            Some("sv") => schema_version = int(&value).and_then(|v| u32::try_from(v).ok()).unwrap_or(1),
            Some("p") => payload = bytes(&value).unwrap_or_default(),
            Some("m") => {
                let s = text(&value).unwrap_or_default();
                if !s.is_empty() {
                    metadata = Metadata::from_json(&s)?;
                }
            }
            Some("g") => offset = int(&value).unwrap_or(0),
            Some("r") => recorded_at = int(&value).unwrap_or(0),
            _ => {}
        }
    }
    let (Some(event_id), Some(event_type), Some(content_type)) = (event_id, event_type, content_type) else {
        return Err(protocol(format!(
            "event {version} of {stream} lacks id, type or content type"
        )));
    };
    Ok(RecordedEvent {
        event_id,
        stream,
        version,
        position: Position { partition, offset },
        event_type,
        schema_version,
        content_type,
        payload,
        metadata,
        recorded_at: Timestamp(recorded_at),
    })
}

/// Parses `{stream key, fields, ...}` replies of the log-joining scripts.
fn joined_events(partition: u32, items: Vec<Value>) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(key), Some(entry)) = (it.next(), it.next()) {
        let key = text(&key).ok_or_else(|| protocol("stream key"))?;
        let stream = StreamId::parse(&key)?;
        events.push(recorded(&stream, partition, entry)?);
    }
    Ok(events)
}

fn conflict(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> Error {
    Error::Conflict {
        stream: stream.clone(),
        expected,
        actual,
    }
}

#[async_trait]
impl EventStore for RedisEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.caps
    }

    #[instrument(skip(self, events), fields(stream = %stream, count = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        validate_append(&events, &self.caps)?;
        let keys = self.keys.stream(stream.key());
        let count = events.len();
        let mut args: Vec<Value> = Vec::with_capacity(4 + count * 6);
        args.push(expected.to_wire().into());
        args.push(stream.key().into());
        args.push(stream.aggregate_type().into());
        args.push((count as i64).into());
        for event in events {
            let metadata = if event.metadata.is_empty() {
                String::new()
            } else {
                event.metadata.to_json()?
            };
            args.push(event.event_id.to_string().into());
            args.push(event.event_type.into());
            args.push(event.content_type.as_str().into());
            args.push(i64::from(event.schema_version).into());
            args.push(Value::Bytes(event.payload.into()));
            args.push(metadata.into());
        }
        let part = Part {
            events_key: keys.events,
            meta_key: keys.meta,
            args,
            events: count,
        };
        let reply = self.committer.submit(keys.partition as usize, part).await?;
        let (status, rest) = status(reply)?;
        let position = |offset| Position {
            partition: keys.partition,
            offset,
        };
        match status.as_str() {
            "ok" | "dup" => Ok(AppendResult {
                version: u64_at(&rest, 0)?,
                position: position(u64_at(&rest, 1)?),
            }),
            "conflict" => Err(conflict(stream, expected, u64_at(&rest, 0)?)),
            // Ids that match an earlier commit only in part: not a retry of it. Refused as a
            // conflict, like the in-memory store, with nothing written.
            "ids" => Err(conflict(stream, expected, u64_at(&rest, 0)?)),
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            other => Err(protocol(format!("append status {other}"))),
        }
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys.stream(stream.key());
        let count = i64::try_from(max_count).unwrap_or(i64::MAX);
        let args: Vec<Value> = vec![(from_version.max(1) as i64).into(), count.into()];
        let reply = self
            .eval(&self.scripts.read_stream, vec![keys.events, keys.meta], args)
            .await?;
        let (status, mut rest) = status(reply)?;
        match status.as_str() {
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "ok" => {
                let entries = array(rest.pop().unwrap_or(Value::Null))?;
                entries
                    .into_iter()
                    .map(|entry| recorded(stream, keys.partition, entry))
                    .collect()
            }
            other => Err(protocol(format!("read status {other}"))),
        }
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let keys = self.keys.stream(stream.key());
        let client = self.client.client();
        let (version, deleted): (Option<u64>, Option<String>) =
            self.client.track(client.hmget(keys.meta, vec!["v", "d"])).await?;
        if deleted.as_deref() == Some("1") {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        Ok(version.unwrap_or(0))
    }

    #[instrument(skip(self, filter))]
    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        validate_position(from, &self.caps)?;
        let from = from.max(Position::start_of(from.partition));
        if max_count == 0 {
            return Ok(AllPage {
                events: Vec::new(),
                next: from,
            });
        }
        let mut args: Vec<Value> = vec![
            (from.offset as i64).into(),
            (max_count.min(100_000) as i64).into(),
            (READ_ALL_SCAN_BUDGET.max(max_count) as i64).into(),
            self.keys.partition_prefix(from.partition).into(),
            (filter.event_types.len() as i64).into(),
        ];
        args.extend(filter.event_types.iter().map(|t| Value::from(t.as_str())));
        args.push((filter.aggregate_types.len() as i64).into());
        args.extend(filter.aggregate_types.iter().map(|t| Value::from(t.as_str())));
        let reply = self
            .eval(&self.scripts.read_all, vec![self.keys.log(from.partition)], args)
            .await?;
        let mut items = array(reply)?.into_iter();
        let next = items
            .next()
            .as_ref()
            .and_then(int)
            .ok_or_else(|| protocol("read_all next"))?;
        let events = joined_events(from.partition, array(items.next().unwrap_or(Value::Null))?)?;
        Ok(AllPage {
            events,
            next: Position {
                partition: from.partition,
                offset: next.max(from.offset),
            },
        })
    }

    #[instrument(skip(self))]
    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        cqrsx_core::validate_type_name("event type", event_type)?;
        let mut all = Vec::new();
        for partition in 0..self.keys.partitions() {
            let args: Vec<Value> = vec![
                (since.as_millis().min(i64::MAX as u64) as i64).into(),
                (max_count.min(100_000) as i64).into(),
                self.keys.partition_prefix(partition).into(),
            ];
            let keys = vec![self.keys.type_index(partition, event_type)];
            let reply = self.eval(&self.scripts.by_type, keys, args).await?;
            let items = array(reply)?;
            for triple in items.chunks(3) {
                let [key, entry, index_id] = triple else {
                    return Err(protocol("by-type reply"));
                };
                // The index entry's id: its milliseconds order commits across partitions.
                let millis = text(index_id)
                    .and_then(|id| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()))
                    .ok_or_else(|| protocol("type index entry id"))?;
                let key = text(key).ok_or_else(|| protocol("stream key"))?;
                let event = recorded(&StreamId::parse(&key)?, partition, entry.clone())?;
                all.push((millis, event));
            }
        }
        all.sort_by(|(a, x), (b, y)| {
            a.cmp(b)
                .then(x.position.partition.cmp(&y.position.partition))
                .then(x.position.offset.cmp(&y.position.offset))
        });
        Ok(all.into_iter().take(max_count).map(|(_, e)| e).collect())
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        let keys = self.keys.stream(stream.key());
        let reply = self
            .eval(
                &self.scripts.truncate,
                vec![keys.events, keys.meta],
                vec![(before as i64).into()],
            )
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "ok" => u64_at(&rest, 0),
            other => Err(protocol(format!("truncate status {other}"))),
        }
    }

    #[instrument(skip(self), fields(stream = %stream))]
    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        let keys = self.keys.stream(stream.key());
        let reply = self
            .eval(
                &self.scripts.delete,
                vec![keys.events, keys.meta],
                vec![expected.to_wire().into()],
            )
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
            "conflict" => Err(conflict(stream, expected, u64_at(&rest, 0)?)),
            "ok" => Ok(()),
            other => Err(protocol(format!("delete status {other}"))),
        }
    }
}
