//! The conformance suite every backend runs (feature `testkit`).
//!
//! Each case is a plain async function over the core traits that panics when the store breaks
//! its part of the contract documented on the core traits. A backend's tests build a [`Fixture`] (fresh
//! namespace per call) and expand [`crate::conformance_tests!`], which makes one `#[tokio::test]`
//! per case, so test output names and counts them.

mod append_cases;
mod bad_input;
mod crypto_cases;
mod crypto_support;
mod event_cases;
mod fixture;
mod id_cases;
mod import_cases;
mod import_shape_cases;
mod macros;
mod projection_admin_cases;
mod projection_cases;
mod projection_failure_cases;
mod projection_fence_cases;
mod projection_support;
mod read_cases;
mod retention_cases;
mod retention_support;
mod shard_cases;
mod shard_layout_cases;
mod snapshot_cases;
mod subscription_cases;
mod support;
mod typed_cases;
mod views_cases;

pub use append_cases::*;
pub use bad_input::*;
pub use crypto_cases::*;
pub use event_cases::*;
pub use fixture::{Case, Fixture, Stress};
pub use id_cases::*;
pub use import_cases::*;
pub use import_shape_cases::*;
pub use macros::CASES;
pub use projection_admin_cases::*;
pub use projection_cases::*;
pub use projection_failure_cases::*;
pub use projection_fence_cases::*;
pub use read_cases::*;
pub use retention_cases::*;
pub use shard_cases::*;
pub use shard_layout_cases::*;
pub use snapshot_cases::*;
pub use subscription_cases::*;
pub use support::{expect_config_errors, report, BasicSnapshots, Counter, CounterEvent};
pub use typed_cases::*;
pub use views_cases::*;
