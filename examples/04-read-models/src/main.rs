//! Example 04: read models. Users, products and orders feed five views through projection
//! runners — `user_view` (a user turns VIP once they have spent over 1,000), `order_summary`,
//! `customer_orders`, `product_popularity` and a `dashboard` that expires after five minutes.
//! Commands append while the runners apply; then each view is queried, `product_popularity`
//! is rebuilt as version 2 while version 1 keeps serving, and every runner's status and lag is
//! printed.
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

use cqrsx_core::projection::{ErrorPolicy, RunnerOptions};
use cqrsx_core::projection::{HandlerResult, ProjectionStatus};
use cqrsx_core::{
    async_trait, Aggregate, EventCodec, EventFilter, Filter, Position, Projection, ProjectionHandle, ProjectionRunner,
    ProjectionStore, Query, ReadStore, RecordedEvent, Repository, Result, View,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The write side: three aggregates.

#[derive(Debug, Default)]
struct User;

#[derive(Debug, Serialize, Deserialize)]
enum UserEvent {
    Registered { name: String, email: String },
    EmailChanged { email: String },
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Event = UserEvent;
    fn apply(&mut self, _: &UserEvent) {}
}

#[derive(Debug, Default)]
struct Product;

#[derive(Debug, Serialize, Deserialize)]
enum ProductEvent {
    Listed { name: String, price: u64 },
    Repriced { price: u64 },
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Event = ProductEvent;
    fn apply(&mut self, _: &ProductEvent) {}
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    product: String,
    quantity: u64,
    price: u64,
}

#[derive(Debug, Default)]
struct Order;

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

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Event = OrderEvent;
    fn apply(&mut self, _: &OrderEvent) {}
}

/// Decodes an event of the aggregate it belongs to.
fn decode<E: serde::de::DeserializeOwned>(event: &RecordedEvent) -> cqrsx_core::Result<E> {
    EventCodec::default().decode(event)
}

// ---------------------------------------------------------------------------------------------
// The read side: five projections, one view each.

/// A user with what they spent; VIP past 1,000.
struct UserView;

#[async_trait]
impl Projection for UserView {
    fn name(&self) -> &str {
        "user_view"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["User", "Order"])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let (id, change): (String, i64) = match event.aggregate_type() {
            "User" => {
                let id = event.stream.id();
                let mut user = view.get(id).await?.unwrap_or_else(|| json!({"orders": 0, "spent": 0}));
                match decode::<UserEvent>(event)? {
                    UserEvent::Registered { name, email } => {
                        user["name"] = json!(name);
                        user["email"] = json!(email);
                    }
                    UserEvent::EmailChanged { email } => user["email"] = json!(email),
                }
                user["vip"] = json!(user["spent"].as_i64().unwrap_or(0) > 1_000);
                view.put(id, user)?;
                return Ok(());
            }
            _ => match decode::<OrderEvent>(event)? {
                OrderEvent::Placed { customer, total, .. } => (customer, total as i64),
                OrderEvent::Cancelled { customer, total } => (customer, -(total as i64)),
                OrderEvent::Shipped { .. } => return Ok(()),
            },
        };
        let mut user = view.get(&id).await?.unwrap_or_else(|| json!({"orders": 0, "spent": 0}));
        let spent = user["spent"].as_i64().unwrap_or(0) + change;
        let orders = user["orders"].as_i64().unwrap_or(0) + change.signum();
        user["spent"] = json!(spent);
        user["orders"] = json!(orders);
        user["vip"] = json!(spent > 1_000);
        view.put(&id, user)?;
        Ok(())
    }
}

/// One document per order.
struct OrderSummary;

/// Stands for a service `order_summary` calls (the warehouse that reserves an order's stock):
/// `false` while it is down. `--serve` takes it down for a while.
static WAREHOUSE_UP: AtomicBool = AtomicBool::new(true);

#[async_trait]
impl Projection for OrderSummary {
    fn name(&self) -> &str {
        "order_summary"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["Order"])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let id = event.stream.id();
        let status = match decode::<OrderEvent>(event)? {
            OrderEvent::Placed { customer, lines, total } => {
                if !WAREHOUSE_UP.load(Ordering::SeqCst) {
                    return Err(format!("the warehouse is down: cannot reserve the stock of {id}").into());
                }
                let items: u64 = lines.iter().map(|l| l.quantity).sum();
                view.put(
                    id,
                    json!({"customer": customer, "items": items, "total": total, "status": "placed"}),
                )?;
                return Ok(());
            }
            OrderEvent::Shipped { .. } => "shipped",
            OrderEvent::Cancelled { .. } => "cancelled",
        };
        if let Some(mut order) = view.get(id).await? {
            order["status"] = json!(status);
            view.put(id, order)?;
        }
        Ok(())
    }
}

