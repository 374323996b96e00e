//! Decoding Redis replies: text, bytes, numbers, arrays and the `{status, ...}` shape the
//! scripts answer with. A reply of an unexpected shape is a [`ProtocolError`](crate::ProtocolError).

use cqrsx_core::Result;
use fred::types::Value;

use crate::error::protocol;

/// A reply as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Integer(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// A text or binary reply's bytes, borrowed.
pub(crate) fn raw(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s.as_bytes()),
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

/// A text or binary reply as a non-negative integer, read without a copy.
pub(crate) fn raw_int(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(raw(other)?).ok()?.parse().ok(),
    }
}

/// A reply as bytes.
pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// A reply as a non-negative integer (from an integer or its decimal text).
pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// A reply as an array (nil reads as empty).
pub(crate) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(protocol(format!("expected an array, got {other:?}"))),
    }
}

/// `{status, ...}` → status and the rest.
pub(crate) fn status(v: Value) -> Result<(String, Vec<Value>)> {
    let mut items = array(v)?;
    if items.is_empty() {
        return Err(protocol("empty script reply"));
    }
    let status = text(&items[0]).ok_or_else(|| protocol("script status is not text"))?;
    items.remove(0);
    Ok((status, items))
}

/// The number at `i` of a reply.
pub(crate) fn u64_at(items: &[Value], i: usize) -> Result<u64> {
    items
        .get(i)
        .and_then(int)
        .ok_or_else(|| protocol(format!("missing number at {i}")))
}

/// A script's `{'corrupt', what}` reply — data in Redis this store did not write — as an
/// [`Error::Integrity`](cqrsx_core::Error::Integrity).
pub(crate) fn corrupt(items: &[Value], context: &str) -> Option<cqrsx_core::Error> {
    if items.first().and_then(text).as_deref() != Some("corrupt") {
        return None;
    }
    let what = items.get(1).and_then(text).unwrap_or_default();
    Some(cqrsx_core::Error::Integrity(format!(
        "{context}: stored entry {what:?} is not one this store wrote"
    )))
}
