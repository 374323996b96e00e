//! Event store rows, shared by every backend: appends, aggregate loads, `read_all`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cqrsx_core::codec::JsonCodec;
use cqrsx_core::testkit::{Counter, CounterEvent};
use cqrsx_core::{
    AggregateRoot, Codec, ContentType, EventCodec, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent,
    Position, ProjectionStore, Repository, SnapshotStrategy, StreamId,
};

use super::{keep, median, time, BenchRow, Measure, Scale};
use crate::cmd::Result;

/// A baseline append: how the same events are written without our store.
#[async_trait]
pub trait AppendBaseline: Send + Sync {
    /// A short description for the report ("XADD", "checked script", …).
    fn name(&self, batch: usize) -> String;
    /// Writes one batch of events under `key` (each key written by one writer at a time).
    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()>;
}

/// The raw-driver baseline of a backend: the minimum work that stores the same bytes, and
/// reads them back into the same event type.
#[async_trait]
pub trait RawBaseline: AppendBaseline {
    /// Reads every record under `key` and decodes each payload into a [`CounterEvent`] (as a
    /// load or a projection does), returning how many there were.
    async fn read(&self, key: &str) -> Result<usize>;
}

/// Decodes one raw record's payload the way our codec does: the variant named by the event
/// type, from the JSON of its content.
pub fn decode_raw(event_type: &str, payload: &[u8]) -> Result<CounterEvent> {
    JsonCodec
        .decode_variant::<CounterEvent>(event_type, payload)
        .map_err(|e| e.to_string())
}

/// Everything one backend's store rows need.
pub struct Subject {
    /// Name in the report.
    pub backend: String,
    /// The event store under test.
    pub events: Arc<dyn EventStore>,
    /// The snapshot strategy for the "with snapshots" loads.
    pub snapshots: Arc<dyn SnapshotStrategy<Counter>>,
    /// Checkpoints and views for the projection rows.
    pub checkpoints: Arc<dyn ProjectionStore>,
    /// The raw baseline (information for appends; the yardstick of reads).
    pub baseline: Arc<dyn RawBaseline>,
    /// Appends that do comparable work, each with its own rows.
    pub comparable: Vec<Arc<dyn AppendBaseline>>,
    /// A unique prefix for stream ids and baseline keys.
    pub run_id: String,
}

