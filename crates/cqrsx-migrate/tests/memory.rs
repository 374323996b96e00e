//! The migration suite on the in-memory stores (memory to memory, both ways).

async fn fixture() -> cqrsx_core::testkit::Fixture {
    cqrsx_core::testkit::Fixture::in_memory()
}

cqrsx_migrate::migration_tests!(fixture);
