//! What copying streams between stores needs of every backend: the stream catalogue
//! ([`StreamInfo`], [`crate::EventStore::list_streams`]) and the checks on an import
//! ([`crate::EventStore::import`]), shared by migration and archives.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::event::{validate_envelope, validate_number, AppendResult, RecordedEvent};
use crate::event_store::{EventStore, EventStoreCapabilities};
use crate::stream::StreamId;
use uuid::Uuid;

/// One stream of a store's catalogue ([`crate::EventStore::list_streams`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Its version: the last event's, kept when events are truncated; for a deleted stream, the
    /// version it was deleted at.
    pub version: u64,
    /// Whether the stream is deleted (a tombstone: appends and reads fail with
    /// [`Error::StreamDeleted`]).
    pub deleted: bool,
}

/// The checks on an import before a backend sees it: versions that continue `after` one by
/// one, events of `stream`, valid envelopes within the backend's limits, no id twice, and at
/// least one event unless the import only sets the version of a stream whose events are all
/// truncated (`after > 0`).
pub fn validate_import(
    stream: &StreamId,
    after: u64,
    events: &[RecordedEvent],
    caps: &EventStoreCapabilities,
) -> Result<()> {
    validate_number("version an import continues", after)?;
    validate_number("version after the import", after.saturating_add(events.len() as u64))?;
    if events.is_empty() && after == 0 {
        return Err(Error::InvalidInput(
            "an import needs at least one event, or a version to start the stream at".into(),
        ));
    }
    if events.len() > caps.max_batch {
        return Err(Error::InvalidInput(format!(
            "an import of {} events is over the backend limit of {}",
            events.len(),
            caps.max_batch
        )));
    }
    let mut ids = HashSet::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if event.stream != *stream {
            return Err(Error::InvalidInput(format!(
                "event {} of stream {} imported into stream {stream}",
                event.event_id, event.stream
            )));
        }
        let expected = after + 1 + i as u64;
        if event.version != expected {
            return Err(Error::InvalidInput(format!(
                "event {} of {stream} has version {}, but the import continues at {expected}",
                event.event_id, event.version
            )));
        }
        validate_number("recorded-at (ms)", event.recorded_at.as_millis())?;
        validate_envelope(
            &event.event_id,
            &event.event_type,
            event.schema_version,
            &event.metadata,
            event.payload.len(),
            caps.max_event_bytes,
        )?;
        if !ids.insert(event.event_id) {
            return Err(Error::InvalidInput(format!(
                "event id {} appears twice in one import",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// After a backend refused an import with a conflict because the stream is already past
/// `after`: whether the batch (its event `ids`, versions `after + 1` on) is already in the
/// stream, as when an import resumes after a crash. Then its result, and nothing is written;
/// otherwise the conflict stands, or [`Error::EventIdReused`] when those versions hold other
/// events.
pub(crate) async fn already_imported<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    after: u64,
    ids: &[Uuid],
    conflict: Error,
) -> Result<AppendResult> {
    let last = after + ids.len() as u64;
    match &conflict {
        Error::Conflict { actual, .. } if !ids.is_empty() && *actual >= last => {}
        _ => return Err(conflict),
    }
    let present = store.read_stream(stream, after + 1, ids.len()).await?;
    // Events truncated since they were imported are not there to compare; those that are
    // must be the batch's own.
    let mut result = None;
    for held in present.iter().filter(|e| e.version <= last) {
        let mine = ids[(held.version - after - 1) as usize];
        if mine != held.event_id {
            return Err(Error::EventIdReused {
                stream: stream.clone(),
                event_id: mine,
            });
        }
        result = Some(AppendResult {
            version: held.version,
            position: held.position,
        });
    }
    match result {
        Some(r) if r.version == last => Ok(r),
        _ => Err(conflict),
    }
}
