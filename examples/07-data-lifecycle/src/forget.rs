//! Part 1: crypto-shredding. Users' email and name are sealed with a data key per user; Bob asks
//! to be forgotten, and his key is deleted.

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::crypto::{
    is_document_erased, is_erased, DocSubject, DocumentPolicy, EncryptedEventStore, EncryptedProjectionStore, Keys,
    LocalMasterKey, Policies, Protection, Subject, ERASED,
};
use cqrsx_core::projection::HandlerResult;
use cqrsx_core::{
    async_trait, Aggregate, EventFilter, EventStore, Position, Projection, ProjectionHandle, ProjectionRunner,
    ProjectionStore, RecordedEvent, Repository, Result, View,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{line, Backend, Say};

/// A user as the write side sees it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct User {
    /// Their email (personal).
    pub email: String,
    /// Their name (personal).
    pub name: String,
    /// Their plan (not personal).
    pub plan: String,
}

/// What happens to a user.
#[derive(Debug, Serialize, Deserialize)]
pub enum UserEvent {
    /// Signed up.
    UserRegistered {
        /// Personal.
        email: String,
        /// Personal.
        name: String,
        /// Not personal.
        plan: String,
    },
    /// A new email (personal).
    EmailChanged {
        /// Personal.
        email: String,
    },
    /// A new plan.
    PlanChanged {
        /// Not personal.
        plan: String,
    },
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Event = UserEvent;

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered { email, name, plan } => {
                self.email.clone_from(email);
                self.name.clone_from(name);
                self.plan.clone_from(plan);
            }
            UserEvent::EmailChanged { email } => self.email.clone_from(email),
            UserEvent::PlanChanged { plan } => self.plan.clone_from(plan),
        }
    }
}

/// Which fields of which events are personal, and whose: the user's, by aggregate id.
pub fn policies() -> Result<Policies> {
    Ok(Policies::new()
        .protect(
            "UserRegistered",
            Protection::new(Subject::AggregateId).field("/email")?.field("/name")?,
        )
        .protect("EmailChanged", Protection::new(Subject::AggregateId).field("/email")?))
}

/// The demo's master key. A service gets its own from a secret manager or a KMS (a
/// `MasterKey` implementation), never from its source.
const DEMO_MASTER_KEY: [u8; 32] = *b"example-07-demo-master-key-32byt";

/// The directory view: one document per user, email and name personal.
struct Directory {
    version: u32,
}

#[async_trait]
impl Projection for Directory {
    fn name(&self) -> &str {
        "user_directory"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["User"])
    }
    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let id = event.stream.id();
        let payload: serde_json::Value = serde_json::from_slice(&event.payload)?;
        let mut doc = view.get(id).await?.unwrap_or_else(|| json!({}));
        for field in ["email", "name", "plan"] {
            if let Some(value) = payload.get(field) {
                doc[field] = value.clone();
            }
        }
        view.put(id, doc)?;
        Ok(())
    }
}

/// What part 1 found.
#[derive(Debug, Clone, PartialEq)]
pub struct Forgotten {
    /// Bob's stream version before and after the erasure.
    pub versions: (u64, u64),
    /// Bob's event ids before and after (equal).
    pub same_event_ids: bool,
    /// Bob as loaded after the erasure (email and name erased, plan kept).
    pub bob: User,
    /// Ann as loaded after Bob's erasure (untouched).
    pub ann: User,
    /// Whether the raw event store held Bob's email or name in clear at any point.
    pub plaintext_in_raw_events: bool,
    /// Bob's directory document after the erasure, before any rebuild.
    pub view_after_forget: serde_json::Value,
    /// Whether the raw view storage of the rebuilt directory holds Bob's email or name.
    pub plaintext_in_rebuilt_view: bool,
    /// Bob's document in the rebuilt directory.
    pub rebuilt_view: serde_json::Value,
}

