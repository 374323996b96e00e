//! How a commit is stored: one document per commit (the events of one append), with its
//! version slot as `_id`, and each event a subdocument. JSON payloads that survive a round trip
//! through BSON byte for byte are stored as documents (queryable with ordinary filters, e.g.
//! `events.p.email`); anything else — MessagePack, or JSON BSON cannot hold exactly — as binary.
//! Metadata likewise: a document when it converts exactly, else its JSON text.
//!
//! A commit document: `_id` (stream key, U+001F, first version), `stream`, `at` (aggregate
//! type), `v0` and `v1` (first and last version), `ids`, `types`, `ts` (recorded at), `pos`
//! (the commit's global number; its events sit at offsets `pos << 16 | index`), `events`,
//! and `tr` (events removed from its start by truncation). A tombstone (`deleted: true`) takes
//! the slot after a deleted stream's head; a filler (`filler: true`) closes a position no
//! commit will use.

use cqrsx_core::{ContentType, Error, Metadata, NewEvent, Position, RecordedEvent, Result, StreamId, Timestamp, Uuid};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};

use crate::error::corrupt;

/// A commit's events sit at offsets `commit << EVENT_BITS | index`, so a commit needs one
/// counter value however many events it holds, and its `_id` alone keeps commits apart.
pub(crate) const EVENT_BITS: u32 = 16;

/// The largest commit number: its offsets stay within `cqrsx_core::raw::MAX_NUMBER` (2^53 − 1).
pub(crate) const MAX_COMMIT: u64 = (1 << (53 - EVENT_BITS)) - 1;

/// The global offset of event `index` of the commit at `commit`.
pub(crate) fn offset_of(commit: u64, index: u64) -> u64 {
    (commit << EVENT_BITS) | index
}

/// The commit and event index an offset points at; offsets before the first commit point at
/// its start.
pub(crate) fn split(offset: u64) -> (u64, u64) {
    let commit = offset >> EVENT_BITS;
    if commit == 0 {
        (1, 0)
    } else {
        (commit, offset & ((1 << EVENT_BITS) - 1))
    }
}

/// A commit's `_id`: its stream and first version. Stream keys hold no control characters, so
/// the separator keeps slots of different streams apart.
pub(crate) fn slot_id(stream: &StreamId, v0: u64) -> String {
    format!("{}\u{1f}{v0}", stream.key())
}

/// A filler's `_id`, which no slot can equal (slots start with a stream key).
pub(crate) fn filler_id(position: u64) -> String {
    format!("\u{1f}fill\u{1f}{position}")
}

/// A number already checked against `MAX_NUMBER`, as BSON stores it.
pub(crate) fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn i64_of(d: &Document, key: &str) -> Result<i64> {
    match d.get(key) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        _ => Err(corrupt(format!("commit field {key} is missing or not an integer"))),
    }
}

pub(crate) fn u64_of(d: &Document, key: &str) -> Result<u64> {
    u64::try_from(i64_of(d, key)?).map_err(|_| corrupt(format!("commit field {key} is negative")))
}

/// Whether BSON (on every server cqrsx supports) holds a JSON value exactly: keys that are not
/// operators or paths, no arrays directly in arrays (FerretDB refuses them), integers that fit
/// an `i64`.
pub(crate) fn storable(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .all(|(k, v)| !k.is_empty() && !k.starts_with('$') && !k.contains(['.', '\0']) && storable(v)),
        serde_json::Value::Array(items) => items.iter().all(|v| !v.is_array() && storable(v)),
        serde_json::Value::Number(n) => n.is_f64() || n.as_i64().is_some(),
        _ => true,
    }
}

/// The JSON payload as a BSON document, if it converts back to the very same bytes.
fn json_document(payload: &[u8]) -> Option<Document> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if !value.is_object() || !storable(&value) {
        return None;
    }
    let Bson::Document(doc) = Bson::try_from(value).ok()? else {
        return None;
    };
    let back = serde_json::to_vec(&Bson::Document(doc.clone()).into_relaxed_extjson()).ok()?;
    (back == payload).then_some(doc)
}

/// One event as a subdocument of its commit.
pub(crate) fn event_doc(event: &NewEvent) -> Result<Document> {
    let mut d = doc! {
        "i": event.event_id.to_string(),
        "t": &event.event_type,
        "c": event.content_type.as_str(),
        "sv": i64::from(event.schema_version),
    };
    match (event.content_type, json_document(&event.payload)) {
        (ContentType::Json, Some(payload)) => {
            d.insert("p", payload);
        }
        _ => {
            d.insert(
                "pb",
                Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: event.payload.clone(),
                },
            );
        }
    }
    if !event.metadata.is_empty() {
        let json = event.metadata.to_json()?;
        match json_document(json.as_bytes()) {
            Some(m) => d.insert("m", m),
            // Metadata BSON cannot hold exactly (integers past i64, nested arrays on some
            // servers, `$` or `.` in keys) is kept as its JSON text.
            None => d.insert("mj", json),
        };
    }
    Ok(d)
}

