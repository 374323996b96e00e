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
        || error.contains_label("TransientTransactionError")
        || in_transition(&error);
    Error::backend(retryable, error)
}

/// A server passing through a state in which the command ran nothing and may succeed soon:
/// stepping down or shutting down (codes MongoDB gives reads too, which carry no retryable
/// label), or FerretDB 1's SQLite busy, or meeting a collection's table while another
/// command drops it.
fn in_transition(error: &MongoError) -> bool {
    const CODES: [i32; 7] = [91, 189, 10107, 11600, 11602, 13435, 13436];
    let (code, message) = match &*error.kind {
        ErrorKind::Command(e) => (e.code, e.message.as_str()),
        ErrorKind::Write(WriteFailure::WriteError(e)) => (e.code, e.message.as_str()),
        _ => return false,
    };
    CODES.contains(&code) || message.contains("no such table") || message.contains("database is locked")
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

/// Whether the server answered the write with a refusal (so it certainly did not apply it),
/// rather than the connection failing (when it may have).
pub(crate) fn server_refused(error: &MongoError) -> bool {
    matches!(
        &*error.kind,
        ErrorKind::Write(WriteFailure::WriteError(_)) | ErrorKind::Command(_) | ErrorKind::InsertMany(_)
    ) && !error.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
}

/// The server's code of a command error (used to recognise "already exists" answers).
pub(crate) fn command_code(error: &MongoError) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => None,
    }
}

/// A stored document this crate cannot read back: an integrity failure, not a codec's.
pub(crate) fn corrupt(what: impl Into<String>) -> Error {
    Error::Integrity(what.into())
}

/// A first connection's failure, by the driver's error kind. It is called after the servers'
/// ports were found open, so a server that cannot be selected does not speak MongoDB.
pub(crate) fn connect_error(target: &str, error: MongoError) -> Error {
    use cqrsx_core::ConnectFailure;
    let failure = match &*error.kind {
        ErrorKind::InvalidArgument { .. } => {
            return Error::Config(format!("mongodb uri {target}: {error}"));
        }
        ErrorKind::Authentication { .. } => ConnectFailure::Auth,
        ErrorKind::DnsResolve { .. } => ConnectFailure::Unreachable,
        ErrorKind::Io(io) => ConnectFailure::from_io(io.kind()),
        _ => ConnectFailure::Protocol,
    };
    Error::Connect {
        failure,
        target: target.to_string(),
        source: Some(Box::new(error)),
    }
}

/// A raw write command's reply (`update`, `delete` sent with `run_command`): its write errors
/// become an error, except duplicate keys where `duplicates_expected` (guarded upserts that
/// found their document already past the guard).
pub(crate) fn check_write_reply(reply: &mongodb::bson::Document, duplicates_expected: bool) -> cqrsx_core::Result<()> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Ok(());
    };
    for e in errors.iter().filter_map(mongodb::bson::Bson::as_document) {
        let code = e.get_i32("code").unwrap_or(0);
        if duplicates_expected && code == DUPLICATE_KEY {
            continue;
        }
        let message = e.get_str("errmsg").unwrap_or("write error").to_string();
        return Err(Error::backend(false, WriteCommandError { code, message }));
    }
    Ok(())
}

/// A write error inside a raw write command's reply.
#[derive(Debug, thiserror::Error)]
#[error("write error {code}: {message}")]
pub struct WriteCommandError {
    code: i32,
    message: String,
}
