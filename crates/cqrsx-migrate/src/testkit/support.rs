//! What the migration cases share: stores of a fixture, seeded data, writers, raw checks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::raw::{Commit, ViewChange, ViewWrite};
use cqrsx_core::snapshot::SnapshotRecord;
use cqrsx_core::testkit::Fixture;
use cqrsx_core::{
    Checkpoint, ContentType, Error, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    RecordedEvent, StreamId, Timestamp,
};
use serde_json::json;

use crate::copy::catalogue;
use crate::options::{MigrationOptions, ReadModelPair, Stores};

/// Every store of a fixture as one side of a migration.
pub fn stores(f: &Fixture) -> Stores {
    Stores::new(Arc::clone(&f.events))
        .with_snapshots(Arc::clone(&f.snapshots))
        .with_projections(Arc::clone(&f.checkpoints))
}

/// The fixtures' read stores as a read model to copy.
pub fn read_model(source: &Fixture, target: &Fixture) -> ReadModelPair {
    ReadModelPair {
        name: "accounts".into(),
        source: Arc::clone(&source.reads),
        target: Arc::clone(&target.reads),
    }
}

/// A fresh state-file path, and options with no progress bar.
pub fn options() -> MigrationOptions {
    let path: PathBuf =
        std::env::temp_dir().join(format!("cqrsx-migrate-{}.json", cqrsx_core::Uuid::now_v7().simple()));
    MigrationOptions::new(path).with_progress(false)
}

/// A small pseudo-random generator (the cases vary their timing run to run).
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock; the seed is printed so that a failure can be replayed.
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        tracing::info!(seed, "migration case seed");
        Self(seed | 1)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Stream `i` of the seeded data.
pub fn stream(i: u64) -> StreamId {
    StreamId::new("MigOrder", format!("o{i}")).expect("a valid stream id")
}

/// Event `n` of a stream, with metadata, alternating content types and schema versions.
pub fn event(i: u64, n: u64) -> NewEvent {
    let mut e = if n % 3 == 0 {
        NewEvent::new("Shipped", ContentType::MessagePack, vec![0x92, n as u8, i as u8])
    } else {
        NewEvent::json("Placed", &json!({ "order": i, "n": n, "note": "ü ✓" })).expect("json")
    };
    e.schema_version = 1 + (n % 2) as u32;
    e.with_metadata(
        Metadata::correlated(format!("c-{i}"))
            .with_causation(format!("k-{n}"))
            .with("n", n),
    )
}

