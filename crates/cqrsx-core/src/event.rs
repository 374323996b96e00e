//! Event envelopes: what a writer appends ([`NewEvent`]) and what a reader gets back
//! ([`RecordedEvent`]), with metadata, positions and the read-all filter.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::stream::{validate_type_name, StreamId};

/// Milliseconds since the Unix epoch, as stored by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ContentType {
    /// UTF-8 JSON (`serde_json`); the default.
    #[default]
    Json,
    /// MessagePack with named fields (`rmp-serde`).
    MessagePack,
}

impl ContentType {
    /// The MIME-style name stored beside payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::MessagePack => "application/msgpack",
        }
    }

    /// Parses [`ContentType::as_str`]'s output.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "application/json" => Ok(ContentType::Json),
            "application/msgpack" => Ok(ContentType::MessagePack),
            other => Err(Error::serialization_msg(format!("unknown content type {other:?}"))),
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Correlation, causation and free-form data carried beside every event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything caused by one request.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "cor")]
    pub correlation_id: Option<String>,
    /// The id of the message (command or event) that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "cau")]
    pub causation_id: Option<String>,
    /// Anything else the application wants kept with the event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", rename = "u")]
    pub user: BTreeMap<String, serde_json::Value>,
    /// The W3C `traceparent` of the span that appended the event
    /// (`00-<trace id>-<span id>-<flags>`), recorded on append when trace context is enabled
    /// (feature `otel`, `cqrsx_core::telemetry::set_trace_context(true)`); a projection handles
    /// the event in a span of that trace. Stored as `tp`; events stored without it read `None`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "tp")]
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata with a correlation id.
    pub fn correlated(correlation_id: impl Into<String>) -> Self {
        Self {
            correlation_id: Some(correlation_id.into()),
            ..Self::default()
        }
    }

    /// Adds a causation id.
    pub fn with_causation(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Adds one user entry.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.user.insert(key.into(), value.into());
        self
    }

    /// Adds a W3C `traceparent` (checked on append:
    /// [`crate::telemetry::validate_traceparent`]).
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.user.is_empty()
            && self.traceparent.is_none()
    }

    /// The compact JSON form backends store ("" when empty).
    pub fn to_json(&self) -> Result<String> {
        if self.is_empty() {
            return Ok(String::new());
        }
        serde_json::to_string(self).map_err(|e| Error::serialization("event metadata", e))
    }

    /// Parses [`Metadata::to_json`]'s output.
    pub fn from_json(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(s).map_err(|e| Error::serialization("event metadata", e))
    }
}

/// An event to append: already encoded, not yet positioned.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id; a retry with the same ids is recognised and not duplicated.
    pub event_id: Uuid,
    /// The event's type name, e.g. `UserCreated`.
    pub event_type: String,
    /// The payload's schema version (1 for the first).
    pub schema_version: u32,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// The encoded event.
    pub payload: Vec<u8>,
    /// Correlation, causation and user data.
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7 id, schema version 1 and empty metadata.
    pub fn new(event_type: impl Into<String>, content_type: ContentType, payload: Vec<u8>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            content_type,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// A JSON event from any serializable value.
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value).map_err(|e| Error::serialization("event payload", e))?;
        Ok(Self::new(event_type, ContentType::Json, payload))
    }

    /// Sets the event id (to make a retry idempotent, use the id of the first attempt).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// A position in the global log of one partition. Offsets start at 1 and increase in commit
/// order. In memory and on Redis they are dense (the n-th event of a partition has offset n);
/// on MongoDB an offset is a commit's number shifted left by 16 bits plus the event's index in
/// the commit, so offsets increase but skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    /// The partition (0 for backends with a single global log).
    pub partition: u32,
    /// The event's place in that partition's log.
    pub offset: u64,
}

impl Position {
    /// The start of partition 0: a `read_all` from here sees everything.
    pub const START: Position = Position {
        partition: 0,
        offset: 1,
    };

    /// The start of a partition.
    pub fn start_of(partition: u32) -> Self {
        Self { partition, offset: 1 }
    }

