//! The core conformance suite, the snapshot manager's suite and the migration suite on a standalone Redis and on a
//! 3-node Redis Cluster.

mod common;

mod standalone {
    async fn fixture() -> cqrsx_core::testkit::Fixture {
        super::common::fixture_for(super::common::standalone_config()).await
    }
    cqrsx_core::conformance_tests!(fixture);
    cqrsx_snapshot::snapshot_manager_tests!(fixture);
    cqrsx_migrate::migration_tests!(fixture);
}

mod cluster {
    async fn fixture() -> cqrsx_core::testkit::Fixture {
        super::common::fixture_for(super::common::cluster_config()).await
    }
    cqrsx_core::conformance_tests!(fixture);
    cqrsx_snapshot::snapshot_manager_tests!(fixture);
    cqrsx_migrate::migration_tests!(fixture);
}
