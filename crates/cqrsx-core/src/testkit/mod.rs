//! The conformance suite every backend runs (feature `testkit`).
//!
//! Each case is a plain async function over the core traits that panics when the store breaks
//! its part of the contract in DESIGN.md. A backend's tests build a [`Fixture`] (fresh
//! namespace per call) and expand [`crate::conformance_tests!`], which makes one `#[tokio::test]`
//! per case, so test output names and counts them.

mod event_cases;
mod read_cases;
mod snapshot_cases;
mod support;

use std::sync::Arc;

use futures::future::BoxFuture;

pub use event_cases::*;
pub use read_cases::*;
pub use snapshot_cases::*;
pub use support::{BasicSnapshots, Counter, CounterEvent};

use crate::event_store::EventStore;
use crate::memory::{InMemoryEventStore, InMemoryReadStore, InMemorySnapshotStore};
use crate::read_store::ReadStore;
use crate::snapshot_store::{SnapshotStore, SnapshotStrategy};

/// The stores one conformance case runs against. Backends give each fixture its own namespace
/// (key prefix, database or collection names) so cases never see each other's data.
#[derive(Clone)]
pub struct Fixture {
    /// The event store under test.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store under test.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The read store under test.
    pub reads: Arc<dyn ReadStore>,
    /// The snapshot strategy the repository cases use, built over `snapshots`.
    pub strategy: Arc<dyn SnapshotStrategy<Counter>>,
}

impl Fixture {
    /// A fixture over these stores, with the suite's basic snapshot strategy (JSON, every 10
    /// events). Use [`Fixture::with_strategy`] to test a real snapshot manager.
    pub fn new(events: Arc<dyn EventStore>, snapshots: Arc<dyn SnapshotStore>, reads: Arc<dyn ReadStore>) -> Self {
        let strategy = Arc::new(BasicSnapshots::new(Arc::clone(&snapshots), 10));
        Self {
            events,
            snapshots,
            reads,
            strategy,
        }
    }

    /// Replaces the snapshot strategy.
    pub fn with_strategy(mut self, strategy: Arc<dyn SnapshotStrategy<Counter>>) -> Self {
        self.strategy = strategy;
        self
    }

    /// A fixture over fresh in-memory stores.
    pub fn in_memory() -> Self {
        Self::new(
            Arc::new(InMemoryEventStore::new()),
            Arc::new(InMemorySnapshotStore::new()),
            Arc::new(InMemoryReadStore::new()),
        )
    }
}

/// A conformance case as a plain function pointer.
pub type Case = fn(Fixture) -> BoxFuture<'static, ()>;

macro_rules! case_list {
    ($($name:ident),* $(,)?) => {
        /// Every conformance case with its name, in contract order.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |f| Box::pin($name(f)))),*
        ];
    };
}

case_list!(
    append_with_wrong_expected_version_conflicts,
    concurrent_writers_never_duplicate_or_skip_versions,
    batch_append_is_all_or_nothing,
    retried_append_is_idempotent,
    read_returns_every_envelope_field_in_order,
    catch_up_reader_sees_every_event_once,
    read_all_pages_inside_batches,
    snapshot_store_never_hides_a_newer_snapshot,
    snapshot_load_equals_full_replay,
    truncate_and_delete_behave_as_documented,
    bad_input_is_rejected_and_writes_nothing,
    events_by_type_since_a_time,
    long_stream_reads_in_pages,
    read_store_crud,
    read_store_query_matches_reference_semantics,
    read_store_batches,
    read_store_ttl_as_declared,
    read_store_bad_input_writes_nothing,
);

/// Expands into one `#[tokio::test]` per conformance case. `$fixture` is an async fn returning
/// a fresh [`Fixture`]; the calling crate needs `tokio` (with `macros`, `rt-multi-thread`).
///
/// ```text
/// async fn fixture() -> cqrsx_core::testkit::Fixture { /* fresh namespace */ }
/// cqrsx_core::conformance_tests!(fixture);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::conformance_tests!(@cases $fixture;
            append_with_wrong_expected_version_conflicts,
            concurrent_writers_never_duplicate_or_skip_versions,
            batch_append_is_all_or_nothing,
            retried_append_is_idempotent,
            read_returns_every_envelope_field_in_order,
            catch_up_reader_sees_every_event_once,
            read_all_pages_inside_batches,
            snapshot_store_never_hides_a_newer_snapshot,
            snapshot_load_equals_full_replay,
            truncate_and_delete_behave_as_documented,
            bad_input_is_rejected_and_writes_nothing,
            events_by_type_since_a_time,
            long_stream_reads_in_pages,
            read_store_crud,
            read_store_query_matches_reference_semantics,
            read_store_batches,
            read_store_ttl_as_declared,
            read_store_bad_input_writes_nothing,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $fixture().await;
                $crate::testkit::$case(fixture).await;
            }
        )*
    };
}