    /// The position just after this one.
    pub fn next(self) -> Self {
        Self {
            partition: self.partition,
            offset: self.offset.saturating_add(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

/// An event as stored: the full envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The id given at append time.
    pub event_id: Uuid,
    /// The stream (aggregate type + id) it belongs to.
    pub stream: StreamId,
    /// Its version in the stream (1-based).
    pub version: u64,
    /// Its position in the global log.
    pub position: Position,
    /// The event's type name.
    pub event_type: String,
    /// The payload's schema version as written.
    pub schema_version: u32,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// The encoded event.
    pub payload: Vec<u8>,
    /// Correlation, causation and user data.
    pub metadata: Metadata,
    /// When the store committed it.
    pub recorded_at: Timestamp,
}

impl RecordedEvent {
    /// The aggregate type, from the stream id.
    pub fn aggregate_type(&self) -> &str {
        self.stream.aggregate_type()
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the last event's version).
    pub version: u64,
    /// The global position of the last event written.
    pub position: Position,
}

/// Which events `read_all` returns. Empty lists mean "all".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Keep only these event types.
    pub event_types: Vec<String>,
    /// Keep only events of these aggregate types.
    pub aggregate_types: Vec<String>,
}

impl EventFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events of these types.
    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            event_types: types.into_iter().map(Into::into).collect(),
            aggregate_types: Vec::new(),
        }
    }

    /// Only events of these aggregate types.
    pub fn aggregate_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            event_types: Vec::new(),
            aggregate_types: types.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether an event of this type and aggregate type passes.
    pub fn matches(&self, event_type: &str, aggregate_type: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.aggregate_types.is_empty() || self.aggregate_types.iter().any(|t| t == aggregate_type))
    }

    /// Whether the filter lets everything through.
    pub fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.aggregate_types.is_empty()
    }
}

/// One page of `read_all`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllPage {
    /// Matching events in position order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read should start: past every position this read looked at, including
    /// positions whose events the filter dropped or that were truncated.
    pub next: Position,
}

/// Checks the envelope fields every backend requires before it writes anything.
pub(crate) fn validate_new_event(event: &NewEvent, max_event_bytes: usize) -> Result<()> {
    validate_envelope(
        &event.event_id,
        &event.event_type,
        event.schema_version,
        &event.metadata,
        event.payload.len(),
        max_event_bytes,
    )
}

/// [`validate_new_event`] on the parts of an envelope (an imported event is checked as a new one).
pub(crate) fn validate_envelope(
    event_id: &Uuid,
    event_type: &str,
    schema_version: u32,
    metadata: &Metadata,
    payload_len: usize,
    max_event_bytes: usize,
) -> Result<()> {
    validate_type_name("event type", event_type)?;
    if event_id.is_nil() {
        return Err(Error::InvalidInput("event id must not be the nil UUID".into()));
    }
    if schema_version == 0 {
        return Err(Error::InvalidInput(format!(
            "event {event_id} has schema version 0; versions start at 1"
        )));
    }
    if let Some(traceparent) = &metadata.traceparent {
        validate_traceparent(traceparent).map_err(|e| Error::InvalidInput(format!("event {event_id}: {e}")))?;
    }
    if payload_len > max_event_bytes {
        return Err(Error::InvalidInput(format!(
            "event {event_id} payload is {payload_len} bytes, over the backend limit of {max_event_bytes}"
        )));
    }
    Ok(())
}

/// The largest version, offset or timestamp any backend accepts: 2^53 − 1, the largest integer
/// that Lua (Redis scripts) and JSON readers hold exactly. Every server stores it exactly.
pub const MAX_NUMBER: u64 = (1 << 53) - 1;

/// Refuses a number over [`MAX_NUMBER`].
pub fn validate_number(what: &str, value: u64) -> Result<()> {
    if value > MAX_NUMBER {
        return Err(Error::InvalidInput(format!(
            "{what} {value} is over the largest accepted number {MAX_NUMBER} (2^53 - 1)"
        )));
    }
    Ok(())
}

/// Checks a W3C `traceparent` in the shape every version-00 header has: `00-`, 32 lowercase hex
/// digits of trace id, `-`, 16 of span id, `-`, 2 of flags; neither id all zeros. The message
/// says what is wrong.
pub fn validate_traceparent(value: &str) -> std::result::Result<(), String> {
    let b = value.as_bytes();
    let hex = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let not_zero = |from: usize, to: usize| b[from..to].iter().any(|&c| c != b'0');
    let well_formed = b.len() == 55
        && b.starts_with(b"00-")
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(3, 35)
        && hex(36, 52)
        && hex(53, 55)
        && not_zero(3, 35)
        && not_zero(36, 52);
    if well_formed {
        Ok(())
    } else {
        let shown: String = value.chars().take(64).collect();
        Err(format!("traceparent {shown:?} is not a W3C version-00 traceparent"))
    }
}
