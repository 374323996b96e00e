//! Metrics and trace context: the name of every metric cqrsx records, and (feature `otel`) the
//! switch that records the current span's W3C trace context in event metadata.
//!
//! **Metrics** go through the [`metrics`] facade, which does nothing until the application
//! installs a recorder (a Prometheus exporter, an OpenTelemetry bridge, …): cqrsx records into
//! whichever recorder is installed and never installs one itself. Install it before the stores
//! and projection runners start; a projection runner registers its metrics when it starts.
//! [`describe_metrics`] gives the recorder each metric's unit and help text. The names are the
//! constants in [`names`]; README "Metrics and trace context" lists their labels.
//!
//! ```
//! // With no recorder installed, recording costs a few nanoseconds and goes nowhere.
//! cqrsx_core::telemetry::describe_metrics();
//! assert_eq!(cqrsx_core::telemetry::names::STORE_OPERATIONS, "cqrsx_store_operations_total");
//! ```
//!
//! **Trace context** (feature `otel`, and [`set_trace_context`] at run time): an append
//! records the current span's W3C `traceparent` in each event's [`crate::Metadata::traceparent`]
//! (events that already carry one keep theirs), and a projection runner handles such an event
//! in a `cqrsx.projection.apply` span whose parent is that context, with the page's
//! `cqrsx.projection.commit` (the view write) under it, so one trace shows command → append →
//! projection → view write. The spans reach OpenTelemetry through a `tracing-opentelemetry`
//! layer the application installs.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

#[cfg(feature = "otel")]
mod trace_context;

pub use crate::event::validate_traceparent;
#[cfg(feature = "otel")]
pub use trace_context::{current_traceparent, set_trace_context, trace_context_enabled};
#[cfg(feature = "otel")]
pub(crate) use trace_context::{follow_traceparent, stamp_trace_context};

/// The metric names cqrsx records (README "Metrics and trace context" lists each one's labels).
pub mod names {
    /// Counter: store operations by `backend`, `operation` and `outcome` (`ok` or an
    /// [`crate::Error::kind`], e.g. `conflict`).
    pub const STORE_OPERATIONS: &str = "cqrsx_store_operations_total";
    /// Histogram (seconds): store operation latency by `backend` and `operation`.
    pub const STORE_OPERATION_DURATION: &str = "cqrsx_store_operation_duration_seconds";
    /// Counter: calls a backend sent again after a transient failure, by `backend` and
    /// `operation`.
    pub const BACKEND_RETRIES: &str = "cqrsx_backend_retries_total";
    /// Histogram: appends written together by one group commit, by `backend`.
    pub const GROUP_COMMIT_APPENDS: &str = "cqrsx_group_commit_appends";
    /// Counter: events a projection applied (committed), by `projection` and `version`.
    pub const PROJECTION_EVENTS_APPLIED: &str = "cqrsx_projection_events_applied_total";
    /// Gauge: a projection's applied events per second over its last pages.
    pub const PROJECTION_EVENTS_PER_SECOND: &str = "cqrsx_projection_events_per_second";
    /// Gauge: events committed to the log that a projection has not applied yet.
    pub const PROJECTION_LAG: &str = "cqrsx_projection_lag_events";
    /// Counter: failed handler attempts (errors, panics, time-outs) of a projection.
    pub const PROJECTION_HANDLER_ERRORS: &str = "cqrsx_projection_handler_errors_total";
    /// Gauge: events a projection has parked and not replayed.
    pub const PROJECTION_PARKED: &str = "cqrsx_projection_parked_events";
    /// Counter: times a projection runner took its lease.
    pub const PROJECTION_LEASE_ACQUISITIONS: &str = "cqrsx_projection_lease_acquisitions_total";
    /// Counter: times a projection runner lost its lease to another runner.
    pub const PROJECTION_LEASE_LOSSES: &str = "cqrsx_projection_lease_losses_total";
    /// Histogram (seconds): a projection's page commits (view changes + checkpoint).
    pub const PROJECTION_COMMIT_DURATION: &str = "cqrsx_projection_commit_duration_seconds";
    /// Counter: store operations a projection runner retried after a transient failure.
    pub const PROJECTION_STORE_RETRIES: &str = "cqrsx_projection_store_retries_total";
}

/// Gives the installed recorder the unit and help text of every metric in [`names`]; call it
/// once after installing the recorder (metrics are recorded without it too).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(STORE_OPERATIONS, "Store operations by backend, operation and outcome");
    describe_histogram!(STORE_OPERATION_DURATION, Unit::Seconds, "Store operation latency");
    describe_counter!(BACKEND_RETRIES, "Backend calls sent again after a transient failure");
    describe_histogram!(GROUP_COMMIT_APPENDS, "Appends written together by one group commit");
    describe_counter!(PROJECTION_EVENTS_APPLIED, "Events a projection applied");
    describe_gauge!(PROJECTION_EVENTS_PER_SECOND, "Events a projection applies per second");
    describe_gauge!(PROJECTION_LAG, "Committed events a projection has not applied yet");
    describe_counter!(PROJECTION_HANDLER_ERRORS, "Failed projection handler attempts");
    describe_gauge!(PROJECTION_PARKED, "Events a projection parked");
    describe_counter!(PROJECTION_LEASE_ACQUISITIONS, "Projection leases taken");
    describe_counter!(PROJECTION_LEASE_LOSSES, "Projection leases lost to another runner");
    describe_histogram!(PROJECTION_COMMIT_DURATION, Unit::Seconds, "Projection page commits");
    describe_counter!(PROJECTION_STORE_RETRIES, "Projection store operations retried");
}

