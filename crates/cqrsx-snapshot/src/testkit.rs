//! The snapshot manager's repository-level suite (feature `testkit`): plain async functions over
//! a core [`Fixture`], run by the in-memory backend here and by every backend crate's tests
//! through [`crate::snapshot_manager_tests!`].

use std::sync::Arc;

use cqrsx_core::snapshot::SnapshotRecord;
use cqrsx_core::testkit::{Case, Counter, CounterEvent, Fixture};
use cqrsx_core::{Repository, SnapshotStrategy, StreamId, Timestamp, Uuid};

use crate::{Always, EveryNEvents, Never, SnapshotManager, SnapshotSerializer, VersionInterval};

/// The strategy backends run the core conformance suite with: a [`SnapshotManager`] over the
/// fixture's snapshot store, every 10 events, MessagePack + zstd, keeping 3.
pub fn manager_strategy(f: &Fixture) -> Arc<dyn SnapshotStrategy<Counter>> {
    Arc::new(
        SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots))
            .with_policy(EveryNEvents(10))
            .with_serializer(SnapshotSerializer::new(
                crate::Format::MessagePack,
                crate::Compression::ZSTD_DEFAULT,
            ))
            .with_retention(crate::Retention::newest(3).expect("3")),
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::now_v7().simple())
}

fn event(i: i64) -> CounterEvent {
    match i % 7 {
        0 => CounterEvent::Renamed(format!("n{i}")),
        6 => CounterEvent::Reset,
        _ => CounterEvent::Added { by: i },
    }
}

/// Saves `total` events on a fresh counter in batches of `batch`; returns its id.
async fn write_counter(repo: &Repository<Counter>, total: i64, batch: i64) -> String {
    let id = unique("snapmgr-");
    let mut root = repo.create(&id).expect("create");
    for i in 0..total {
        root.record(event(i));
        if (i + 1) % batch == 0 {
            repo.save(&mut root).await.expect("save");
        }
    }
    repo.save(&mut root).await.expect("save");
    id
}

/// Every serializer: the manager writes snapshots stamped with its content type, and a load
/// from a snapshot equals a load by full replay.
pub async fn manager_load_equals_full_replay_with_every_serializer(f: Fixture) {
    let replay = Repository::<Counter>::new(Arc::clone(&f.events));
    for serializer in SnapshotSerializer::all() {
        let manager = Arc::new(
            SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots))
                .with_policy(EveryNEvents(20))
                .with_serializer(serializer),
        );
        let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(manager.clone());
        let id = write_counter(&repo, 75, 6).await;
        let stream = repo.stream_id(&id).expect("stream");
        let listed = manager.list(&stream).await.expect("list");
        assert!(!listed.is_empty(), "{serializer}: snapshots taken");
        assert!(listed.iter().all(|i| i.content_type == serializer.content_type()));
        let (snap, info) = repo.load_with_info(&id).await.expect("load");
        let full = replay.load(&id).await.expect("replay");
        assert_eq!(snap.state(), full.state(), "{serializer}: snapshot + tail == replay");
        assert_eq!(snap.version(), 75);
        let used = info.snapshot_version.expect("snapshot used");
        assert_eq!(used, listed[0].version);
        assert_eq!(info.events_replayed, 75 - used);
        let stats = manager.stats();
        assert_eq!(stats.hits, 1, "{serializer}");
        assert_eq!(stats.taken, listed.len() as u64);
        assert!(stats.bytes_written > 0 && stats.bytes_read > 0);
    }
}