/// Runs part 1 on `app`.
/// Returns the rebuilt directory's runner, still running (part 2 runs beside it).
pub async fn run(app: &Backend, say: Say<'_>) -> Result<(Forgotten, ProjectionHandle)> {
    say("\n== 1. crypto-shredding: Bob asks to be forgotten".into());
    let master = Arc::new(LocalMasterKey::new(DEMO_MASTER_KEY, "example-07"));
    let keys = Arc::new(Keys::new(master, Arc::clone(&app.keys)));
    let events: Arc<dyn EventStore> = Arc::new(EncryptedEventStore::new(
        Arc::clone(&app.events),
        Arc::clone(&keys),
        policies()?,
    ));
    let views: Arc<dyn ProjectionStore> = Arc::new(
        EncryptedProjectionStore::new(Arc::clone(&app.projections), Arc::clone(&keys)).protect(
            "user_directory",
            DocumentPolicy::new(DocSubject::Id)?.field("/email")?.field("/name")?,
        ),
    );
    let users = Repository::<User>::new(Arc::clone(&events));
    let mut last = Position::default();
    for (id, email, name, plan) in [
        ("ann", "ann@example.com", "Ann Lee", "pro"),
        ("bob", "bob@example.com", "Bob Stone", "free"),
    ] {
        let mut user = users.create(id)?;
        user.record(UserEvent::UserRegistered {
            email: email.into(),
            name: name.into(),
            plan: plan.into(),
        });
        users.save(&mut user).await?;
    }
    let mut bob = users.load("bob").await?;
    bob.record(UserEvent::EmailChanged {
        email: "bob.stone@example.org".into(),
    });
    bob.record(UserEvent::PlanChanged { plan: "pro".into() });
    if let Some(done) = users.save(&mut bob).await? {
        last = done.position;
    }
    let bob_stream = users.stream_id("bob")?;
    let before = app.events.read_stream(&bob_stream, 1, 100).await?;
    let personal = ["bob@example.com", "bob.stone@example.org", "Bob Stone"];
    let in_clear = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        personal.iter().any(|p| text.contains(p))
    };
    let mut plaintext_in_raw_events = before
        .iter()
        .any(|e| in_clear(&e.payload) || in_clear(e.metadata.to_json().unwrap_or_default().as_bytes()));
    say(format!(
        "bob's first event as stored (raw): {}",
        String::from_utf8_lossy(&before[0].payload)
    ));

    let runner = ProjectionRunner::new(
        Arc::new(Directory { version: 1 }),
        Arc::clone(&events),
        Arc::clone(&views),
    )
    .spawn()?;
    runner.wait_until_caught_up(last, Duration::from_secs(60)).await?;
    let (_, directory) = views.active_view("user_directory").await?;
    say(format!(
        "directory: ann {} | bob {}",
        line(&directory.get("ann").await?.unwrap_or_default()),
        line(&directory.get("bob").await?.unwrap_or_default())
    ));

    keys.forget("bob").await?;
    say("forget(\"bob\"): his data key is deleted".into());
    let bob = users.load("bob").await?;
    let ann = users.load("ann").await?;
    let after = events.read_stream(&bob_stream, 1, 100).await?;
    let same_event_ids = before.iter().map(|e| e.event_id).eq(after.iter().map(|e| e.event_id));
    plaintext_in_raw_events |= app
        .events
        .read_stream(&bob_stream, 1, 100)
        .await?
        .iter()
        .any(|e| in_clear(&e.payload));
    say(format!(
        "bob loads at version {} ({} events, erased: {}): {:?}",
        bob.version(),
        after.len(),
        after.iter().filter(|e| is_erased(e)).count(),
        bob.state()
    ));
    say(format!("ann is untouched: {:?}", ann.state()));
    let view_after_forget = directory.get("bob").await?.unwrap_or_default();
    say(format!("bob's directory entry now reads {}", line(&view_after_forget)));
    runner.stop().await?;

    // A rebuild (version 2) reads the erased events: the new view never holds Bob's data.
    let rebuild = ProjectionRunner::new(
        Arc::new(Directory { version: 2 }),
        Arc::clone(&events),
        Arc::clone(&views),
    )
    .spawn()?;
    rebuild.wait_until_caught_up(last, Duration::from_secs(60)).await?;
    // Once caught up it is the active version, and it drops version 1's view (checkpoint and
    // documents) when it next checks, a third of its lease's time-to-live later.
    let old = rebuild.key().at_version(1)?;
    let dropped = tokio::time::timeout(Duration::from_secs(60), async {
        while app.projections.checkpoint(&old).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, cqrsx_core::Error>(())
    })
    .await;
    match dropped {
        Ok(done) => done?,
        Err(_) => return Err(cqrsx_core::Error::Config(format!("{old} was not dropped within 60 s"))),
    }
    say(format!(
        "the rebuild is active and dropped {old} with its sealed documents"
    ));
    let (key, raw_view) = app.projections.active_view("user_directory").await?;
    let raw_bob = raw_view.get("bob").await?.unwrap_or_default();
    let plaintext_in_rebuilt_view = in_clear(line(&raw_bob).as_bytes());
    let (_, rebuilt) = views.active_view("user_directory").await?;
    let rebuilt_view = rebuilt.get("bob").await?.unwrap_or_default();
    say(format!(
        "rebuilt {key}: bob reads {} (erased: {}); stored raw: {}",
        line(&rebuilt_view),
        is_document_erased(&rebuilt_view),
        line(&raw_bob)
    ));
    say(format!(
        "erased fields read as {ERASED:?}; ids, versions and positions are unchanged"
    ));
    let found = Forgotten {
        versions: (before.last().map_or(0, |e| e.version), bob.version()),
        same_event_ids,
        bob: bob.state().clone(),
        ann: ann.state().clone(),
        plaintext_in_raw_events,
        view_after_forget,
        plaintext_in_rebuilt_view,
        rebuilt_view,
    };
    Ok((found, rebuild))
}
