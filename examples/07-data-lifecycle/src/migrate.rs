//! Part 3: migration. An application on the embedded in-memory store moves to the backend under
//! test while it still takes writes: catch up, stop the writers, cut over, verify.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::memory::{InMemoryEventStore, InMemoryProjectionStore, InMemorySnapshotStore};
use cqrsx_core::projection::HandlerResult;
use cqrsx_core::{
    async_trait, EventStore, Position, Projection, ProjectionRunner, RecordedEvent, Repository, Result, View,
};
use cqrsx_migrate::{Migration, MigrationOptions, Stores};

use crate::archive::{Order, OrderEvent};
use crate::{Backend, Say};

/// Lines per order: the projection whose checkpoint and documents move with the events.
struct OrderLines;

#[async_trait]
impl Projection for OrderLines {
    fn name(&self) -> &str {
        "order_lines"
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let id = event.stream.id();
        let lines = view.get(id).await?.and_then(|d| d["lines"].as_u64()).unwrap_or(0);
        view.put(id, serde_json::json!({ "lines": lines + 1 }))?;
        Ok(())
    }
}

/// What part 3 found.
#[derive(Debug, Clone, PartialEq)]
pub struct Migrated {
    /// Events the source held at the cut-over.
    pub source_events: u64,
    /// Events written to the source while the migration caught up.
    pub written_during_copy: u64,
    /// Streams compared by the verification.
    pub streams_compared: u64,
    /// Projections copied (with their translated checkpoints and documents).
    pub projections: Vec<String>,
    /// Differences the verification found (none).
    pub differences: usize,
    /// Whether a migrated order reads the same, field by field but its position.
    pub order_reads_the_same: bool,
    /// The migrated view's document for that order.
    pub migrated_view: serde_json::Value,
}

const ORDERS: u64 = 40;
const WRITES: u64 = 150;

/// Runs part 3 into `target`, keeping the migration's progress in `state`.
pub async fn run(target: &Backend, state: &Path, progress: bool, say: Say<'_>) -> Result<Migrated> {
    say(format!(
        "\n== 3. migration: the in-memory store moves to {} while it takes writes",
        target.name
    ));
    let events = Arc::new(InMemoryEventStore::new());
    let projections = Arc::new(InMemoryProjectionStore::new());
    let orders = Repository::<Order>::new(events.clone());
    let mut last = Position::default();
    for n in 0..ORDERS {
        let mut order = orders.create(&format!("o-{n}"))?;
        for price in [100, 200, 300] {
            order.record(OrderEvent::LineAdded { price: price + n });
        }
        if let Some(done) = orders.save(&mut order).await? {
            last = done.position;
        }
    }
    let runner = ProjectionRunner::new(Arc::new(OrderLines), events.clone(), projections.clone()).spawn()?;
    runner.wait_until_caught_up(last, Duration::from_secs(60)).await?;

    let source = Stores::new(events.clone())
        .with_snapshots(Arc::new(InMemorySnapshotStore::new()))
        .with_projections(projections.clone());
    let sink = Stores::new(Arc::clone(&target.events))
        .with_snapshots(Arc::clone(&target.snapshots))
        .with_projections(Arc::clone(&target.projections));
    let migration = Migration::open(source, sink, MigrationOptions::new(state).with_progress(progress)).await?;

    // The application keeps writing while the migration catches up.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (orders, stop) = (Repository::<Order>::new(events.clone()), Arc::clone(&stop));
        async move {
            // At most WRITES, paced, so that a copy slower than the writers (a server that
            // scans) still catches up.
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) && written < WRITES {
                let mut order = orders.load_or_create(&format!("o-{}", written % ORDERS)).await?;
                order.record(OrderEvent::LineAdded { price: 1 });
                orders.save(&mut order).await?;
                written += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<u64, cqrsx_core::Error>(written)
        }
    });
    // Give the writers a head start, and catch up twice while they go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = migration.catch_up().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let caught_up = migration.catch_up_until(50, 10).await?;
    say(format!(
        "first catch-up: {} events copied, {} behind",
        first.events, first.lag
    ));
    say(format!(
        "caught up while writers wrote: {} events copied, {} behind",
        caught_up.events, caught_up.lag
    ));
    stop.store(true, Ordering::Relaxed);
    let written_during_copy = writer
        .await
        .map_err(|e| cqrsx_core::Error::Config(format!("the writer task: {e}")))??;
    let head = events.head().await?;
    let end = Position {
        partition: 0,
        offset: head.next(0).offset.saturating_sub(1),
    };
    runner.wait_until_caught_up(end, Duration::from_secs(60)).await?;
    runner.stop().await?;

    let done = migration.cut_over().await?;
    let v = &done.verification;
    say(format!(
        "cut-over: {} events after the writers stopped, copied in {:?}; projections {:?}",
        done.events, done.copy_time, done.projections
    ));
    say(format!(
        "verification: {} streams, {} events, {} documents, {} projections compared; {} differences{}",
        v.summary.streams,
        v.summary.events,
        v.summary.documents,
        v.summary.projections,
        v.differences.len(),
        if v.is_equal() { " — equal" } else { "" }
    ));
    for difference in v.differences.iter().take(10) {
        say(format!("  difference: {difference:?}"));
    }
    let stream = orders.stream_id("o-7")?;
    let before = events.read_stream(&stream, 1, 1000).await?;
    let after = target.events.read_stream(&stream, 1, 1000).await?;
    let order_reads_the_same = before.len() == after.len()
        && before.iter().zip(&after).all(|(a, b)| {
            (
                a.event_id,
                a.version,
                &a.event_type,
                &a.payload,
                &a.metadata,
                a.recorded_at,
            ) == (
                b.event_id,
                b.version,
                &b.event_type,
                &b.payload,
                &b.metadata,
                b.recorded_at,
            )
        });
    let (_, view) = target.projections.active_view("order_lines").await?;
    let migrated_view = view.get("o-7").await?.unwrap_or_default();
    say(format!(
        "o-7 on {}: {} events, same ids, versions, times and metadata: {order_reads_the_same}; order_lines says {}",
        target.name,
        after.len(),
        crate::line(&migrated_view)
    ));
    Ok(Migrated {
        source_events: v.summary.events,
        written_during_copy,
        streams_compared: v.summary.streams,
        projections: done.projections.clone(),
        differences: v.differences.len(),
        order_reads_the_same,
        migrated_view,
    })
}
