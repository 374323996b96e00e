//! What a projection runner reports beyond its status: its metrics, labelled by projection
//! and version, and the spans an event's handling and a page's commit run in.

use metrics::{Counter, Gauge, Histogram, Label};
use tracing::Span;

use crate::event::RecordedEvent;
use crate::projection::store::ViewKey;
use crate::telemetry::names;

/// A runner's metric handles, registered once when it starts.
pub(super) struct RunnerMetrics {
    applied: Counter,
    per_second: Gauge,
    pub(super) lag: Gauge,
    pub(super) handler_errors: Counter,
    pub(super) parked: Gauge,
    pub(super) acquisitions: Counter,
    pub(super) losses: Counter,
    pub(super) commit: Histogram,
    pub(super) retries: Counter,
}

impl RunnerMetrics {
    pub(super) fn new(key: &ViewKey) -> Self {
        let labels = vec![
            Label::new("projection", key.projection().to_string()),
            Label::new("version", key.version().to_string()),
        ];
        Self {
            applied: metrics::counter!(names::PROJECTION_EVENTS_APPLIED, labels.clone()),
            per_second: metrics::gauge!(names::PROJECTION_EVENTS_PER_SECOND, labels.clone()),
            lag: metrics::gauge!(names::PROJECTION_LAG, labels.clone()),
            handler_errors: metrics::counter!(names::PROJECTION_HANDLER_ERRORS, labels.clone()),
            parked: metrics::gauge!(names::PROJECTION_PARKED, labels.clone()),
            acquisitions: metrics::counter!(names::PROJECTION_LEASE_ACQUISITIONS, labels.clone()),
            losses: metrics::counter!(names::PROJECTION_LEASE_LOSSES, labels.clone()),
            commit: metrics::histogram!(names::PROJECTION_COMMIT_DURATION, labels.clone()),
            retries: metrics::counter!(names::PROJECTION_STORE_RETRIES, labels),
        }
    }

    /// Records a committed page: the events it applied and parked, and the runner's rate.
    pub(super) fn page_committed(&self, applied: u64, per_second: f64, parked: u64) {
        self.applied.increment(applied);
        self.per_second.set(per_second);
        if parked > 0 {
            self.parked.increment(parked as f64);
        }
    }
}

/// The span one event's handling runs in. With feature `otel`, an event that carries a
/// `traceparent` gets that span as its OpenTelemetry parent, so the handling joins the trace
/// of the command that appended it.
pub(super) fn apply_span(key: &ViewKey, event: &RecordedEvent) -> Span {
    let span = tracing::info_span!(
        "cqrsx.projection.apply",
        projection = %key,
        stream = %event.stream,
        event_type = %event.event_type,
        position = %event.position,
    );
    #[cfg(feature = "otel")]
    if let Some(traceparent) = &event.metadata.traceparent {
        crate::telemetry::follow_traceparent(&span, traceparent);
    }
    span
}

/// The span of a page's commit (its view changes and checkpoint in one write): under the last
/// event's apply span, and following the others' (OpenTelemetry links), so the trace of each
/// event in the page reaches the write.
pub(super) fn commit_span(applied: &[Span], events: usize) -> Span {
    let applied: Vec<&Span> = applied.iter().filter(|s| !s.is_disabled()).collect();
    let span = match applied.last().copied() {
        Some(last) => tracing::info_span!(parent: last, "cqrsx.projection.commit", events),
        None => tracing::info_span!("cqrsx.projection.commit", events),
    };
    for other in applied.iter().rev().skip(1).copied() {
        span.follows_from(other);
    }
    span
}
