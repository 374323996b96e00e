//! The one public error type of cqrsx and its `Result` alias.

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::event::Position;
use crate::stream::{ExpectedVersion, StreamId};

/// A boxed error from a driver or codec, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the cqrsx [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a first connection to a server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing accepted the connection (no server on that port, or it is down).
    Refused,
    /// The server did not answer in time.
    Timeout,
    /// The server refused the credentials (wrong or missing password).
    Auth,
    /// Something answered that does not speak the expected protocol.
    Protocol,
    /// The server refused the configured database (e.g. a Redis database index it does not
    /// have).
    Database,
    /// The host name could not be resolved or the network is unreachable.
    Unreachable,
}

impl ConnectFailure {
    /// What an I/O error on a first connection (the TCP connect, or the handshake right after
    /// it) means — the one mapping every client manager uses:
    /// - refused, reset or aborted: nothing took the connection, or something on the way
    ///   dropped it (a server starting or stopping, a proxy with no backend) → [`Self::Refused`];
    /// - timed out → [`Self::Timeout`];
    /// - an answer cut short or not well-formed (end of stream, invalid data, a broken pipe
    ///   mid-handshake) → [`Self::Protocol`]: something listens but does not speak the protocol;
    /// - unreachable hosts and networks, addresses that do not exist, and any other kind →
    ///   [`Self::Unreachable`]: no connection could be had, for a reason that may pass.
    pub fn from_io(kind: std::io::ErrorKind) -> ConnectFailure {
        use std::io::ErrorKind as Io;
        match kind {
            Io::ConnectionRefused | Io::ConnectionReset | Io::ConnectionAborted => ConnectFailure::Refused,
            Io::TimedOut | Io::WouldBlock => ConnectFailure::Timeout,
            Io::UnexpectedEof | Io::InvalidData | Io::BrokenPipe => ConnectFailure::Protocol,
            _ => ConnectFailure::Unreachable,
        }
    }

    /// Whether trying again later may connect (the server may come up; the others need a
    /// configuration change).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ConnectFailure::Refused | ConnectFailure::Timeout | ConnectFailure::Unreachable
        )
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Refused => "connection refused",
            ConnectFailure::Timeout => "timed out",
            ConnectFailure::Auth => "authentication failed",
            ConnectFailure::Protocol => "the server does not speak the expected protocol",
            ConnectFailure::Database => "the server refused the database",
            ConnectFailure::Unreachable => "host unreachable",
        })
    }
}