/// Reads an event back from its commit.
pub(crate) fn recorded(
    stream: &StreamId,
    version: u64,
    position: Position,
    recorded_at: Timestamp,
    d: &Document,
) -> Result<RecordedEvent> {
    let id = d
        .get_str("i")
        .map_err(|_| corrupt(format!("event {version} of {stream} has no id")))?;
    let event_id =
        Uuid::parse_str(id).map_err(|e| corrupt(format!("event {version} of {stream} has id {id:?}: {e}")))?;
    let event_type = d
        .get_str("t")
        .map_err(|_| corrupt(format!("event {version} of {stream} has no type")))?
        .to_string();
    let content_type = ContentType::parse(
        d.get_str("c")
            .map_err(|_| corrupt(format!("event {version} of {stream} has no content type")))?,
    )
    .map_err(|e| corrupt(format!("event {version} of {stream}: {e}")))?;
    let schema_version = match d.get("sv") {
        Some(Bson::Int64(v)) => u32::try_from(*v).ok(),
        Some(Bson::Int32(v)) => u32::try_from(*v).ok(),
        _ => None,
    }
    .filter(|&v| v > 0)
    .ok_or_else(|| corrupt(format!("event {version} of {stream} has no valid schema version")))?;
    let payload = match (d.get("p"), d.get("pb")) {
        (Some(Bson::Document(p)), _) => serde_json::to_vec(&Bson::Document(p.clone()).into_relaxed_extjson())
            .map_err(|e| Error::serialization(format!("payload of event {version} of {stream}"), e))?,
        (_, Some(Bson::Binary(b))) => b.bytes.clone(),
        _ => return Err(corrupt(format!("event {version} of {stream} has no payload"))),
    };
    let unreadable = |e: Error| corrupt(format!("event {version} of {stream} has unreadable metadata: {e}"));
    let metadata = match (d.get("m"), d.get("mj")) {
        (Some(Bson::Document(m)), _) => {
            let json = serde_json::to_string(&Bson::Document(m.clone()).into_relaxed_extjson())
                .map_err(|e| unreadable(Error::serialization("metadata", e)))?;
            Metadata::from_json(&json).map_err(unreadable)?
        }
        (None, Some(Bson::String(json))) => Metadata::from_json(json).map_err(unreadable)?,
        (None, None) => Metadata::default(),
        _ => return Err(corrupt(format!("event {version} of {stream} has unreadable metadata"))),
    };
    Ok(RecordedEvent {
        event_id,
        stream: stream.clone(),
        version,
        position,
        event_type,
        schema_version,
        content_type,
        payload,
        metadata,
        recorded_at,
    })
}

/// The events of a commit document with version ≥ `from_version`, truncated ones skipped.
pub(crate) fn commit_events(commit: &Document, from_version: u64) -> Result<Vec<RecordedEvent>> {
    let key = commit.get_str("stream").map_err(|_| corrupt("commit without stream"))?;
    let stream = StreamId::parse(key).map_err(|e| corrupt(format!("commit of stream {key:?}: {e}")))?;
    let v0 = u64_of(commit, "v0")?;
    let first_pos = u64_of(commit, "pos")?;
    let trimmed = commit.get("tr").map_or(Ok(0), |_| u64_of(commit, "tr"))?;
    let ts = commit
        .get_datetime("ts")
        .map(|t| Timestamp(u64::try_from(t.timestamp_millis()).unwrap_or(0)))
        .map_err(|_| corrupt(format!("commit {v0} of {stream} has no time")))?;
    let events = commit
        .get_array("events")
        .map_err(|_| corrupt(format!("commit {v0} of {stream} has no events")))?;
    // What it holds agrees with the versions it spans, less those truncated.
    let v1 = u64_of(commit, "v1")?;
    let held = (v1 + 1)
        .checked_sub(v0)
        .filter(|&n| n > 0 && trimmed <= n)
        .map(|n| n - trimmed);
    if held != Some(events.len() as u64) {
        return Err(corrupt(format!(
            "commit {v0} of {stream} spans versions {v0} to {v1}, {trimmed} of them truncated, but holds {} events",
            events.len()
        )));
    }
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let k = trimmed + i as u64;
        let version = v0 + k;
        if version < from_version {
            continue;
        }
        let d = e
            .as_document()
            .ok_or_else(|| corrupt(format!("event {version} of {stream} is not a document")))?;
        let position = Position {
            partition: 0,
            offset: offset_of(first_pos, k),
        };
        // An imported event keeps its own recorded-at where it differs from its commit's.
        let at = match d.get("ts") {
            None => ts,
            Some(Bson::DateTime(t)) => Timestamp(u64::try_from(t.timestamp_millis()).unwrap_or(0)),
            Some(_) => return Err(corrupt(format!("event {version} of {stream} has no valid time"))),
        };
        out.push(recorded(&stream, version, position, at, d)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_are_documents_only_when_exact() {
        assert!(json_document(br#"{"b":1,"a":[1,2],"c":{"d":1.5}}"#).is_some());
        assert!(json_document(br#"{"$x":1}"#).is_none(), "operator-like keys");
        assert!(json_document(br#"{"a.b":1}"#).is_none(), "dotted keys");
        assert!(json_document(br#"{"a":[[1]]}"#).is_none(), "nested arrays");
        assert!(
            json_document(br#"{"n":18446744073709551615}"#).is_none(),
            "u64 beyond i64"
        );
        assert!(json_document(br#""just a string""#).is_none());
        assert!(json_document(br#"{ "spaced": 1 }"#).is_none(), "not canonical bytes");
    }
}
