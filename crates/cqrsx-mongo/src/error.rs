//! Conversion of driver errors into the core [`Error`], by error kind and server code.

use cqrsx_core::Error;
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};

/// The server's duplicate-key code.
const DUPLICATE_KEY: i32 = 11000;

/// Maps a driver error to [`Error::Backend`]; connection-level failures are retryable.
pub(crate) fn backend(error: MongoError) -> Error {
    let retryable = matches!(
        *error.kind,
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::ServerSelection { .. }
    ) || error.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || error.contains_label("TransientTransactionError");
    Error::backend(retryable, error)
}

/// Whether an insert failed on a unique index.
pub(crate) fn is_duplicate_key(error: &MongoError) -> bool {
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().all(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// The server's code of a command error (used to recognise "already exists" answers).
pub(crate) fn command_code(error: &MongoError) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    }
}

/// A stored document this crate cannot read back.
pub(crate) fn corrupt(what: impl Into<String>) -> Error {
    Error::serialization_msg(what)
}
