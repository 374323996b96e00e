//! The core conformance suite, the snapshot manager's suite and the migration suite on the MongoDB-wire server
//! `cargo xtask test` provides.

mod common;

cqrsx_core::conformance_tests!(common::fixture);
cqrsx_snapshot::snapshot_manager_tests!(common::fixture);
cqrsx_migrate::migration_tests!(common::fixture);
