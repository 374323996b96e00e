//! Example 04: read models. Users, products and orders feed five typed views — `user_view` (a
//! user turns VIP once they have spent over 1,000), `order_summary`, `customer_orders`,
//! `product_popularity` and a `dashboard` that expires after five minutes. Each projection gets
//! decoded events through the service's one registry, so a product listed by the previous
//! release (schema 1, `title`) reaches `product_popularity` upcast (schema 2, `name`).
//! `order_summary` runs as two shards shared by two runners. Commands append while the runners
//! apply; then each view is read through `Views`, `product_popularity` is rebuilt as version 2
//! while version 1 keeps serving, and every runner's status and lag is printed.
//!
//! `cargo run -p example-read-models` runs on the in-memory store; add `--features redis --
//! --backend redis` or `--features mongo -- --backend mongo` to run it on a server (under a
//! key prefix or database of its own run). With `--serve SECONDS` it then keeps its runners
//! up that long while a service `order_summary` depends on is down: an order is parked, and
//! the `cqrsx` command line (README, "Operating it") shows and replays it.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::projection::{
    Envelope, ErrorPolicy, HandlerResult, ProjectionStatus, RunnerOptions, ShardedHandle, ShardedRunner, Typed,
    TypedProjection, Views,
};
use cqrsx_core::{
    async_trait, Aggregate, ContentType, EventCodec, EventRegistry, ExpectedVersion, Filter, Metadata, Position,
    Projection, ProjectionHandle, ProjectionRunner, Query, Repository, Result, StreamId, View,
};
use cqrsx_example_backend::Stores;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The write side: three aggregates (their state does not matter here).

macro_rules! aggregate {
    ($name:ident, $type:literal, $event:ident) => {
        #[derive(Debug, Default)]
        struct $name;
        impl Aggregate for $name {
            const TYPE: &'static str = $type;
            type Event = $event;
            fn apply(&mut self, _: &$event) {}
        }
    };
}

#[derive(Debug, Serialize, Deserialize)]
enum UserEvent {
    Registered { name: String, email: String },
    EmailChanged { email: String },
}
aggregate!(User, "User", UserEvent);

/// `Listed` is at schema 2: the previous release wrote `title` where it now writes `name`.
#[derive(Debug, Serialize, Deserialize)]
enum ProductEvent {
    Listed { name: String, price: u64 },
}
aggregate!(Product, "Product", ProductEvent);

