//! Typed projections: events written at an old schema through a [`Repository`] reach the
//! handler upcast through the service's registry; an unknown event type is skipped or fails as
//! the projection chose; a corrupt payload of a known type always fails the handler (parked or
//! stopped by the policy, never skipped); typed documents read back through [`Views`] and
//! stored as their JSON.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::projection_support::{fast, settle};
use super::support::unique;
use super::Fixture;
use crate::aggregate::Aggregate;
use crate::codec::EventCodec;
use crate::error::Error;
use crate::event::{AppendResult, ContentType, EventFilter, NewEvent};
use crate::projection::{
    Envelope, ErrorPolicy, HandlerResult, ProjectionHandle, ProjectionRunner, RunnerOptions, RunnerState, Typed,
    TypedProjection, UnknownEvents, View, ViewKey, Views,
};
use crate::query::Query;
use crate::registry::EventRegistry;
use crate::repository::Repository;
use crate::stream::{ExpectedVersion, StreamId};

const SHOP: &str = "TypedShop";

/// The write side as first deployed: `Sold` at schema v1, without a currency.
#[derive(Default)]
struct ShopV1;

#[derive(Serialize, Deserialize)]
enum ShopEventV1 {
    Opened { name: String },
    Sold { amount: u64 },
}

impl Aggregate for ShopV1 {
    const TYPE: &'static str = SHOP;
    type Event = ShopEventV1;
    fn apply(&mut self, _: &ShopEventV1) {}
}

/// Today's write side: `Sold` at v2 with a currency, and a `Closed` the projection does not know.
#[derive(Default)]
struct ShopV2;

#[derive(Serialize, Deserialize)]
enum ShopEvent {
    Opened { name: String },
    Sold { amount: u64, currency: String },
    Closed,
}

impl Aggregate for ShopV2 {
    const TYPE: &'static str = SHOP;
    type Event = ShopEvent;
    fn apply(&mut self, _: &ShopEvent) {}
}

/// The events the projection reads: v2's shape, no `Closed`.
#[derive(Deserialize)]
enum SalesEvent {
    Opened { name: String },
    Sold { amount: u64, currency: String },
}

/// One shop's sales, and the envelope of the last event applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Sales {
    name: String,
    sales: u64,
    total: u64,
    currencies: Vec<String>,
    last_version: u64,
    last_event_id: String,
}

struct SalesProjection {
    name: String,
    unknown: UnknownEvents,
}

#[async_trait]
impl TypedProjection for SalesProjection {
    type Event = SalesEvent;
    type Document = Sales;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types([SHOP])
    }

    fn unknown_events(&self) -> UnknownEvents {
        self.unknown
    }

    async fn apply(&self, e: &Envelope<'_, SalesEvent>, view: &mut View<'_, Sales>) -> HandlerResult {
        view.update(e.aggregate_id(), |s| {
            match &e.event {
                SalesEvent::Opened { name } => s.name.clone_from(name),
                SalesEvent::Sold { amount, currency } => {
                    s.sales += 1;
                    s.total += amount;
                    if !s.currencies.contains(currency) {
                        s.currencies.push(currency.clone());
                    }
                }
            }
            s.last_version = e.version();
            s.last_event_id = e.event_id().to_string();
        })
        .await?;
        Ok(())
    }
}

fn typed_runner(
    f: &Fixture,
    codec: &EventCodec,
    name: &str,
    unknown: UnknownEvents,
    options: RunnerOptions,
) -> ProjectionHandle {
    let projection = SalesProjection {
        name: name.to_string(),
        unknown,
    };
    let typed = Typed::new(projection, codec.clone())
        .expect("an enum of events")
        .with_fault(f.typed_fault);
    ProjectionRunner::new(Arc::new(typed), Arc::clone(&f.events), Arc::clone(&f.checkpoints))
        .with_options(options)
        .spawn()
        .expect("spawn runner")
}

/// Waits for a runner to stop on an event, and returns the position it stopped at.
async fn stopped_at(handle: ProjectionHandle) -> crate::event::Position {
    let stopped = handle
        .wait_for(Duration::from_secs(60), |s| s.state == RunnerState::Failed)
        .await;
    assert!(
        stopped.is_ok() || handle.last_status().state == RunnerState::Failed,
        "the runner stops: {:?}",
        handle.last_status()
    );
    match handle.join().await {
        Err(Error::Handler { position, .. }) => position,
        other => panic!("the runner ends with the handler's error: {other:?}"),
    }
}

