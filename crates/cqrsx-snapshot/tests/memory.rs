//! The snapshot manager on the in-memory stores: its own suite, and the core conformance suite
//! with the manager as the repository's snapshot strategy.

use cqrsx_core::testkit::Fixture;

async fn fixture() -> Fixture {
    Fixture::in_memory()
}

async fn fixture_with_manager() -> Fixture {
    let f = Fixture::in_memory();
    let strategy = cqrsx_snapshot::testkit::manager_strategy(&f);
    f.with_strategy(strategy)
}

cqrsx_snapshot::snapshot_manager_tests!(fixture);

mod conformance {
    cqrsx_core::conformance_tests!(super::fixture_with_manager);
}

mod measured_policies {
    use std::sync::Arc;
    use std::time::Duration;

    use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
    use cqrsx_core::testkit::{Counter, CounterEvent};
    use cqrsx_core::Repository;
    use cqrsx_snapshot::{Adaptive, SnapshotManager, TimeSinceLast};

    fn repo(manager: Arc<SnapshotManager<Counter>>) -> Repository<Counter> {
        Repository::<Counter>::new(Arc::new(InMemoryEventStore::new())).with_snapshots(manager)
    }

    #[tokio::test]
    async fn adaptive_policy_acts_on_the_replay_time_the_repository_measured() {
        let manager = Arc::new(
            SnapshotManager::<Counter>::new(Arc::new(InMemorySnapshotStore::new())).with_policy(Adaptive {
                target: Duration::from_nanos(1),
                min_events: 5,
                max_events: 1_000,
            }),
        );
        let repo = repo(Arc::clone(&manager));
        let mut root = repo.create("a-1").expect("create");
        for i in 0..50 {
            root.record(CounterEvent::Added { by: i });
        }
        repo.save(&mut root).await.expect("save");
        assert_eq!(
            manager.stats().taken,
            0,
            "no load measured yet: only max_events applies"
        );

        // A load measures replay cost; any measurable cost is over a 1 ns target.
        let (mut root, info) = repo.load_with_info("a-1").await.expect("load");
        assert_eq!(info.events_replayed, 50);
        root.record(CounterEvent::Reset);
        repo.save(&mut root).await.expect("save");
        assert_eq!(manager.stats().taken, 1, "the measured replay made the policy snapshot");
        assert!(manager.stats().avg_load_time > Duration::ZERO);
    }

    #[tokio::test]
    async fn time_policy_waits_after_a_snapshot_the_manager_took() {
        let manager = Arc::new(
            SnapshotManager::<Counter>::new(Arc::new(InMemorySnapshotStore::new()))
                .with_policy(TimeSinceLast(Duration::from_secs(3600))),
        );
        let repo = repo(Arc::clone(&manager));
        let mut root = repo.create("t-1").expect("create");
        root.record(CounterEvent::Added { by: 1 });
        repo.save(&mut root).await.expect("save");
        assert_eq!(manager.stats().taken, 1, "no known snapshot: due");
        root.record(CounterEvent::Added { by: 2 });
        repo.save(&mut root).await.expect("save");
        assert_eq!(manager.stats().taken, 1, "an hour has not passed");
    }
}
