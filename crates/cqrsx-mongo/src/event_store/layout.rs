//! How an event sits inside a commit document. JSON payloads that survive a round trip through
//! BSON byte for byte are stored as documents (queryable with ordinary filters, e.g.
//! `events.p.email`); anything else — MessagePack, or JSON BSON cannot hold exactly — as binary.

use cqrsx_core::{ContentType, Error, Metadata, NewEvent, Position, RecordedEvent, Result, StreamId, Timestamp, Uuid};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};

use crate::error::corrupt;

fn keys_are_storable(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .all(|(k, v)| !k.is_empty() && !k.starts_with('$') && !k.contains(['.', '\0']) && keys_are_storable(v)),
        serde_json::Value::Array(items) => items.iter().all(|v| !v.is_array() && keys_are_storable(v)),
        _ => true,
    }
}

/// The JSON payload as a BSON document, if it converts back to the very same bytes.
fn json_document(payload: &[u8]) -> Option<Document> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if !value.is_object() || !keys_are_storable(&value) {
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
        let value: serde_json::Value =
            serde_json::from_str(&event.metadata.to_json()?).map_err(|e| Error::serialization("metadata", e))?;
        let bson = Bson::try_from(value).map_err(|e| Error::serialization("metadata", e))?;
        d.insert("m", bson);
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
    let event_id = Uuid::parse_str(id).map_err(|e| Error::serialization(format!("event id of {stream}"), e))?;
    let event_type = d
        .get_str("t")
        .map_err(|_| corrupt(format!("event {version} of {stream} has no type")))?
        .to_string();
    let content_type = ContentType::parse(
        d.get_str("c")
            .map_err(|_| corrupt(format!("event {version} of {stream} has no content type")))?,
    )?;
    let schema_version = match d.get("sv") {
        Some(Bson::Int64(v)) => u32::try_from(*v).unwrap_or(1),
        Some(Bson::Int32(v)) => u32::try_from(*v).unwrap_or(1),
        _ => 1,
    };
    let payload = match (d.get("p"), d.get("pb")) {
        (Some(Bson::Document(p)), _) => serde_json::to_vec(&Bson::Document(p.clone()).into_relaxed_extjson())
            .map_err(|e| Error::serialization(format!("payload of event {version} of {stream}"), e))?,
        (_, Some(Bson::Binary(b))) => b.bytes.clone(),
        _ => return Err(corrupt(format!("event {version} of {stream} has no payload"))),
    };
    let metadata = match d.get("m") {
        Some(m) => {
            let json = m.clone().into_relaxed_extjson().to_string();
            Metadata::from_json(&json)?
        }
        None => Metadata::default(),
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