/// What the previous release appended (schema 1).
#[derive(Serialize)]
enum ProductEventV1 {
    Listed { title: String, price: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    product: String,
    quantity: u64,
    price: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum OrderEvent {
    Placed {
        customer: String,
        lines: Vec<Line>,
        total: u64,
    },
    Shipped {
        customer: String,
    },
    Cancelled {
        customer: String,
        total: u64,
    },
}
aggregate!(Order, "Order", OrderEvent);

/// The service's one registry: the write side and every projection decode through it.
fn registry() -> Result<Arc<EventRegistry>> {
    let registry = EventRegistry::builder()
        .event("Listed", 2)
        .upcaster("Listed", 1, |mut v| {
            let title = v.get_mut("title").map(serde_json::Value::take).ok_or("no title")?;
            v["name"] = title;
            Ok(v)
        })
        .build()?;
    Ok(Arc::new(registry))
}

// ---------------------------------------------------------------------------------------------
// The read side: five typed projections, one view each.

/// `user_view`: a user with what they spent; VIP past 1,000.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UserDoc {
    name: String,
    email: String,
    orders: i64,
    spent: i64,
    vip: bool,
}

/// The events `user_view` reads, of two aggregates (types it does not list are skipped).
#[derive(Deserialize)]
enum UserViewEvent {
    Registered { name: String, email: String },
    EmailChanged { email: String },
    Placed { customer: String, total: i64 },
    Cancelled { customer: String, total: i64 },
}

struct UserView;

#[async_trait]
impl TypedProjection for UserView {
    type Event = UserViewEvent;
    type Document = UserDoc;
    fn name(&self) -> &str {
        "user_view"
    }
    async fn apply(&self, e: &Envelope<'_, UserViewEvent>, view: &mut View<'_, UserDoc>) -> HandlerResult {
        let id = match &e.event {
            UserViewEvent::Placed { customer, .. } | UserViewEvent::Cancelled { customer, .. } => customer,
            _ => e.aggregate_id(),
        };
        view.update(id, |u| {
            match &e.event {
                UserViewEvent::Registered { name, email } => (u.name, u.email) = (name.clone(), email.clone()),
                UserViewEvent::EmailChanged { email } => u.email.clone_from(email),
                UserViewEvent::Placed { total, .. } => (u.orders, u.spent) = (u.orders + 1, u.spent + total),
                UserViewEvent::Cancelled { total, .. } => (u.orders, u.spent) = (u.orders - 1, u.spent - total),
            }
            u.vip = u.spent > 1_000;
        })
        .await?;
        Ok(())
    }
}

/// `order_summary`: one document per order (so it runs as shards: an order is one stream).
#[derive(Debug, Default, Serialize, Deserialize)]
struct OrderDoc {
    customer: String,
    items: u64,
    total: u64,
    status: String,
}

/// Stands for a service `order_summary` calls (the warehouse that reserves an order's stock):
/// `false` while it is down. `--serve` takes it down for a while.
static WAREHOUSE_UP: AtomicBool = AtomicBool::new(true);

struct OrderSummary;

#[async_trait]
impl TypedProjection for OrderSummary {
    type Event = OrderEvent;
    type Document = OrderDoc;
    fn name(&self) -> &str {
        "order_summary"
    }
    async fn apply(&self, e: &Envelope<'_, OrderEvent>, view: &mut View<'_, OrderDoc>) -> HandlerResult {
        let id = e.aggregate_id();
        if matches!(e.event, OrderEvent::Placed { .. }) && !WAREHOUSE_UP.load(Ordering::SeqCst) {
            return Err(format!("the warehouse is down: cannot reserve the stock of {id}").into());
        }
        view.update(id, |o| match &e.event {
            OrderEvent::Placed { customer, lines, total } => {
                o.customer.clone_from(customer);
                o.items = lines.iter().map(|l| l.quantity).sum();
                o.total = *total;
                o.status = "placed".into();
            }
            OrderEvent::Shipped { .. } => o.status = "shipped".into(),
            OrderEvent::Cancelled { .. } => o.status = "cancelled".into(),
        })
        .await?;
        Ok(())
    }
}

/// `customer_orders`: each customer's orders and their status.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CustomerDoc {
    orders: BTreeMap<String, String>,
}

struct CustomerOrders;

#[async_trait]
impl TypedProjection for CustomerOrders {
    type Event = OrderEvent;
    type Document = CustomerDoc;
    fn name(&self) -> &str {
        "customer_orders"
    }
    async fn apply(&self, e: &Envelope<'_, OrderEvent>, view: &mut View<'_, CustomerDoc>) -> HandlerResult {
        let (customer, status) = match &e.event {
            OrderEvent::Placed { customer, total, .. } => (customer, format!("placed ({total})")),
            OrderEvent::Shipped { customer } => (customer, "shipped".into()),
            OrderEvent::Cancelled { customer, .. } => (customer, "cancelled".into()),
        };
        view.update(customer, |c| {
            c.orders.insert(e.aggregate_id().to_string(), status);
        })
        .await?;
        Ok(())
    }
}

/// `product_popularity`: units sold and revenue per product; version 2 also counts orders.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProductDoc {
    name: String,
    units: u64,
    revenue: u64,
    orders: u64,
}

#[derive(Deserialize)]
enum PopularityEvent {
    Listed { name: String },
    Placed { lines: Vec<Line> },
}

