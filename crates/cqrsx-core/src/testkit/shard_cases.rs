//! Sharded projection cases: N shards shared by several runner processes (contract items 11 and
//! 12 per shard) — every stream applied by its one shard exactly once, and shards moving
//! between processes that join, stop and die without an event skipped or applied twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::projection_support::{anomalies, expected_tallies, fast, view_shapes, view_tallies, Tally, TallyProjection};
use super::support::{ev, report, unique};
use super::Fixture;
use crate::event::{EventFilter, Position, RecordedEvent};
use crate::projection::{HandlerResult, Projection, RunnerOptions, Shard, ShardedHandle, ShardedRunner, View, ViewKey};
use crate::stream::{ExpectedVersion, StreamId};

/// How long the shards may take to spread, move or catch up: a hang detector, sized for a
/// loaded machine (a healthy run takes a few lease TTLs).
const BOUND: Duration = Duration::from_secs(60);

/// The suite's tally projection, counting for each shard how many handlers run at once on its
/// streams' events: two holders of one shard applying at the same time show as more than one.
struct Guarded {
    inner: Arc<TallyProjection>,
    shards: u16,
    inside: Vec<AtomicUsize>,
    most: Vec<AtomicUsize>,
}

impl Guarded {
    fn new(inner: TallyProjection, shards: u16) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(inner),
            shards,
            inside: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            most: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    fn most_at_once(&self) -> Vec<usize> {
        self.most.iter().map(|m| m.load(Ordering::SeqCst)).collect()
    }
}

#[async_trait]
impl Projection for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        /// Leaves the count when the handler ends or its future is dropped (an aborted runner).
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let shard = usize::from(Shard::of_stream(event.stream.key(), self.shards));
        let now = self.inside[shard].fetch_add(1, Ordering::SeqCst) + 1;
        let _leave = Leave(&self.inside[shard]);
        self.most[shard].fetch_max(now, Ordering::SeqCst);
        // A handler that waits a little, so that two runners of one shard would overlap.
        tokio::task::yield_now().await;
        self.inner.apply(event, view).await
    }
}

fn spawn(f: &Fixture, projection: &Arc<Guarded>, shards: u16, options: RunnerOptions) -> ShardedHandle {
    let runner = ShardedRunner::new(
        Arc::clone(projection) as Arc<dyn Projection>,
        Arc::clone(&f.events),
        Arc::clone(&f.checkpoints),
        shards,
    )
    .with_options(options);
    runner
        .with_fault(f.shard_fault)
        .spawn()
        .expect("spawn a sharded runner")
}

/// Waits until each process holds the number of shards `want` gives it — by its own account
/// and by the stored leases' holders alike.
async fn wait_spread(case: &str, processes: &[(&str, &ShardedHandle)], want: &[usize]) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < BOUND {
        let held: Vec<usize> = processes.iter().map(|(_, h)| h.held().len()).collect();
        let mut stored = vec![0usize; processes.len()];
        let status = processes[0].1.status().await;
        if let Ok(status) = &status {
            for shard in status {
                if let Some(holder) = &shard.holder {
                    if let Some(i) = processes.iter().position(|(owner, _)| *owner == holder.owner) {
                        stored[i] += 1;
                    }
                }
            }
        }
        if held == want && stored == want {
            return started.elapsed();
        }
        let runners: Vec<Vec<String>> = processes
            .iter()
            .map(|(_, h)| {
                h.local_status()
                    .iter()
                    .map(|s| format!("{} {:?} token {:?} {:?}", s.key, s.state, s.token, s.last_error))
                    .collect()
            })
            .collect();
        last = format!("held {held:?}, stored holders {stored:?}; runners {runners:?}; stored {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{case}: the shards did not spread as {want:?} within {BOUND:?}: {last}");
}

/// Appends to `streams` until `stop` is set (at least `min` events each), one to three events
/// at a time of two types; returns the events written.
fn writer(f: &Fixture, streams: Vec<StreamId>, min: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let store = Arc::clone(&f.events);
    tokio::spawn(async move {
        let mut written = 0u64;
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) || written < min * streams.len() as u64 {
            let s = &streams[(i as usize) % streams.len()];
            let n = 1 + i % 3;
            let batch = (0..n)
                .map(|k| ev(if (i + k) % 2 == 0 { "Tallied" } else { "Adjusted" }, 1 + i * 10 + k))
                .collect();
            store.append(s, ExpectedVersion::Any, batch).await.expect("append");
            written += n;
            i += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        written
    })
}

