//! The projection cases' tools: a tally projection, the fold it must equal, runners with short
//! leases, a dice for crash points.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::support::payload_n;
use super::Fixture;
use crate::event::{EventFilter, RecordedEvent};
use crate::projection::{
    ErrorPolicy, HandlerResult, Projection, ProjectionHandle, ProjectionRunner, RunnerOptions, View, ViewKey,
};
use crate::read_store::ReadStoreExt;
use crate::stream::StreamId;

/// The payload `n` that fails the handler until the projection is "fixed".
pub(super) const POISON: u64 = 666_666;

/// Per stream: how many events were applied, their sum, the last version, and any version
/// seen out of order (a repeat or a gap) — so a skipped or repeated event shows in the view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Tally {
    pub(super) count: u64,
    pub(super) sum: u64,
    pub(super) last: u64,
    pub(super) repeats: u64,
    pub(super) gaps: u64,
}

/// A count and a sum, for the documents that many streams feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Totals {
    pub(super) count: u64,
    pub(super) sum: u64,
}

impl Totals {
    fn add(&mut self, n: u64) {
        self.count += 1;
        self.sum += n;
    }
}

/// The ids of the documents many streams feed: one per aggregate type (fed by every
/// partition), one global total, one per event type.
pub(super) fn shape_ids(aggregate: &str, event_types: &[&str]) -> Vec<String> {
    let mut ids = vec![format!("agg-{aggregate}"), "total".to_string()];
    ids.extend(event_types.iter().map(|t| format!("type-{t}")));
    ids
}

/// The suite's projection over one aggregate type, in several document shapes at once: a
/// [`Tally`] per stream (changed by every event type), and [`Totals`] per aggregate type,
/// in one global document, and per event type (see [`shape_ids`]) — documents fed by every
/// partition of the store, so a guard that loses their updates shows.
pub(super) struct TallyProjection {
    pub(super) name: String,
    pub(super) version: u32,
    pub(super) aggregate: String,
    pub(super) fixed: Arc<AtomicBool>,
    pub(super) inside: Arc<AtomicUsize>,
    pub(super) most_inside: Arc<AtomicUsize>,
    /// Handler calls so far, kept or not.
    pub(super) calls: Arc<AtomicUsize>,
}

impl TallyProjection {
    pub(super) fn new(name: &str, aggregate: &str) -> Self {
        Self {
            name: name.to_string(),
            version: 1,
            aggregate: aggregate.to_string(),
            fixed: Arc::new(AtomicBool::new(false)),
            inside: Arc::new(AtomicUsize::new(0)),
            most_inside: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }
}

#[async_trait]
impl Projection for TallyProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.clone()])
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        /// Counts the handler as left even when its future is dropped (an aborted runner).
        struct Inside<'a>(&'a AtomicUsize);
        impl Drop for Inside<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        let _inside = Inside(&self.inside);
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        async {
            let n = payload_n(&event.payload);
            if n == POISON && !self.fixed.load(Ordering::SeqCst) {
                return Err("poison event".into());
            }
            let id = event.stream.id();
            let mut tally: Tally = view.get_model(id).await?.unwrap_or_default();
            if event.version <= tally.last {
                tally.repeats += 1;
            } else if event.version != tally.last + 1 {
                tally.gaps += 1;
            }
            tally.count += 1;
            tally.sum += n;
            tally.last = tally.last.max(event.version);
            view.put_model(id, &tally)?;
            for shape in [
                format!("agg-{}", event.aggregate_type()),
                "total".to_string(),
                format!("type-{}", event.event_type),
            ] {
                let mut totals: Totals = view.get_model(&shape).await?.unwrap_or_default();
                totals.add(n);
                view.put_model(&shape, &totals)?;
            }
            Ok(())
        }
        .await
    }
}