pub fn sample_events(count: usize) -> Result<Vec<NewEvent>> {
    let codec = EventCodec::new(ContentType::Json);
    (0..count)
        .map(|i| {
            let event = if i % 10 == 9 {
                CounterEvent::Renamed(format!("counter renamed for the {i}th time, with some text"))
            } else {
                CounterEvent::Added { by: i as i64 }
            };
            codec
                .encode(&event, Metadata::correlated(format!("req-{i}")))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Runs each writer as a task of its own, as the concurrent requests of a service are.
async fn run_writers<F>(writers: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let tasks: Vec<_> = writers.map(tokio::spawn).collect();
    for task in tasks {
        task.await.map_err(|e| format!("writer task: {e}"))??;
    }
    Ok(())
}

/// Appends `per_writer` batches of `template` from each of `writers` tasks, each writer on
/// its own stream named by `name`, with exact expected versions.
async fn our_appends(
    subject: &Subject,
    writers: usize,
    per_writer: usize,
    template: &[NewEvent],
    name: impl Fn(usize) -> String,
) -> Result<()> {
    let batch = template.len();
    let tasks = (0..writers).map(|w| {
        let store = Arc::clone(&subject.events);
        let template = template.to_vec();
        let stream = StreamId::new("BenchAppend", name(w));
        async move {
            let stream = stream.map_err(|e| e.to_string())?;
            for round in 0..per_writer {
                let expected = ExpectedVersion::Exact((round * batch) as u64);
                let events = fresh_ids(&template);
                store
                    .append(&stream, expected, events)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }
    });
    run_writers(tasks).await
}

/// The same appends through a baseline, each writer under its own key.
async fn baseline_appends(
    baseline: &Arc<dyn AppendBaseline>,
    writers: usize,
    per_writer: usize,
    template: &[NewEvent],
    name: impl Fn(usize) -> String,
) -> Result<()> {
    let tasks = (0..writers).map(|w| {
        let raw = Arc::clone(baseline);
        let template = template.to_vec();
        let key = format!("raw-{}", name(w));
        async move {
            for _ in 0..per_writer {
                let events = fresh_ids(&template);
                raw.write(&key, &events).await?;
            }
            Ok::<_, String>(())
        }
    });
    run_writers(tasks).await
}

/// Append rows: batch 1/10/100 × 1/16 writers, each writer on its own stream, against every
/// baseline writing the same events. Each writer is a task of its own. Ours and the baselines
/// take turns for a few rounds (fresh streams each round) and each side reports its median
/// round, so a slow spell of the machine does not land on one side only.
pub(super) async fn append_rows(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let raw: Arc<dyn AppendBaseline> = subject.baseline.clone();
    let baselines: Vec<Arc<dyn AppendBaseline>> =
        std::iter::once(raw).chain(subject.comparable.iter().cloned()).collect();
    for writers in [1usize, 16] {
        for batch in [1usize, 10, 100] {
            let per_writer = (scale.append_events / writers / batch).max(1);
            let total = (per_writer * batch * writers) as u64;
            let template = sample_events(batch)?;
            let mut ours = Vec::new();
            let mut theirs = vec![Vec::new(); baselines.len()];
            for round in 0..scale.append_rounds {
                let name = |w: usize| format!("{}-{writers}-{batch}-{w}-r{round}", subject.run_id);
                ours.push(time(total, our_appends(subject, writers, per_writer, &template, name)).await?);
                for (b, baseline) in baselines.iter().enumerate() {
                    let name = |w: usize| format!("b{b}-{}-{writers}-{batch}-{w}-r{round}", subject.run_id);
                    theirs[b]
                        .push(time(total, baseline_appends(baseline, writers, per_writer, &template, name)).await?);
                }
            }
            let ours = median(ours);
            for (baseline, measures) in baselines.iter().zip(theirs) {
                keep(
                    rows,
                    BenchRow::new(
                        &subject.backend,
                        format!("append batch {batch}, {writers} writer(s) (per event)"),
                        ours,
                        &baseline.name(batch),
                        median(measures),
                    )
                    .note(format!("{total} events × {} rounds, medians", scale.append_rounds)),
                );
            }
        }
    }
    Ok(())
}

async fn seed_aggregate(subject: &Subject, id: &str, events: usize) -> Result<()> {
    let repo = Repository::<Counter>::new(Arc::clone(&subject.events));
    let mut root: AggregateRoot<Counter> = repo.create(id).map_err(|e| e.to_string())?;
    let mut written = 0;
    while written < events {
        let n = (events - written).min(500);
        for i in 0..n {
            root.record(CounterEvent::Added {
                by: (written + i) as i64,
            });
        }
        repo.save(&mut root).await.map_err(|e| e.to_string())?;
        written += n;
    }
    Ok(())
}

/// Load rows: 100 and N-event aggregates, by full replay and through snapshots, against a raw
/// read of the same number of records.
pub(super) async fn load_rows(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let mut hundred_replay = None;
    for size in [100usize, scale.large_aggregate] {
        let id = format!("{}-load-{size}", subject.run_id);
        seed_aggregate(subject, &id, size).await?;
        let key = format!("raw-{}-load-{size}", subject.run_id);
        let hundred = sample_events(100)?;
        for _ in 0..size / 100 {
            subject.baseline.write(&key, &hundred).await?;
        }

        let plain = Repository::<Counter>::new(Arc::clone(&subject.events));
        let snap =
            Repository::<Counter>::new(Arc::clone(&subject.events)).with_snapshots(Arc::clone(&subject.snapshots));
        // Take the snapshot once, at the head.
        let mut root = snap.load(&id).await.map_err(|e| e.to_string())?;
        root.record(CounterEvent::Reset);
        snap.save(&mut root).await.map_err(|e| e.to_string())?;

        let mut base = Vec::new();
        let mut replay = Vec::new();
        let mut snapped = Vec::new();
        let mut replayed_with_snapshot = 0;
        for _ in 0..scale.repeats {
            base.push(
                time(1, async {
                    let n = subject.baseline.read(&key).await?;
                    if n < size {
                        return Err(format!("baseline read {n} of {size} records"));
                    }
                    Ok(())
                })
                .await?,
            );
            replay.push(
                time(1, async {
                    plain.load(&id).await.map(|_| ()).map_err(|e| e.to_string())
                })
                .await?,
            );
            snapped.push(
                time(1, async {
                    let (_, info) = snap.load_with_info(&id).await.map_err(|e| e.to_string())?;
                    replayed_with_snapshot = info.events_replayed;
                    Ok(())
                })
                .await?,
            );
        }
        let base = median(base);
        let name = format!("raw read + decode of {size} records");
        let (replay, snapped) = (median(replay), median(snapped));
        if size == 100 {
            hundred_replay = Some(replay);
        } else if let Some(hundred) = hundred_replay {
            // The snapshot target: a large aggregate loads about as fast as a small one.
            keep(
                rows,
                BenchRow::new(
                    &subject.backend,
                    format!("load {size}-event aggregate, snapshot vs 100-event replay"),
                    snapped,
                    "load 100-event aggregate, replay",
                    hundred,
                )
                .note("target: ratio ≥ 0.67 (≤ 1.5× the time)"),
            );
        }
        keep(
            rows,
            BenchRow::new(
                &subject.backend,
                format!("load {size}-event aggregate, replay"),
                replay,
                &name,
                base,
            ),
        );
        keep(
            rows,
            BenchRow::new(
                &subject.backend,
                format!("load {size}-event aggregate, snapshot"),
                snapped,
                &name,
                base,
            )
            .note(format!("{replayed_with_snapshot} events replayed after the snapshot")),
        );
    }
    Ok(())
}

/// `read_all` row: every event of the run in pages of 1,000, against a raw read of as many.
pub(super) async fn read_all_rows(subject: &Subject, rows: &mut Vec<BenchRow>) -> Result<()> {
    let filter = EventFilter::aggregate_types(["BenchAppend"]);
    let codec = EventCodec::new(ContentType::Json);
    let mut total = 0u64;
    let ours = {
        let start = std::time::Instant::now();
        for partition in 0..subject.events.capabilities().partitions {
            let mut from = Position::start_of(partition);
            loop {
                let page = subject
                    .events
                    .read_all(from, 1_000, &filter)
                    .await
                    .map_err(|e| e.to_string())?;
                total += page.events.len() as u64;
                for event in &page.events {
                    codec.decode::<CounterEvent>(event).map_err(|e| e.to_string())?;
                }
                if page.next == from {
                    break;
                }
                from = page.next;
            }
        }
        Measure {
            ops: total,
            secs: start.elapsed().as_secs_f64(),
        }
    };
    let key = format!("raw-b0-{}-1-100-0-r0", subject.run_id);
    let mut base_total = 0u64;
    let base = {
        let start = std::time::Instant::now();
        base_total += subject.baseline.read(&key).await? as u64;
        Measure {
            ops: base_total,
            secs: start.elapsed().as_secs_f64(),
        }
    };
    keep(
        rows,
        BenchRow::new(
            &subject.backend,
            "read_all + decode, pages of 1000 (per event)",
            ours,
            "raw read + decode (per record)",
            base,
        )
        .note(format!("{total} events")),
    );
    Ok(())
}

/// The template's events under new ids (every append of a row is a new command).
pub fn fresh_ids(template: &[NewEvent]) -> Vec<NewEvent> {
    template
        .iter()
        .cloned()
        .map(|e| e.with_id(cqrsx_core::Uuid::now_v7()))
        .collect()
}

/// A raw record: event type and payload.
type Record = (String, Vec<u8>);

/// The in-memory baseline: a mutex-guarded map of records.
#[derive(Default)]
struct MemoryBaseline(Mutex<HashMap<String, Vec<Record>>>);

#[async_trait]
impl AppendBaseline for MemoryBaseline {
    fn name(&self, batch: usize) -> String {
        format!("Mutex<Vec> push ×{batch}")
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let mut map = self.0.lock().map_err(|_| "poisoned")?;
        map.entry(key.to_string())
            .or_default()
            .extend(batch.iter().map(|e| (e.event_type.clone(), e.payload.clone())));
        Ok(())
    }
}

#[async_trait]
impl RawBaseline for MemoryBaseline {
    async fn read(&self, key: &str) -> Result<usize> {
        let copy = self
            .0
            .lock()
            .map_err(|_| "poisoned")?
            .get(key)
            .cloned()
            .unwrap_or_default();
        for (event_type, payload) in &copy {
            decode_raw(event_type, payload)?;
        }
        Ok(copy.len())
    }
}

/// The in-memory backend's rows.
pub async fn memory_rows(scale: Scale) -> Result<Vec<BenchRow>> {
    let events = Arc::new(cqrsx_core::memory::InMemoryEventStore::new());
    let snapshots = Arc::new(cqrsx_core::memory::InMemorySnapshotStore::new());
    let subject = Subject {
        backend: "memory".into(),
        events,
        snapshots: super::snapshot_strategy(snapshots),
        checkpoints: Arc::new(cqrsx_core::memory::InMemoryProjectionStore::new()),
        baseline: Arc::new(MemoryBaseline::default()),
        comparable: Vec::new(),
        run_id: format!("b{}", cqrsx_core::Uuid::now_v7().simple()),
    };
    super::subject_rows(&subject, scale).await
}
