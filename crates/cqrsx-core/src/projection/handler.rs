//! What a projection is: a name, a version, a filter and a handler over a [`View`].

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;

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

/// Runs the handler on one event: a handler that panics or runs past `timeout` fails like one
/// that returns an error.
pub(super) async fn run_handler(
    projection: &dyn Projection,
    event: &RecordedEvent,
    view: &mut View<'_>,
    timeout: Duration,
) -> HandlerResult {
    let apply = AssertUnwindSafe(projection.apply(event, view)).catch_unwind();
    match tokio::time::timeout(timeout, apply).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(format!("the handler panicked: {}", panic_message(panic.as_ref())).into()),
        Err(_) => Err(format!("the handler did not finish within {timeout:?}").into()),
    }
}

/// The message of a caught panic.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
