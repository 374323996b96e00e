//! The content hashes verification compares.

use cqrsx_core::snapshot::SnapshotRecord;
use cqrsx_core::RecordedEvent;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) over an event's id, version, type, schema version, content type, payload,
/// metadata JSON and recorded-at time — everything but its position.
pub fn event_hash(event: &RecordedEvent) -> String {
    let mut h = Sha256::new();
    h.update(event.event_id.as_bytes());
    h.update(event.version.to_be_bytes());
    field(&mut h, event.event_type.as_bytes());
    h.update(event.schema_version.to_be_bytes());
    field(&mut h, event.content_type.as_str().as_bytes());
    field(&mut h, &event.payload);
    // Metadata that cannot be written as JSON hashes as its debug form: it still differs
    // where the metadata differs.
    let metadata = event
        .metadata
        .to_json()
        .unwrap_or_else(|_| format!("{:?}", event.metadata));
    field(&mut h, metadata.as_bytes());
    h.update(event.recorded_at.as_millis().to_be_bytes());
    hex(&h.finalize())
}

/// SHA-256 (hex) over a snapshot's content type, schema version and state.
pub fn snapshot_hash(snapshot: &SnapshotRecord) -> String {
    let mut h = Sha256::new();
    field(&mut h, snapshot.content_type.as_bytes());
    h.update(snapshot.schema_version.to_be_bytes());
    field(&mut h, &snapshot.payload);
    hex(&h.finalize())
}

/// SHA-256 (hex) over a document's JSON with object keys sorted, so that stores that keep
/// keys in another order hash alike.
pub fn document_hash(document: &Value) -> String {
    let mut out = String::new();
    canonical(document, &mut out);
    hex(&Sha256::digest(out.as_bytes()))
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
