//! Example 05: metrics and trace context. A Prometheus recorder and a tracing → OpenTelemetry
//! pipeline are installed; a command appends an order (and a stale command meets a conflict); a
//! projection applies the orders; then the example prints the `traceparent` stored with the
//! event, the trace from the command to the view write, and the metrics in Prometheus text.
//!
//! `cargo run -p example-observability` runs on the in-memory store; add `--features redis --
//! --backend redis` or `--features mongo -- --backend mongo` to run it on a server.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::projection::{HandlerResult, View};
use cqrsx_core::{
    async_trait, Error, ExpectedVersion, NewEvent, Projection, ProjectionRunner, RecordedEvent, StreamId,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Each customer's order total.
struct CustomerTotals;

#[async_trait]
impl Projection for CustomerTotals {
    fn name(&self) -> &str {
        "customer_totals"
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let order: serde_json::Value = serde_json::from_slice(&event.payload)?;
        let customer = order["customer"].as_str().unwrap_or("unknown");
        let total = view.get(customer).await?.and_then(|d| d["total"].as_u64()).unwrap_or(0);
        view.put(
            customer,
            json!({ "total": total + order["total"].as_u64().unwrap_or(0) }),
        )?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> cqrsx_core::Result<()> {
    // Metrics: install the recorder before the stores and runners start; latencies go into
    // histograms with these buckets (seconds).
    let seconds = [0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|builder| builder.install_recorder())
        .map_err(|e| Error::Config(format!("prometheus recorder: {e}")))?;
    cqrsx_core::telemetry::describe_metrics();

    // Traces: tracing spans go to OpenTelemetry (kept in memory here, to print them), and appends
    // record the current span's traceparent in event metadata.
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("example-observability"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel))
        .map_err(|e| Error::Config(format!("tracing subscriber: {e}")))?;
    cqrsx_core::telemetry::set_trace_context(true);

    let run = cqrsx_core::Uuid::now_v7().simple().to_string()[20..].to_string();
    let stores = cqrsx_example_backend::connect_fresh("observability", &run).await?;
    println!("backend: {}", stores.name);

    // A command appends an order in its own span; a stale command on the same order conflicts.
    let order = StreamId::new("Order", "o-1")?;
    let placed = NewEvent::json("OrderPlaced", &json!({ "customer": "c-1", "total": 42 }))?;
    let command = tracing::info_span!("place_order", order = "o-1");
    let appended = stores
        .events
        .append(&order, ExpectedVersion::NoStream, vec![placed])
        .instrument(command)
        .await?;
    let again = NewEvent::json("OrderPlaced", &json!({ "customer": "c-1", "total": 7 }))?;
    let stale = stores
        .events
        .append(&order, ExpectedVersion::NoStream, vec![again])
        .await;
    println!(
        "a stale command: {}",
        stale.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let runner = ProjectionRunner::new(
        Arc::new(CustomerTotals),
        stores.events.clone(),
        stores.checkpoints.clone(),
    );
    let handle = runner.spawn()?;
    handle
        .wait_until_caught_up(appended.position, Duration::from_secs(30))
        .await?;
    handle.stop().await?;

    let event = &stores.events.read_stream(&order, 1, 1).await?[0];
    let traceparent = event.metadata.traceparent.clone().unwrap_or_default();
    println!(
        "\ntraceparent stored with {} v{}: {traceparent}",
        event.stream, event.version
    );

    let _ = provider.force_flush();
    let trace_id = traceparent.split('-').nth(1).unwrap_or_default().to_string();
    let finished = spans.get_finished_spans().unwrap_or_default();
    let trace: Vec<&SpanData> = finished
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect();
    println!("\nthe trace {trace_id}:");
    print_tree(&trace, opentelemetry::trace::SpanId::INVALID, 1);

    println!("\nmetrics (Prometheus text):\n{}", prometheus.render());
    Ok(())
}

/// Prints the spans under `parent`, each indented under its parent.
fn print_tree(trace: &[&SpanData], parent: opentelemetry::trace::SpanId, depth: usize) {
    let mut children: Vec<&&SpanData> = trace.iter().filter(|s| s.parent_span_id == parent).collect();
    children.sort_by_key(|s| s.start_time);
    for span in children {
        println!(
            "{:width$}{} ({})",
            "",
            span.name,
            span.span_context.span_id(),
            width = depth * 2
        );
        print_tree(trace, span.span_context.span_id(), depth + 1);
    }
}
