//! What the encryption cases share: the policies, the wrapped stores of a fixture, and a
//! seeded aggregate with personal data.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::support::{unique, BasicSnapshots, Counter, CounterEvent};
use super::Fixture;
use crate::crypto::{
    DocSubject, DocumentPolicy, EncryptedEventStore, EncryptedProjectionStore, EncryptedReadStore,
    EncryptedSnapshotStore, Keys, LocalMasterKey, MasterKey, Policies, Protection, Subject, SEALED_KEY,
};
use crate::event::Position;
use crate::event::{Metadata, RecordedEvent};
use crate::event_store::EventStore;
use crate::projection::{ProjectionStore, ViewKey};
use crate::raw::{Commit, Lease, ViewChange, ViewWrite};
use crate::read_store::ReadStore;
use crate::repository::Repository;
use crate::snapshot_store::SnapshotStore;
use crate::stream::StreamId;

/// The master key bytes of the suite's "process".
pub(crate) const MASTER: [u8; 32] = [0x42; 32];
/// Its id.
pub(crate) const MASTER_ID: &str = "suite-master";

pub(crate) fn master() -> Arc<dyn MasterKey> {
    Arc::new(LocalMasterKey::new(MASTER, MASTER_ID))
}

/// A `Keys` over the fixture's key store with its own cache (another process).
pub(crate) fn keys(f: &Fixture) -> Arc<Keys> {
    Arc::new(Keys::new(master(), Arc::clone(&f.keys)))
}

/// `Renamed` (whole payload, subject the aggregate id, metadata `ip`) and `Registered`
/// (`/email` erased as the default, `/phone` as null, subject at `/user`).
pub(crate) fn policies() -> Policies {
    Policies::new()
        .protect(
            "Renamed",
            Protection::new(Subject::AggregateId)
                .whole_payload(json!("[erased]"))
                .metadata("ip"),
        )
        .protect(
            "Registered",
            Protection::new(Subject::PayloadField("/user".into()))
                .field("/email")
                .and_then(|p| p.field_erased_as("/phone", Value::Null))
                .expect("valid pointers"),
        )
}

pub(crate) fn doc_policy() -> DocumentPolicy {
    DocumentPolicy::new(DocSubject::Id)
        .and_then(|p| p.field("/email"))
        .expect("valid pointer")
}

/// The fixture's stores behind the encryption wrappers.
pub(crate) struct Sealed {
    pub keys: Arc<Keys>,
    pub events: Arc<EncryptedEventStore>,
    pub snapshots: Arc<EncryptedSnapshotStore>,
    pub reads: EncryptedReadStore,
    pub views: EncryptedProjectionStore,
    pub repo: Repository<Counter>,
    pub projection: String,
}

pub(crate) fn sealed(f: &Fixture, keys: Arc<Keys>) -> Sealed {
    let events = Arc::new(EncryptedEventStore::new(
        Arc::clone(&f.events),
        Arc::clone(&keys),
        policies(),
    ));
    let snapshots = Arc::new(EncryptedSnapshotStore::new(Arc::clone(&f.snapshots), Arc::clone(&keys)));
    let repo = Repository::<Counter>::new(Arc::clone(&events) as Arc<dyn EventStore>).with_snapshots(Arc::new(
        BasicSnapshots::new(Arc::clone(&snapshots) as Arc<dyn SnapshotStore>, 5),
    ));
    let projection = unique("people");
    Sealed {
        reads: EncryptedReadStore::new(Arc::clone(&f.reads), Arc::clone(&keys), doc_policy(), "people"),
        views: EncryptedProjectionStore::new(Arc::clone(&f.checkpoints), Arc::clone(&keys))
            .protect(projection.clone(), doc_policy()),
        keys,
        events,
        snapshots,
        repo,
        projection,
    }
}

/// One person's data, written everywhere.
pub(crate) struct Person {
    pub id: String,
    pub stream: StreamId,
    pub name: String,
    pub ip: String,
    pub email: String,
    pub view: ViewKey,
}

impl Person {
    /// Every plaintext that must never be stored.
    pub fn secrets(&self) -> [&str; 3] {
        [&self.name, &self.ip, &self.email]
    }
}

