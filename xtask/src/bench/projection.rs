//! Projection rows, on every backend: events applied to a view with checkpoints against a raw
//! `read_all` of the same events decoded the same way, and the live tail's append→view latency
//! while 16 writers append.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::RunnerOptions;
use cqrsx_core::projection::{HandlerResult, ProjectionStatus, RunnerState};
use cqrsx_core::testkit::CounterEvent;
use cqrsx_core::{
    async_trait, ContentType, EventCodec, EventFilter, ExpectedVersion, NewEvent, Position, Projection,
    ProjectionHandle, ProjectionRunner, Query, RecordedEvent, StreamId, View,
};
use serde::{Deserialize, Serialize};

use super::store::Subject;
use super::{keep, median, time, BenchRow, Measure, Scale};
use crate::cmd::Result;

/// The page size of the throughput row, for the runner and for the raw read alike.
pub(super) const PAGE: usize = 1_000;

/// Streams the throughput row's events are spread over (one view document each).
pub(super) const STREAMS: usize = 100;

/// Writers of the latency row.
const WRITERS: usize = 16;

/// A view document: the sum of a stream's amounts.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Sum {
    pub(super) sum: i64,
    pub(super) version: u64,
}

/// Sums each stream's `Added` amounts into one view document per stream.
pub(super) struct Sums {
    name: String,
    aggregate: String,
    codec: EventCodec,
}

#[async_trait]
impl Projection for Sums {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.clone()])
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let by = match self.codec.decode::<CounterEvent>(event)? {
            CounterEvent::Added { by } => by,
            CounterEvent::Renamed(_) | CounterEvent::Reset => 0,
        };
        let id = event.stream.id();
        let mut doc: Sum = view.get_model(id).await?.unwrap_or_default();
        doc.sum += by;
        doc.version = event.version;
        view.put_model(id, &doc)?;
        Ok(())
    }
}

pub(super) fn projection(name: String, aggregate: &str) -> Arc<Sums> {
    Arc::new(Sums {
        name,
        aggregate: aggregate.to_string(),
        codec: EventCodec::new(ContentType::Json),
    })
}

fn added(by: i64) -> Result<NewEvent> {
    EventCodec::new(ContentType::Json)
        .encode(&CounterEvent::Added { by }, Default::default())
        .map_err(|e| e.to_string())
}

/// Appends `per_stream` events to each of [`STREAMS`] streams of `aggregate`, in batches of 10
/// from 10 writers; returns the sum of every amount.
pub(super) async fn seed(subject: &Subject, aggregate: &str, per_stream: usize) -> Result<i64> {
    let tasks: Vec<_> = (0..10)
        .map(|w| {
            let store = Arc::clone(&subject.events);
            let aggregate = aggregate.to_string();
            tokio::spawn(async move {
                let mut sum = 0i64;
                for s in (w..STREAMS).step_by(10) {
                    let stream = StreamId::new(&aggregate, format!("s{s}")).map_err(|e| e.to_string())?;
                    let mut version = 0;
                    while version < per_stream {
                        let n = (per_stream - version).min(10);
                        let batch = (0..n)
                            .map(|i| added((version + i) as i64))
                            .collect::<Result<Vec<_>>>()?;
                        sum += (version..version + n).map(|v| v as i64).sum::<i64>();
                        store
                            .append(&stream, ExpectedVersion::Exact(version as u64), batch)
                            .await
                            .map_err(|e| e.to_string())?;
                        version += n;
                    }
                }
                Ok::<_, String>(sum)
            })
        })
        .collect();
    let mut sum = 0;
    for task in tasks {
        sum += task.await.map_err(|e| format!("seed task: {e}"))??;
    }
    Ok(sum)
}