/// A typed projection decodes through the repository's codec and registry, and its errors
/// go through the runner's policy.
pub async fn typed_projection_decodes_through_the_registry(f: Fixture) {
    // Written at v1 by the old write side, then by today's at v2 with an upcaster from v1.
    let v1 = Repository::<ShopV1>::new(Arc::clone(&f.events));
    for (id, name, amounts) in [("a", "Alpha", vec![5, 7]), ("b", "Beta", vec![3])] {
        let mut shop = v1.create(id).expect("create");
        shop.record(ShopEventV1::Opened { name: name.into() });
        for amount in amounts {
            shop.record(ShopEventV1::Sold { amount });
        }
        v1.save(&mut shop).await.expect("save v1");
    }
    let registry = EventRegistry::builder()
        .event("Sold", 2)
        .upcaster("Sold", 1, |mut v| {
            v["currency"] = json!("EUR");
            Ok(v)
        })
        .build()
        .expect("registry");
    let v2 = Repository::<ShopV2>::new(Arc::clone(&f.events))
        .with_registry(Arc::new(registry))
        .expect("registry fits the enum");
    let mut shop = v2.load("a").await.expect("load a");
    shop.record(ShopEvent::Sold {
        amount: 10,
        currency: "USD".into(),
    });
    shop.record(ShopEvent::Closed);
    v2.save(&mut shop).await.expect("save v2");
    let codec = v2.codec().clone();
    let stream_a = StreamId::new(SHOP, "a").expect("stream");
    let events_a = f.events.read_stream(&stream_a, 1, usize::MAX).await.expect("read a");
    assert_eq!(events_a.len(), 5);
    assert_eq!(events_a[1].schema_version, 1, "the first sales were written at v1");
    let (sold_v2, closed) = (&events_a[3], &events_a[4]);

    // Skipping unknown types: every sale arrives in v2's shape; `Closed` is passed over.
    let name = unique("sales");
    let handle = typed_runner(&f, &codec, &name, UnknownEvents::Skip, fast("typed"));
    settle(&f, &handle, Duration::from_secs(60)).await;
    let status = handle.status().await;
    assert!(status.state != RunnerState::Failed && status.parked == 0, "{status:?}");
    let views = Views::new(Arc::clone(&f.checkpoints));
    let a = views.get::<Sales>(&name, "a").await.expect("get a");
    let want_a = Sales {
        name: "Alpha".into(),
        sales: 3,
        total: 22,
        currencies: vec!["EUR".into(), "USD".into()],
        last_version: 4,
        last_event_id: sold_v2.event_id.to_string(),
    };
    assert_eq!(
        a.as_ref(),
        Some(&want_a),
        "v1 sales upcast, v2 as written, Closed skipped"
    );
    let stored = f
        .checkpoints
        .view(&ViewKey::new(&name, 1).expect("key"))
        .expect("view")
        .get("a")
        .await
        .expect("raw get");
    assert_eq!(
        stored,
        Some(json!({
            "name": "Alpha", "sales": 3, "total": 22, "currencies": ["EUR", "USD"],
            "last_version": 4, "last_event_id": sold_v2.event_id.to_string(),
        })),
        "the document is stored as the JSON its type serializes to"
    );
    let by_total = views
        .query::<Sales>(&name, &Query::all().sort_desc("total"))
        .await
        .expect("query");
    let ids: Vec<(&str, u64)> = by_total.iter().map(|(id, s)| (id.as_str(), s.total)).collect();
    assert_eq!(ids, [("a", 22), ("b", 3)]);
    assert_eq!(
        views
            .get_value(&name, "b")
            .await
            .expect("untyped get")
            .map(|v| v["currencies"].clone()),
        Some(json!(["EUR"]))
    );
    handle.stop().await.expect("stop");

    // Failing on unknown types: the runner stops at `Closed`, with everything before applied.
    let name = unique("strict");
    let handle = typed_runner(&f, &codec, &name, UnknownEvents::Fail, fast("strict"));
    assert_eq!(stopped_at(handle).await, closed.position, "stops at the unknown type");
    let a = views.get::<Sales>(&name, "a").await.expect("get a");
    assert_eq!(a.map(|s| (s.sales, s.total)), Some((3, 22)));

    // A corrupt payload of a known type fails the handler: parked, or stopped at; never skipped.
    let stream_c = StreamId::new(SHOP, "c").expect("stream");
    let corrupt = NewEvent::new("Sold", ContentType::Json, br#"{"amount": 4, "curr"#.to_vec()).with_schema_version(2);
    let appended: AppendResult = f
        .events
        .append(
            &stream_c,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json("Opened", &json!({ "name": "Gamma" })).expect("json"),
                corrupt,
                NewEvent::json("Sold", &json!({ "amount": 1, "currency": "EUR" }))
                    .expect("json")
                    .with_schema_version(2),
            ],
        )
        .await
        .expect("append");
    let events_c = f.events.read_stream(&stream_c, 1, usize::MAX).await.expect("read c");
    let corrupt_at = events_c[1].position;
    assert!(appended.version == 3);

    let name = unique("parking");
    let park = fast("parking").with_errors(ErrorPolicy {
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ErrorPolicy::park_after(1)
    });
    let handle = typed_runner(&f, &codec, &name, UnknownEvents::Skip, park);
    settle(&f, &handle, Duration::from_secs(60)).await;
    let parked = f
        .checkpoints
        .parked(&ViewKey::new(&name, 1).expect("key"))
        .await
        .expect("parked");
    let positions: Vec<_> = parked.iter().map(|p| p.position).collect();
    assert_eq!(
        positions,
        [corrupt_at],
        "the corrupt payload is parked, the unknown type is not: {parked:?}"
    );
    assert_eq!(parked[0].attempts, 2, "tried, and retried once");
    let c = views.get::<Sales>(&name, "c").await.expect("get c");
    assert_eq!(c.map(|s| (s.name, s.sales, s.total)), Some(("Gamma".to_string(), 1, 1)));
    handle.stop().await.expect("stop");

    let name = unique("stopping");
    let handle = typed_runner(&f, &codec, &name, UnknownEvents::Skip, fast("stopping"));
    assert_eq!(stopped_at(handle).await, corrupt_at, "stops at the corrupt payload");
}
