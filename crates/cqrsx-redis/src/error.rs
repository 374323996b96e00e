//! Conversion of fred errors into the core [`Error`].

use cqrsx_core::Error;
use fred::error::{Error as FredError, ErrorKind};

/// Whether a script call failed because the server does not hold the script (it restarted,
/// failed over, or flushed its scripts): then nothing of it ran.
pub(crate) fn lost_script(e: &FredError) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// Maps a fred error to [`Error::Backend`], retryable when the failure is about the connection
/// (I/O, timeouts, cancelled commands during a reconnect, cluster redirections), not the command.
pub(crate) fn backend(error: FredError) -> Error {
    // A lost script ran nothing; it is met a second time only if the server loses it again
    // while it is loaded, and the next try finds it.
    let retryable = matches!(
        error.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Cluster | ErrorKind::Backpressure
    ) || lost_script(&error);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_script_is_retryable_and_a_script_error_is_not() {
        let lost = FredError::new(ErrorKind::Unknown, "NOSCRIPT No matching script. Please use EVAL.");
        assert!(backend(lost).is_retryable());
        let failed = FredError::new(
            ErrorKind::Unknown,
            "ERR user_script:1: Script attempted to access nonexistent global",
        );
        assert!(!backend(failed).is_retryable());
        assert!(backend(FredError::new(ErrorKind::Timeout, "timed out")).is_retryable());
    }
}
