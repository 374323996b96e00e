//! The conformance suite every backend runs (feature `testkit`).
//!
//! Each case is a plain async function over the core traits that panics when the store breaks
//! its part of the contract documented on the core traits. A backend's tests build a [`Fixture`] (fresh
//! namespace per call) and expand [`crate::conformance_tests!`], which makes one `#[tokio::test]`
//! per case, so test output names and counts them.

mod append_cases;
mod bad_input;
mod event_cases;
mod id_cases;
mod projection_cases;
mod projection_failure_cases;
mod projection_fence_cases;
mod projection_support;
mod read_cases;
mod snapshot_cases;
mod subscription_cases;
mod support;

use std::sync::Arc;

use futures::future::BoxFuture;

pub use append_cases::*;
pub use bad_input::*;
pub use event_cases::*;
pub use id_cases::*;
pub use projection_cases::*;
pub use projection_failure_cases::*;
pub use projection_fence_cases::*;
pub use read_cases::*;
pub use snapshot_cases::*;
pub use subscription_cases::*;
pub use support::{expect_config_errors, report, BasicSnapshots, Counter, CounterEvent};

use crate::event_store::EventStore;
use crate::memory::{InMemoryCheckpointStore, InMemoryEventStore, InMemoryReadStore, InMemorySnapshotStore};
use crate::projection::CheckpointStore;
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
    /// The projection state store under test.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// The snapshot strategy the repository cases use, built over `snapshots`.
    pub strategy: Arc<dyn SnapshotStrategy<Counter>>,
    /// How hard the stress cases push this backend.
    pub stress: Stress,
    /// Names the backend in what cases report (see [`Fixture::with_label`]).
    pub label: &'static str,
}

/// How hard the stress cases push a backend: sized per backend, so that the whole suite stays
/// within its time budget on slow servers while every case still checks what it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stress {
    /// Writers racing in the concurrency case.
    pub writers: usize,
    /// Rounds of that race (every writer with the same expected version each round).
    pub rounds: u64,
    /// Events each of the crash case's 16 writers appends.
    pub events_per_writer: u64,
}

impl Stress {
    /// The default: 16 writers racing 200 rounds; 60 events per crash-case writer.
    pub const FULL: Stress = Stress {
        writers: 16,
        rounds: 200,
        events_per_writer: 60,
    };
    /// For servers that scan for most reads (FerretDB): 16 writers racing 40 rounds; 15
    /// events per crash-case writer.
    pub const LIGHT: Stress = Stress {
        writers: 16,
        rounds: 40,
        events_per_writer: 15,
    };
    /// For a code path built for indexes run on a server that scans (MongoDB's plain path on
    /// FerretDB, every head a pass over the collection): 8 writers racing 12 rounds; 8 events
    /// per crash-case writer.
    pub const MINIMAL: Stress = Stress {
        writers: 8,
        rounds: 12,
        events_per_writer: 8,
    };
}

impl Fixture {
    /// A fixture over these stores, with the suite's basic snapshot strategy (JSON, every 10
    /// events). Use [`Fixture::with_strategy`] to test a real snapshot manager.
    pub fn new(
        events: Arc<dyn EventStore>,
        snapshots: Arc<dyn SnapshotStore>,
        reads: Arc<dyn ReadStore>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        let strategy = Arc::new(BasicSnapshots::new(Arc::clone(&snapshots), 10));
        Self {
            events,
            snapshots,
            reads,
            checkpoints,
            strategy,
            stress: Stress::FULL,
            label: "",
        }
    }

    /// Names the backend in the lines cases add to the report file `CQRSX_CASE_REPORT` (how
    /// `cargo xtask test` shows what a case measured under the backend's summary row).
    pub fn with_label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// Sizes the stress cases.
    pub fn with_stress(mut self, stress: Stress) -> Self {
        self.stress = stress;
        self
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
            Arc::new(InMemoryCheckpointStore::new()),
        )
        .with_label("memory")
    }
}

/// A conformance case as a plain function pointer.
pub type Case = fn(Fixture) -> BoxFuture<'static, ()>;

/// The one list of conformance cases, in contract order. It calls `$callback!` with the names
/// after `$args`, so that [`CASES`] and [`crate::conformance_tests!`] come from the same list
/// and a case added here runs on every backend.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($callback:path; $($args:tt)*) => {
        $callback! { $($args)* ;
            append_with_wrong_expected_version_conflicts,
            concurrent_writers_never_duplicate_or_skip_versions,
            batch_append_is_all_or_nothing,
            retried_append_is_idempotent,
            event_ids_are_unique_in_any_order,
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
            subscription_catches_up_from_zero_and_from_a_checkpoint,
            subscription_goes_live_and_wakes_on_appends,
            subscription_filters_by_type_and_aggregate_type,
            projection_survives_crashes_without_skips_or_repeats,
            projection_lease_admits_one_runner_and_fences_the_stale_one,
            projection_poison_event_stops_or_parks,
            projection_rebuild_equals_the_live_view,
            projection_bad_input_is_refused,
            projection_failing_handlers_are_contained,
            projection_forged_and_dropped_leases_write_nothing,
            bad_input_catalogue,
        }
    };
}

macro_rules! case_list {
    ($(;)? $($name:ident),* $(,)?) => {
        /// Every conformance case with its name, in contract order.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |f| Box::pin($name(f)))),*
        ];
    };
}

crate::__conformance_cases!(case_list;);

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
        $crate::__conformance_cases!($crate::conformance_tests; @cases $fixture);
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
