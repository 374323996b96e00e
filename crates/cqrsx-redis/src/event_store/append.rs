//! The append's wire protocol: what one append sends to `append.lua` (its keys and arguments)
//! and what its reply means.

use std::collections::BTreeMap;

use cqrsx_core::{AppendResult, Error, ExpectedVersion, NewEvent, Position, Result, StreamId};
use fred::types::Value;

use crate::error::protocol;
use crate::event_store::group_commit::Part;
use crate::event_store::layout::{put_events, types_field};
use crate::keys::Keys;

/// The append script: the header reader, the small streams' library, then the appends.
pub(crate) const SCRIPT: &str = concat!(
    include_str!("../lua/append_header.lua"),
    include_str!("../lua/small.lua"),
    include_str!("../lua/checks.lua"),
    include_str!("../lua/append.lua")
);

/// The event types of a batch, each with its offsets as runs `from-to,...`; the offsets are
/// left empty when the batch holds one type (the type index then needs none).
pub(crate) fn type_runs(events: &[NewEvent]) -> Vec<(&str, String)> {
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

/// An append's first argument: its header (the expected version as a double: every version is
/// below 2^53; the number of event types; whether the ids increase; the number of events;
/// big-endian, 17 bytes), its event ids (16 bytes each), then its events field (`e`).
fn header_ids_and_events(expected: ExpectedVersion, types: usize, events: &[NewEvent]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(17 + 16 * events.len());
    out.extend_from_slice(&(expected.to_wire() as f64).to_be_bytes());
    out.extend_from_slice(&u32::try_from(types).unwrap_or(u32::MAX).to_be_bytes());
    out.push(u8::from(increasing_ids(events)));
    out.extend_from_slice(&u32::try_from(events.len()).unwrap_or(u32::MAX).to_be_bytes());
    for e in events {
        out.extend_from_slice(e.event_id.as_bytes());
    }
    put_events(&mut out, events)?;
    Ok(out)
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
    let mut key_list = Vec::with_capacity(3 + runs.len());
    key_list.push(stream_keys.index);
    key_list.push(stream_keys.meta);
    key_list.push(stream_keys.bucket);
    key_list.extend(runs.iter().map(|(t, _)| keys.type_index(stream_keys.partition, t)));
    // The stream key and a batch's one event type are not sent: the script reads them from
    // the ends of the keys (see `append.lua`).
    let mut args: Vec<Value> = Vec::with_capacity(1 + runs.len());
    args.push(Value::Bytes(
        header_ids_and_events(expected, runs.len(), events)?.into(),
    ));
    if runs.len() > 1 {
        args.push(types_field(events).into());
        args.extend(runs.into_iter().map(|(_, offsets)| Value::from(offsets)));
    }
    let part = Part {
        keys: key_list,
        args,
        events: events.len(),
    };
    Ok((stream_keys.partition, part))
}

/// What an append's reply line means (see the header of `append.lua`).
pub(crate) fn outcome(
    reply: &str,
    stream: &StreamId,
    partition: u32,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult> {
    let mut words = reply.split(' ');
    let status = words.next().unwrap_or_default();
    let mut number = |what: &str| {
        words
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .ok_or_else(|| protocol(format!("append reply {reply:?}: no {what}")))
    };
    match status {
        "ok" | "dup" => Ok(AppendResult {
            version: number("version")?,
            position: Position {
                partition,
                offset: number("position")?,
            },
        }),
        "conflict" => Err(Error::conflict(stream, expected, number("version")?)),
        "ids" => {
            number("version")?;
            let offset = usize::try_from(number("offset")?).map_err(|_| protocol("reused id offset"))?;
            let event = events.get(offset).ok_or_else(|| protocol("reused id offset"))?;
            Err(Error::EventIdReused {
                stream: stream.clone(),
                event_id: event.event_id,
            })
        }
        "deleted" => Err(Error::StreamDeleted { stream: stream.clone() }),
        "corrupt" => Err(Error::Integrity(match words.next() {
            Some("index") => format!("stream {stream}: its commit index holds an entry this store did not write"),
            _ => format!("stream {stream}: its metadata holds a version that is not a number"),
        })),
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

    /// Rust writes an append's header, Lua reads it: each case's bytes go through
    /// `read_header` itself (the function `append.lua` runs) on the test server, and every
    /// field comes back as Rust meant it. Runs in the Redis rows (`cargo xtask test`).
    #[tokio::test]
    async fn the_header_round_trips_through_the_script() {
        use fred::interfaces::LuaInterface;

        let url = std::env::var("CQRSX_TEST_REDIS_URL")
            .expect("CQRSX_TEST_REDIS_URL is not set: run these tests with `cargo xtask test --backend redis`");
        let client = crate::RedisClientManager::connect(crate::RedisConfig::default().with_url(url))
            .await
            .expect("connect to redis");
        let script = concat!(
            include_str!("../lua/append_header.lua"),
            "\nlocal e, m, s, n, ids, blob = read_header(ARGV[1])\nreturn {e, m, s, n, ids, blob}"
        );
        let increasing = batch(&["A", "B", "B"]);
        let mut decreasing = batch(&["A", "A"]);
        decreasing.reverse();
        let cases = [
            (ExpectedVersion::Any, 1, batch(&["A"])),
            (ExpectedVersion::NoStream, 2, increasing.clone()),
            (ExpectedVersion::StreamExists, 1, decreasing),
            (ExpectedVersion::Exact(0), 2, increasing.clone()),
            (ExpectedVersion::Exact(cqrsx_core::raw::MAX_NUMBER - 3), 2, increasing),
        ];
        for (expected, types, events) in cases {
            let header = header_ids_and_events(expected, types, &events).expect("header");
            let reply: Value = client
                .client()
                .eval(script, Vec::<String>::new(), vec![Value::Bytes(header.into())])
                .await
                .expect("eval read_header");
            let Value::Array(fields) = reply else {
                panic!("read_header answered {reply:?}");
            };
            let number = |i: usize| {
                fields[i]
                    .as_i64()
                    .unwrap_or_else(|| panic!("field {i}: {:?}", fields[i]))
            };
            let bytes = |i: usize| fields[i].as_bytes().map(<[u8]>::to_vec).unwrap_or_default();
            let case = format!("{expected:?}, {types} types, {} events", events.len());
            assert_eq!(number(0), expected.to_wire(), "expected version of {case}");
            assert_eq!(number(1), types as i64, "event types of {case}");
            assert_eq!(
                number(2),
                i64::from(increasing_ids(&events)),
                "increasing ids of {case}"
            );
            assert_eq!(number(3), events.len() as i64, "events of {case}");
            let ids: Vec<u8> = events.iter().flat_map(|e| *e.event_id.as_bytes()).collect();
            assert_eq!(bytes(4), ids, "ids of {case}");
            let mut blob = Vec::new();
            put_events(&mut blob, &events).expect("blob");
            assert_eq!(bytes(5), blob, "events blob of {case}");
        }
    }

    #[test]
    fn reply_lines_read_as_results_and_errors() {
        let stream = StreamId::new("Order", "o-1").expect("stream");
        let events = batch(&["A", "B"]);
        let read = |line: &str| outcome(line, &stream, 3, ExpectedVersion::Exact(4), &events);
        let ok = read("ok 6 120").expect("ok");
        assert_eq!(
            (ok.version, ok.position),
            (
                6,
                Position {
                    partition: 3,
                    offset: 120
                }
            )
        );
        assert_eq!(read("dup 6 120").expect("dup").version, 6);
        assert!(matches!(read("conflict 5"), Err(Error::Conflict { actual: 5, .. })));
        assert!(
            matches!(read("ids 4 1"), Err(Error::EventIdReused { event_id, .. }) if event_id == events[1].event_id)
        );
        assert!(matches!(read("deleted 4"), Err(Error::StreamDeleted { .. })));
        assert!(matches!(read("corrupt index"), Err(Error::Integrity(m)) if m.contains("commit index")));
        // Anything else is the server answering another protocol: never a result.
        for bad in [
            "",
            "ok",
            "ok 6",
            "ok x 120",
            "ok -1 120",
            "ids 4 2",
            "ids 4",
            "conflict",
            "done 1 2",
        ] {
            assert!(
                matches!(read(bad), Err(Error::Backend { .. })),
                "{bad:?} read as {:?}",
                read(bad)
            );
        }
    }
}
