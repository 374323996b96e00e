//! Conversion of fred errors into the core [`Error`].

use cqrsx_core::Error;
use fred::error::{Error as FredError, ErrorKind};

/// Maps a fred error to [`Error::Backend`], retryable when the failure is about the connection
/// (I/O, timeouts, cancelled commands during a reconnect, cluster redirections), not the command.
pub(crate) fn backend(error: FredError) -> Error {
    let retryable = matches!(
        error.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Cluster | ErrorKind::Backpressure
    );
    Error::backend(retryable, error)
}

/// A reply of an unexpected shape: the server and this crate disagree about a script.
pub(crate) fn protocol(what: impl Into<String>) -> Error {
    Error::backend(false, ProtocolError(what.into()))
}

/// An unexpected reply from Redis.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub struct ProtocolError(String);
