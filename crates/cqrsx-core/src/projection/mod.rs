//! Projections: a [`Projection`] turns events into view documents; a [`ProjectionRunner`] feeds
//! it from a catch-up subscription and commits its changes with a checkpoint to a
//! [`CheckpointStore`], so that after any crash the view equals the fold of the events — none
//! skipped, none applied twice.

mod handle;
mod options;
mod renewal;
mod runner;
mod status;
mod store;
mod view;

use async_trait::async_trait;

use crate::error::BoxError;
use crate::event::{EventFilter, RecordedEvent};

pub use handle::ProjectionHandle;
pub use options::{ErrorPolicy, OnFailure, RunnerOptions};
pub use runner::ProjectionRunner;
pub use status::{ProjectionStatus, RunnerState};
pub use store::{
    validate_lease_ttl, CheckpointStore, Commit, Lease, ParkedEvent, ViewChange, ViewKey, ViewWrite, MAX_LEASE_TTL,
    MIN_LEASE_TTL,
};
pub use view::{View, MAX_VIEW_DOCUMENT_BYTES};

/// What a projection handler returns: any error fails the event (see [`ErrorPolicy`]).
pub type HandlerResult = std::result::Result<(), BoxError>;

/// Turns events into the documents of one view.
///
/// A projection has a name and a version (a new version is a rebuild from the first event, see
/// [`ProjectionRunner`]), a filter, and a handler that reads and changes documents through a
/// [`View`]. Each document's new state must follow from its current state and the event.
///
/// ```
/// use cqrsx_core::{async_trait, EventFilter, RecordedEvent};
/// use cqrsx_core::projection::{HandlerResult, Projection, View};
///
/// /// Counts events per aggregate type.
/// struct EventCounts;
///
/// #[async_trait]
/// impl Projection for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///     async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
///         let id = event.aggregate_type();
///         let n = view.get(id).await?.and_then(|d| d["n"].as_u64()).unwrap_or(0);
///         view.put(id, serde_json::json!({ "n": n + 1 }))?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name: letters, digits, `_`, `.` and `-`.
    fn name(&self) -> &str;

    /// Its version; raise it to rebuild the view from the first event.
    fn version(&self) -> u32 {
        1
    }

    /// Which events it receives.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// Applies one event to the view.
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult;
}