/// What the view must hold: the fold over each stream.
pub(super) async fn expected_tallies(f: &Fixture, streams: &[StreamId]) -> BTreeMap<String, Tally> {
    let mut out = BTreeMap::new();
    for s in streams {
        let events = f.events.read_stream(s, 1, usize::MAX).await.expect("read stream");
        if events.is_empty() {
            continue;
        }
        out.insert(
            s.id().to_string(),
            Tally {
                count: events.len() as u64,
                sum: events.iter().map(|e| payload_n(&e.payload)).sum(),
                last: events.last().map_or(0, |e| e.version),
                repeats: 0,
                gaps: 0,
            },
        );
    }
    out
}

/// What the shared documents must hold: the fold over every stream (see [`shape_ids`]).
pub(super) async fn expected_shapes(f: &Fixture, streams: &[StreamId]) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for s in streams {
        for e in f.events.read_stream(s, 1, usize::MAX).await.expect("read stream") {
            let n = payload_n(&e.payload);
            for shape in [
                format!("agg-{}", e.aggregate_type()),
                "total".to_string(),
                format!("type-{}", e.event_type),
            ] {
                out.entry(shape).or_default().add(n);
            }
        }
    }
    out
}

/// The shared documents as the view holds them.
pub(super) async fn view_shapes(f: &Fixture, key: &ViewKey, ids: &[String]) -> BTreeMap<String, Totals> {
    let view = f.checkpoints.view(key).expect("view");
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(t) = view.load_model::<Totals>(id).await.expect("view document") {
            out.insert(id.clone(), t);
        }
    }
    out
}

pub(super) async fn view_tallies(f: &Fixture, key: &ViewKey, streams: &[StreamId]) -> BTreeMap<String, Tally> {
    let view = f.checkpoints.view(key).expect("view");
    let mut out = BTreeMap::new();
    for s in streams {
        if let Some(t) = view.load_model::<Tally>(s.id()).await.expect("view document") {
            out.insert(s.id().to_string(), t);
        }
    }
    out
}

/// Events skipped and events applied twice, comparing the view with the fold.
pub(super) fn anomalies(view: &BTreeMap<String, Tally>, fold: &BTreeMap<String, Tally>) -> (u64, u64) {
    let (mut skipped, mut twice) = (0, 0);
    for (id, want) in fold {
        let got = view.get(id).cloned().unwrap_or_default();
        skipped += want.count.saturating_sub(got.count) + got.gaps;
        twice += got.count.saturating_sub(want.count) + got.repeats;
    }
    (skipped, twice)
}

pub(super) fn fast(owner: &str) -> RunnerOptions {
    RunnerOptions::default()
        .with_owner(owner)
        .with_lease_ttl(Duration::from_secs(2))
        .with_page_size(16)
        .with_poll_between(Duration::from_millis(1), Duration::from_millis(20))
        .with_errors(ErrorPolicy {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
            ..ErrorPolicy::stop_after(1)
        })
}

pub(super) fn runner(f: &Fixture, projection: Arc<TallyProjection>, options: RunnerOptions) -> ProjectionHandle {
    ProjectionRunner::new(projection, Arc::clone(&f.events), Arc::clone(&f.checkpoints))
        .with_options(options)
        .spawn()
        .expect("spawn runner")
}

/// Waits until the runner has applied everything up to the log's current head.
pub(super) async fn settle(f: &Fixture, handle: &ProjectionHandle, within: Duration) {
    let head = f.events.head().await.expect("head");
    let covered = |s: &crate::projection::ProjectionStatus| {
        s.checkpoint
            .as_ref()
            .is_some_and(|c| head.positions().all(|p| p.offset <= 1 || c.next(p.partition) >= p))
    };
    if let Err(e) = handle.wait_for(within, covered).await {
        panic!("the runner did not catch up: {e}; status {:?}", handle.last_status());
    }
}

/// A small pseudo-random sequence (xorshift), seeded from the clock.
pub(super) struct Dice(u64);

impl Dice {
    pub(super) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        Self(seed | 1)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
