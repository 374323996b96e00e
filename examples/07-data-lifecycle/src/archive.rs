//! Part 2: retention. Last year's orders, imported from the previous system with their original
//! times, are moved to a file archive; they still load, and the hot store keeps this year's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::archive::FileArchive;
use cqrsx_core::retention::{RetentionJob, RetentionPolicy, RetentionTotals};
use cqrsx_core::{
    Aggregate, ContentType, ExpectedVersion, Metadata, NewEvent, Position, ProjectionHandle, RecordedEvent, Repository,
    Result, StreamId, Timestamp, Uuid,
};
use serde::{Deserialize, Serialize};

use crate::{Backend, Say};

/// An order as the write side sees it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Order {
    /// Lines placed.
    pub lines: u32,
    /// Total in cents.
    pub total: u64,
    /// Whether it shipped.
    pub shipped: bool,
}

/// What happens to an order.
#[derive(Debug, Serialize, Deserialize)]
pub enum OrderEvent {
    /// A line added.
    LineAdded {
        /// Price in cents.
        price: u64,
    },
    /// Shipped.
    Shipped {
        /// Who carries it.
        carrier: String,
    },
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Event = OrderEvent;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::LineAdded { price } => {
                self.lines += 1;
                self.total += price;
            }
            OrderEvent::Shipped { .. } => self.shipped = true,
        }
    }
}

/// What part 2 found.
#[derive(Debug, Clone, PartialEq)]
pub struct Archived {
    /// The retention run's totals.
    pub totals: RetentionTotals,
    /// Old orders: events left in the hot store after the run (0).
    pub old_events_left_hot: u64,
    /// Whether every old order loads through the archive to the state it had before.
    pub old_orders_load_the_same: bool,
    /// This year's orders: events removed (0).
    pub recent_events_removed: u64,
    /// Whether an archived order still takes an append at its version.
    pub archived_order_takes_appends: bool,
}

const DAY: Duration = Duration::from_secs(24 * 3600);
const OLD_ORDERS: u64 = 6;
const RECENT_ORDERS: u64 = 3;

/// Runs part 2 on `app`, with the directory's runner (part 1) still running.
pub async fn run(app: &Backend, dir: &Path, directory: &ProjectionHandle, say: Say<'_>) -> Result<Archived> {
    say("\n== 2. retention: last year's orders go to a file archive".into());
    let orders = Repository::<Order>::new(Arc::clone(&app.events));
    let year_ago = Timestamp::now()
        .as_millis()
        .saturating_sub(400 * DAY.as_millis() as u64);
    let mut last = Position::default();
    for n in 0..OLD_ORDERS {
        // The previous system's history, imported with its own ids and times.
        let stream = orders.stream_id(&format!("old-{n}"))?;
        let mut events = Vec::new();
        let history = [
            OrderEvent::LineAdded { price: 1_000 + n },
            OrderEvent::LineAdded { price: 250 },
            OrderEvent::Shipped { carrier: "post".into() },
        ];
        for (v, event) in history.iter().enumerate() {
            events.push(recorded(
                &stream,
                v as u64 + 1,
                event,
                Timestamp(year_ago + v as u64 * 60_000),
            )?);
        }
        last = app.events.import(&stream, 0, events).await?.position;
    }
    for n in 0..RECENT_ORDERS {
        let mut order = orders.create(&format!("new-{n}"))?;
        order.record(OrderEvent::LineAdded { price: 4_200 });
        if let Some(done) = orders.save(&mut order).await? {
            last = done.position;
        }
    }
    let mut before = Vec::new();
    for n in 0..OLD_ORDERS {
        before.push(orders.load(&format!("old-{n}")).await?.state().clone());
    }
    // Retention never removes what a projection has not applied: let the directory catch up.
    directory.wait_until_caught_up(last, Duration::from_secs(60)).await?;

    let archive = Arc::new(FileArchive::new(dir));
    let report = RetentionJob::new(Arc::clone(&app.events))
        .with_snapshots(Arc::clone(&app.snapshots))
        .with_projections(Arc::clone(&app.projections))
        .with_archive(archive.clone())
        .with_policy(RetentionPolicy::new("Order")?.archive_untouched_after(365 * DAY))?
        .run()
        .await?;
    for stream in &report.streams {
        for held in &stream.held_back {
            say(format!(
                "  held back: {} versions {}..={}: {:?}",
                stream.stream, held.from_version, held.to_version, held.reason
            ));
        }
    }
    let t = &report.totals;
    say(format!(
        "retention run: {} order streams seen, {} archived whole, {} events moved to {}, {} held back",
        t.streams_seen,
        t.archived_streams,
        t.archived,
        dir.display(),
        t.held_back
    ));

    let mut old_events_left_hot = 0;
    let mut old_orders_load_the_same = true;
    let archived_orders = Repository::<Order>::new(Arc::clone(&app.events)).with_archive(archive);
    for (n, state) in before.iter().enumerate() {
        let id = format!("old-{n}");
        old_events_left_hot += app.events.read_stream(&orders.stream_id(&id)?, 1, 100).await?.len() as u64;
        let loaded = archived_orders.load(&id).await?;
        old_orders_load_the_same &= loaded.state() == state && loaded.version() == 3;
    }
    let mut recent_events_left = 0;
    for n in 0..RECENT_ORDERS {
        let stream = orders.stream_id(&format!("new-{n}"))?;
        recent_events_left += app.events.read_stream(&stream, 1, 100).await?.len() as u64;
    }
    let recent_events_removed = RECENT_ORDERS - recent_events_left.min(RECENT_ORDERS);
    let old0 = archived_orders.load("old-0").await?;
    say(format!(
        "old-0 from the archive: version {}, {:?} (hot store holds {} of its events)",
        old0.version(),
        old0.state(),
        old_events_left_hot
    ));
    // An archived stream keeps its version and stays writable.
    let appended = app
        .events
        .append(
            &orders.stream_id("old-0")?,
            ExpectedVersion::Exact(3),
            vec![NewEvent::json("Shipped", &serde_json::json!({ "carrier": "courier" }))?],
        )
        .await;
    let archived_order_takes_appends = appended.as_ref().is_ok_and(|r| r.version == 4);
    say(format!(
        "an append to archived old-0: {:?}",
        appended.map(|r| r.version)
    ));
    Ok(Archived {
        totals: report.totals,
        old_events_left_hot,
        old_orders_load_the_same,
        recent_events_removed,
        archived_order_takes_appends,
    })
}

/// An event of the previous system, as imported: its own id and time.
fn recorded(stream: &StreamId, version: u64, event: &OrderEvent, at: Timestamp) -> Result<RecordedEvent> {
    let (event_type, payload) = match event {
        OrderEvent::LineAdded { price } => ("LineAdded", serde_json::json!({ "price": price })),
        OrderEvent::Shipped { carrier } => ("Shipped", serde_json::json!({ "carrier": carrier })),
    };
    let payload = serde_json::to_vec(&payload).map_err(|e| cqrsx_core::Error::serialization("an order event", e))?;
    Ok(RecordedEvent {
        event_id: Uuid::now_v7(),
        stream: stream.clone(),
        version,
        position: Position::default(),
        event_type: event_type.into(),
        schema_version: 1,
        content_type: ContentType::Json,
        payload,
        metadata: Metadata::default().with("imported_from", "legacy-orders"),
        recorded_at: at,
    })
}