struct ProductPopularity {
    version: u32,
}

#[async_trait]
impl TypedProjection for ProductPopularity {
    type Event = PopularityEvent;
    type Document = ProductDoc;
    fn name(&self) -> &str {
        "product_popularity"
    }
    fn version(&self) -> u32 {
        self.version
    }
    async fn apply(&self, e: &Envelope<'_, PopularityEvent>, view: &mut View<'_, ProductDoc>) -> HandlerResult {
        match &e.event {
            PopularityEvent::Listed { name } => view.update(e.aggregate_id(), |p| p.name.clone_from(name)).await?,
            PopularityEvent::Placed { lines } => {
                for line in lines {
                    view.update(&line.product, |p| {
                        p.units += line.quantity;
                        p.revenue += line.quantity * line.price;
                        p.orders += u64::from(self.version >= 2);
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}

/// `dashboard`: today's counts by what happened, and the revenue, kept for five minutes after
/// the last change.
type Today = BTreeMap<String, u64>;

#[derive(Deserialize)]
enum DashboardEvent {
    Registered {},
    Listed {},
    Placed { total: u64 },
    Shipped {},
    Cancelled {},
}

struct Dashboard;

#[async_trait]
impl TypedProjection for Dashboard {
    type Event = DashboardEvent;
    type Document = Today;
    fn name(&self) -> &str {
        "dashboard"
    }
    async fn apply(&self, e: &Envelope<'_, DashboardEvent>, view: &mut View<'_, Today>) -> HandlerResult {
        let mut today = view.get("today").await?.unwrap_or_default();
        *today.entry(e.event_type().to_string()).or_default() += 1;
        if let DashboardEvent::Placed { total } = e.event {
            *today.entry("revenue".into()).or_default() += total;
        }
        view.put_with_ttl("today", &today, Duration::from_secs(5 * 60))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

fn options(owner: &str) -> RunnerOptions {
    RunnerOptions::default()
        .with_owner(owner)
        .with_lease_ttl(Duration::from_secs(5))
        .with_poll_between(Duration::from_millis(2), Duration::from_millis(100))
        // An event that still fails after two retries is parked, and the rest goes on.
        .with_errors(ErrorPolicy {
            backoff: Duration::from_millis(20),
            ..ErrorPolicy::park_after(2)
        })
}

/// A typed projection over the service's codec, on a runner of its own.
fn start<P: TypedProjection>(projection: P, codec: &EventCodec, stores: &Stores) -> Result<ProjectionHandle> {
    let typed: Arc<dyn Projection> = Arc::new(Typed::new(projection, codec.clone())?);
    ProjectionRunner::new(typed, Arc::clone(&stores.events), Arc::clone(&stores.checkpoints))
        .with_options(options(&format!("example-04-{}", std::process::id())))
        .spawn()
}

/// `order_summary` as two shards; each call is one more runner sharing them (a process, in a
/// real deployment).
fn start_sharded(codec: &EventCodec, stores: &Stores, runner: &str) -> Result<ShardedHandle> {
    let typed: Arc<dyn Projection> = Arc::new(Typed::new(OrderSummary, codec.clone())?);
    ShardedRunner::new(typed, Arc::clone(&stores.events), Arc::clone(&stores.checkpoints), 2)
        .with_options(options(&format!("example-04-{}-{runner}", std::process::id())))
        .spawn()
}

fn print_status(s: &ProjectionStatus) {
    let checkpoint = s.checkpoint.as_ref().map(ToString::to_string).unwrap_or_default();
    println!(
        "  {:<28} {:<10} applied {:>3}  lag {:>2}  {:>8.0} events/s  parked {}  checkpoint {checkpoint}",
        s.key.to_string(),
        format!("{:?}", s.state),
        s.applied,
        s.total_lag(),
        s.events_per_sec,
        s.parked
    );
}

/// Every runner's status, then each shard of `order_summary` as the store has it.
async fn print_all(handles: &[&ProjectionHandle], summary: &ShardedHandle) -> Result<()> {
    for handle in handles {
        print_status(&handle.status().await);
    }
    for shard in summary.status().await? {
        let holder = shard.holder.as_ref().map(|h| h.owner.clone()).unwrap_or_default();
        let checkpoint = shard.checkpoint.as_ref().map(ToString::to_string).unwrap_or_default();
        println!(
            "  {:<28} held by {holder}  lag {:>2}  parked {}  checkpoint {checkpoint}",
            shard.key.to_string(),
            shard.total_lag(),
            shard.parked
        );
    }
    Ok(())
}

/// `--serve SECONDS`, when given.
fn serve_for() -> Result<Option<u64>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--serve") else {
        return Ok(None);
    };
    let seconds = args.get(at + 1).and_then(|s| s.parse().ok());
    seconds
        .map(Some)
        .ok_or_else(|| cqrsx_core::Error::Config("--serve takes a number of seconds".into()))
}

/// Keeps the runners up for `seconds` while the warehouse is down for the first ten: order o9
/// is parked by `order_summary`, for the `cqrsx` command line to show and replay.
async fn serve(orders: &Repository<Order>, stores: &Stores, summary: &ShardedHandle, seconds: u64) -> Result<()> {
    println!("\nthe warehouse goes down; order o9 comes in …");
    WAREHOUSE_UP.store(false, Ordering::SeqCst);
    place(orders, "o9", "bo", &[("mouse", 1)]).await?;
    while summary.status().await?.iter().map(|s| s.parked).sum::<u64>() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("order_summary parked o9; the warehouse is back in 10 s. Serving for {seconds} s:");
    match &stores.cli {
        Some(cli) => println!("  cqrsx {cli} projection parked order_summary"),
        None => println!("  (in memory: no other process sees this store; use --backend redis or mongo)"),
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(seconds))).await;
    WAREHOUSE_UP.store(true, Ordering::SeqCst);
    println!("the warehouse is back: `cqrsx … projection replay-parked order_summary` applies o9");
    tokio::time::sleep_until(until).await;
    Ok(())
}

/// The catalogue: id, name, price.
const CATALOGUE: [(&str, &str, u64); 4] = [
    ("kbd", "Keyboard", 120),
    ("mouse", "Mouse", 40),
    ("screen", "Screen", 450),
    ("desk", "Desk", 600),
];

/// An order's items: product and quantity.
type Items = &'static [(&'static str, u64)];

/// Places order `id` of `items` (product, quantity) at the catalogue's prices.
async fn place(
    orders: &Repository<Order>,
    id: &str,
    customer: &str,
    items: &[(&str, u64)],
) -> Result<Option<Position>> {
    let price = |product: &str| CATALOGUE.iter().find(|c| c.0 == product).map_or(0, |c| c.2);
    let lines: Vec<Line> = items
        .iter()
        .map(|&(p, quantity)| Line {
            product: p.into(),
            quantity,
            price: price(p),
        })
        .collect();
    let total = lines.iter().map(|l| l.quantity * l.price).sum();
    let mut order = orders.create(id)?;
    order.record(OrderEvent::Placed {
        customer: customer.into(),
        lines,
        total,
    });
    Ok(orders.save(&mut order).await?.map(|r| r.position))
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = cqrsx_core::Uuid::now_v7().simple().to_string()[20..].to_string();
    let stores = cqrsx_example_backend::connect_fresh("read_models", &run).await?;
    println!("backend: {}", stores.name);
    let registry = registry()?;
    let users = Repository::<User>::new(Arc::clone(&stores.events)).with_registry(Arc::clone(&registry))?;
    let products = Repository::<Product>::new(Arc::clone(&stores.events)).with_registry(Arc::clone(&registry))?;
    let orders = Repository::<Order>::new(Arc::clone(&stores.events)).with_registry(registry)?;
    let codec = orders.codec().clone();

    // The runners start first and follow the log while the commands below append.
    let user_view = start(UserView, &codec, &stores)?;
    let customer_orders = start(CustomerOrders, &codec, &stores)?;
    let popularity_v1 = start(ProductPopularity { version: 1 }, &codec, &stores)?;
    let dashboard = start(Dashboard, &codec, &stores)?;
    let summary_a = start_sharded(&codec, &stores, "a")?;
    let summary_b = start_sharded(&codec, &stores, "b")?;

    let mut last: BTreeMap<u32, Position> = BTreeMap::new();
    let mut note = |p: Option<Position>| {
        if let Some(p) = p {
            last.entry(p.partition).and_modify(|l| *l = (*l).max(p)).or_insert(p);
        }
    };
    for (id, name) in [("ana", "Ana"), ("bo", "Bo"), ("chen", "Chen"), ("dara", "Dara")] {
        let mut user = users.create(id)?;
        let email = format!("{id}@example.com");
        user.record(UserEvent::Registered {
            name: name.into(),
            email,
        });
        note(users.save(&mut user).await?.map(|r| r.position));
    }
    // The previous release listed the first two products (schema 1, with `title`).
    let previous_release = EventCodec::new(ContentType::Json);
    for (id, name, price) in &CATALOGUE[..2] {
        let listed = ProductEventV1::Listed {
            title: (*name).into(),
            price: *price,
        };
        let (stream, event) = (
            StreamId::new("Product", *id)?,
            previous_release.encode(&listed, Metadata::default())?,
        );
        let appended = stores
            .events
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await?;
        note(Some(appended.position));
    }
    for (id, name, price) in &CATALOGUE[2..] {
        let mut product = products.create(id)?;
        product.record(ProductEvent::Listed {
            name: (*name).into(),
            price: *price,
        });
        note(products.save(&mut product).await?.map(|r| r.position));
    }
    // Orders from several customers at once, as requests of a service would come in.
    let placed: [(&str, &str, Items); 7] = [
        ("o1", "ana", &[("screen", 2), ("kbd", 1)]),
        ("o2", "bo", &[("mouse", 3)]),
        ("o3", "ana", &[("desk", 1)]),
        ("o4", "chen", &[("kbd", 2), ("mouse", 2)]),
        ("o5", "dara", &[("screen", 1)]),
        ("o6", "bo", &[("desk", 1), ("screen", 1)]),
        ("o7", "chen", &[("mouse", 1)]),
    ];
    let tasks: Vec<_> = placed
        .into_iter()
        .map(|(id, customer, items)| {
            let orders = orders.clone();
            tokio::spawn(async move { place(&orders, id, customer, items).await })
        })
        .collect();
    for task in tasks {
        note(task.await.map_err(|e| cqrsx_core::Error::backend(false, e))??);
    }
    for (order_id, customer, ship) in [("o1", "ana", true), ("o2", "bo", true), ("o7", "chen", false)] {
        let mut order = orders.load(order_id).await?;
        let customer = customer.to_string();
        order.record(if ship {
            OrderEvent::Shipped { customer }
        } else {
            OrderEvent::Cancelled { customer, total: 40 }
        });
        note(orders.save(&mut order).await?.map(|r| r.position));
    }

    // Read your own writes: wait until every runner (and every shard) has applied the last append.
    let wait = Duration::from_secs(60);
    for p in last.values() {
        for handle in [&user_view, &customer_orders, &popularity_v1, &dashboard] {
            handle.wait_until_caught_up(*p, wait).await?;
        }
        summary_a.wait_until_caught_up(*p, wait).await?;
    }
    let views = Views::new(Arc::clone(&stores.checkpoints));

    println!("\nuser_view — VIP customers (spent over 1,000):");
    let vips = Query::all().filter(Filter::eq("vip", true)).sort_desc("spent");
    for (id, u) in views.query::<UserDoc>("user_view", &vips).await? {
        println!("  {id:<5} {:<7} spent {:>5} in {} orders", u.name, u.spent, u.orders);
    }
    println!("\norder_summary (2 shards) — the three largest orders:");
    let largest = Query::all().sort_desc("total").page(0, 3);
    for (id, o) in views.query::<OrderDoc>("order_summary", &largest).await? {
        println!(
            "  {id:<3} {:<5} {} items, total {:>4}, {}",
            o.customer, o.items, o.total, o.status
        );
    }
    // The second runner took its share of the shards from the first within a third of the TTL.
    let balanced = tokio::time::Instant::now() + wait;
    while (summary_a.held().len(), summary_b.held().len()) != (1, 1) && tokio::time::Instant::now() < balanced {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "  shards held: runner a {:?}, runner b {:?}",
        summary_a.held().iter().map(ToString::to_string).collect::<Vec<_>>(),
        summary_b.held().iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    println!("\ncustomer_orders — chen:");
    if let Some(chen) = views.get::<CustomerDoc>("customer_orders", "chen").await? {
        println!("  {:?}", chen.orders);
    }
    println!("\nproduct_popularity v1 — by units sold (kbd and mouse were listed with schema 1, upcast):");
    let popular = Query::all().sort_desc("units");
    for (id, p) in views.query::<ProductDoc>("product_popularity", &popular).await? {
        println!(
            "  {id:<6} {:<10} {:>2} units, revenue {:>5}",
            p.name, p.units, p.revenue
        );
    }
    println!("\ndashboard (expires five minutes after its last change):");
    if let Some(today) = views.get::<Today>("dashboard", "today").await? {
        println!("  {today:?}");
    }

    // Rebuild: version 2 reads every event from the start into a view of its own while
    // version 1 keeps serving; once caught up it becomes the active version, version 1 steps
    // down and its view is dropped.
    println!("\nrebuilding product_popularity as version 2 (it also counts orders) …");
    let popularity_v2 = start(ProductPopularity { version: 2 }, &codec, &stores)?;
    popularity_v1.wait_for(wait, |s| s.ended()).await?;
    let active: Vec<String> = views
        .active("product_popularity")
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "active: {active:?}; version 1 ended {:?}",
        popularity_v1.status().await.state
    );
    for (id, p) in views.query::<ProductDoc>("product_popularity", &popular).await? {
        let orders = p.orders;
        println!(
            "  {id:<6} {:<10} {:>2} units in {orders} orders, revenue {:>5}",
            p.name, p.units, p.revenue
        );
    }

    // Status and lag while an order comes in: the lag shows, then the runners catch up.
    let late = place(&orders, "o8", "dara", &[("desk", 1)]).await?;
    let handles = [&user_view, &customer_orders, &popularity_v2, &dashboard];
    println!("\nstatus right after order o8:");
    print_all(&handles, &summary_a).await?;
    if let Some(p) = late {
        for handle in handles {
            handle.wait_until_caught_up(p, wait).await?;
        }
        summary_a.wait_until_caught_up(p, wait).await?;
    }
    println!("status once caught up:");
    for handle in handles {
        // The lag is read from the log's head a few times a second.
        handle.wait_for(Duration::from_secs(10), |s| s.total_lag() == 0).await?;
    }
    print_all(&handles, &summary_a).await?;
    let dara = views.get::<UserDoc>("user_view", "dara").await?;
    println!("dara is now: {dara:?}");

    if let Some(seconds) = serve_for()? {
        serve(&orders, &stores, &summary_a, seconds).await?;
    }
    for handle in [user_view, customer_orders, popularity_v2, dashboard] {
        handle.stop().await?;
    }
    summary_a.stop().await?;
    summary_b.stop().await?;
    let _ = popularity_v1.join().await;
    Ok(())
}
