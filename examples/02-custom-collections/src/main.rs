//! Example 02: two bounded contexts sharing one MongoDB database, each with its own collection
//! names — a prefix per context and custom names for the event, counter and snapshot
//! collections — created with every index by `initialize_event_sourcing_schema`.
//!
//! Needs a MongoDB-wire server: `CQRSX_MONGO_URI=mongodb://127.0.0.1:27017 cargo run -p
//! example-custom-collections` (`cargo xtask test` shows how to get one without Docker).

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::sync::Arc;

use cqrsx_core::{Aggregate, Filter, Query, ReadStore, ReadStoreExt};
use cqrsx_mongo::{MongoClientManager, MongoConfig, MongoReadStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Invoice {
    customer: String,
    amount_cents: i64,
    paid: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum InvoiceEvent {
    Issued { customer: String, amount_cents: i64 },
    Paid,
}

impl Aggregate for Invoice {
    const TYPE: &'static str = "Invoice";
    type Event = InvoiceEvent;

    fn apply(&mut self, event: &InvoiceEvent) {
        match event {
            InvoiceEvent::Issued { customer, amount_cents } => {
                self.customer.clone_from(customer);
                self.amount_cents = *amount_cents;
            }
            InvoiceEvent::Paid => self.paid = true,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> cqrsx_core::Result<()> {
    let base = MongoConfig::from_env()?;
    let run = cqrsx_core::Uuid::now_v7().simple().to_string();
    let database = format!("cqrsx_example_02_{}", &run[20..]);

    // The billing context: prefix `billing_`, custom names for every collection.
    let billing = base
        .clone()
        .with_database(&database)
        .with_collection_prefix("billing_")
        .with_collections("invoice_events", "invoice_counters", "invoice_snapshots");
    // The shipping context in the same database: only a prefix, default names.
    let shipping = base.with_database(&database).with_collection_prefix("shipping_");

    let client = MongoClientManager::connect(billing.clone()).await?;
    client.initialize_event_sourcing_schema().await?;
    let shipping_client = MongoClientManager::connect(shipping.clone()).await?;
    shipping_client.initialize_event_sourcing_schema().await?;

    let invoices = cqrsx_mongo::repository::<Invoice>(&client);
    let mut invoice = invoices.create("inv-1")?;
    invoice.record(InvoiceEvent::Issued {
        customer: "ACME".into(),
        amount_cents: 12_500,
    });
    invoice.record(InvoiceEvent::Paid);
    invoices.save(&mut invoice).await?;
    let loaded = invoices.load("inv-1").await?;
    println!("invoice inv-1 at version {}: {:?}", loaded.version(), loaded.state());

    let summaries = Arc::new(MongoReadStore::new(client.clone(), "invoice_summaries")?);
    summaries.initialize().await?;
    summaries
        .save_model(
            "inv-1",
            &serde_json::json!({ "customer": loaded.state().customer, "paid": loaded.state().paid }),
        )
        .await?;
    let paid = summaries.query(&Query::all().filter(Filter::eq("paid", true))).await?;
    println!("paid invoices in the read model: {}", paid.len());

    let mut names = client
        .database()
        .list_collection_names()
        .await
        .map_err(|e| cqrsx_core::Error::backend(true, e))?;
    names.sort();
    println!("collections in {database}:");
    for name in &names {
        println!("  {name}");
    }
    println!(
        "billing uses {}, {}, {}; shipping uses {}, {}, {}",
        billing.events_collection(),
        billing.counters_collection(),
        billing.snapshots_collection(),
        shipping.events_collection(),
        shipping.counters_collection(),
        shipping.snapshots_collection()
    );
    client
        .database()
        .drop()
        .await
        .map_err(|e| cqrsx_core::Error::backend(true, e))?;
    println!("dropped {database}");
    Ok(())
}
