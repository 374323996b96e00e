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
    ) || lost_script(&error)
        || in_transition(&error);
    Error::backend(retryable, error)
}

/// A server or cluster passing through a failover or a restart: the command ran nothing, and
/// may succeed once it is through (a cluster with a slot unserved, a node loading its data, a
/// write that met a demoted primary, a slot fred has no node for yet).
fn in_transition(error: &FredError) -> bool {
    const TRANSIENT: [&str; 6] = [
        "CLUSTERDOWN",
        "TRYAGAIN",
        "LOADING",
        "MASTERDOWN",
        "READONLY",
        "Failed to route command",
    ];
    let details = error.details();
    TRANSIENT.iter().any(|t| details.starts_with(t) || details.contains(t))
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
    fn a_cluster_or_server_in_transition_is_retryable() {
        for details in [
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "READONLY You can't write against a read only replica.",
            "Failed to route command.",
        ] {
            assert!(
                backend(FredError::new(ErrorKind::Unknown, details)).is_retryable(),
                "{details}"
            );
        }
    }

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