/// Waits until every shard's stored checkpoint covers the log's head.
async fn caught_up(f: &Fixture, handle: &ShardedHandle) {
    let head = f.events.head().await.expect("head");
    for p in head.positions().filter(|p| p.offset > 1) {
        let last = Position {
            partition: p.partition,
            offset: p.offset - 1,
        };
        if let Err(e) = handle.wait_until_caught_up(last, BOUND).await {
            panic!(
                "the shards did not catch up with {last}: {e}; {:?}",
                handle.status().await
            );
        }
    }
}

/// What the shards' views hold, checked against the fold of every stream: each stream's
/// document in its own shard only and equal to the fold, each shard's total equal to its
/// streams' events. Returns (events, skipped, applied twice, documents in a foreign shard).
async fn check_views(f: &Fixture, keys: &[ViewKey], streams: &[StreamId]) -> (u64, u64, u64, u64) {
    let shards = keys.len() as u16;
    let fold = expected_tallies(f, streams).await;
    let mut view: BTreeMap<String, Tally> = BTreeMap::new();
    let mut foreign = 0u64;
    let mut per_shard = vec![0u64; keys.len()];
    for s in streams {
        let own = usize::from(Shard::of_stream(s.key(), shards));
        per_shard[own] += fold.get(s.id()).map_or(0, |t| t.count);
        for (i, key) in keys.iter().enumerate() {
            let found = view_tallies(f, key, std::slice::from_ref(s)).await;
            match found.get(s.id()) {
                Some(t) if i == own => {
                    view.insert(s.id().to_string(), t.clone());
                }
                Some(_) => foreign += 1,
                None => {}
            }
        }
    }
    let (skipped, twice) = anomalies(&view, &fold);
    let events: u64 = fold.values().map(|t| t.count).sum();
    let mut totals = Vec::new();
    for key in keys {
        let shapes = view_shapes(f, key, &["total".to_string()]).await;
        totals.push(shapes.get("total").map_or(0, |t| t.count));
    }
    assert_eq!(
        totals, per_shard,
        "each shard's total counts the events of its own streams, once"
    );
    assert_eq!(
        totals.iter().sum::<u64>(),
        events,
        "the shards' totals add up to the events"
    );
    assert_eq!(
        view, fold,
        "every stream's document, read from its shard, equals its fold"
    );
    (events, skipped, twice, foreign)
}

