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
