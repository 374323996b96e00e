//! Example 01: the User aggregate of the Go cqrsx package's example — create, change email, save, load, show the history.
//!
//! `cargo run -p example-basic-event-sourcing` runs on the in-memory store;
//! `cargo run -p example-basic-event-sourcing --features redis -- --backend redis` (with
//! `CQRSX_REDIS_URL`) and `--features mongo -- --backend mongo` (with `CQRSX_MONGO_URI`) run the
//! same flow on a server.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::sync::Arc;

use cqrsx_core::{Aggregate, Metadata, Repository};
use serde::{Deserialize, Serialize};

/// A user as the write side sees it.
#[derive(Debug, Default)]
struct User {
    email: String,
    name: String,
    email_changes: u32,
}

/// Everything that can happen to a user.
#[derive(Debug, Serialize, Deserialize)]
enum UserEvent {
    UserCreated { email: String, name: String },
    UserEmailUpdated { email: String },
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Event = UserEvent;

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserCreated { email, name } => {
                self.email.clone_from(email);
                self.name.clone_from(name);
            }
            UserEvent::UserEmailUpdated { email } => {
                self.email.clone_from(email);
                self.email_changes += 1;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> cqrsx_core::Result<()> {
    let stores = cqrsx_example_backend::connect("users").await?;
    let users = Repository::<User>::new(Arc::clone(&stores.events)).with_content_type(stores.content_type);
    println!("backend: {}", stores.name);
    // A server keeps the streams of earlier runs: give this run's user its own id there.
    let id = if stores.name == "in-memory" {
        "user-123".to_string()
    } else {
        format!("user-{}", cqrsx_core::Uuid::now_v7().simple())
    };
    let id = id.as_str();

    // Create the user and save: one append, expected version "no stream".
    let mut user = users.create(id)?;
    user.record_with(
        UserEvent::UserCreated {
            email: "user@example.com".into(),
            name: "John Doe".into(),
        },
        Metadata::correlated("signup-42"),
    );
    let saved = users.save(&mut user).await?.map(|r| r.version);
    println!("created {id}, stream version {saved:?}");

    // Load, change the email, save: the expected version is the loaded one.
    let mut user = users.load(id).await?;
    user.record(UserEvent::UserEmailUpdated {
        email: "newemail@example.com".into(),
    });
    users.save(&mut user).await?;
    println!("changed email, stream version {}", user.version());

    // A second writer holding the old version loses, with the actual version in the error.
    let mut stale = users.create(id)?;
    stale.record(UserEvent::UserEmailUpdated {
        email: "late@example.com".into(),
    });
    match users.save(&mut stale).await {
        Err(e) => println!("stale writer refused: {e}"),
        Ok(_) => println!("stale writer was accepted (this must not happen)"),
    }

    let loaded = users.load(id).await?;
    let state = loaded.state();
    println!(
        "loaded {id} at version {}: {} <{}>, email changed {} time(s)",
        loaded.version(),
        state.name,
        state.email,
        state.email_changes
    );

    println!("history:");
    for (recorded, event) in users.history(id).await? {
        println!(
            "  v{} @{} {} {:?} correlation={:?}",
            recorded.version, recorded.position, recorded.event_type, event, recorded.metadata.correlation_id
        );
    }
    Ok(())
}
