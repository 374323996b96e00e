//! Sharded projections under process kills: two to four worker processes share a projection's
//! shards while 16 writers append; workers are SIGKILLed at random points and others join, so
//! shards move by takeover after a lease runs out and by rebalancing when a process joins. In
//! the end every shard's view is read from the server's own structures: each per-stream
//! document must sit in its stream's shard only, and the shards' documents, combined, must
//! equal the fold of the events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::Shard;
use serde_json::Value;

use super::harness::{
    aggregates, compare, fold, note_writer_errors, retry, writers_streams, Counts, Dice, Size, Worker, WorkerSpec,
    Writers,
};
use super::target::{Stores, Target};
use super::worker::Broken;
use crate::cmd::Result;

/// The shards the scenario runs the projection as.
const SHARDS: u16 = 4;

/// Worker processes SIGKILLed `kills` times among 2 to 4 sharing a sharded projection.
pub async fn shard_kills(base: &Target, size: Size, kills: u64, broken: Broken) -> Result<Counts> {
    let target = base.fresh("sh");
    let stores = target.connect(Duration::from_secs(60)).await?;
    let aggregates = aggregates("Sh");
    let projection = format!("sh{}", &cqrsx_core::Uuid::now_v7().simple().to_string()[20..]);
    let writers = Writers::start(Arc::clone(&stores.events), &aggregates, size);
    let mut counts = Counts::default();
    let mut dice = Dice::new();
    let mut born = 0u64;
    let mut spawn = |dice: &mut Dice| {
        born += 1;
        let mut spec = WorkerSpec::new(&projection, &aggregates, &format!("p{born}"));
        spec.shards = SHARDS;
        spec.page = [1, 16, 64][dice.below(3) as usize];
        spec.broken = broken;
        Worker::spawn(&target, &spec)
    };
    let mut workers = Vec::new();
    for _ in 0..2 + dice.below(3) {
        workers.push(spawn(&mut dice)?);
    }
    // Let the first ones take their shards before the kills begin.
    let _ = workers[0].wait_for(Duration::from_secs(30), |s| s.applied > 0).await;
    while counts.process_kills < kills {
        tokio::time::sleep(Duration::from_millis(200 + dice.below(1_300))).await;
        for w in &mut workers {
            if !w.alive() {
                counts
                    .failures
                    .push(format!("a sharded worker exited by itself: {:?}", w.poll()));
            }
        }
        let victim = dice.below(workers.len() as u64) as usize;
        workers.swap_remove(victim).kill();
        counts.process_kills += 1;
        // Back to 2 to 4 processes: a replacement joins (and takes its share from the others).
        while workers.len() < 2 || (workers.len() < 4 && dice.below(2) == 0) {
            workers.push(spawn(&mut dice)?);
        }
    }
    note_writer_errors(writers.stop().await, &mut counts);
    for w in &mut workers {
        if let Some(e) = &w.poll().error {
            counts.failures.push(format!("a sharded worker failed: {e}"));
        }
        w.kill();
    }
    drop(workers);
    // Two fresh processes finish the work.
    let mut last = vec![spawn(&mut dice)?, spawn(&mut dice)?];
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if all_caught_up(&stores, &projection).await.unwrap_or(false) {
            break;
        }
        if last.iter_mut().any(|w| !w.alive()) || Instant::now() > deadline {
            counts.failures.push(format!(
                "the last two workers did not catch up every shard: {:?}",
                last.iter_mut().map(|w| w.poll().clone()).collect::<Vec<_>>()
            ));
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(last);
    let streams = writers_streams(&aggregates);
    let (want, events) = retry(|| fold(stores.events.as_ref(), &streams)).await?;
    let view = combined_view(&stores, &projection, &streams, &mut counts).await?;
    counts.events += events;
    compare(&view, &want, &mut counts);
    Ok(counts)
}

/// The stored name of every shard.
fn shard_names(projection: &str) -> Vec<String> {
    (0..SHARDS).map(|i| format!("{projection}.s{i}of{SHARDS}")).collect()
}

/// Whether every shard's stored checkpoint covers the log's head.
async fn all_caught_up(stores: &Stores, projection: &str) -> Result<bool> {
    let head = stores.events.head().await.map_err(|e| format!("head: {e}"))?;
    for name in shard_names(projection) {
        let Some(checkpoint) = stores.raw.checkpoint(&name).await? else {
            return Ok(false);
        };
        if !head.positions().all(|p| checkpoint.next(p.partition) >= p) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every shard's raw view, combined: per-stream documents taken from the shard their stream
/// belongs to (one found elsewhere, or in two shards, is a failure), totals summed over the
/// shards (each shard keeps its own share of them).
async fn combined_view(
    stores: &Stores,
    projection: &str,
    streams: &[cqrsx_core::StreamId],
    counts: &mut Counts,
) -> Result<BTreeMap<String, Value>> {
    let shard_of: BTreeMap<String, u16> = streams
        .iter()
        .map(|s| {
            (
                format!("s.{}.{}", s.aggregate_type(), s.id()),
                Shard::of_stream(s.key(), SHARDS),
            )
        })
        .collect();
    let mut combined: BTreeMap<String, Value> = BTreeMap::new();
    for (index, name) in shard_names(projection).iter().enumerate() {
        for (id, doc) in retry(|| stores.raw.view(name)).await? {
            if id.starts_with("s.") {
                if shard_of.get(&id) != Some(&(index as u16)) {
                    counts.failures.push(format!(
                        "document {id} is in shard {index}; its stream belongs to shard {:?}",
                        shard_of.get(&id)
                    ));
                }
                if combined.insert(id.clone(), doc).is_some() {
                    counts.failures.push(format!("document {id} is in two shards"));
                }
                continue;
            }
            let total = combined
                .entry(id)
                .or_insert_with(|| serde_json::json!({ "count": 0, "sum": 0 }));
            for field in ["count", "sum"] {
                let sum = total[field].as_u64().unwrap_or(0) + doc[field].as_u64().unwrap_or(0);
                total[field] = Value::from(sum);
            }
        }
    }
    Ok(combined)
}
