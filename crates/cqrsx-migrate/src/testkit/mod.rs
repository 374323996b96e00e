//! The migration suite every backend runs (feature `testkit`): each case is a plain async fn
//! over a fresh [`Fixture`] of the backend under test, which migrates into and out of fresh
//! in-memory stores. Expand [`crate::migration_tests!`] in a backend's tests.

mod support;

use std::time::Duration;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::testkit::{report, Fixture};
use cqrsx_core::{Error, ExpectedVersion, StreamId};

use crate::migration::Migration;
use crate::options::Order;
use crate::verify::{verify, Difference};
use support::{assert_raw_equal, options, positions, project, read_model, seed, stores, stream, Rng, Writers};

/// The in-memory fixture the cases migrate to or from.
fn memory() -> Fixture {
    Fixture::in_memory()
}

/// Migrates from the fixture's in-memory stores into the backend under test while writers
/// append, with the migration aborted and resumed several times.
pub async fn migrates_into_the_backend_under_writes(fixture: Fixture) {
    let pause = pause(&fixture);
    under_writes(memory(), fixture.clone(), fixture.label, "into", pause).await;
}

/// Migrates out of the backend under test into in-memory stores while writers append, with
/// the migration aborted and resumed several times.
pub async fn migrates_out_of_the_backend_under_writes(fixture: Fixture) {
    let pause = pause(&fixture);
    under_writes(fixture.clone(), memory(), fixture.label, "out of", pause).await;
}

/// The writers' pause between appends (ms; about 150 events/s per writer, 10 on servers that
/// scan, as FerretDB does, where imports are slow), and how long a killed run copies at least.
fn pause(fixture: &Fixture) -> u64 {
    if fixture.stress == cqrsx_core::testkit::Stress::FULL {
        5
    } else {
        100
    }
}

async fn under_writes(source: Fixture, target: Fixture, label: &str, way: &str, pause: u64) {
    let seeded = seed(&source, 30).await;
    let opts = options().with_page_size(50);
    let writers = Writers::start(source.events.clone(), 3, &seeded, pause);
    let mut rng = Rng::new();
    let mut kills = 0;
    for k in 0..5 {
        let migration = Migration::open(stores(&source), stores(&target), opts.clone())
            .await
            .expect("open");
        // Copies until killed, at a random point.
        let task = tokio::spawn(async move {
            loop {
                migration.catch_up().await.expect("catch-up");
                tokio::task::yield_now().await;
            }
        });
        // Later kills come later, so that a slow server (or a loaded machine) still copies
        // something before the last one.
        let at = 20 + 2 * pause + rng.below(100 + 4 * pause) + 250 * k;
        tokio::time::sleep(Duration::from_millis(at)).await;
        task.abort();
        match task.await {
            Err(e) if e.is_cancelled() => kills += 1,
            Err(e) => panic!("migration task: {e}"),
            Ok(()) => unreachable!("the copy loop only ends when killed"),
        }
    }
    let migration = Migration::open(stores(&source), stores(&target), opts.clone())
        .await
        .expect("open")
        .with_read_model(read_model(&source, &target));
    let copied_before = crate::state::State::load(&opts.state_path)
        .expect("state")
        .map_or(0, |s| s.events_copied);
    assert!(copied_before > 0, "the killed runs saved no progress");
    let caught = migration.catch_up_until(20, 5).await.expect("catch up");
    let appended = writers.stop().await;
    assert!(appended > 0, "the writers appended nothing");
    // The late projection catches up with the writers stopped: its checkpoint is the head.
    let head = source.events.head().await.expect("head");
    project(&source, "MigLate", Some(head), 4).await;
    let done = migration.cut_over().await.expect("cut-over");
    assert!(
        done.verification.is_equal(),
        "differences: {:#?}",
        done.verification.differences
    );
    assert!(done.verification.summary.events > 0 && done.verification.summary.streams >= 30);
    assert_eq!(done.snapshots, 8, "latest snapshots copied");
    let compared = assert_raw_equal(source.events.as_ref(), target.events.as_ref()).await;
    // Projections: MigLate applied everything, so it is at the target's head; MigEarly
    // translates exactly from a single-partition source.
    assert!(
        done.projections.contains(&"MigLate.v1".to_string()),
        "{:?}",
        done.needs_rebuild
    );
    let late = ViewKey::new("MigLate", 1).expect("key");
    assert_eq!(
        target.checkpoints.checkpoint(&late).await.expect("checkpoint"),
        Some(target.events.head().await.expect("head"))
    );
    if source.events.capabilities().partitions == 1 {
        assert!(done.needs_rebuild.is_empty(), "{:?}", done.needs_rebuild);
    }
    let early = ViewKey::new("MigEarly", 1).expect("key");
    if done.projections.contains(&early.to_string()) {
        let source_cp = source.checkpoints.checkpoint(&early).await.expect("cp").expect("cp");
        let target_cp = target.checkpoints.checkpoint(&early).await.expect("cp").expect("cp");
        let at_source = positions(source.events.as_ref()).await;
        for (k, at) in positions(target.events.as_ref()).await {
            let from = at_source.get(&k).expect("a target event from the source");
            assert_eq!(target_cp.covers(at), source_cp.covers(*from), "{k:?}");
        }
        assert_eq!(
            target
                .checkpoints
                .get(&early, "MigEarly-6")
                .await
                .expect("doc")
                .map(|d| d["d"].clone()),
            Some(6.into())
        );
    }
    report(
        label,
        &format!(
            "migration {way}: {appended} events appended during it, {kills} kills ({copied_before} events copied by the killed runs), last catch-up lag {}, cut-over {:?} (copy {:?}), {compared} events checked raw, {} projections copied, {} left for a rebuild",
            caught.lag, done.elapsed, done.copy_time, done.projections.len(), done.needs_rebuild.len()
        ),
    );
    std::fs::remove_file(&opts.state_path).ok();
}

