//! Example 01: the seed's User aggregate — create, change email, save, load, show the history —
//! on the in-memory store.
//!
//! `cargo run -p example-basic-event-sourcing`

use std::sync::Arc;

use cqrsx_core::memory::InMemoryEventStore;
use cqrsx_core::{Aggregate, EventStore, Metadata, Repository};
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
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let users = Repository::<User>::new(Arc::clone(&store));
    let out = std::io::stdout();
    let say = |line: String| {
        use std::io::Write;
        let _ = writeln!(out.lock(), "{line}");
    };

    // Create the user and save: one append, expected version "no stream".
    let mut user = users.create("user-123")?;
    user.record_with(
        UserEvent::UserCreated {
            email: "user@example.com".into(),
            name: "John Doe".into(),
        },
        Metadata::correlated("signup-42"),
    );
    let saved = users.save(&mut user).await?.map(|r| r.version);
    say(format!("created user-123, stream version {saved:?}"));

    // Load, change the email, save: the expected version is the loaded one.
    let mut user = users.load("user-123").await?;
    user.record(UserEvent::UserEmailUpdated {
        email: "newemail@example.com".into(),
    });
    users.save(&mut user).await?;
    say(format!("changed email, stream version {}", user.version()));

    // A second writer holding the old version loses, with the actual version in the error.
    let mut stale = users.create("user-123")?;
    stale.record(UserEvent::UserEmailUpdated {
        email: "late@example.com".into(),
    });
    match users.save(&mut stale).await {
        Err(e) => say(format!("stale writer refused: {e}")),
        Ok(_) => say("stale writer was accepted (this must not happen)".into()),
    }

    let loaded = users.load("user-123").await?;
    let state = loaded.state();
    say(format!(
        "loaded user-123 at version {}: {} <{}>, email changed {} time(s)",
        loaded.version(),
        state.name,
        state.email,
        state.email_changes
    ));

    say("history:".into());
    for (recorded, event) in users.history("user-123").await? {
        say(format!(
            "  v{} @{} {} {:?} correlation={:?}",
            recorded.version, recorded.position, recorded.event_type, event, recorded.metadata.correlation_id
        ));
    }
    Ok(())
}
