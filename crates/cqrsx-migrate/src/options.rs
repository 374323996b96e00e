//! What a migration copies between and how: the two sets of stores, the read models, and the
//! options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cqrsx_core::{Error, EventStore, ProjectionStore, ReadStore, Result, SnapshotStore};

/// One side of a migration: an event store, and optionally the snapshot and projection stores
/// that go with it (a side without one has nothing of that kind to copy or receive).
#[derive(Clone)]
pub struct Stores {
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store, if snapshots are copied.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// The projection store, if projection state is copied.
    pub projections: Option<Arc<dyn ProjectionStore>>,
}

impl Stores {
    /// Just an event store.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self {
            events,
            snapshots: None,
            projections: None,
        }
    }

    /// Adds the snapshot store.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Adds the projection store.
    pub fn with_projections(mut self, projections: Arc<dyn ProjectionStore>) -> Self {
        self.projections = Some(projections);
        self
    }
}

/// A read model to copy: its documents in the source store go, as they are, into the target
/// store. TTLs are not kept (a [`ReadStore`] does not tell them): copied documents do not
/// expire.
#[derive(Clone)]
pub struct ReadModelPair {
    /// Names the read model in reports.
    pub name: String,
    /// Where its documents are.
    pub source: Arc<dyn ReadStore>,
    /// Where they go.
    pub target: Arc<dyn ReadStore>,
}

/// In which order events reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// One `import` per run of consecutive events of one stream, in source order, one after
    /// the other: each target partition holds its events in source order, so projection
    /// checkpoints translate exactly.
    #[default]
    Exact,
    /// A page's events grouped by stream (each stream's order kept), the streams imported
    /// concurrently: faster, but events of different streams within a page may land in
    /// another order, so a projection checkpoint that falls inside such a page needs a
    /// rebuild (verification says which).
    GroupedByStream,
}

/// How a migration runs.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    /// The state file: the source checkpoint the copy reached, written after each page (a
    /// restart re-imports at most that one page, which the target recognises as done).
    pub state_path: PathBuf,
    /// In which order events reach the target.
    pub order: Order,
    /// Events read from the source per page (1 to the smaller `max_batch` of both stores).
    pub page_size: usize,
    /// Concurrent calls for [`Order::GroupedByStream`] imports, snapshots and verification.
    pub concurrency: usize,
    /// Whether to draw a progress bar on stderr (never drawn when stderr is not a terminal).
    pub progress: bool,
    /// The owner name under which projection leases are taken in the target.
    pub lease_owner: String,
}

impl MigrationOptions {
    /// Exact order, pages of 1 000 events, 16 concurrent calls, a progress bar, with its state
    /// in `state_path`.
    pub fn new(state_path: impl AsRef<Path>) -> Self {
        Self {
            state_path: state_path.as_ref().to_path_buf(),
            order: Order::Exact,
            page_size: 1000,
            concurrency: 16,
            progress: true,
            lease_owner: "cqrsx-migrate".into(),
        }
    }

    /// Sets the order.
    pub fn with_order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Sets the page size.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets the concurrency.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Turns the progress bar on or off.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Checks the numbers against both event stores.
    pub(crate) fn validate(&self, source: &dyn EventStore, target: &dyn EventStore) -> Result<()> {
        let most = source.capabilities().max_batch.min(target.capabilities().max_batch);
        if self.page_size == 0 || self.page_size > most {
            return Err(Error::InvalidInput(format!(
                "a migration page size must be 1 to {most} (the stores' batch limit), got {}",
                self.page_size
            )));
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(Error::InvalidInput(format!(
                "a migration's concurrency must be 1 to 1024, got {}",
                self.concurrency
            )));
        }
        if self.lease_owner.is_empty() {
            return Err(Error::InvalidInput("a migration needs a lease owner name".into()));
        }
        Ok(())
    }
}
