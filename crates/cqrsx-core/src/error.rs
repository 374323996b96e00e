//! The one public error type of cqrsx and its `Result` alias.

use crate::stream::{ExpectedVersion, StreamId};

/// A boxed error from a driver or codec, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the cqrsx [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a cqrsx store, repository or codec.
///
/// Each variant carries the facts a caller acts on: a [`Error::Conflict`] says which version the
/// stream really has, a [`Error::Backend`] says whether retrying can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version did not match the caller's expectation; nothing was written.
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
    /// The caller passed something the store refuses: empty ids, empty batches, oversized
    /// documents, invalid names. Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A configuration is invalid or inconsistent (bad URL, missing upcaster in a chain).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The backend does not offer this capability; it says so in its capabilities.
    #[error("unsupported by this backend: {0}")]
    Unsupported(&'static str),
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
    /// Whether retrying the same call may succeed.
    ///
    /// True for transient backend failures and for conflicts (after reloading the aggregate).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Conflict { .. } => true,
            _ => false,
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