/// Corrupt bytes, a wrong content type and a schema-version bump: each load falls back to
/// replay, is reported and counted, and the next save writes a usable snapshot again.
pub async fn manager_falls_back_on_unusable_snapshots(f: Fixture) {
    let replay = Repository::<Counter>::new(Arc::clone(&f.events));
    let manager = Arc::new(SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots)).with_policy(EveryNEvents(10)));
    let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(manager.clone());
    let id = write_counter(&repo, 30, 5).await;
    let stream = repo.stream_id(&id).expect("stream");
    let good = f
        .snapshots
        .latest(&stream, None)
        .await
        .expect("latest")
        .expect("a snapshot");
    assert_eq!(good.version, 30);

    let bad_records = [
        (
            "corrupt bytes",
            good.content_type.clone(),
            good.schema_version,
            b"\xff\x00{not json".to_vec(),
        ),
        (
            "wrong content type",
            "text/x-unknown".to_string(),
            good.schema_version,
            good.payload.clone(),
        ),
        (
            "mislabelled format",
            "application/msgpack".to_string(),
            good.schema_version,
            good.payload.clone(),
        ),
    ];
    let mut expected_fallbacks = 0;
    for (what, content_type, schema_version, payload) in bad_records {
        f.snapshots
            .save(SnapshotRecord {
                stream: stream.clone(),
                version: 30,
                content_type,
                schema_version,
                payload,
                created_at: Timestamp::now(),
            })
            .await
            .expect("overwrite snapshot");
        let (loaded, info) = repo.load_with_info(&id).await.expect(what);
        expected_fallbacks += 1;
        assert_eq!(
            loaded.state(),
            replay.load(&id).await.expect("replay").state(),
            "{what}"
        );
        assert_eq!(info.snapshot_version, None, "{what}");
        assert_eq!(info.events_replayed, 30, "{what}");
        assert!(info.fallback.is_some(), "{what}: reported");
        assert_eq!(manager.stats().fallbacks, expected_fallbacks, "{what}: counted");
    }

    // A save after a fallback snapshots again (the loaded root has no usable snapshot).
    let (mut root, _) = repo.load_with_info(&id).await.expect("load");
    expected_fallbacks += 1;
    root.record(CounterEvent::Added { by: 5 });
    repo.save(&mut root).await.expect("save");
    let (_, info) = repo.load_with_info(&id).await.expect("healed");
    assert_eq!(info.snapshot_version, Some(31), "a fresh snapshot heals the stream");

    // Schema bump: a manager at schema 2 ignores the schema-1 snapshot and counts it.
    let bumped = Arc::new(
        SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots))
            .with_policy(EveryNEvents(1))
            .with_schema_version(2),
    );
    let repo2 = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(bumped.clone());
    let (mut root, info) = repo2.load_with_info(&id).await.expect("load at schema 2");
    assert_eq!(info.snapshot_version, None);
    assert_eq!(info.events_replayed, 31);
    assert_eq!(root.state(), replay.load(&id).await.expect("replay").state());
    let stats = bumped.stats();
    assert_eq!((stats.schema_mismatches, stats.fallbacks, stats.hits), (1, 1, 0));
    root.record(CounterEvent::Added { by: 1 });
    repo2.save(&mut root).await.expect("save at schema 2");
    let newest = f.snapshots.latest(&stream, None).await.expect("latest").expect("some");
    assert_eq!((newest.version, newest.schema_version), (32, 2));
    let (_, info) = repo2.load_with_info(&id).await.expect("load at schema 2");
    assert_eq!(info.snapshot_version, Some(32));
    assert!(manager.stats().fallbacks >= expected_fallbacks);
}

/// Never, always and version-interval policies act through the repository; retention keeps
/// the newest N; `take` snapshots on demand and refuses unsaved events.
pub async fn manager_applies_policies_and_retention(f: Fixture) {
    let versions = |stream: StreamId| {
        let store = Arc::clone(&f.snapshots);
        async move {
            store
                .list(&stream)
                .await
                .expect("list")
                .iter()
                .map(|i| i.version)
                .collect::<Vec<_>>()
        }
    };

    let never = Arc::new(SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots)).with_policy(Never));
    let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(never.clone());
    let id = write_counter(&repo, 40, 4).await;
    let stream = repo.stream_id(&id).expect("stream");
    assert!(versions(stream.clone()).await.is_empty(), "never takes none");
    let root = repo.load(&id).await.expect("load");
    let info = never.take(&root).await.expect("take on demand");
    assert_eq!(info.version, 40);
    assert_eq!(versions(stream.clone()).await, vec![40]);
    let mut pending = root;
    pending.record(CounterEvent::Reset);
    assert!(never.take(&pending).await.is_err(), "unsaved events refuse a snapshot");
    assert_eq!(versions(stream).await, vec![40], "the refusal wrote nothing");

    let always = Arc::new(
        SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots))
            .with_policy(Always)
            .with_retention(crate::Retention::newest(2).expect("2")),
    );
    let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(always.clone());
    let id = write_counter(&repo, 12, 3).await;
    let stream = repo.stream_id(&id).expect("stream");
    assert_eq!(
        versions(stream.clone()).await,
        vec![12, 9],
        "always, keeping the newest 2"
    );
    let stats = always.stats();
    assert_eq!((stats.taken, stats.pruned), (4, 2));
    assert_eq!(
        always.latest_info(&stream).await.expect("info").map(|i| i.version),
        Some(12)
    );
    assert_eq!(always.delete_all(&stream).await.expect("delete"), 2);

    let interval = Arc::new(SnapshotManager::<Counter>::new(Arc::clone(&f.snapshots)).with_policy(VersionInterval(10)));
    let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_snapshots(interval);
    let id = write_counter(&repo, 35, 4).await;
    let stream = repo.stream_id(&id).expect("stream");
    assert_eq!(
        versions(stream).await,
        vec![32, 20, 12],
        "the saves that crossed 10, 20 and 30"
    );
}

/// The one list of snapshot-manager cases: it calls `$callback!` with the names after `$args`,
/// so that [`CASES`] and [`crate::snapshot_manager_tests!`] come from the same list.
#[doc(hidden)]
#[macro_export]
macro_rules! __snapshot_manager_cases {
    ($callback:path; $($args:tt)*) => {
        $callback! { $($args)* ;
            manager_load_equals_full_replay_with_every_serializer,
            manager_falls_back_on_unusable_snapshots,
            manager_applies_policies_and_retention,
        }
    };
}

macro_rules! case_list {
    ($(;)? $($name:ident),* $(,)?) => {
        /// Every case above with its name, for runners that take them as a list.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |f| Box::pin($name(f)))),*
        ];
    };
}

crate::__snapshot_manager_cases!(case_list;);

/// Expands into one `#[tokio::test]` per snapshot-manager case; `$fixture` is an async fn
/// returning a fresh core [`Fixture`].
#[macro_export]
macro_rules! snapshot_manager_tests {
    ($fixture:path) => {
        $crate::__snapshot_manager_cases!($crate::snapshot_manager_tests; @cases $fixture);
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
