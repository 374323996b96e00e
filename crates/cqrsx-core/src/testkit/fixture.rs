//! The fixture a backend hands the conformance suite: fresh stores per case, and how hard
//! the stress cases push them.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::support::{BasicSnapshots, Counter};
use crate::crypto::{InMemoryKeyStore, KeyStore};
use crate::event_store::EventStore;
use crate::memory::{InMemoryEventStore, InMemoryProjectionStore, InMemoryReadStore, InMemorySnapshotStore};
use crate::projection::ProjectionStore;
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
    pub checkpoints: Arc<dyn ProjectionStore>,
    /// The snapshot strategy the repository cases use, built over `snapshots`.
    pub strategy: Arc<dyn SnapshotStrategy<Counter>>,
    /// The key store the encryption cases use ([`Fixture::with_keys`]; in memory by default).
    pub keys: Arc<dyn KeyStore>,
    /// How hard the stress cases push this backend.
    pub stress: Stress,
    /// Names the backend in what cases report (see [`Fixture::with_label`]).
    pub label: &'static str,
    /// A broken sharded runner, for the meta-test (`None`: the real one).
    #[doc(hidden)]
    pub shard_fault: Option<crate::projection::ShardFault>,
    /// How the typed-projection cases break their adapter (the meta-test's hook; `None` in a
    /// backend's run).
    #[doc(hidden)]
    pub typed_fault: Option<crate::projection::TypedFault>,
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
        checkpoints: Arc<dyn ProjectionStore>,
    ) -> Self {
        let strategy = Arc::new(BasicSnapshots::new(Arc::clone(&snapshots), 10));
        Self {
            events,
            snapshots,
            reads,
            checkpoints,
            strategy,
            keys: Arc::new(InMemoryKeyStore::new()),
            stress: Stress::FULL,
            label: "",
            shard_fault: None,
            typed_fault: None,
        }
    }

    /// Names the backend in the lines cases add to the report file `CQRSX_CASE_REPORT` (how
    /// `cargo xtask test` shows what a case measured under the backend's summary row).
    pub fn with_label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// Runs the sharded cases with a broken sharded runner (the meta-test).
    #[doc(hidden)]
    pub fn with_shard_fault(mut self, fault: crate::projection::ShardFault) -> Self {
        self.shard_fault = Some(fault);
        self
    }

    /// Gives the encryption cases the backend's key store (fresh per fixture).
    pub fn with_keys(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.keys = keys;
        self
    }

    /// Sizes the stress cases.
    pub fn with_stress(mut self, stress: Stress) -> Self {
        self.stress = stress;
        self
    }

    /// Breaks the typed-projection adapter the cases build (the meta-test's hook).
    #[doc(hidden)]
    pub fn with_typed_fault(mut self, fault: crate::projection::TypedFault) -> Self {
        self.typed_fault = Some(fault);
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
            Arc::new(InMemoryProjectionStore::new()),
        )
        .with_label("memory")
    }
}

/// A conformance case as a plain function pointer.
pub type Case = fn(Fixture) -> BoxFuture<'static, ()>;