/// Sharding: three runner processes (distinct owners) share a projection run as four shards
/// while twelve streams are appended to. Every shard is held, by one process each, spread
/// 2/1/1; afterwards each stream's document lives in its own shard only and equals the fold of
/// its stream (none skipped, none applied twice), each shard's total counts exactly its
/// streams' events, and no two runners ever applied one shard's events at once. Read from the
/// stored views; stopping every process leaves no lease held.
pub async fn projection_shards_apply_each_stream_in_one_shard_once(f: Fixture) {
    const SHARDS: u16 = 4;
    let aggregate = unique("Sharded");
    let name = unique("sharded");
    let projection = Guarded::new(TallyProjection::new(&name, &aggregate), SHARDS);
    let streams: Vec<StreamId> = (0..12)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    let owners = ["shard-a", "shard-b", "shard-c"];
    let handles: Vec<ShardedHandle> = owners.iter().map(|o| spawn(&f, &projection, SHARDS, fast(o))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let per_stream = f.stress.events_per_writer.max(8);
    let writers: Vec<_> = streams
        .chunks(3)
        .map(|chunk| writer(&f, chunk.to_vec(), per_stream, Arc::clone(&stop)))
        .collect();
    let processes: Vec<(&str, &ShardedHandle)> = owners.iter().copied().zip(handles.iter()).collect();
    // Which process gets two shards depends on the order they took their slots.
    let slots: Vec<u16> = {
        let started = Instant::now();
        loop {
            let slots: Vec<Option<u16>> = handles.iter().map(|h| h.slot()).collect();
            if slots.iter().all(Option::is_some) {
                break slots.into_iter().flatten().collect();
            }
            assert!(
                started.elapsed() < BOUND,
                "not every process took a member slot: {slots:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let want: Vec<usize> = slots
        .iter()
        .map(|s| if slots.iter().all(|o| o >= s) { 2 } else { 1 })
        .collect();
    let spread = wait_spread("sharding", &processes, &want).await;
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    caught_up(&f, &handles[0]).await;
    let keys = handles[0].keys().to_vec();
    let members: Vec<ViewKey> = Shard::all(SHARDS)
        .expect("shards")
        .into_iter()
        .map(|slot| ViewKey::member(&name, 1, slot).expect("member key"))
        .collect();
    let (events, skipped, twice, foreign) = check_views(&f, &keys, &streams).await;
    let most = projection.most_at_once();
    report(
        f.label,
        &format!(
            "sharding: {events} events, {SHARDS} shards over {} processes, spread in {spread:.1?}; skipped {skipped}, twice {twice}, foreign documents {foreign}, most handlers of one shard at once {most:?}",
            owners.len()
        ),
    );
    assert_eq!(events, written, "every appended event is in the fold");
    assert_eq!((skipped, twice, foreign), (0, 0, 0));
    assert!(
        most.iter().all(|&m| m <= 1),
        "two runners applied one shard at once: {most:?}"
    );
    for handle in handles {
        handle.stop().await.expect("stop");
    }
    for key in keys.iter().chain(&members) {
        let holder = f.checkpoints.holder(key).await.expect("holder");
        assert_eq!(holder.map(|h| h.owner), None, "{key} is released by the stops");
    }
}

/// Rebalancing: one process holds all four shards; a second joins and they converge to two
/// each; the first stops and the second holds all; a third joins (two each again) and is
/// aborted like a crash — nothing released — and the survivor takes its shards once their
/// leases expire. Writers append throughout; at the end every stream's document equals its
/// fold (nothing applied twice or skipped across the moves) and no shard ever had two runners
/// applying at once.
pub async fn projection_shards_rebalance_as_processes_join_stop_and_die(f: Fixture) {
    const SHARDS: u16 = 4;
    let ttl = Duration::from_secs(2);
    let aggregate = unique("Moving");
    let name = unique("moving");
    let projection = Guarded::new(TallyProjection::new(&name, &aggregate), SHARDS);
    let streams: Vec<StreamId> = (0..8)
        .map(|i| StreamId::new(&aggregate, format!("s{i}")).expect("stream"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writer(&f, streams.clone(), 2, Arc::clone(&stop));
    let options = |owner: &str| fast(owner).with_lease_ttl(ttl);
    let mut timings = Vec::new();

    let a = spawn(&f, &projection, SHARDS, options("move-a"));
    timings.push(("alone", wait_spread("one process", &[("move-a", &a)], &[4]).await));
    let b = spawn(&f, &projection, SHARDS, options("move-b"));
    timings.push((
        "b joins",
        wait_spread("a second process joins", &[("move-a", &a), ("move-b", &b)], &[2, 2]).await,
    ));
    a.stop().await.expect("stop a");
    timings.push((
        "a stops",
        wait_spread("the first one stops", &[("move-b", &b)], &[4]).await,
    ));
    let c = spawn(&f, &projection, SHARDS, options("move-c"));
    timings.push((
        "c joins",
        wait_spread("a third process joins", &[("move-b", &b), ("move-c", &c)], &[2, 2]).await,
    ));
    c.abort();
    timings.push(("c dies", wait_spread("a process dies", &[("move-b", &b)], &[4]).await));

    stop.store(true, Ordering::SeqCst);
    let written = writer.await.expect("writer");
    caught_up(&f, &b).await;
    let keys = b.keys().to_vec();
    let (events, skipped, twice, foreign) = check_views(&f, &keys, &streams).await;
    let most = projection.most_at_once();
    report(
        f.label,
        &format!(
            "rebalancing: {events} events, 8 shard moves, {timings:.1?} (lease {ttl:?}); skipped {skipped}, twice {twice}, foreign {foreign}, most at once {most:?}"
        ),
    );
    assert_eq!(events, written, "every appended event is in the fold");
    assert_eq!((skipped, twice, foreign), (0, 0, 0), "across the moves");
    assert!(
        most.iter().all(|&m| m <= 1),
        "two runners applied one shard at once: {most:?}"
    );
    b.stop().await.expect("stop b");
}