/// Each customer's orders.
struct CustomerOrders;

#[async_trait]
impl Projection for CustomerOrders {
    fn name(&self) -> &str {
        "customer_orders"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["Order"])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let order = event.stream.id().to_string();
        let (customer, status, total) = match decode::<OrderEvent>(event)? {
            OrderEvent::Placed { customer, total, .. } => (customer, "placed", Some(total)),
            OrderEvent::Shipped { customer } => (customer, "shipped", None),
            OrderEvent::Cancelled { customer, .. } => (customer, "cancelled", None),
        };
        let mut history = view.get(&customer).await?.unwrap_or_else(|| json!({"orders": {}}));
        let entry = &mut history["orders"][&order];
        entry["status"] = json!(status);
        if let Some(total) = total {
            entry["total"] = json!(total);
        }
        view.put(&customer, history)?;
        Ok(())
    }
}

/// Units sold and revenue per product; version 2 also counts the orders a product was in.
struct ProductPopularity {
    version: u32,
}

#[async_trait]
impl Projection for ProductPopularity {
    fn name(&self) -> &str {
        "product_popularity"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["Product", "Order"])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        if event.aggregate_type() == "Product" {
            if let ProductEvent::Listed { name, .. } = decode::<ProductEvent>(event)? {
                let id = event.stream.id();
                let mut product = view.get(id).await?.unwrap_or_else(|| json!({"units": 0, "revenue": 0}));
                product["name"] = json!(name);
                view.put(id, product)?;
            }
            return Ok(());
        }
        if let OrderEvent::Placed { lines, .. } = decode::<OrderEvent>(event)? {
            for line in lines {
                let mut product = view
                    .get(&line.product)
                    .await?
                    .unwrap_or_else(|| json!({"units": 0, "revenue": 0}));
                product["units"] = json!(product["units"].as_u64().unwrap_or(0) + line.quantity);
                product["revenue"] = json!(product["revenue"].as_u64().unwrap_or(0) + line.quantity * line.price);
                if self.version >= 2 {
                    product["orders"] = json!(product["orders"].as_u64().unwrap_or(0) + 1);
                }
                view.put(&line.product, product)?;
            }
        }
        Ok(())
    }
}

/// Today's totals, kept for five minutes after the last change.
struct Dashboard;

