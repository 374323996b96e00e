//! The conformance suite on the in-memory backend.

use cqrsx_core::testkit::Fixture;

async fn fixture() -> Fixture {
    Fixture::in_memory()
}

cqrsx_core::conformance_tests!(fixture);
