//! Sharded projection rows: a handler slower than the append rate (~200 µs of I/O wait per
//! event) run as 2 and 4 shards over as many runner processes (tasks standing in for them),
//! against the unsharded projection with one runner in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::{HandlerResult, RunnerOptions, Shard, ShardedHandle, ShardedRunner};
use cqrsx_core::testkit::CounterEvent;
use cqrsx_core::{
    async_trait, ContentType, EventCodec, EventFilter, ExpectedVersion, NewEvent, Position, Projection, Query,
    RecordedEvent, StreamId, View,
};
use serde::{Deserialize, Serialize};

use super::store::Subject;
use super::{keep, median, BenchRow, Measure, Scale};
use crate::cmd::Result;

/// What the handler waits per event: I/O wait (a call to another service), not CPU.
const HANDLER_COST: Duration = Duration::from_micros(200);

/// Streams the events are spread over (one view document each).
const STREAMS: usize = 100;

/// Rounds of each configuration; the median is kept.
const ROUNDS: usize = 3;

/// A view document: the sum of a stream's amounts.
#[derive(Default, Serialize, Deserialize)]
struct Sum {
    sum: i64,
}

/// Sums each stream's amounts, after waiting [`HANDLER_COST`] per event on a blocking thread
/// (`std::thread::sleep` is precise to tens of microseconds; tokio's timer has 1 ms steps).
struct Slow {
    name: String,
    aggregate: String,
    codec: EventCodec,
}

#[async_trait]
impl Projection for Slow {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.clone()])
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        tokio::task::spawn_blocking(|| std::thread::sleep(HANDLER_COST)).await?;
        let by = match self.codec.decode::<CounterEvent>(event)? {
            CounterEvent::Added { by } => by,
            CounterEvent::Renamed(_) | CounterEvent::Reset => 0,
        };
        let id = event.stream.id();
        let mut doc: Sum = view.get_model(id).await?.unwrap_or_default();
        doc.sum += by;
        view.put_model(id, &doc)?;
        Ok(())
    }
}

fn added(by: i64) -> Result<NewEvent> {
    EventCodec::new(ContentType::Json)
        .encode(&CounterEvent::Added { by }, Default::default())
        .map_err(|e| e.to_string())
}

/// Appends `per_stream` events to each of [`STREAMS`] streams, in batches of 10 from 10
/// writers; the sum of every amount and the last position of each partition.
async fn append(subject: &Subject, aggregate: &str, per_stream: usize) -> Result<(i64, Vec<Position>)> {
    let tasks: Vec<_> = (0..10)
        .map(|w| {
            let store = Arc::clone(&subject.events);
            let aggregate = aggregate.to_string();
            tokio::spawn(async move {
                let mut sum = 0i64;
                let mut last = Vec::new();
                for s in (w..STREAMS).step_by(10) {
                    let stream = StreamId::new(&aggregate, format!("s{s}")).map_err(|e| e.to_string())?;
                    let mut version = 0;
                    while version < per_stream {
                        let n = (per_stream - version).min(10);
                        let batch = (0..n).map(|i| added(i as i64 + 1)).collect::<Result<Vec<_>>>()?;
                        sum += (1..=n as i64).sum::<i64>();
                        let appended = store
                            .append(&stream, ExpectedVersion::Exact(version as u64), batch)
                            .await
                            .map_err(|e| e.to_string())?;
                        last.push(appended.position);
                        version += n;
                    }
                }
                Ok::<_, String>((sum, last))
            })
        })
        .collect();
    let mut sum = 0;
    let mut last: Vec<Position> = Vec::new();
    for task in tasks {
        let (s, positions) = task.await.map_err(|e| format!("append task: {e}"))??;
        sum += s;
        for p in positions {
            match last.iter_mut().find(|l| l.partition == p.partition) {
                Some(l) if l.offset < p.offset => *l = p,
                Some(_) => {}
                None => last.push(p),
            }
        }
    }
    Ok((sum, last))
}

/// Whether every shard runner of these processes committed past every one of `last`.
fn caught_up(handles: &[ShardedHandle], shards: usize, last: &[Position]) -> bool {
    let statuses: Vec<_> = handles.iter().flat_map(|h| h.local_status()).collect();
    statuses.len() == shards
        && statuses
            .iter()
            .all(|s| s.checkpoint.as_ref().is_some_and(|c| last.iter().all(|p| c.covers(*p))))
}

