//! The metrics cqrsx records, read back from a recorder: store operations by backend,
//! operation and outcome, and a projection's applied, failed and parked events and its lease.
//! One test in its own binary: the recorder is global to the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore};
use cqrsx_core::projection::{ErrorPolicy, HandlerResult, RunnerOptions, View};
use cqrsx_core::telemetry::names;
use cqrsx_core::{
    async_trait, Error, EventStore, ExpectedVersion, NewEvent, Projection, ProjectionRunner, RecordedEvent, StreamId,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;

/// Counts events; fails `Flaky` once and `Poison` always.
#[derive(Default)]
struct Counts {
    flaky_failed: AtomicBool,
}

#[async_trait]
impl Projection for Counts {
    fn name(&self) -> &str {
        "counts"
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        match event.event_type.as_str() {
            "Poison" => return Err("poison".into()),
            "Flaky" if !self.flaky_failed.swap(true, Ordering::SeqCst) => return Err("flaky once".into()),
            _ => {}
        }
        let n = view.get("total").await?.and_then(|d| d["n"].as_u64()).unwrap_or(0);
        view.put("total", json!({ "n": n + 1 }))?;
        Ok(())
    }
}

/// A metric's name and labels (sorted), as the recorder keeps them.
type Series = (String, BTreeMap<String, String>);

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    (name.to_string(), labels)
}

fn event(event_type: &str) -> NewEvent {
    NewEvent::json(event_type, &json!({ "at": event_type })).expect("a JSON payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_projection_metrics_count_what_happened() -> cqrsx_core::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

    let events = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("Order", "o-1")?;
    events
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event("Placed"), event("Flaky")],
        )
        .await?;
    let stale = events
        .append(&stream, ExpectedVersion::NoStream, vec![event("Placed")])
        .await;
    assert!(matches!(stale, Err(Error::Conflict { actual: 2, .. })), "{stale:?}");
    events
        .append(&stream, ExpectedVersion::Exact(2), vec![event("Poison")])
        .await?;
    assert_eq!(events.read_stream(&stream, 1, 100).await?.len(), 3);

    let policy = ErrorPolicy {
        backoff: Duration::from_millis(1),
        ..ErrorPolicy::park_after(1)
    };
    let handle = ProjectionRunner::new(
        Arc::new(Counts::default()),
        events.clone(),
        Arc::new(InMemoryProjectionStore::new()),
    )
    .with_options(RunnerOptions::default().with_errors(policy))
    .spawn()?;
    let status = handle
        .wait_for(Duration::from_secs(60), |s| s.applied == 2 && s.parked == 1)
        .await?;
    handle.stop().await?;

    let mut counters = BTreeMap::new();
    let mut gauges = BTreeMap::new();
    let mut histograms = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = key.into_parts();
        let labels = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        let id = (key.name().to_string(), labels);
        match value {
            DebugValue::Counter(n) => counters.insert(id, n),
            DebugValue::Gauge(g) => gauges.insert(id, g.into_inner()).map(|_| 0),
            DebugValue::Histogram(h) => histograms
                .insert(id, h.into_iter().map(|v| v.into_inner()).collect::<Vec<_>>())
                .map(|_| 0),
        };
    }
    let counter = |name, labels: &[(&str, &str)]| counters.get(&series(name, labels)).copied();
    let gauge = |name, labels: &[(&str, &str)]| gauges.get(&series(name, labels)).copied();
    let histogram = |name, labels: &[(&str, &str)]| histograms.get(&series(name, labels)).cloned();

    // Store operations, by backend, operation and outcome.
    let append = |outcome| {
        counter(
            names::STORE_OPERATIONS,
            &[("backend", "memory"), ("operation", "append"), ("outcome", outcome)],
        )
    };
    assert_eq!(append("ok"), Some(2), "{counters:#?}");
    assert_eq!(append("conflict"), Some(1), "{counters:#?}");
    let reads = [("backend", "memory"), ("operation", "read_stream"), ("outcome", "ok")];
    assert_eq!(counter(names::STORE_OPERATIONS, &reads), Some(1), "{counters:#?}");
    let latencies = histogram(
        names::STORE_OPERATION_DURATION,
        &[("backend", "memory"), ("operation", "append")],
    )
    .expect("append latencies");
    assert_eq!(latencies.len(), 3, "one per append: {latencies:?}");
    assert!(
        latencies.iter().all(|&s| (0.0..10.0).contains(&s)),
        "seconds: {latencies:?}"
    );
    // The runner pages through `read_all`: at least one call, all successful.
    let read_all = [("backend", "memory"), ("operation", "read_all"), ("outcome", "ok")];
    assert!(
        counter(names::STORE_OPERATIONS, &read_all).is_some_and(|n| n >= 1),
        "{counters:#?}"
    );
    // And its projection store's calls count too: one lease taken, its commits.
    let acquire = [("backend", "memory"), ("operation", "acquire"), ("outcome", "ok")];
    assert_eq!(counter(names::STORE_OPERATIONS, &acquire), Some(1), "{counters:#?}");
    let commits = [("backend", "memory"), ("operation", "commit"), ("outcome", "ok")];
    assert!(
        counter(names::STORE_OPERATIONS, &commits).is_some_and(|n| n >= 1),
        "{counters:#?}"
    );

    // The projection: `Placed` and `Flaky` applied, `Flaky` failing once, `Poison` failing on
    // its try and its one retry, then parked.
    let p = [("projection", "counts"), ("version", "1")];
    assert_eq!(status.applied, 2);
    assert_eq!(counter(names::PROJECTION_EVENTS_APPLIED, &p), Some(2), "{counters:#?}");
    assert_eq!(counter(names::PROJECTION_HANDLER_ERRORS, &p), Some(3), "{counters:#?}");
    assert_eq!(gauge(names::PROJECTION_PARKED, &p), Some(1.0), "{gauges:#?}");
    assert_eq!(
        counter(names::PROJECTION_LEASE_ACQUISITIONS, &p),
        Some(1),
        "{counters:#?}"
    );
    assert_eq!(counter(names::PROJECTION_LEASE_LOSSES, &p), Some(0), "{counters:#?}");
    assert_eq!(counter(names::PROJECTION_STORE_RETRIES, &p), Some(0), "{counters:#?}");
    assert_eq!(gauge(names::PROJECTION_LAG, &p), Some(0.0), "{gauges:#?}");
    // The rate is the status's (a first page gives none yet).
    let rate = gauge(names::PROJECTION_EVENTS_PER_SECOND, &p);
    assert_eq!(rate, Some(status.events_per_sec), "{gauges:#?}");
    let commits = histogram(names::PROJECTION_COMMIT_DURATION, &p).expect("commit latencies");
    assert!(
        !commits.is_empty() && commits.iter().all(|&s| (0.0..10.0).contains(&s)),
        "{commits:?}"
    );
    Ok(())
}
