//! The migration rows: events/s of a store-to-store migration from memory into a backend, in
//! exact order and grouped by stream, beside the same events appended one batch at a time.

use std::sync::Arc;
use std::time::Instant;

use cqrsx_core::memory::InMemoryEventStore;
use cqrsx_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use cqrsx_migrate::{Migration, MigrationOptions, Order, Stores};

use super::{keep, time, BenchRow, Scale};
use crate::cmd::{say, Result};

/// Events per append in the source: each stream gets runs of this many.
const RUN: usize = 10;

/// A source of `scale.migration_events` events over `scale.migration_streams` streams,
/// appended in runs of [`RUN`] events, the streams taking turns.
async fn source(scale: Scale) -> Result<Arc<InMemoryEventStore>> {
    let store = Arc::new(InMemoryEventStore::new());
    let streams = scale.migration_streams.max(1);
    let rounds = scale.migration_events / (streams * RUN);
    for round in 0..rounds {
        for s in 0..streams {
            let stream = StreamId::new("Account", format!("a{s}")).map_err(|e| e.to_string())?;
            let events = (0..RUN)
                .map(|n| {
                    NewEvent::json(
                        "Deposited",
                        &serde_json::json!({ "amount": n, "round": round, "memo": "bench migration" }),
                    )
                    .map(|e| e.with_metadata(Metadata::correlated(format!("c{s}-{round}"))))
                })
                .collect::<cqrsx_core::Result<Vec<_>>>()
                .map_err(|e| e.to_string())?;
            let expected = ExpectedVersion::Exact((round * RUN) as u64);
            store
                .append(&stream, expected, events)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(store)
}

/// The migration rows into the backend `backend`, each target a fresh one from `target`.
pub async fn rows<F, Fut>(backend: &str, scale: Scale, mut target: F, rows: &mut Vec<BenchRow>) -> Result<()>
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn EventStore>>>,
{
    let source = source(scale).await?;
    let total = scale.migration_events as u64;
    // Baseline: the same events appended into a fresh store as the application wrote them,
    // one append per run, in source order.
    let plain = target("append").await?;
    let page = source
        .read_all(cqrsx_core::Position::START, usize::MAX, &cqrsx_core::EventFilter::all())
        .await
        .map_err(|e| e.to_string())?;
    let baseline = time(total, async {
        for run in page.events.chunks(RUN) {
            let stream = run[0].stream.clone();
            let events = run
                .iter()
                .map(|e| NewEvent {
                    event_id: e.event_id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    content_type: e.content_type,
                    payload: e.payload.clone(),
                    metadata: e.metadata.clone(),
                })
                .collect();
            let expected = ExpectedVersion::Exact(run[0].version - 1);
            plain
                .append(&stream, expected, events)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await?;
    for (order, name) in [(Order::Exact, "exact"), (Order::GroupedByStream, "grouped")] {
        let into = target(name).await?;
        let state = std::env::temp_dir().join(format!(
            "cqrsx-bench-migrate-{}.json",
            cqrsx_core::Uuid::now_v7().simple()
        ));
        let options = MigrationOptions::new(&state).with_order(order).with_progress(false);
        let migration = Migration::open(Stores::new(source.clone()), Stores::new(into), options)
            .await
            .map_err(|e| e.to_string())?;
        let ours = time(total, async {
            migration.catch_up().await.map_err(|e| e.to_string())?;
            Ok(())
        })
        .await?;
        let started = Instant::now();
        let report = migration.verify().await.map_err(|e| e.to_string())?;
        let verify = started.elapsed();
        std::fs::remove_file(&state).ok();
        if !report.is_equal() {
            return Err(format!(
                "the {name} migration into {backend} differs: {:?}",
                report.differences.iter().take(5).collect::<Vec<_>>()
            ));
        }
        say(&format!(
            "{backend}: migration ({name}) of {total} events: {:.0} events/s, verified equal in {verify:?}",
            total as f64 / ours.secs
        ));
        keep(
            rows,
            BenchRow::new(
                backend,
                format!(
                    "migrate memory→{backend}, {name} order ({total} ev / {} streams)",
                    scale.migration_streams
                ),
                ours,
                "append the same, 1 call per run",
                baseline,
            )
            .note(format!("{RUN}-event runs; verify {:.1} s, equal", verify.as_secs_f64())),
        );
    }
    Ok(())
}