/// One round: `processes` runner processes share the projection as `shards` shards; once each
/// holds its share and is live, `events` are appended; the time from the first append until
/// every shard has committed the last one.
async fn round(subject: &Subject, shards: u16, processes: usize, events: usize, tag: &str) -> Result<Measure> {
    let aggregate = format!("Slow{tag}{}", subject.run_id);
    let projection = Arc::new(Slow {
        name: format!("slow{tag}{}", subject.run_id),
        aggregate: aggregate.clone(),
        codec: EventCodec::new(ContentType::Json),
    });
    let handles: Vec<ShardedHandle> = (0..processes)
        .map(|p| {
            ShardedRunner::new(
                Arc::clone(&projection) as Arc<dyn Projection>,
                Arc::clone(&subject.events),
                Arc::clone(&subject.checkpoints),
                shards,
            )
            .with_options(
                RunnerOptions::default()
                    .with_owner(format!("bench-{tag}-{p}"))
                    .with_lease_ttl(Duration::from_secs(2)),
            )
            .spawn()
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_>>()?;
    // Each process holds its share, and every shard runner is live.
    let settled = Instant::now();
    let share = usize::from(shards) / processes;
    while !handles.iter().all(|h| {
        h.held().len() == share
            && h.local_status().len() == share
            && h.local_status()
                .iter()
                .all(|s| s.state == cqrsx_core::projection::RunnerState::Live)
    }) {
        if settled.elapsed() > Duration::from_secs(60) {
            return Err(format!("{tag}: the shards did not spread within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let per_stream = (events / STREAMS).max(1);
    let started = Instant::now();
    let (expected, last) = append(subject, &aggregate, per_stream).await?;
    while !caught_up(&handles, usize::from(shards), &last) {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("{tag}: the shards did not catch up within 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let measure = Measure {
        ops: (per_stream * STREAMS) as u64,
        secs: started.elapsed().as_secs_f64(),
    };
    let keys = handles[0].keys().to_vec();
    for handle in handles {
        handle.stop().await.map_err(|e| e.to_string())?;
    }
    let (mut docs, mut sum) = (0, 0i64);
    for key in &keys {
        let view = subject.checkpoints.view(key).map_err(|e| e.to_string())?;
        let found = view.query(&Query::all()).await.map_err(|e| e.to_string())?;
        docs += found.len();
        sum += found.iter().filter_map(|d| d.data["sum"].as_i64()).sum::<i64>();
    }
    if docs != STREAMS || sum != expected {
        return Err(format!(
            "{tag}: the shards hold {docs} documents summing to {sum}, not {STREAMS} summing to {expected}"
        ));
    }
    Ok(measure)
}

/// The largest shard's part of the streams, of `shards`: what caps the speed-up.
fn largest_part(subject: &Subject, tag: &str, shards: u16) -> Result<f64> {
    let aggregate = format!("Slow{tag}{}", subject.run_id);
    let mut counts = vec![0usize; usize::from(shards)];
    for s in 0..STREAMS {
        let stream = StreamId::new(&aggregate, format!("s{s}")).map_err(|e| e.to_string())?;
        counts[usize::from(Shard::of_stream(stream.key(), shards))] += 1;
    }
    Ok(counts.into_iter().max().unwrap_or(STREAMS) as f64 / STREAMS as f64)
}

/// The sharded rows of one backend: 1 runner (unsharded) as the baseline; 2 shards over 2
/// runners; 4 over 4; and 4 shards in one runner process.
pub async fn rows(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let events = scale.projection_events;
    let configs: [(u16, usize, &str); 4] = [(1, 1, "1x1"), (2, 2, "2x2"), (4, 4, "4x4"), (4, 1, "4x1")];
    let mut measures: Vec<Vec<Measure>> = vec![Vec::new(); configs.len()];
    let mut parts: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    // The configurations take turns, round by round, so a slow spell of the machine hits all.
    for r in 0..ROUNDS {
        for (i, &(shards, processes, name)) in configs.iter().enumerate() {
            let tag = format!("{name}r{r}");
            parts[i].push(largest_part(subject, &tag, shards)?);
            measures[i].push(round(subject, shards, processes, events, &tag).await?);
        }
    }
    let baseline = median(measures[0].clone());
    for (i, &(shards, processes, _)) in configs.iter().enumerate().skip(1) {
        let target = match shards {
            2 => "target ≥ 1.7",
            _ if processes == 4 => "target ≥ 3",
            _ => "one process runs every shard",
        };
        let part = parts[i].iter().sum::<f64>() / parts[i].len() as f64;
        keep(
            rows,
            BenchRow::new(
                &subject.backend,
                format!("{shards} shards over {processes} runner(s), 200 µs handler (per event)"),
                median(measures[i].clone()),
                "1 runner, unsharded (per event)",
                baseline,
            )
            .note(format!(
                "{events} events into {STREAMS} documents, appended once the runners are live, until every shard committed; {ROUNDS} rounds, medians; the largest shard has {:.0}% of the streams (speed-up cap {:.2}); {target}",
                part * 100.0,
                1.0 / part
            )),
        );
    }
    Ok(())
}
