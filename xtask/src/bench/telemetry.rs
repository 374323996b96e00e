//! The cost of metrics and trace context: single-event appends with a Prometheus recorder
//! recording and (in the traced rows) the command span's `traceparent` recorded in each event,
//! beside the same appends with both switched off, in alternating rounds of one run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cqrsx_core::{ExpectedVersion, StreamId};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use opentelemetry::trace::TracerProvider as _;
use tracing::instrument::WithSubscriber;
use tracing::{Dispatch, Instrument};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use super::store::{fresh_ids, sample_events, Subject};
use super::{keep, median, time, BenchRow, Scale};
use crate::cmd::Result;

/// Whether the installed recorder's handles record (the global recorder can be installed only
/// once, and cqrsx keeps the handles it got).
static RECORDING: AtomicBool = AtomicBool::new(false);
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// A Prometheus recorder whose handles record only while [`RECORDING`] is on. Switched off,
/// cqrsx's calls are those it makes with no recorder installed: handles that do nothing.
struct Switched(PrometheusRecorder);

/// A handle of the Prometheus recorder that records while [`RECORDING`] is on.
struct When<H>(H);

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

impl CounterFn for When<Counter> {
    fn increment(&self, value: u64) {
        if recording() {
            self.0.increment(value);
        }
    }
    fn absolute(&self, value: u64) {
        if recording() {
            self.0.absolute(value);
        }
    }
}

impl GaugeFn for When<Gauge> {
    fn increment(&self, value: f64) {
        if recording() {
            self.0.increment(value);
        }
    }
    fn decrement(&self, value: f64) {
        if recording() {
            self.0.decrement(value);
        }
    }
    fn set(&self, value: f64) {
        if recording() {
            self.0.set(value);
        }
    }
}

impl HistogramFn for When<Histogram> {
    fn record(&self, value: f64) {
        if recording() {
            self.0.record(value);
        }
    }
}

impl Recorder for Switched {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(When(self.0.register_counter(key, metadata))))
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(When(self.0.register_gauge(key, metadata))))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(When(self.0.register_histogram(key, metadata))))
    }
}

/// Installs the switched Prometheus recorder once; its handle renders what it recorded.
fn prometheus() -> Result<&'static PrometheusHandle> {
    if let Some(handle) = PROMETHEUS.get() {
        return Ok(handle);
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(Switched(recorder)).map_err(|e| format!("metrics recorder: {e}"))?;
    cqrsx_core::telemetry::describe_metrics();
    Ok(PROMETHEUS.get_or_init(|| handle))
}

/// A `tracing` → OpenTelemetry pipeline at `info` (spans are built and dropped; no exporter).
fn otel_dispatch() -> Dispatch {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cqrsx-bench"))
        .with_filter(LevelFilter::INFO);
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

/// Single-event appends to one fresh stream, each in a `command` span when `traced`.
async fn appends(subject: &Subject, count: usize, stream: &str, traced: Option<&Dispatch>) -> Result<()> {
    let stream = StreamId::new("BenchTelemetry", stream).map_err(|e| e.to_string())?;
    let template = sample_events(1)?;
    let work = async {
        for version in 0..count as u64 {
            let append = subject
                .events
                .append(&stream, ExpectedVersion::Exact(version), fresh_ids(&template));
            let result = match traced {
                Some(_) => append.instrument(tracing::info_span!("command")).await,
                None => append.await,
            };
            result.map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    match traced {
        Some(dispatch) => work.with_subscriber(dispatch.clone()).await,
        None => work.await,
    }
}

/// Two rows: metrics alone (no tracing subscriber), and metrics with trace context under an
/// OpenTelemetry tracing pipeline; each beside the same appends with them off.
pub(super) async fn rows(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let handle = prometheus()?;
    let dispatch = otel_dispatch();
    let count = scale.append_events;
    for traced in [None, Some(&dispatch)] {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for round in 0..scale.append_rounds * 2 {
            let enabled = round % 2 == 0;
            RECORDING.store(enabled, Ordering::Relaxed);
            cqrsx_core::telemetry::set_trace_context(enabled && traced.is_some());
            let stream = format!("{}-telemetry-{}-{round}", subject.run_id, traced.is_some());
            let measure = time(count as u64, appends(subject, count, &stream, traced)).await?;
            if enabled { &mut on } else { &mut off }.push(measure);
        }
        RECORDING.store(false, Ordering::Relaxed);
        cqrsx_core::telemetry::set_trace_context(false);
        let (case, baseline) = match traced {
            None => (
                "single-event append, metrics on (Prometheus recorder)",
                "the same, metrics off",
            ),
            Some(_) => (
                "single-event append in an OTel-traced command span, metrics + trace context on",
                "the same, both off",
            ),
        };
        keep(
            rows,
            BenchRow::new(&subject.backend, case, median(on), baseline, median(off)).note(format!(
                "{count} appends × {} rounds each, alternating, medians; target ratio ≥ 0.95",
                scale.append_rounds
            )),
        );
    }
    // What was recorded is real: the appends' series are in the exporter's text.
    let text = handle.render();
    let series = format!("cqrsx_store_operations_total{{backend=\"{}\"", subject.backend);
    if !text.contains(&series) {
        return Err(format!("the Prometheus text has no {series} series"));
    }
    Ok(())
}