/// Migrates in grouped order (no writers): verification equal, events raw-equal.
pub async fn migrates_in_grouped_order(fixture: Fixture) {
    let source = memory();
    seed(&source, 24).await;
    let opts = options().with_order(Order::GroupedByStream).with_page_size(17);
    let migration = Migration::open(stores(&source), stores(&fixture), opts.clone())
        .await
        .expect("open")
        .with_read_model(read_model(&source, &fixture));
    migration.catch_up().await.expect("catch up");
    let done = migration.cut_over().await.expect("cut-over");
    assert!(done.verification.is_equal(), "{:#?}", done.verification.differences);
    assert!(assert_raw_equal(source.events.as_ref(), fixture.events.as_ref()).await > 0);
    std::fs::remove_file(&opts.state_path).ok();
}

/// Verification lists every difference planted in a target built by hand.
pub async fn verification_reports_planted_differences(fixture: Fixture) {
    let source = memory();
    for i in 0..8 {
        support::append(source.events.as_ref(), i, 3).await.expect("append");
    }
    let (s, t) = (source.events.as_ref(), fixture.events.as_ref());
    for i in [0u64, 1, 2, 4, 5, 6, 7] {
        let mut events = s.read_stream(&stream(i), 1, 100).await.expect("read");
        match i {
            0 => events[1].payload = b"{\"altered\":true}".to_vec(),
            1 => {
                events.pop();
            }
            4 => events[0].metadata = events[0].metadata.clone().with("planted", 1),
            _ => {}
        }
        t.import(&stream(i), 0, events).await.expect("import");
    }
    t.append(&stream(2), ExpectedVersion::Exact(3), vec![support::event(2, 4)])
        .await
        .expect("extra");
    let extra_id = t.read_stream(&stream(2), 4, 1).await.expect("read")[0].event_id;
    let ids = |i: u64| async move { s.read_stream(&stream(i), 1, 100).await.expect("read") };
    for i in [5u64, 6, 7] {
        let record = cqrsx_core::snapshot::SnapshotRecord {
            stream: stream(i),
            version: 3,
            content_type: "application/json".into(),
            schema_version: 1,
            payload: b"{}".to_vec(),
            created_at: cqrsx_core::Timestamp(1),
        };
        source.snapshots.save(record.clone()).await.expect("snapshot");
        match i {
            5 => fixture.snapshots.save(record).await.expect("snapshot"),
            6 => fixture
                .snapshots
                .save(cqrsx_core::snapshot::SnapshotRecord {
                    payload: b"{\"x\":1}".to_vec(),
                    ..record
                })
                .await
                .expect("snapshot"),
            _ => {}
        }
    }
    for d in 0..5 {
        let doc = serde_json::json!({ "d": d });
        source.reads.save(&format!("doc-{d}"), doc.clone()).await.expect("save");
        match d {
            1 => fixture
                .reads
                .save("doc-1", serde_json::json!({ "d": 100 }))
                .await
                .expect("save"),
            4 => {}
            _ => fixture.reads.save(&format!("doc-{d}"), doc).await.expect("save"),
        }
    }
    fixture
        .reads
        .save("doc-extra", serde_json::json!({}))
        .await
        .expect("save");
    let src = crate::options::Stores::new(source.events.clone()).with_snapshots(source.snapshots.clone());
    let dst = crate::options::Stores::new(fixture.events.clone()).with_snapshots(fixture.snapshots.clone());
    let found = verify(&src, &dst, &[read_model(&source, &fixture)], 4)
        .await
        .expect("verify");
    let rm = |id: &str| ("accounts".to_string(), id.to_string());
    let mut expected = vec![
        Difference::EventContent {
            stream: stream(0),
            version: 2,
            event_id: ids(0).await[1].event_id,
        },
        Difference::StreamVersion {
            stream: stream(1),
            source: 3,
            target: 2,
        },
        Difference::EventCount {
            stream: stream(1),
            source: 3,
            target: 2,
        },
        Difference::EventMissing {
            stream: stream(1),
            version: 3,
            event_id: ids(1).await[2].event_id,
        },
        Difference::StreamVersion {
            stream: stream(2),
            source: 3,
            target: 4,
        },
        Difference::EventCount {
            stream: stream(2),
            source: 3,
            target: 4,
        },
        Difference::EventExtra {
            stream: stream(2),
            version: 4,
            event_id: extra_id,
        },
        Difference::StreamMissing { stream: stream(3) },
        Difference::EventContent {
            stream: stream(4),
            version: 1,
            event_id: ids(4).await[0].event_id,
        },
        Difference::SnapshotState {
            stream: stream(6),
            version: 3,
        },
        Difference::SnapshotMissing {
            stream: stream(7),
            version: 3,
        },
        Difference::DocumentContent {
            read_model: rm("doc-1").0,
            id: rm("doc-1").1,
        },
        Difference::DocumentMissing {
            read_model: rm("doc-4").0,
            id: rm("doc-4").1,
        },
        Difference::DocumentExtra {
            read_model: rm("doc-extra").0,
            id: rm("doc-extra").1,
        },
    ];
    let mut got = found.differences.clone();
    let key = |d: &Difference| format!("{d:?}");
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected);
    assert_eq!(found.summary.differences, 14);
    assert_eq!(
        (found.summary.streams, found.summary.events, found.summary.documents),
        (8, 24, 5)
    );
}

