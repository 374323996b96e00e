//! Example 06: event versioning. Version 1 of `UserRegistered` had one `name` field; version 2
//! splits it into `first_name` and `last_name`. A V1 event already in the store is read back as
//! V2 through an upcaster registered at start-up.
//!
//! `cargo run -p example-event-versioning` runs on the in-memory store; add
//! `--features redis -- --backend redis` or `--features mongo -- --backend mongo` for a server.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::sync::Arc;

use cqrsx_core::{Aggregate, EventRegistry, EventStore, ExpectedVersion, NewEvent, Repository, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Default)]
struct User {
    first_name: String,
    last_name: String,
}

/// The current (V2) events.
#[derive(Debug, Serialize, Deserialize)]
enum UserEvent {
    UserRegistered { first_name: String, last_name: String },
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Event = UserEvent;
    fn apply(&mut self, event: &UserEvent) {
        let UserEvent::UserRegistered { first_name, last_name } = event;
        self.first_name.clone_from(first_name);
        self.last_name.clone_from(last_name);
    }
}

/// V1 → V2: split `name` at the first space.
fn split_name(mut v1: Value) -> Result<Value, String> {
    let name = v1
        .get("name")
        .and_then(Value::as_str)
        .ok_or("V1 UserRegistered has no name")?
        .to_owned();
    let (first, last) = name.split_once(' ').unwrap_or((name.as_str(), ""));
    let object = v1.as_object_mut().ok_or("V1 UserRegistered is not an object")?;
    object.remove("name");
    object.insert("first_name".into(), json!(first));
    object.insert("last_name".into(), json!(last));
    Ok(v1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> cqrsx_core::Result<()> {
    let stores = cqrsx_example_backend::connect("users").await?;
    let store: Arc<dyn EventStore> = Arc::clone(&stores.events);

    println!("backend: {}", stores.name);
    // A server keeps the streams of earlier runs: give this run's user its own id there.
    let id = if stores.name == "in-memory" {
        "user-7".to_string()
    } else {
        format!("user-{}", cqrsx_core::Uuid::now_v7().simple())
    };

    // Yesterday's code wrote a V1 event.
    let stream = StreamId::new("User", id.as_str())?;
    let v1 = NewEvent::json("UserRegistered", &json!({ "name": "Ada Lovelace" }))?.with_schema_version(1);
    store.append(&stream, ExpectedVersion::NoStream, vec![v1]).await?;
    println!("stored UserRegistered v1: {{\"name\": \"Ada Lovelace\"}}");

    // Today's code declares V2 and the upcaster; the chain is checked here, at start-up.
    let registry = EventRegistry::builder()
        .event("UserRegistered", 2)
        .upcaster("UserRegistered", 1, split_name)
        .build()?;
    let users = Repository::<User>::new(Arc::clone(&store)).with_registry(Arc::new(registry))?;

    let user = users.load(&id).await?;
    println!(
        "loaded through the upcaster: first_name={:?} last_name={:?}",
        user.state().first_name,
        user.state().last_name
    );

    // New events are written as V2.
    let mut other = users.create("user-8")?;
    other.record(UserEvent::UserRegistered {
        first_name: "Grace".into(),
        last_name: "Hopper".into(),
    });
    users.save(&mut other).await?;
    for (recorded, event) in users.history("user-8").await? {
        println!("new event written as v{}: {event:?}", recorded.schema_version);
    }

    // A registry with a hole in a chain is refused before any read.
    let broken = EventRegistry::builder()
        .event("UserRegistered", 3)
        .upcaster("UserRegistered", 2, Ok)
        .build();
    if let Err(e) = broken {
        println!("start-up check: {e}");
    }
    Ok(())
}
