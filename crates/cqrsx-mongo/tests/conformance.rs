//! The core conformance suite on the MongoDB-wire server `cargo xtask test` provides.

mod common;

cqrsx_core::conformance_tests!(common::fixture);
