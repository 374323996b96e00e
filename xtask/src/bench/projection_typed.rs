//! The typed projection row: a [`TypedProjection`] (events decoded by its adapter, documents
//! typed) beside the untyped projection of `projection.rs` doing the same work on the same
//! events, in the same run.

use std::sync::Arc;
use std::time::Instant;

use cqrsx_core::projection::{Envelope, HandlerResult, RunnerOptions, Typed, TypedProjection, View, Views};
use cqrsx_core::testkit::CounterEvent;
use cqrsx_core::{async_trait, ContentType, EventCodec, EventFilter, Projection, ProjectionRunner, Query};

use super::projection::{caught_up_with_head, projection, seed, Sum, PAGE, STREAMS};
use super::store::Subject;
use super::{keep, median, BenchRow, Measure, Scale};
use crate::cmd::Result;

/// The untyped `Sums` as a typed projection: the same decode, read, sum and write per event.
struct TypedSums {
    name: String,
    aggregate: String,
}

#[async_trait]
impl TypedProjection for TypedSums {
    type Event = CounterEvent;
    type Document = Sum;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([self.aggregate.clone()])
    }

    async fn apply(&self, e: &Envelope<'_, CounterEvent>, view: &mut View<'_, Sum>) -> HandlerResult {
        let by = match e.event {
            CounterEvent::Added { by } => by,
            CounterEvent::Renamed(_) | CounterEvent::Reset => 0,
        };
        view.update(e.aggregate_id(), |doc| {
            doc.sum += by;
            doc.version = e.version();
        })
        .await?;
        Ok(())
    }
}

/// Runs `projection` from the first event to the head; the time it took.
async fn run_once(subject: &Subject, projection: Arc<dyn Projection>, total: u64) -> Result<Measure> {
    let runner = ProjectionRunner::new(
        projection,
        Arc::clone(&subject.events),
        Arc::clone(&subject.checkpoints),
    )
    .with_options(RunnerOptions::default().with_page_size(PAGE));
    let started = Instant::now();
    let handle = runner.spawn().map_err(|e| e.to_string())?;
    caught_up_with_head(subject, &handle).await?;
    let measure = Measure {
        ops: total,
        secs: started.elapsed().as_secs_f64(),
    };
    handle.stop().await.map_err(|e| e.to_string())?;
    Ok(measure)
}

/// Events/s of a typed projection from the start against the untyped one, rounds alternating.
pub async fn typed_throughput(subject: &Subject, scale: Scale, rows: &mut Vec<BenchRow>) -> Result<()> {
    let aggregate = format!("Typed{}", subject.run_id);
    let per_stream = (scale.projection_events / STREAMS).max(1);
    let expected = seed(subject, &aggregate, per_stream).await?;
    let total = (per_stream * STREAMS) as u64;
    let views = Views::new(Arc::clone(&subject.checkpoints));
    let codec = EventCodec::new(ContentType::Json);
    let (mut typed, mut untyped) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let name = format!("untyped{round}{}", subject.run_id);
        untyped.push(run_once(subject, projection(name, &aggregate), total).await?);
        let name = format!("typed{round}{}", subject.run_id);
        let sums = TypedSums {
            name: name.clone(),
            aggregate: aggregate.clone(),
        };
        let adapter = Typed::new(sums, codec.clone()).map_err(|e| e.to_string())?;
        typed.push(run_once(subject, Arc::new(adapter), total).await?);
        let docs = views
            .query::<Sum>(&name, &Query::all())
            .await
            .map_err(|e| e.to_string())?;
        let sum: i64 = docs.iter().map(|(_, d)| d.sum).sum();
        if docs.len() != STREAMS || sum != expected {
            return Err(format!(
                "the typed view holds {} documents summing to {sum}, not {STREAMS} summing to {expected}",
                docs.len()
            ));
        }
    }
    keep(
        rows,
        BenchRow::new(
            &subject.backend,
            "typed projection from the start (per event)",
            median(typed),
            "the same, untyped (per event)",
            median(untyped),
        )
        .note(format!(
            "{total} events into {STREAMS} documents, pages of {PAGE}, 3 rounds alternating, medians; target ≥ 0.9"
        )),
    );
    Ok(())
}