/// The `backend` label of a store type: `memory` for core's in-memory stores, the crate name
/// without `cqrsx_` for a backend crate's (`redis`, `mongo`), else the crate's name.
pub(crate) fn backend_label(type_name: &'static str) -> &'static str {
    let path = type_name.split('<').next().unwrap_or(type_name);
    let mut segments = path.split("::");
    let krate = segments.next().unwrap_or(path);
    match krate {
        "cqrsx_core" => segments.next().unwrap_or(krate),
        other => other.strip_prefix("cqrsx_").unwrap_or(other),
    }
}

/// Records one store operation: its count by outcome and its latency.
pub(crate) fn record_store_operation(
    backend: &'static str,
    operation: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize);
    let key = [id(backend), id(operation), id(outcome)];
    let seconds = took.as_secs_f64();
    {
        let cache = SERIES.read().unwrap_or_else(PoisonError::into_inner);
        let series = cache.as_ref().filter(|c| c.recorder == recorder);
        if let Some((counter, histogram)) = series.and_then(|c| c.series.get(&key)) {
            counter.increment(1);
            histogram.record(seconds);
            return;
        }
    }
    let counter = metrics::counter!(names::STORE_OPERATIONS, "backend" => backend, "operation" => operation, "outcome" => outcome);
    let histogram =
        metrics::histogram!(names::STORE_OPERATION_DURATION, "backend" => backend, "operation" => operation);
    counter.increment(1);
    histogram.record(seconds);
    let mut cache = SERIES.write().unwrap_or_else(PoisonError::into_inner);
    if cache.as_ref().is_none_or(|c| c.recorder != recorder) {
        *cache = Some(SeriesCache {
            recorder,
            series: HashMap::new(),
        });
    }
    if let Some(cache) = cache.as_mut() {
        cache.series.insert(key, (counter, histogram));
    }
}

/// The handles of the store-operation series, registered once per (backend, operation,
/// outcome) with the recorder current then: a labelled lookup costs a recorder an allocation
/// and a hash of the labels on every call. A different recorder (one installed since, or a
/// thread's local one) starts the cache afresh.
struct SeriesCache {
    recorder: usize,
    series: HashMap<[(usize, usize); 3], (Counter, Histogram)>,
}

static SERIES: RwLock<Option<SeriesCache>> = RwLock::new(None);

/// A static string's identity: the same label always comes from the same `&'static str`.
fn id(label: &'static str) -> (usize, usize) {
    (label.as_ptr() as usize, label.len())
}

/// Counts a call a backend sends again after a transient failure (backend crates call it).
pub fn record_backend_retry(backend: &'static str, operation: &'static str) {
    metrics::counter!(names::BACKEND_RETRIES, "backend" => backend, "operation" => operation).increment(1);
}

/// Records how many appends one group commit wrote together (backend crates call it).
pub fn record_group_commit(backend: &'static str, appends: usize) {
    metrics::histogram!(names::GROUP_COMMIT_APPENDS, "backend" => backend).record(appends as f64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::{backend_label, record_store_operation};

    /// The `append` count of backend `test` a recorder holds.
    fn appends(recorder: &DebuggingRecorder) -> Option<u64> {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| {
                let is_append = key
                    .key()
                    .labels()
                    .any(|l| l.key() == "operation" && l.value() == "append");
                match value {
                    DebugValue::Counter(n) if is_append => Some(n),
                    _ => None,
                }
            })
    }

    #[test]
    fn store_operations_reach_whichever_recorder_is_current() {
        let (first, second) = (DebuggingRecorder::new(), DebuggingRecorder::new());
        let record = || record_store_operation("test", "append", "ok", Duration::from_micros(5));
        metrics::with_local_recorder(&first, || {
            record();
            record();
        });
        // Handles cached for the first recorder must not swallow the second one's calls.
        metrics::with_local_recorder(&second, record);
        metrics::with_local_recorder(&first, record);
        assert_eq!((appends(&first), appends(&second)), (Some(3), Some(1)));
    }

    #[test]
    fn backend_label_is_the_crate_or_core_module() {
        assert_eq!(
            backend_label("cqrsx_core::memory::event_store::InMemoryEventStore"),
            "memory"
        );
        assert_eq!(backend_label("cqrsx_redis::event_store::RedisEventStore"), "redis");
        assert_eq!(
            backend_label("cqrsx_mongo::event_store::MongoEventStore<x::Y>"),
            "mongo"
        );
        assert_eq!(backend_label("my_app::store::Custom"), "my_app");
    }
}
