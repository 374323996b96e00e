//! The append's wire protocol: what one append sends to `append.lua` (its keys and arguments)
//! and what its reply means.

use std::collections::BTreeMap;

use cqrsx_core::{AppendResult, Error, ExpectedVersion, NewEvent, Position, Result, StreamId};
use fred::types::Value;

use crate::error::protocol;
use crate::event_store::group_commit::Part;
use crate::event_store::layout::{events_field, types_field};
use crate::keys::Keys;
use crate::reply::{status, u64_at};

/// The event types of a batch, each with its offsets as runs `from-to,...`; the offsets are
/// left empty when the batch holds one type (the type index then needs none).
fn type_runs(events: &[NewEvent]) -> Vec<(&str, String)> {
    let first = events.first().map_or("", |e| e.event_type.as_str());
    if events.iter().all(|e| e.event_type == first) {
        return vec![(first, String::new())];
    }
    let mut runs: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (k, e) in events.iter().enumerate() {
        let list = runs.entry(e.event_type.as_str()).or_default();
        match list.last_mut() {
            Some((_, to)) if *to + 1 == k => *to = k,
            _ => list.push((k, k)),
        }
    }
    runs.into_iter()
        .map(|(t, list)| {
            let text = list
                .iter()
                .map(|(a, b)| format!("{a}-{b}"))
                .collect::<Vec<_>>()
                .join(",");
            (t, text)
        })
        .collect()
}

/// Whether the batch's ids strictly increase, as 128-bit big-endian numbers: time-ordered (v7)
/// ids from one generator do. The script then needs no lookup per id (see `append.lua`).
fn increasing_ids(events: &[NewEvent]) -> bool {
    events
        .windows(2)
        .all(|w| w[0].event_id.as_bytes() < w[1].event_id.as_bytes())
}

/// An append's header argument: the expected version (a double: every version is below 2^53),
/// the number of event types and whether the ids increase, big-endian, 13 bytes.
fn header(expected: ExpectedVersion, types: usize, increasing: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.extend_from_slice(&(expected.to_wire() as f64).to_be_bytes());
    out.extend_from_slice(&u32::try_from(types).unwrap_or(u32::MAX).to_be_bytes());
    out.push(u8::from(increasing));
    out
}

/// The stream's partition, and the keys and arguments of one append (see the header of
/// `append.lua`).
pub(crate) fn part(
    keys: &Keys,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<(u32, Part)> {
    let stream_keys = keys.stream(stream.key());
    let runs = type_runs(events);
    let mut key_list = Vec::with_capacity(2 + runs.len());
    key_list.push(stream_keys.index);
    key_list.push(stream_keys.meta);
    key_list.extend(runs.iter().map(|(t, _)| keys.type_index(stream_keys.partition, t)));
    let mut ids = Vec::with_capacity(16 * events.len());
    for e in events {
        ids.extend_from_slice(e.event_id.as_bytes());
    }
    let mut args: Vec<Value> = Vec::with_capacity(5 + runs.len());
    args.push(Value::Bytes(
        header(expected, runs.len(), increasing_ids(events)).into(),
    ));
    args.push(stream.key().into());
    args.push(types_field(events).into());
    args.push(Value::Bytes(events_field(events)?.into()));
    args.push(Value::Bytes(ids.into()));
    if runs.len() > 1 {
        args.extend(runs.into_iter().map(|(_, offsets)| Value::from(offsets)));
    }
    let part = Part {
        keys: key_list,
        args,
        events: events.len(),
    };
    Ok((stream_keys.partition, part))
}

/// What an append's reply means.
pub(crate) fn outcome(
    reply: Value,
    stream: &StreamId,
    partition: u32,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult> {
    let (status, rest) = status(reply)?;
    let position = |offset| Position { partition, offset };
    match status.as_str() {
        "ok" | "dup" => Ok(AppendResult {
            version: u64_at(&rest, 0)?,
            position: position(u64_at(&rest, 1)?),
        }),
        "conflict" => Err(Error::Conflict {
            stream: stream.clone(),
            expected,
            actual: u64_at(&rest, 0)?,
        }),
        "ids" => {
            let offset = usize::try_from(u64_at(&rest, 1)?).map_err(|_| protocol("reused id offset"))?;
            let event = events.get(offset).ok_or_else(|| protocol("reused id offset"))?;
            Err(Error::EventIdReused {
                stream: stream.clone(),
                event_id: event.event_id,
            })
        }
        "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
        "corrupt" => Err(Error::Integrity(
            match rest.first().and_then(Value::as_str).as_deref() {
                Some("index") => format!("stream {stream}: its commit index holds an entry this store did not write"),
                Some("high") => format!("stream {stream}: its metadata holds a largest event id that is not 16 bytes"),
                _ => format!("stream {stream}: its metadata holds a version that is not a number"),
            },
        )),
        other => Err(protocol(format!("append status {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(types: &[&str]) -> Vec<NewEvent> {
        types
            .iter()
            .map(|t| NewEvent::json(*t, &serde_json::json!({})).expect("json"))
            .collect()
    }

    #[test]
    fn runs_name_each_types_offsets_unless_the_batch_has_one_type() {
        let single = batch(&["A", "A", "A"]);
        assert_eq!(type_runs(&single), vec![("A", String::new())]);
        let mixed = batch(&["A", "B", "B", "A", "C", "A", "A"]);
        assert_eq!(
            type_runs(&mixed),
            vec![
                ("A", "0-0,3-3,5-6".to_string()),
                ("B", "1-2".to_string()),
                ("C", "4-4".to_string())
            ]
        );
    }
}
