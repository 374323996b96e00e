//! How a commit sits in a partition log entry, and how it is read back.
//!
//! A commit is one entry of its partition's log (a Redis Stream), at id `<first position>-0`,
//! with the fields `s` stream key (`Type/id`, so it names the aggregate type), `v` first
//! version, `n` event count, `r` recorded-at (`<ms>-<seq>`: the id of the type index entry the
//! append made; or `<ms>`), `t` event types (one name when every event
//! has it, else one per event, newline-separated: the scripts filter on it) and `e` the events. `e` is written by this
//! module and only read by it: a format byte, then per event its id (16 bytes), content type
//! (1 byte), schema version, payload and metadata (each length-prefixed, lengths as LEB128).

use cqrsx_core::raw::MAX_NUMBER;
use cqrsx_core::{ContentType, Error, Metadata, NewEvent, Position, RecordedEvent, Result, StreamId, Timestamp, Uuid};
use fred::types::Value;

use crate::reply::{raw, raw_int, text};

/// The first byte of every events field this version writes.
const FORMAT: u8 = 1;

/// The `t` field of a commit: its one event type, or every event's type, newline-separated.
pub(crate) fn types_field(events: &[NewEvent]) -> String {
    let first = events.first().map_or("", |e| e.event_type.as_str());
    if events.iter().all(|e| e.event_type == first) {
        first.to_string()
    } else {
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn put_len(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn content_code(content_type: ContentType) -> u8 {
    match content_type {
        ContentType::Json => 0,
        ContentType::MessagePack => 1,
    }
}

/// The `e` field of a commit.
#[cfg(test)]
pub(crate) fn events_field(events: &[NewEvent]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    put_events(&mut out, events)?;
    Ok(out)
}

/// Writes the `e` field of a commit of `events` at the end of `out`.
pub(crate) fn put_events(out: &mut Vec<u8>, events: &[NewEvent]) -> Result<()> {
    out.reserve(events.iter().map(|e| e.payload.len() + 32).sum::<usize>() + 1);
    out.push(FORMAT);
    for e in events {
        out.extend_from_slice(e.event_id.as_bytes());
        out.push(content_code(e.content_type));
        put_len(out, u64::from(e.schema_version));
        put_len(out, e.payload.len() as u64);
        out.extend_from_slice(&e.payload);
        if e.metadata.is_empty() {
            put_len(out, 0);
        } else {
            let json = e.metadata.to_json()?;
            put_len(out, json.len() as u64);
            out.extend_from_slice(json.as_bytes());
        }
    }
    Ok(())
}

/// Reads the `e` field of the commit at position `first` of `stream`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    first: u64,
    stream: &'a StreamId,
}

impl<'a> Reader<'a> {
    /// The error for a field this store did not write (named only when it happens: reads are
    /// the hot path).
    fn corrupt(&self, why: &str) -> Error {
        Error::Integrity(format!(
            "commit at position {} of {}: {why} at byte {}",
            self.first, self.stream, self.at
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.corrupt("truncated events field"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn len(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first().ok_or_else(|| self.corrupt("missing length"))?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.corrupt("length too long"))
    }

    fn sized(&mut self) -> Result<&'a [u8]> {
        let n = usize::try_from(self.len()?).map_err(|_| self.corrupt("length too large"))?;
        self.take(n)
    }
}

/// A commit read from a log entry.
pub(crate) struct Commit {
    /// Its first position.
    pub(crate) first: u64,
    pub(crate) stream: StreamId,
    pub(crate) v0: u64,
    pub(crate) count: u64,
    pub(crate) recorded_at: Timestamp,
    types: String,
    /// The `e` field, text or bytes (checked by `parse`).
    events: Value,
}

impl Commit {
    /// Parses a log entry `[id, [field, value, ...]]`.
    pub(crate) fn parse(entry: Value) -> Result<Self> {
        let mut parts = crate::reply::array(entry)?.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(Error::Integrity("a log entry without id and fields".into()));
        };
        let id = raw(&id)
            .and_then(|id| std::str::from_utf8(id).ok())
            .ok_or_else(|| Error::Integrity("a log entry id that is not text".into()))?;
        let first = id
            .split('-')
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .filter(|&p| p <= MAX_NUMBER)
            .ok_or_else(|| Error::Integrity(format!("log entry id {id:?} is not a position")))?;
        let (mut stream, mut v0, mut count, mut recorded_at, mut types, mut events) =
            (None, None, None, None, None, None);
        let mut it = crate::reply::array(fields)?.into_iter();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            match raw(&name) {
                Some(b"s") => {
                    stream = raw(&value)
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .map(StreamId::parse)
                }
                Some(b"v") => v0 = raw_int(&value),
                Some(b"n") => count = raw_int(&value),
                Some(b"r") => recorded_at = clock_ms(&value),
                Some(b"t") => types = text(&value),
                Some(b"e") => events = raw(&value).is_some().then_some(value),
                _ => {}
            }
        }
        let missing = |field: &str| Error::Integrity(format!("log entry {id} has no valid {field} field"));
        let stream = stream
            .ok_or_else(|| missing("stream (s)"))?
            .map_err(|e| Error::Integrity(format!("log entry {id} names no stream: {e}")))?;
        Ok(Self {
            first,
            stream,
            // Positions and versions stay below 2^53, so sums of them never overflow.
            v0: v0
                .filter(|&v| v > 0 && v <= MAX_NUMBER)
                .ok_or_else(|| missing("version (v)"))?,
            count: count
                .filter(|&n| n > 0 && n <= MAX_NUMBER)
                .ok_or_else(|| missing("count (n)"))?,
            recorded_at: Timestamp(recorded_at.ok_or_else(|| missing("recorded-at (r)"))?),
            types: types.ok_or_else(|| missing("types (t)"))?,
            events: events.ok_or_else(|| missing("events (e)"))?,
        })
    }

    /// The commit's events at offsets `keep` accepts (0-based), with positions in `partition`.
    pub(crate) fn events(&self, partition: u32, mut keep: impl FnMut(u64, &str) -> bool) -> Result<Vec<RecordedEvent>> {
        let mut reader = Reader {
            bytes: raw(&self.events).unwrap_or_default(),
            at: 0,
            first: self.first,
            stream: &self.stream,
        };
        let types: Vec<&str> = if self.types.contains('\n') {
            self.types.split('\n').collect()
        } else {
            vec![self.types.as_str(); usize::try_from(self.count).unwrap_or(0)]
        };
        if types.len() as u64 != self.count {
            return Err(reader.corrupt(&format!("{} event types for {} events", types.len(), self.count)));
        }
        if reader.take(1)? != [FORMAT] {
            return Err(reader.corrupt("unknown events format"));
        }
        let mut out = Vec::with_capacity(types.len());
        for (k, event_type) in types.iter().enumerate() {
            let k = k as u64;
            let id: [u8; 16] = reader
                .take(16)?
                .try_into()
                .map_err(|_| reader.corrupt("short event id"))?;
            let content_type = match reader.take(1)?.first() {
                Some(0) => ContentType::Json,
                Some(1) => ContentType::MessagePack,
                _ => return Err(reader.corrupt("unknown content type")),
            };
            let schema_version = u32::try_from(reader.len()?).map_err(|_| reader.corrupt("schema version"))?;
            let payload = reader.sized()?;
            let metadata = reader.sized()?;
            if !keep(k, event_type) {
                continue;
            }
            let metadata = if metadata.is_empty() {
                Metadata::default()
            } else {
                let json = std::str::from_utf8(metadata).map_err(|_| reader.corrupt("metadata is not UTF-8"))?;
                Metadata::from_json(json).map_err(|e| reader.corrupt(&format!("unreadable metadata: {e}")))?
            };
            out.push(RecordedEvent {
                event_id: Uuid::from_bytes(id),
                stream: self.stream.clone(),
                version: self.v0 + k,
                position: Position {
                    partition,
                    offset: self.first + k,
                },
                event_type: (*event_type).to_string(),
                schema_version,
                content_type,
                payload: payload.to_vec(),
                metadata,
                recorded_at: self.recorded_at,
            });
        }
        Ok(out)
    }
}

/// A stream's state as its meta hash's `v` holds it (see `append.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaVersion {
    Live(u64),
    Deleted(u64),
}

/// Reads a meta hash's `v`: the version's digits, then (while the stream's ids are ordered) its
/// largest event id, 16 bytes; or `d` and the version once deleted. `None` for anything else.
/// A tiny stream's version, from its bucket field (see `small.lua`): its largest event id (16
/// bytes), then `<version> <first position>`; `None` if the field is not one this store wrote.
pub(crate) fn tiny_version(value: &[u8]) -> Option<u64> {
    let rest = std::str::from_utf8(value.get(16..)?).ok()?;
    let (version, position) = rest.split_once(' ')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(version) || !digits(position) {
        return None;
    }
    version
        .parse()
        .ok()
        .filter(|v| (1..=crate::SMALL_STREAM_EVENTS).contains(v))
}

pub(crate) fn meta_version(v: &[u8]) -> Option<MetaVersion> {
    let number = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    match v {
        [b'd', rest @ ..] => number(rest).map(MetaVersion::Deleted),
        _ if v.len() > 16 => number(&v[..v.len() - 16]).map(MetaVersion::Live),
        _ => number(v).map(MetaVersion::Live),
    }
}

/// A recorded-at field's milliseconds: `<ms>-<seq>` (a stream id of the server's clock) or `<ms>`.
fn clock_ms(v: &Value) -> Option<u64> {
    let raw = std::str::from_utf8(raw(v)?).ok()?;
    let (ms, seq) = raw.split_once('-').unwrap_or((raw, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    ms.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_version_reads_the_forms_append_writes_and_nothing_else() {
        let id = [7u8; 16];
        let with_id = |digits: &str| [digits.as_bytes(), &id].concat();
        assert_eq!(meta_version(b"12"), Some(MetaVersion::Live(12)));
        assert_eq!(meta_version(&with_id("12")), Some(MetaVersion::Live(12)));
        assert_eq!(
            meta_version(&with_id("9007199254740991")),
            Some(MetaVersion::Live(9_007_199_254_740_991))
        );
        assert_eq!(meta_version(b"d12"), Some(MetaVersion::Deleted(12)));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"1e3",
            b" 12",
            b"d",
            b"dx",
            &id,
            &with_id("x"),
            &with_id("12345678901234567"),
        ] {
            assert_eq!(meta_version(bad), None, "{bad:?}");
        }
    }

    fn entry(first: u64, events: &[NewEvent]) -> Value {
        let fields: Vec<Value> = vec![
            "s".into(),
            "T/x".into(),
            "v".into(),
            "3".into(),
            "n".into(),
            events.len().to_string().into(),
            "r".into(),
            "1700000000000-3".into(),
            "t".into(),
            types_field(events).into(),
            "e".into(),
            Value::Bytes(events_field(events).expect("encode").into()),
        ];
        Value::Array(vec![format!("{first}-0").into(), Value::Array(fields)])
    }

    #[test]
    fn recorded_at_is_the_ms_of_a_clock_id() {
        assert_eq!(clock_ms(&"1700000000000-3".into()), Some(1_700_000_000_000));
        assert_eq!(clock_ms(&"1700000000000".into()), Some(1_700_000_000_000));
        for bad in ["", "-", "17-", "-3", "+17-3", "17-+3", "17-3-1", "x", "17.5"] {
            assert_eq!(clock_ms(&bad.into()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_commit_round_trips_through_its_log_entry() {
        let events = vec![
            NewEvent::json("A", &serde_json::json!({"x": 1})).expect("json"),
            NewEvent::new("B", ContentType::MessagePack, vec![0, 1, 2, 255])
                .with_schema_version(300)
                .with_metadata(Metadata::correlated("c").with("n", 1u64 << 60)),
            NewEvent::new("A", ContentType::Json, Vec::new()),
        ];
        let commit = Commit::parse(entry(40, &events)).expect("parse");
        let read = commit.events(2, |_, _| true).expect("events");
        assert_eq!(read.len(), 3);
        for (k, (got, sent)) in read.iter().zip(&events).enumerate() {
            assert_eq!(got.event_id, sent.event_id);
            assert_eq!(got.event_type, sent.event_type);
            assert_eq!(got.schema_version, sent.schema_version);
            assert_eq!(got.content_type, sent.content_type);
            assert_eq!(got.payload, sent.payload);
            assert_eq!(got.metadata, sent.metadata);
            assert_eq!(got.version, 3 + k as u64);
            assert_eq!(
                got.position,
                Position {
                    partition: 2,
                    offset: 40 + k as u64
                }
            );
        }
        let only_a = commit.events(2, |_, t| t == "A").expect("events");
        assert_eq!(only_a.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3, 5]);
    }

    #[test]
    fn damaged_entries_are_integrity_errors() {
        let events = vec![NewEvent::json("A", &1).expect("json")];
        let Value::Array(mut parts) = entry(1, &events) else {
            panic!("entry")
        };
        let Value::Array(mut fields) = parts.pop().expect("fields") else {
            panic!("fields")
        };
        let good = fields.clone();
        fields[11] = Value::Bytes(vec![FORMAT, 1, 2].into());
        let commit = Commit::parse(Value::Array(vec!["1-0".into(), Value::Array(fields)])).expect("parse");
        assert!(matches!(commit.events(0, |_, _| true), Err(Error::Integrity(_))));
        let mut no_stream = good.clone();
        no_stream[1] = "not a stream key".into();
        assert!(matches!(
            Commit::parse(Value::Array(vec!["1-0".into(), Value::Array(no_stream)])),
            Err(Error::Integrity(_))
        ));
        let mut bad_id = good;
        bad_id[5] = "0".into();
        assert!(matches!(
            Commit::parse(Value::Array(vec!["x-0".into(), Value::Array(bad_id)])),
            Err(Error::Integrity(_))
        ));
    }
}