/// A target that holds a stream of the source is refused with a typed error before anything
/// is written, and so are options out of range.
pub async fn migration_refuses_a_conflicting_target(fixture: Fixture) {
    let source = memory();
    support::append(source.events.as_ref(), 1, 2).await.expect("append");
    support::append(source.events.as_ref(), 2, 2).await.expect("append");
    support::append(fixture.events.as_ref(), 2, 1).await.expect("append");
    let other = StreamId::new("Other", "x").expect("id");
    fixture
        .events
        .append(&other, ExpectedVersion::NoStream, vec![support::event(9, 1)])
        .await
        .expect("append");
    let before = crate::copy::catalogue(fixture.events.as_ref())
        .await
        .expect("catalogue");
    let opts = options();
    match Migration::open(stores(&source), stores(&fixture), opts.clone()).await {
        Err(Error::TargetNotEmpty { stream: s, .. }) => assert_eq!(s, stream(2)),
        Err(e) => panic!("expected TargetNotEmpty, got {e}"),
        Ok(_) => panic!("a target holding a source stream was accepted"),
    }
    assert!(!opts.state_path.exists(), "a refused migration wrote its state file");
    for bad in [opts.clone().with_page_size(0), opts.clone().with_concurrency(0)] {
        assert!(matches!(
            Migration::open(stores(&source), stores(&fixture), bad).await,
            Err(Error::InvalidInput(_))
        ));
    }
    assert_eq!(
        crate::copy::catalogue(fixture.events.as_ref())
            .await
            .expect("catalogue"),
        before
    );
    assert_eq!(fixture.events.stream_version(&stream(1)).await.expect("version"), 0);
}