/// Six events (a `Renamed` with the name and `ip` among `Added`s; a snapshot at 5), a read
/// model and a view document holding the email.
pub(crate) async fn seed(s: &Sealed) -> Person {
    let id = unique("person-");
    let person = Person {
        stream: s.repo.stream_id(&id).expect("stream"),
        name: unique("Name-"),
        ip: unique("ip-"),
        email: unique("mail-"),
        view: ViewKey::new(&s.projection, 1).expect("view key"),
        id,
    };
    let mut root = s.repo.create(&person.id).expect("create");
    for _ in 0..3 {
        root.record(CounterEvent::Added { by: 1 });
    }
    root.record_with(
        CounterEvent::Renamed(person.name.clone()),
        Metadata::default().with("ip", person.ip.clone()),
    );
    root.record(CounterEvent::Added { by: 1 });
    s.repo.save(&mut root).await.expect("save");
    let mut more = s.repo.load(&person.id).await.expect("load");
    more.record(CounterEvent::Added { by: 1 });
    s.repo.save(&mut more).await.expect("save");
    s.reads
        .save(&person.id, json!({ "email": person.email, "plan": "gold" }))
        .await
        .expect("read model");
    let lease = lease(s, &person.view).await;
    put_view(s, &lease, &person.id, json!({ "email": person.email, "count": 1 })).await;
    s.views.release(&lease).await.expect("release");
    person
}

pub(crate) async fn lease(s: &Sealed, key: &ViewKey) -> Lease {
    s.views
        .acquire(key, "crypto-case", Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("a free lease")
}

pub(crate) async fn put_view(s: &Sealed, lease: &Lease, id: &str, data: Value) {
    let commit = Commit {
        writes: vec![ViewWrite {
            id: id.into(),
            change: ViewChange::Put { data, ttl: None },
            position: Position::START,
        }],
        ..Commit::default()
    };
    s.views.commit(lease, commit).await.expect("view commit");
}

/// Fails if any of `secrets` is in the bytes.
pub(crate) fn assert_absent(what: &str, bytes: &[u8], secrets: &[&str]) {
    for secret in secrets {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{what} holds the plaintext {secret:?}");
    }
}

/// The raw events of a stream (through the unwrapped store), checked for plaintext.
pub(crate) async fn raw_events_hold_none(f: &Fixture, p: &Person) -> Vec<RecordedEvent> {
    let raw = f.events.read_stream(&p.stream, 1, 1_000).await.expect("raw read");
    for e in &raw {
        assert_absent(&format!("raw event {} payload", e.version), &e.payload, &p.secrets());
        let meta = e.metadata.to_json().expect("metadata json");
        assert_absent(
            &format!("raw event {} metadata", e.version),
            meta.as_bytes(),
            &p.secrets(),
        );
    }
    raw
}

/// The key version a raw event was sealed with (`None`: not sealed).
pub(crate) fn sealed_version(e: &RecordedEvent) -> Option<u64> {
    e.metadata
        .user
        .get(SEALED_KEY)
        .and_then(|v| v.get("v"))
        .and_then(Value::as_u64)
}

/// `writers` tasks, alternating between the stores, each appending one `Registered` event for
/// `subject` to a stream of its own at once; returns the streams.
pub(crate) async fn seal_all(stores: &[Arc<EncryptedEventStore>], writers: usize, subject: &str) -> Vec<StreamId> {
    let barrier = Arc::new(tokio::sync::Barrier::new(writers));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&stores[w % stores.len()]);
        let barrier = Arc::clone(&barrier);
        let subject = subject.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new("Person", unique("p-")).expect("stream");
            let payload = json!({ "user": subject, "email": format!("{subject}@example.com"), "phone": "555" });
            let event = crate::event::NewEvent::json("Registered", &payload).expect("json");
            barrier.wait().await;
            store
                .append(&stream, crate::stream::ExpectedVersion::NoStream, vec![event])
                .await
                .expect("append");
            stream
        }));
    }
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.expect("writer"));
    }
    streams
}

impl Sealed {
    /// The latest snapshot through the encrypted store.
    pub async fn snapshots_latest(&self, stream: &StreamId) -> crate::Result<Option<crate::snapshot::SnapshotRecord>> {
        self.snapshots.latest(stream, None).await
    }
}