#[async_trait]
impl Projection for Dashboard {
    fn name(&self) -> &str {
        "dashboard"
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let mut today = view.get("today").await?.unwrap_or_else(|| json!({}));
        let mut bump = |field: &str, by: u64| {
            today[field] = json!(today[field].as_u64().unwrap_or(0) + by);
        };
        match (event.aggregate_type(), event.event_type.as_str()) {
            ("User", "Registered") => bump("users", 1),
            ("Product", "Listed") => bump("products", 1),
            ("Order", "Placed") => {
                if let OrderEvent::Placed { total, .. } = decode(event)? {
                    bump("orders", 1);
                    bump("revenue", total);
                }
            }
            ("Order", "Shipped") => bump("shipped", 1),
            ("Order", "Cancelled") => bump("cancelled", 1),
            _ => return Ok(()),
        }
        view.put_with_ttl("today", today, Duration::from_secs(5 * 60))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

fn start(projection: Arc<dyn Projection>, stores: &cqrsx_example_backend::Stores) -> Result<ProjectionHandle> {
    let options = RunnerOptions::default()
        .with_lease_ttl(Duration::from_secs(5))
        .with_poll_between(Duration::from_millis(2), Duration::from_millis(100))
        // An event that still fails after two retries is parked, and the rest goes on.
        .with_errors(ErrorPolicy {
            backoff: Duration::from_millis(20),
            ..ErrorPolicy::park_after(2)
        });
    ProjectionRunner::new(projection, Arc::clone(&stores.events), Arc::clone(&stores.checkpoints))
        .with_options(options)
        .spawn()
}

/// Waits until every runner has applied everything up to `positions`.
async fn caught_up(handles: &[&ProjectionHandle], positions: &BTreeMap<u32, Position>) -> Result<()> {
    for handle in handles {
        for position in positions.values() {
            handle.wait_until_caught_up(*position, Duration::from_secs(60)).await?;
        }
    }
    Ok(())
}

async fn view(checkpoints: &dyn ProjectionStore, projection: &str) -> Result<Arc<dyn ReadStore>> {
    Ok(checkpoints.active_view(projection).await?.1)
}

fn print_status(status: &ProjectionStatus) {
    println!(
        "  {:<22} {:<10} applied {:>3}  lag {:>2} (per partition {:?})  {:>8.0} events/s  parked {}  checkpoint {}",
        status.key.to_string(),
        format!("{:?}", status.state),
        status.applied,
        status.total_lag(),
        status.lag,
        status.events_per_sec,
        status.parked,
        status.checkpoint.as_ref().map(ToString::to_string).unwrap_or_default(),
    );
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
async fn serve(
    orders: &Repository<Order>,
    stores: &cqrsx_example_backend::Stores,
    summary: &ProjectionHandle,
    seconds: u64,
) -> Result<()> {
    println!(
        "
the warehouse goes down; order o9 comes in …"
    );
    WAREHOUSE_UP.store(false, Ordering::SeqCst);
    let mut order = orders.create("o9")?;
    order.record(OrderEvent::Placed {
        customer: "bo".into(),
        lines: vec![Line {
            product: "mouse".into(),
            quantity: 1,
            price: 40,
        }],
        total: 40,
    });
    orders.save(&mut order).await?;
    summary.wait_for(Duration::from_secs(60), |s| s.parked >= 1).await?;
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

#[tokio::main]
async fn main() -> Result<()> {
    let run = cqrsx_core::Uuid::now_v7().simple().to_string()[20..].to_string();
    let stores = cqrsx_example_backend::connect_fresh("read_models", &run).await?;
    println!("backend: {}", stores.name);
    let users = Repository::<User>::new(Arc::clone(&stores.events));
    let products = Repository::<Product>::new(Arc::clone(&stores.events));
    let orders = Repository::<Order>::new(Arc::clone(&stores.events));

    // The runners start first and follow the log while the commands below append.
    let user_view = start(Arc::new(UserView), &stores)?;
    let order_summary = start(Arc::new(OrderSummary), &stores)?;
    let customer_orders = start(Arc::new(CustomerOrders), &stores)?;
    let popularity_v1 = start(Arc::new(ProductPopularity { version: 1 }), &stores)?;
    let dashboard = start(Arc::new(Dashboard), &stores)?;

    let mut last: BTreeMap<u32, Position> = BTreeMap::new();
    let mut note = |result: Option<cqrsx_core::AppendResult>| {
        if let Some(r) = result {
            let p = last.entry(r.position.partition).or_insert(r.position);
            *p = (*p).max(r.position);
        }
    };
    for (id, name) in [("ana", "Ana"), ("bo", "Bo"), ("chen", "Chen"), ("dara", "Dara")] {
        let mut user = users.create(id)?;
        user.record(UserEvent::Registered {
            name: name.into(),
            email: format!("{id}@example.com"),
        });
        note(users.save(&mut user).await?);
    }
    let catalogue = [
        ("kbd", "Keyboard", 120),
        ("mouse", "Mouse", 40),
        ("screen", "Screen", 450),
        ("desk", "Desk", 600),
    ];
    for (id, name, price) in catalogue {
        let mut product = products.create(id)?;
        product.record(ProductEvent::Listed {
            name: name.into(),
            price,
        });
        note(products.save(&mut product).await?);
    }
    // Orders from several customers at once, as requests of a service would come in.
    let placed = [
        ("o1", "ana", vec![("screen", 2), ("kbd", 1)]),
        ("o2", "bo", vec![("mouse", 3)]),
        ("o3", "ana", vec![("desk", 1)]),
        ("o4", "chen", vec![("kbd", 2), ("mouse", 2)]),
        ("o5", "dara", vec![("screen", 1)]),
        ("o6", "bo", vec![("desk", 1), ("screen", 1)]),
        ("o7", "chen", vec![("mouse", 1)]),
    ];
    let mut tasks = Vec::new();
    for (order_id, customer, items) in placed {
        let orders = orders.clone();
        let lines: Vec<Line> = items
            .iter()
            .map(|(product, quantity)| Line {
                product: (*product).into(),
                quantity: *quantity,
                price: catalogue.iter().find(|c| c.0 == *product).map_or(0, |c| c.2),
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let total = lines.iter().map(|l| l.quantity * l.price).sum();
            let mut order = orders.create(order_id)?;
            order.record(OrderEvent::Placed {
                customer: customer.into(),
                lines,
                total,
            });
            orders.save(&mut order).await
        }));
    }
    for task in tasks {
        note(task.await.map_err(|e| cqrsx_core::Error::backend(false, e))??);
    }
    for (order_id, customer, ship) in [("o1", "ana", true), ("o2", "bo", true), ("o7", "chen", false)] {
        let mut order = orders.load(order_id).await?;
        order.record(if ship {
            OrderEvent::Shipped {
                customer: customer.into(),
            }
        } else {
            OrderEvent::Cancelled {
                customer: customer.into(),
                total: 40,
            }
        });
        note(orders.save(&mut order).await?);
    }

    // Read your own writes: wait until every runner has applied the last append.
    caught_up(
        &[&user_view, &order_summary, &customer_orders, &popularity_v1, &dashboard],
        &last,
    )
    .await?;
    let checkpoints = stores.checkpoints.as_ref();

    println!("\nuser_view — VIP customers (spent over 1,000):");
    let vips = Query::all().filter(Filter::eq("vip", true)).sort_desc("spent");
    for doc in view(checkpoints, "user_view").await?.query(&vips).await? {
        println!(
            "  {:<5} {:<7} spent {:>5} in {} orders",
            doc.id, doc.data["name"], doc.data["spent"], doc.data["orders"]
        );
    }
    println!("\norder_summary — the three largest orders:");
    let largest = Query::all().sort_desc("total").page(0, 3);
    for doc in view(checkpoints, "order_summary").await?.query(&largest).await? {
        println!(
            "  {:<3} {:<5} {} items, total {:>4}, {}",
            doc.id, doc.data["customer"], doc.data["items"], doc.data["total"], doc.data["status"]
        );
    }
    println!("\ncustomer_orders — chen:");
    if let Some(history) = view(checkpoints, "customer_orders").await?.get("chen").await? {
        println!("  {history}");
    }
    println!("\nproduct_popularity v1 — by units sold:");
    let popular = Query::all().sort_desc("units");
    for doc in view(checkpoints, "product_popularity").await?.query(&popular).await? {
        println!(
            "  {:<6} {:<10} {:>2} units, revenue {:>5}",
            doc.id, doc.data["name"], doc.data["units"], doc.data["revenue"]
        );
    }
    println!("\ndashboard (expires five minutes after its last change):");
    if let Some(today) = view(checkpoints, "dashboard").await?.get("today").await? {
        println!("  {today}");
    }

    // Rebuild: version 2 reads every event from the start into a view of its own while
    // version 1 keeps serving; once caught up it becomes the active version, version 1 steps
    // down and its view is dropped.
    println!("\nrebuilding product_popularity as version 2 (it also counts orders) …");
    let popularity_v2 = start(Arc::new(ProductPopularity { version: 2 }), &stores)?;
    popularity_v1.wait_for(Duration::from_secs(60), |s| s.ended()).await?;
    let (active, rebuilt) = checkpoints.active_view("product_popularity").await?;
    println!(
        "active version: {active}; version 1 ended {:?}",
        popularity_v1.status().await.state
    );
    for doc in rebuilt.query(&popular).await? {
        println!(
            "  {:<6} {:<10} {:>2} units in {} orders, revenue {:>5}",
            doc.id, doc.data["name"], doc.data["units"], doc.data["orders"], doc.data["revenue"]
        );
    }

    // Status and lag while an order comes in: the lag shows, then the runners catch up.
    let mut order = orders.create("o8")?;
    order.record(OrderEvent::Placed {
        customer: "dara".into(),
        lines: vec![Line {
            product: "desk".into(),
            quantity: 1,
            price: 600,
        }],
        total: 600,
    });
    let late = orders.save(&mut order).await?;
    let handles = [&user_view, &order_summary, &customer_orders, &popularity_v2, &dashboard];
    println!("\nstatus right after order o8:");
    for handle in handles {
        print_status(&handle.status().await);
    }
    if let Some(r) = late {
        caught_up(&handles, &BTreeMap::from([(r.position.partition, r.position)])).await?;
    }
    println!("status once caught up:");
    for handle in handles {
        // The lag is read from the log's head a few times a second.
        let status = handle.wait_for(Duration::from_secs(10), |s| s.total_lag() == 0).await?;
        print_status(&status);
    }
    let dara = view(checkpoints, "user_view").await?.get("dara").await?;
    println!("dara is now: {}", dara.unwrap_or_default());

    if let Some(seconds) = serve_for()? {
        serve(&orders, &stores, &order_summary, seconds).await?;
    }
    for handle in [user_view, order_summary, customer_orders, popularity_v2, dashboard] {
        handle.stop().await?;
    }
    let _ = popularity_v1.join().await;
    Ok(())
}