/// Everything that can go wrong in a cqrsx store, repository, codec or projection.
///
/// Each variant carries the facts a caller acts on: a [`Error::Conflict`] says which version the
/// stream really has, a [`Error::Backend`] whether retrying can help, a [`Error::Connect`] what
/// went wrong with which server. [`Error::is_retryable`] is true only where sending the same
/// call again may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version did not match the caller's expectation; nothing was written. The
    /// same call cannot succeed again: reload the aggregate and decide again.
    #[error("version conflict on stream {stream}: expected {expected}, actual version {actual}")]
    Conflict {
        /// The stream that was appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused (0: no stream).
        actual: u64,
    },
    /// The stream was deleted; it can be neither read nor appended to.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The deleted stream.
        stream: StreamId,
    },
    /// An append repeats an event id of an earlier commit of the stream without being a retry
    /// of that commit (a retry repeats all its ids, in order). Nothing was written, and the
    /// same call can never succeed: the batch reuses an id.
    #[error("event id {event_id} is already in stream {stream}, and this append is not a retry of its commit")]
    EventIdReused {
        /// The stream.
        stream: StreamId,
        /// The first id of the batch found in the stream.
        event_id: Uuid,
    },
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Encoding or decoding failed: a corrupt payload, an unknown event type, a missing upcaster.
    #[error("serialization failed: {context}")]
    Serialization {
        /// What was being encoded or decoded.
        context: String,
        /// The codec's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data breaks an invariant of the store: a snapshot ahead of its stream, a stream
    /// whose versions jump, a stored document that cannot be an event or a checkpoint.
    #[error("integrity: {0}")]
    Integrity(String),
    /// The caller passed something the store refuses: empty ids, empty batches, oversized
    /// documents, invalid names, numbers out of range. Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A configuration is invalid or inconsistent (bad URL, missing upcaster in a chain).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A first connection to a server failed.
    #[error("cannot connect to {target}: {failure}")]
    Connect {
        /// What went wrong.
        failure: ConnectFailure,
        /// What was tried (addresses, without credentials).
        target: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        operation: String,
        /// How long.
        after: Duration,
    },
    /// A projection runner's lease was taken over by another runner; its writes are refused
    /// from then on (fencing).
    #[error("projection {projection} lost its lease (token {token}): {reason}")]
    LeaseLost {
        /// The projection version.
        projection: String,
        /// The fencing token the runner held.
        token: u64,
        /// What happened.
        reason: String,
    },
    /// A projection handler kept failing on an event and the runner stopped there.
    #[error("projection {projection} failed on {event_type} at {position}: {source}")]
    Handler {
        /// The projection version.
        projection: String,
        /// The event's position.
        position: Position,
        /// The event's type.
        event_type: String,
        /// The handler's error.
        #[source]
        source: BoxError,
    },
    /// A document that one shard of a sharded projection should hold was found in several of
    /// them: the projection keeps a copy per shard (totals combined on read). Read each copy
    /// with [`crate::projection::Views::get_per_shard`].
    #[error(
        "view document {id} of projection {projection} is in shards {shards:?}; read it with Views::get_per_shard"
    )]
    InSeveralShards {
        /// The projection.
        projection: String,
        /// The document id.
        id: String,
        /// The shards (by index) holding it.
        shards: Vec<u16>,
    },
    /// An append the store carried out and acknowledged, but that did not reach the durability
    /// asked for (replicas, a disk) in time: it may or may not survive a failover or a crash.
    /// Sending the same append again (the same event ids) is safe — it is recognised as a retry
    /// and waits again.
    #[error("the append to {stream} at version {version} is not durable as asked: {reason}")]
    NotDurable {
        /// The stream appended to.
        stream: StreamId,
        /// The stream's version after the append.
        version: u64,
        /// The append's last position.
        position: Position,
        /// What was asked for and what was reached.
        reason: String,
    },
    /// A data key could not be unwrapped with the configured master key: another master key
    /// wrapped it (key id `key_id`), or the wrapped key was altered. Nothing is decrypted with
    /// a wrong key, and nothing is written.
    #[error("the master key {key_id} cannot unwrap the data key of subject {subject} (wrong master key or altered wrapped key)")]
    WrongMasterKey {
        /// The configured master key's id.
        key_id: String,
        /// The subject whose data key failed.
        subject: String,
    },
    /// Sealed data did not authenticate: its ciphertext was altered, or moved to another event,
    /// document or snapshot than the one it was sealed for. Nothing garbled is returned.
    #[error("tampered: {what}")]
    Tampered {
        /// Which sealed data failed (an event id, a document id, a snapshot).
        what: String,
    },
    /// A key operation named a subject the key store has no data key for.
    #[error("unknown subject {0:?}: it has no data key")]
    UnknownSubject(String),
    /// The subject was forgotten (crypto-shredded): its data keys are deleted, so nothing new
    /// can be sealed for it. An append of a protected event for it is refused and writes
    /// nothing.
    #[error("subject {0:?} is forgotten: nothing new can be sealed for it")]
    SubjectForgotten(String),
    /// A retention run in strict mode (`refuse_unapplied`) found that its policies would remove
    /// events a projection has not applied yet; the run wrote nothing. Run it again once the
    /// projections caught up, or without strict mode to hold those events back and report them.
    #[error(
        "retention would remove {events} event(s) not yet applied by projection(s) {projections:?}, first {stream} at version {version}; nothing was written"
    )]
    Unapplied {
        /// The first stream found with such events.
        stream: StreamId,
        /// The first such version of that stream.
        version: u64,
        /// The projections (stored names, with a shard's suffix) that have not applied them.
        projections: Vec<String>,
        /// How many events, over every stream, the run would have removed from the first
        /// unapplied one of each stream on.
        events: u64,
    },
    /// A migration's target already holds data the migration would write (a stream of the
    /// source, with events of its own); nothing was written. Migrate into an empty target, or
    /// resume the migration that wrote it (from its state).
    #[error("migration target is not empty: {reason}")]
    TargetNotEmpty {
        /// The first conflicting stream found.
        stream: StreamId,
        /// What the target holds there.
        reason: String,
    },
    /// The server or driver failed.
    #[error("backend error{}: {source}", if *.retryable { " (retryable)" } else { "" })]
    Backend {
        /// Whether the same call may succeed if retried (timeouts, lost connections).
        retryable: bool,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The append or delete of `stream` was refused: it stood at `actual` (0: no stream), and
    /// the caller expected `expected` (a store that decides for itself uses
    /// [`ExpectedVersion::check`]).
    pub fn conflict(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> Error {
        Error::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        }
    }

    /// The variant's name in snake case (`conflict`, `not_found`, `backend`, …): the `outcome`
    /// label of the store-operation metrics (README "Metrics and trace context").
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "conflict",
            Error::StreamDeleted { .. } => "stream_deleted",
            Error::EventIdReused { .. } => "event_id_reused",
            Error::NotFound(_) => "not_found",
            Error::Serialization { .. } => "serialization",
            Error::Integrity(_) => "integrity",
            Error::InvalidInput(_) => "invalid_input",
            Error::Config(_) => "config",
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Handler { .. } => "handler",
            Error::InSeveralShards { .. } => "in_several_shards",
            Error::NotDurable { .. } => "not_durable",
            Error::WrongMasterKey { .. } => "wrong_master_key",
            Error::Tampered { .. } => "tampered",
            Error::UnknownSubject(_) => "unknown_subject",
            Error::SubjectForgotten(_) => "subject_forgotten",
            Error::Unapplied { .. } => "unapplied",
            Error::TargetNotEmpty { .. } => "target_not_empty",
            Error::Backend { .. } => "backend",
        }
    }

    /// Whether sending the same call again may succeed: transient backend failures, time-outs,
    /// and connections refused or timed out. A [`Error::Conflict`] is not (the same expected
    /// version stays wrong; reload and decide again).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            // The same append again is a retry: it writes nothing and waits again.
            Error::Timeout { .. } | Error::NotDurable { .. } => true,
            Error::Connect { failure, .. } => failure.is_transient(),
            Error::Conflict { .. }
            | Error::StreamDeleted { .. }
            | Error::EventIdReused { .. }
            | Error::NotFound(_)
            | Error::Serialization { .. }
            | Error::Integrity(_)
            | Error::InvalidInput(_)
            | Error::Config(_)
            | Error::LeaseLost { .. }
            | Error::Handler { .. }
            | Error::InSeveralShards { .. }
            | Error::WrongMasterKey { .. }
            | Error::Tampered { .. }
            | Error::UnknownSubject(_)
            | Error::SubjectForgotten(_)
            | Error::Unapplied { .. } => false,
            Error::TargetNotEmpty { .. } => false,
        }
    }

    /// Whether this is an optimistic-concurrency [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// A [`Error::Serialization`] with a context and the codec's error.
    pub fn serialization(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Serialization {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::Serialization`] with only a context.
    pub fn serialization_msg(context: impl Into<String>) -> Self {
        Error::Serialization {
            context: context.into(),
            source: None,
        }
    }

    /// A [`Error::Backend`] from a driver error.
    pub fn backend(retryable: bool, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            retryable,
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId::new("T", "x").expect("stream")
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let io = || -> BoxError { Box::new(std::io::Error::other("x")) };
        let cases: Vec<(Error, bool)> = vec![
            (
                Error::Conflict {
                    stream: stream(),
                    expected: ExpectedVersion::Exact(1),
                    actual: 2,
                },
                false,
            ),
            (Error::StreamDeleted { stream: stream() }, false),
            (
                Error::EventIdReused {
                    stream: stream(),
                    event_id: Uuid::now_v7(),
                },
                false,
            ),
            (Error::NotFound("x".into()), false),
            (Error::serialization_msg("x"), false),
            (Error::Integrity("x".into()), false),
            (Error::InvalidInput("x".into()), false),
            (Error::Config("x".into()), false),
            (
                Error::LeaseLost {
                    projection: "p.v1".into(),
                    token: 3,
                    reason: "x".into(),
                },
                false,
            ),
            (
                Error::Handler {
                    projection: "p.v1".into(),
                    position: Position::START,
                    event_type: "E".into(),
                    source: io(),
                },
                false,
            ),
            (
                Error::Timeout {
                    operation: "x".into(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (Error::backend(true, io()), true),
            (Error::backend(false, io()), false),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
        use std::io::ErrorKind as Io;
        for (kind, failure) in [
            (Io::ConnectionRefused, ConnectFailure::Refused),
            (Io::ConnectionReset, ConnectFailure::Refused),
            (Io::ConnectionAborted, ConnectFailure::Refused),
            (Io::TimedOut, ConnectFailure::Timeout),
            (Io::WouldBlock, ConnectFailure::Timeout),
            (Io::UnexpectedEof, ConnectFailure::Protocol),
            (Io::InvalidData, ConnectFailure::Protocol),
            (Io::BrokenPipe, ConnectFailure::Protocol),
            (Io::HostUnreachable, ConnectFailure::Unreachable),
            (Io::NetworkUnreachable, ConnectFailure::Unreachable),
            (Io::AddrNotAvailable, ConnectFailure::Unreachable),
            (Io::NotFound, ConnectFailure::Unreachable),
            (Io::PermissionDenied, ConnectFailure::Unreachable),
            (Io::Other, ConnectFailure::Unreachable),
        ] {
            assert_eq!(ConnectFailure::from_io(kind), failure, "{kind:?}");
        }
        for (failure, transient) in [
            (ConnectFailure::Refused, true),
            (ConnectFailure::Timeout, true),
            (ConnectFailure::Unreachable, true),
            (ConnectFailure::Auth, false),
            (ConnectFailure::Protocol, false),
            (ConnectFailure::Database, false),
        ] {
            let error = Error::Connect {
                failure,
                target: "redis://127.0.0.1:1".into(),
                source: None,
            };
            assert_eq!(error.is_retryable(), transient, "{error}");
            assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
        }
    }
}
