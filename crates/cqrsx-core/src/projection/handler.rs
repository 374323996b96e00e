//! What a projection is: a name, a version, a filter and a handler over a [`View`].

use async_trait::async_trait;

use super::View;
use crate::error::BoxError;
use crate::event::{EventFilter, RecordedEvent};

/// What a projection handler returns: any error fails the event (see [`super::ErrorPolicy`]).
pub type HandlerResult = std::result::Result<(), BoxError>;

/// Turns events into the documents of one view.
///
/// A projection has a name and a version (a new version is a rebuild from the first event, see
/// [`super::ProjectionRunner`]), a filter, and a handler that reads and changes documents through a
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
