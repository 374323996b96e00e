//! W3C trace context in event metadata (feature `otel`): the run-time switch, recording the
//! current span's `traceparent` on append, and parenting a projection's span on it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};
use opentelemetry::Context;
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

/// The W3C `traceparent` of the current span's OpenTelemetry context; `None` when there is no
/// valid one (no span, no `tracing-opentelemetry` layer, or the span is disabled).
pub fn current_traceparent() -> Option<String> {
    // The context `tracing-opentelemetry` makes current on entering a span: a thread-local read.
    let current = Context::current();
    if current.span().span_context().is_valid() {
        return Some(traceparent_of(current.span().span_context()));
    }
    // A layer that does not activate contexts: ask the current `tracing` span (10× the time).
    let context = Span::current().context();
    let span = context.span();
    span.span_context()
        .is_valid()
        .then(|| traceparent_of(span.span_context()))
}

/// The `traceparent` header of `context`, as OpenTelemetry's `TraceContextPropagator` writes
/// it (version 00, the sampled flag only), without its `format!` (a third of an in-memory
/// append).
fn traceparent_of(context: &SpanContext) -> String {
    let mut header = String::with_capacity(55);
    header.push_str("00-");
    push_hex(&mut header, &context.trace_id().to_bytes());
    header.push('-');
    push_hex(&mut header, &context.span_id().to_bytes());
    header.push('-');
    push_hex(&mut header, &[(context.trace_flags() & TraceFlags::SAMPLED).to_u8()]);
    header
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
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

impl Extractor for Header {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::current_traceparent;

    /// The traceparent of the current span, and what OpenTelemetry's propagator writes for it.
    fn both(sampler: Sampler) -> (Option<String>, Option<String>) {
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("cqrsx-test"));
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let span = tracing::info_span!("command");
        let _entered = span.enter();
        let mut headers = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
        (current_traceparent(), headers.remove("traceparent"))
    }

    #[test]
    fn traceparent_is_what_the_propagator_writes() {
        let (ours, theirs) = both(Sampler::AlwaysOn);
        assert!(ours.as_deref().is_some_and(|t| t.ends_with("-01")), "{ours:?}");
        assert_eq!(ours, theirs);
        let (ours, theirs) = both(Sampler::AlwaysOff);
        assert!(ours.as_deref().is_some_and(|t| t.ends_with("-00")), "{ours:?}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn no_span_no_traceparent() {
        assert_eq!(current_traceparent(), None);
    }
}
