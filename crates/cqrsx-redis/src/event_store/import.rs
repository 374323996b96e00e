//! Imports: a batch of events copied from another store, written by one `import.lua` call with
//! their ids, versions and recorded-at times (see the script's header for its keys and
//! arguments).
//!
//! Recorded-at is kept per commit, as every commit of this store keeps it (the log entry's `r`
//! field): consecutive events of the batch with the same recorded-at (to the millisecond,
//! what [`cqrsx_core::Timestamp`] holds) become one commit, so a batch copied from a source's
//! commits becomes as many commits here, and a batch of events each recorded at its own time
//! becomes one commit per event. Either way it is one script call, and nothing is a round
//! trip per event.

use cqrsx_core::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, Result, StreamId};
use fred::types::Value;

use super::append::{outcome, type_runs};
use super::layout::{put_events, types_field};
use super::RedisEventStore;
use crate::error::protocol;
use crate::reply::text;

/// The import script: the small-stream library, the id checks it shares with appends, then
/// `import.lua`.
pub(super) const SCRIPT: &str = concat!(
    include_str!("../lua/small.lua"),
    include_str!("../lua/checks.lua"),
    include_str!("../lua/import.lua")
);

/// The keys and arguments of one import (see `import.lua`), and its events as appends see
/// them (to name a reused id in the reply).
struct Call {
    partition: u32,
    keys: Vec<String>,
    args: Vec<Value>,
    events: Vec<NewEvent>,
}

/// Builds the call: the batch cut into commits of consecutive events with one recorded-at.
fn call(store: &RedisEventStore, stream: &StreamId, after: u64, recorded: Vec<RecordedEvent>) -> Result<Call> {
    let keys = &store.keys;
    let stream_keys = keys.stream(stream.key());
    let p = stream_keys.partition;
    let mut ids = Vec::with_capacity(16 * recorded.len());
    let mut times = Vec::with_capacity(recorded.len());
    let events: Vec<NewEvent> = recorded
        .into_iter()
        .map(|e| {
            ids.extend_from_slice(e.event_id.as_bytes());
            times.push(e.recorded_at.as_millis());
            NewEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                content_type: e.content_type,
                payload: e.payload,
                metadata: e.metadata,
            }
        })
        .collect();
    let sorted = events
        .windows(2)
        .all(|w| w[0].event_id.as_bytes() < w[1].event_id.as_bytes());
    // The batch's event types, each with its type index key at KEYS[6 + j].
    let mut types: Vec<&str> = Vec::new();
    for e in &events {
        if !types.contains(&e.event_type.as_str()) {
            types.push(&e.event_type);
        }
    }
    let mut script_keys = vec![
        keys.log(p),
        keys.seq(p),
        stream_keys.index,
        stream_keys.meta,
        stream_keys.bucket,
        keys.catalogue(p),
    ];
    script_keys.extend(types.iter().map(|t| keys.type_index(p, t)));
    let mut args: Vec<Value> = vec![
        after.to_string().into(),
        Value::Bytes(ids.into()),
        if sorted { "1" } else { "0" }.into(),
    ];
    let mut start = 0;
    while start < events.len() {
        let at = times[start];
        let end = start + times[start..].iter().take_while(|&&t| t == at).count();
        let commit = &events[start..end];
        let mut blob = Vec::new();
        put_events(&mut blob, commit)?;
        let runs = type_runs(commit);
        args.push(commit.len().to_string().into());
        args.push(at.to_string().into());
        args.push(types_field(commit).into());
        args.push(Value::Bytes(blob.into()));
        args.push(runs.len().to_string().into());
        for (t, offsets) in runs {
            let j = types.iter().position(|x| *x == t).map_or(0, |j| j + 1);
            args.push(j.to_string().into());
            args.push(offsets.into());
        }
        start = end;
    }
    Ok(Call {
        partition: p,
        keys: script_keys,
        args,
        events,
    })
}

impl RedisEventStore {
    /// [`cqrsx_core::EventStore::import`] on a batch core has checked: one script call.
    pub(super) async fn import_batch(
        &self,
        stream: &StreamId,
        after: u64,
        events: Vec<RecordedEvent>,
    ) -> Result<AppendResult> {
        let Call {
            partition,
            keys,
            args,
            events,
        } = call(self, stream, after, events)?;
        let reply = self
            .client
            .run_script(&self.scripts.import, || (keys.clone(), args.clone()))
            .await?;
        let reply = text(&reply).ok_or_else(|| protocol(format!("import reply {reply:?}")))?;
        outcome(&reply, stream, partition, ExpectedVersion::Exact(after), &events)
    }
}