/// Every event of `filter` through `read_all`, decoded: the raw read a projection cannot beat.
async fn read_all_decoded(subject: &Subject, filter: &EventFilter) -> Result<u64> {
    let codec = EventCodec::new(ContentType::Json);
    let mut total = 0u64;
    for partition in 0..subject.events.capabilities().partitions {
        let mut from = Position::start_of(partition);
        loop {
            let page = subject
                .events
                .read_all(from, PAGE, filter)
                .await
                .map_err(|e| e.to_string())?;
            for event in &page.events {
                codec.decode::<CounterEvent>(event).map_err(|e| e.to_string())?;
            }
            total += page.events.len() as u64;
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    Ok(total)
}

pub(super) async fn caught_up_with_head(subject: &Subject, handle: &ProjectionHandle) -> Result<ProjectionStatus> {
    let head = subject.events.head().await.map_err(|e| e.to_string())?;
    handle
        .wait_for(Duration::from_secs(600), |s| {
            s.checkpoint
                .as_ref()
                .is_some_and(|c| head.positions().all(|p| c.next(p.partition) >= p))
        })
        .await
        .map_err(|e| e.to_string())
}

/// Events/s applied to a view with checkpoints, from the first event, against a raw
/// `read_all` + decode of the same events.
async fn throughput(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let aggregate = format!("Proj{}", subject.run_id);
    let per_stream = (scale.projection_events / STREAMS).max(1);
    let expected = seed(subject, &aggregate, per_stream).await?;
    let total = (per_stream * STREAMS) as u64;
    let filter = EventFilter::aggregate_types([aggregate.clone()]);
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for round in 0..3 {
        base.push(
            time(total, async {
                let n = read_all_decoded(subject, &filter).await?;
                if n != total {
                    return Err(format!("read_all read {n} of {total} events"));
                }
                Ok(())
            })
            .await?,
        );
        let name = format!("sums{round}{}", subject.run_id);
        let runner = ProjectionRunner::new(
            projection(name.clone(), &aggregate),
            Arc::clone(&subject.events),
            Arc::clone(&subject.checkpoints),
        )
        .with_options(RunnerOptions::default().with_page_size(PAGE));
        let started = Instant::now();
        let handle = runner.spawn().map_err(|e| e.to_string())?;
        caught_up_with_head(subject, &handle).await?;
        ours.push(Measure {
            ops: total,
            secs: started.elapsed().as_secs_f64(),
        });
        handle.stop().await.map_err(|e| e.to_string())?;
        let (_, view) = subject
            .checkpoints
            .active_view(&name)
            .await
            .map_err(|e| e.to_string())?;
        let docs = view.query(&Query::all()).await.map_err(|e| e.to_string())?;
        let sum: i64 = docs.iter().filter_map(|d| d.data["sum"].as_i64()).sum();
        if docs.len() != STREAMS || sum != expected {
            return Err(format!(
                "the view holds {} documents summing to {sum}, not {STREAMS} summing to {expected}",
                docs.len()
            ));
        }
    }
    keep(
        rows,
        BenchRow::new(
            &subject.backend,
            "projection from the start, view + checkpoints (per event)",
            median(ours),
            "read_all + decode (per event)",
            median(base),
        )
        .note(format!(
            "{total} events into {STREAMS} documents, pages of {PAGE}, 3 rounds, medians; target ≥ 0.5"
        )),
    );
    Ok(())
}

/// The quantile `q` of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Append→view latency of the live tail: 16 writers append one event at a time and wait until
/// the runner's committed checkpoint covers it, against the append's own round trip.
async fn latency(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let aggregate = format!("Live{}", subject.run_id);
    let name = format!("live{}", subject.run_id);
    let handle = ProjectionRunner::new(
        projection(name, &aggregate),
        Arc::clone(&subject.events),
        Arc::clone(&subject.checkpoints),
    )
    .spawn()
    .map_err(|e| e.to_string())?;
    handle
        .wait_for(Duration::from_secs(60), |s| s.state == RunnerState::Live)
        .await
        .map_err(|e| e.to_string())?;
    let handle = Arc::new(handle);
    let appends = scale.latency_appends;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&subject.events);
            let handle = Arc::clone(&handle);
            let aggregate = aggregate.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(&aggregate, format!("w{w}")).map_err(|e| e.to_string())?;
                let mut samples = Vec::with_capacity(appends);
                for v in 0..appends {
                    let started = Instant::now();
                    let result = store
                        .append(&stream, ExpectedVersion::Exact(v as u64), vec![added(1)?])
                        .await
                        .map_err(|e| e.to_string())?;
                    let appended = Instant::now();
                    handle
                        .wait_until_caught_up(result.position, Duration::from_secs(30))
                        .await
                        .map_err(|e| e.to_string())?;
                    samples.push((appended - started, appended.elapsed()));
                }
                Ok::<_, String>(samples)
            })
        })
        .collect();
    let mut append_times = Vec::new();
    let mut view_times = Vec::new();
    for task in tasks {
        for (append, view) in task.await.map_err(|e| format!("writer task: {e}"))?? {
            append_times.push(append);
            view_times.push(view);
        }
    }
    let handle = Arc::into_inner(handle).ok_or("the latency runner is still shared")?;
    handle.stop().await.map_err(|e| e.to_string())?;
    append_times.sort();
    view_times.sort();
    let at = |d: Duration| Measure {
        ops: 1,
        secs: d.as_secs_f64(),
    };
    let signal = if subject.events.capabilities().live_signal {
        "woken by the store's signal"
    } else {
        "polling (no live signal)"
    };
    keep(
        rows,
        BenchRow::new(
            &subject.backend,
            "append→view latency p50, 16 writers, live tail",
            at(quantile(&view_times, 0.5)),
            "the append's own round trip (p50)",
            at(quantile(&append_times, 0.5)),
        )
        .note(format!(
            "{signal}; p99 {:.2} ms (append p99 {:.2} ms); {} samples",
            quantile(&view_times, 0.99).as_secs_f64() * 1e3,
            quantile(&append_times, 0.99).as_secs_f64() * 1e3,
            view_times.len()
        )),
    );
    Ok(())
}

/// The projection rows of one backend.
pub async fn rows(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    throughput(subject, scale, rows).await?;
    super::projection_typed::typed_throughput(subject, scale, rows).await?;
    latency(subject, scale, rows).await
}
