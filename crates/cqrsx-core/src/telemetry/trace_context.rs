//! W3C trace context in event metadata (feature `otel`): the run-time switch, recording the
//! current span's `traceparent` on append, and parenting a projection's span on it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event::NewEvent;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The header name of the W3C trace context.
const TRACEPARENT: &str = "traceparent";

/// Turns recording the current span's `traceparent` on append on or off for the whole process
/// (off at start). Off, an append adds nothing to metadata and pays one atomic load.
pub fn set_trace_context(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether appends record the current span's `traceparent` ([`set_trace_context`]).
pub fn trace_context_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of the current `tracing` span's OpenTelemetry context; `None` when
/// there is no valid one (no span, no `tracing-opentelemetry` layer, or the span is disabled).
pub fn current_traceparent() -> Option<String> {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut header = Header(None);
    TraceContextPropagator::new().inject_context(&context, &mut header);
    header.0
}

/// Records the current `traceparent` in the events that have none, when enabled.
pub(crate) fn stamp_trace_context(mut events: Vec<NewEvent>) -> Vec<NewEvent> {
    if !trace_context_enabled() {
        return events;
    }
    if let Some(traceparent) = current_traceparent() {
        for event in events.iter_mut().filter(|e| e.metadata.traceparent.is_none()) {
            event.metadata.traceparent = Some(traceparent.clone());
        }
    }
    events
}

/// Makes `traceparent`'s span the OpenTelemetry parent of `span` (which must not have been
/// entered yet); does nothing for a disabled span or a header that does not parse.
pub(crate) fn follow_traceparent(span: &Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Header(Some(traceparent.to_string())));
    if context.span().span_context().is_valid() {
        // Fails only without a `tracing-opentelemetry` layer, where there is nothing to link.
        let _ = span.set_parent(context);
    }
}

/// A carrier of the one header the trace context needs.
struct Header(Option<String>);

impl Injector for Header {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Header {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}
