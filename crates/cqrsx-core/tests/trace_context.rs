//! Trace context (feature `otel`): an append records the current span's `traceparent` in each
//! event's metadata when enabled, and the projection handles that event in a span of the same
//! trace, with its view write under it. Spans go to OpenTelemetry's in-memory exporter. One
//! test in its own binary: the subscriber and the switch are global to the process.

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore};
use cqrsx_core::projection::{HandlerResult, View};
use cqrsx_core::telemetry::{set_trace_context, trace_context_enabled};
use cqrsx_core::{
    async_trait, EventStore, ExpectedVersion, NewEvent, Projection, ProjectionRunner, RecordedEvent, StreamId,
};
use opentelemetry::trace::{SpanId, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps the last order placed.
struct LastOrder;

#[async_trait]
impl Projection for LastOrder {
    fn name(&self) -> &str {
        "last_order"
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        view.put("last", json!({ "stream": event.stream.key() }))?;
        Ok(())
    }
}

fn placed() -> NewEvent {
    NewEvent::json("Placed", &json!({ "total": 42 })).expect("a JSON payload")
}

/// The one finished span named `name` in the trace.
fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "spans named {name}: {:#?}", names(spans));
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<(String, SpanId, SpanId)> {
    spans
        .iter()
        .map(|s| (s.name.to_string(), s.span_context.span_id(), s.parent_span_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_handles_an_event_in_the_trace_that_appended_it() -> cqrsx_core::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("cqrsx-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only subscriber of this test binary");

    let events = Arc::new(InMemoryEventStore::new());
    let untraced = StreamId::new("Order", "o-0")?;
    let stream = StreamId::new("Order", "o-1")?;

    // Off (the default): nothing is added, even inside a span.
    assert!(!trace_context_enabled());
    events
        .append(&untraced, ExpectedVersion::NoStream, vec![placed()])
        .instrument(tracing::info_span!("untraced_command"))
        .await?;
    assert_eq!(
        events.read_stream(&untraced, 1, 10).await?[0].metadata.traceparent,
        None
    );

    set_trace_context(true);
    let command = tracing::info_span!("place_order");
    let trace_id = command.context().span().span_context().trace_id();
    events
        .append(&stream, ExpectedVersion::NoStream, vec![placed()])
        .instrument(command.clone())
        .await?;
    drop(command);
    let recorded = events.read_stream(&stream, 1, 10).await?;
    let traceparent = recorded[0].metadata.traceparent.clone().expect("a traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")) && traceparent.ends_with("-01"),
        "{traceparent} in trace {trace_id}"
    );

    let handle = ProjectionRunner::new(
        Arc::new(LastOrder),
        events.clone(),
        Arc::new(InMemoryProjectionStore::new()),
    )
    .spawn()?;
    handle
        .wait_until_caught_up(recorded[0].position, Duration::from_secs(60))
        .await?;
    handle.stop().await?;
    provider.force_flush().expect("flushed");

    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect();
    // command → append → projection apply → its commit → the projection store's commit.
    let command = only(&spans, "place_order");
    let append = only(&spans, "append");
    let apply = only(&spans, "cqrsx.projection.apply");
    let commit = only(&spans, "cqrsx.projection.commit");
    assert_eq!(
        append.parent_span_id,
        command.span_context.span_id(),
        "{:#?}",
        names(&spans)
    );
    assert_eq!(
        traceparent,
        format!("00-{trace_id}-{}-01", append.span_context.span_id()),
        "the traceparent names the append's span"
    );
    assert_eq!(
        apply.parent_span_id,
        append.span_context.span_id(),
        "{:#?}",
        names(&spans)
    );
    assert_eq!(
        commit.parent_span_id,
        apply.span_context.span_id(),
        "{:#?}",
        names(&spans)
    );
    let writes: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "commit" && s.parent_span_id == commit.span_context.span_id())
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "the projection store's commit under it: {:#?}",
        names(&spans)
    );
    // The untraced event's handling is not in this trace.
    assert_eq!(spans.iter().filter(|s| s.name == "cqrsx.projection.apply").count(), 1);
    Ok(())
}