/// A retention run (truncations) and deletes on the source between catch-up and cut-over
/// reach the target: a stream deleted, one truncated whole, one truncated in part and written
/// again; verification is equal and the target reads as the source does.
pub async fn truncations_and_deletes_during_the_migration_reach_the_target(fixture: Fixture) {
    for into_backend in [true, false] {
        let other = memory();
        let (source, target) = if into_backend {
            (&other, &fixture)
        } else {
            (&fixture, &other)
        };
        // Fresh streams per direction (the fixture is shared by both).
        let base = if into_backend { 100 } else { 200 };
        for i in base..base + 4 {
            support::append(source.events.as_ref(), i, 6).await.expect("append");
        }
        let migration = Migration::open(stores(source), stores(target), options())
            .await
            .expect("open");
        migration.catch_up().await.expect("catch up");
        let events = source.events.as_ref();
        events
            .delete_stream(&stream(base), ExpectedVersion::Exact(6))
            .await
            .expect("delete");
        events
            .truncate_before(&stream(base + 1), 7)
            .await
            .expect("truncate all");
        events
            .truncate_before(&stream(base + 2), 3)
            .await
            .expect("truncate part");
        support::append(events, base + 2, 1)
            .await
            .expect("append after truncation");
        let done = migration.cut_over().await.expect("cut over");
        assert!(done.verification.is_equal(), "{:#?}", done.verification.differences);
        let t = target.events.as_ref();
        assert!(matches!(
            t.stream_version(&stream(base)).await,
            Err(Error::StreamDeleted { .. })
        ));
        assert!(t.read_stream(&stream(base + 1), 1, 100).await.expect("read").is_empty());
        assert_eq!(t.stream_version(&stream(base + 1)).await.expect("version"), 6);
        let part: Vec<u64> = t
            .read_stream(&stream(base + 2), 1, 100)
            .await
            .expect("read")
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(part, (3..=7).collect::<Vec<_>>());
        assert_eq!(t.read_stream(&stream(base + 3), 1, 100).await.expect("read").len(), 6);
    }
}

/// Lists the cases for a callback macro (what [`crate::migration_tests!`] expands).
#[doc(hidden)]
#[macro_export]
macro_rules! __migration_cases {
    ($callback:path; $($args:tt)*) => {
        $callback! { $($args)* ;
            migrates_into_the_backend_under_writes,
            migrates_out_of_the_backend_under_writes,
            migrates_in_grouped_order,
            verification_reports_planted_differences,
            migration_refuses_a_conflicting_target,
            truncations_and_deletes_during_the_migration_reach_the_target,
        }
    };
}

/// Expands into one `#[tokio::test]` per migration case; `$fixture` is an async fn returning a
/// fresh core [`Fixture`] of the backend under test.
#[macro_export]
macro_rules! migration_tests {
    ($fixture:path) => {
        $crate::__migration_cases!($crate::migration_tests; @cases $fixture);
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture().await;
                $crate::testkit::$case(fixture).await;
            }
        )*
    };
}
