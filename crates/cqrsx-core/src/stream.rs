//! Stream identity and the expected-version rules of optimistic concurrency.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest accepted aggregate type or aggregate id, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// The events of one aggregate instance, addressed by aggregate type and id.
///
/// Both parts are validated on construction: non-empty, at most [`MAX_NAME_LEN`] bytes, no
/// control characters; the aggregate type is further limited to `[A-Za-z0-9_.-]` so that it can
/// appear in key and collection names unescaped.
///
/// ```
/// use cqrsx_core::StreamId;
/// let stream = StreamId::new("User", "user-123")?;
/// assert_eq!(stream.to_string(), "User/user-123");
/// assert!(StreamId::new("User", "").is_err());
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
///
/// A stream id is one shared string (`Type/id`): cloning it, as every event read carries its
/// stream, does not allocate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    /// `Type/id`.
    key: Arc<str>,
    /// Where the `/` is.
    split: usize,
}

impl StreamId {
    /// A validated stream id.
    pub fn new(aggregate_type: impl AsRef<str>, id: impl AsRef<str>) -> Result<Self> {
        let (aggregate_type, id) = (aggregate_type.as_ref(), id.as_ref());
        validate_type_name("aggregate type", aggregate_type)?;
        validate_id("aggregate id", id)?;
        Ok(Self {
            key: format!("{aggregate_type}/{id}").into(),
            split: aggregate_type.len(),
        })
    }

    /// Parses the `Type/id` form produced by [`StreamId::key`].
    pub fn parse(key: &str) -> Result<Self> {
        match key.split_once('/') {
            Some((ty, id)) => Self::new(ty, id),
            None => Err(Error::InvalidInput(format!(
                "stream key {key:?} is not of the form Type/id"
            ))),
        }
    }

    /// The aggregate type, e.g. `User`.
    pub fn aggregate_type(&self) -> &str {
        &self.key[..self.split]
    }

    /// The aggregate id, e.g. `user-123`.
    pub fn id(&self) -> &str {
        &self.key[self.split + 1..]
    }

    /// `Type/id`: the unique key backends store the stream under.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Ordered by aggregate type, then id.
impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.aggregate_type(), self.id()).cmp(&(other.aggregate_type(), other.id()))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.key)
    }
}

/// Checks an id (aggregate id, read-model id): non-empty, bounded, no control characters.
pub fn validate_id(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidInput(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::InvalidInput(format!(
            "{what} is {} bytes, longer than {MAX_NAME_LEN}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} {value:?} contains control characters"
        )));
    }
    Ok(())
}

/// Checks a type name (aggregate type, event type): like [`validate_id`], limited to
/// `[A-Za-z0-9_.-]`.
pub fn validate_type_name(what: &str, value: &str) -> Result<()> {
    validate_id(what, value)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(Error::InvalidInput(format!(
            "{what} {value:?} contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"
        )));
    }
    Ok(())
}

/// What the writer believes about the stream's version before an append.
///
/// Versions are 1-based: the first event of a stream has version 1, and a stream with no events
/// has version 0. The semantics are those of KurrentDB (EventStoreDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last version must be exactly this. `Exact(0)` means the same as `NoStream`.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `actual` (0: no stream) satisfies this.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }

    /// The decision every store makes before it writes to a stream whose head is `head` (0: no
    /// stream), `deleted` or not: a deleted stream is [`Error::StreamDeleted`] whatever was
    /// expected; a head this does not accept is [`Error::Conflict`]. Conflicts are built here
    /// and in [`Error::conflict`] only.
    pub fn check(self, stream: &StreamId, head: u64, deleted: bool) -> Result<()> {
        if deleted {
            return Err(Error::StreamDeleted { stream: stream.clone() });
        }
        if !self.accepts(head) {
            return Err(Error::conflict(stream, self, head));
        }
        Ok(())
    }

    /// `NoStream` for version 0, `Exact(version)` otherwise: what a writer that loaded the
    /// stream at `version` expects.
    pub fn from_loaded(version: u64) -> Self {
        if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        }
    }

    /// A compact integer form used by server-side scripts: -1 any, -2 no stream, -3 stream
    /// exists, otherwise the exact version.
    pub fn to_wire(self) -> i64 {
        match self {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => -2,
            ExpectedVersion::StreamExists => -3,
            ExpectedVersion::Exact(v) => i64::try_from(v).unwrap_or(i64::MAX),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_stream_refuses_every_expectation_and_a_live_one_conflicts_by_its_head() {
        let s = StreamId::new("Order", "o-1").expect("stream");
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(3),
        ] {
            assert!(
                matches!(expected.check(&s, 3, true), Err(Error::StreamDeleted { .. })),
                "{expected:?}"
            );
        }
        assert!(ExpectedVersion::Any.check(&s, 0, false).is_ok());
        assert!(ExpectedVersion::Exact(3).check(&s, 3, false).is_ok());
        assert!(ExpectedVersion::NoStream.check(&s, 0, false).is_ok());
        for (expected, head) in [
            (ExpectedVersion::NoStream, 3),
            (ExpectedVersion::StreamExists, 0),
            (ExpectedVersion::Exact(2), 3),
        ] {
            match expected.check(&s, head, false) {
                Err(Error::Conflict {
                    stream,
                    expected: e,
                    actual,
                }) => assert_eq!((stream, e, actual), (s.clone(), expected, head)),
                other => panic!("{expected:?} at {head}: {other:?}"),
            }
        }
    }

    #[test]
    fn stream_id_rejects_empty_and_bad_names() {
        assert!(StreamId::new("", "a").is_err());
        assert!(StreamId::new("User", "").is_err());
        assert!(StreamId::new("Us er", "a").is_err());
        assert!(StreamId::new("User", "a\u{0}b").is_err());
        assert!(StreamId::new("User", "x".repeat(MAX_NAME_LEN + 1)).is_err());
        let s = StreamId::new("User", "a/b").expect("slash is allowed in ids");
        assert_eq!(StreamId::parse(s.key()).expect("round trip"), s);
    }

    #[test]
    fn expected_version_semantics() {
        assert!(ExpectedVersion::Any.accepts(0));
        assert!(ExpectedVersion::NoStream.accepts(0));
        assert!(!ExpectedVersion::NoStream.accepts(1));
        assert!(!ExpectedVersion::StreamExists.accepts(0));
        assert!(ExpectedVersion::Exact(0).accepts(0));
        assert!(!ExpectedVersion::Exact(3).accepts(4));
        assert_eq!(ExpectedVersion::from_loaded(0), ExpectedVersion::NoStream);
    }
}