/// Appends `count` events to stream `i` at whatever version it is.
pub async fn append(store: &dyn EventStore, i: u64, count: u64) -> Result<(), Error> {
    let s = stream(i);
    loop {
        let v = store.stream_version(&s).await?;
        let events = (v + 1..=v + count).map(|n| event(i, n)).collect();
        let expected = if v == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(v)
        };
        match store.append(&s, expected, events).await {
            Err(Error::Conflict { .. }) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// What [`seed`] wrote.
pub struct Seeded {
    /// Streams written, numbered from 0.
    pub streams: u64,
    /// The stream deleted.
    pub deleted: u64,
}

/// Seeds a source: `streams` streams of 1 to 6 events (one partly truncated, one wholly, one
/// deleted), snapshots of every fourth, 25 read-model documents, and two projections with
/// views whose checkpoints are the head after the events (`MigEarly`) or none yet (`MigLate`,
/// given one at the cut-over).
pub async fn seed(f: &Fixture, streams: u64) -> Seeded {
    for i in 0..streams {
        append(f.events.as_ref(), i, 1 + i % 6).await.expect("seed append");
    }
    f.events.truncate_before(&stream(5), 3).await.expect("truncate part");
    f.events.truncate_before(&stream(4), 5).await.expect("truncate all");
    f.events
        .delete_stream(&stream(2), ExpectedVersion::Any)
        .await
        .expect("delete");
    for i in (0..streams).step_by(4).filter(|i| *i != 2) {
        let version = f.events.stream_version(&stream(i)).await.expect("version");
        f.snapshots
            .save(SnapshotRecord {
                stream: stream(i),
                version,
                content_type: "application/json".into(),
                schema_version: 1,
                payload: format!("{{\"state\":{i}}}").into_bytes(),
                created_at: Timestamp(1_700_000_000_000 + i),
            })
            .await
            .expect("snapshot");
    }
    for d in 0..25 {
        f.reads
            .save(
                &format!("acc-{d:02}"),
                json!({ "z": d, "a": [d, "x"], "nested": { "b": true, "a": d } }),
            )
            .await
            .expect("read model");
    }
    let head = f.events.head().await.expect("head");
    project(f, "MigEarly", Some(head), 7).await;
    project(f, "MigLate", None, 3).await;
    Seeded { streams, deleted: 2 }
}

/// Commits `docs` view documents and `checkpoint` to projection `name` (version 1) and
/// activates it.
pub async fn project(f: &Fixture, name: &str, checkpoint: Option<Checkpoint>, docs: u64) {
    let key = ViewKey::new(name, 1).expect("key");
    let lease = f
        .checkpoints
        .acquire(&key, "seeder", Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("a free lease");
    let writes = (0..docs)
        .map(|d| ViewWrite {
            id: format!("{name}-{d}"),
            change: ViewChange::Put {
                data: json!({ "d": d, "name": name }),
                ttl: None,
            },
            position: Position::START,
        })
        .collect();
    let commit = Commit {
        writes,
        checkpoint,
        ..Commit::default()
    };
    f.checkpoints.commit(&lease, commit).await.expect("commit");
    f.checkpoints.activate(&lease).await.expect("activate");
    f.checkpoints.release(&lease).await.expect("release");
}

/// Events one writer appends at most.
const WRITER_EVENTS: u64 = 200;

/// Writers appending to the source until stopped (or [`WRITER_EVENTS`] each): to seeded
/// streams (but the deleted one) and to new ones.
pub struct Writers {
    stop: Arc<AtomicBool>,
    /// Events appended so far.
    pub appended: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Starts `n` writers, each pausing `pause` ms (and up to 2× that) between appends.
    pub fn start(store: Arc<dyn EventStore>, n: u64, seeded: &Seeded, pause: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|w| {
                let (store, stop, appended) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&appended));
                let (streams, deleted) = (seeded.streams, seeded.deleted);
                tokio::spawn(async move {
                    let mut rng = Rng::new();
                    let mut k = 0;
                    // At most WRITER_EVENTS each: on a server where imports are slower than
                    // these appends (DocumentDB, FerretDB), each catch-up round would otherwise
                    // take longer than the last, and the copy would never converge.
                    let mut mine = 0;
                    while !stop.load(Ordering::Relaxed) && mine < WRITER_EVENTS {
                        let i = if rng.below(4) == 0 {
                            1000 + w * 10_000 + k
                        } else {
                            rng.below(streams)
                        };
                        k += 1;
                        if i == deleted {
                            continue;
                        }
                        let count = 1 + rng.below(3);
                        append(store.as_ref(), i, count).await.expect("writer append");
                        appended.fetch_add(count, Ordering::Relaxed);
                        mine += count;
                        // A pace the migration outruns, so the catch-up converges (one slower
                        // than the writers never would).
                        tokio::time::sleep(Duration::from_millis(pause + rng.below(pause))).await;
                    }
                })
            })
            .collect();
        Self { stop, appended, tasks }
    }

    /// Stops them and waits for them; returns how many events they appended.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        self.appended.load(Ordering::Relaxed)
    }
}

/// Reads the target directly: the same catalogue, and every stream's events equal the
/// source's field by field but the position. Returns the number of events compared.
pub async fn assert_raw_equal(source: &dyn EventStore, target: &dyn EventStore) -> u64 {
    let a = catalogue(source).await.expect("source catalogue");
    let b = catalogue(target).await.expect("target catalogue");
    assert_eq!(a, b, "catalogues differ");
    let mut compared = 0;
    for info in a.iter().filter(|s| !s.deleted) {
        let x = source
            .read_stream(&info.stream, 0, 1_000_000)
            .await
            .expect("source stream");
        let y = target
            .read_stream(&info.stream, 0, 1_000_000)
            .await
            .expect("target stream");
        assert_eq!(x.len(), y.len(), "{}: event counts", info.stream);
        for (e, f) in x.iter().zip(&y) {
            let unplaced = |r: &RecordedEvent| RecordedEvent {
                position: Position::default(),
                ..r.clone()
            };
            assert_eq!(unplaced(e), unplaced(f), "{} v{}", info.stream, e.version);
        }
        compared += x.len() as u64;
    }
    compared
}

/// Every event of a store: `(stream key, version)` to position.
pub async fn positions(store: &dyn EventStore) -> HashMap<(String, u64), Position> {
    let mut out = HashMap::new();
    for p in 0..store.capabilities().partitions {
        let mut from = Position::start_of(p);
        loop {
            let page = store.read_all(from, 1000, &EventFilter::all()).await.expect("read_all");
            for e in page.events {
                out.insert((e.stream.key().to_owned(), e.version), e.position);
            }
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    out
}
