//! The in-memory backend: the embedded default that examples and tests start on. It enforces
//! the same concurrency, idempotency and validation rules as the server backends.

mod checkpoint_store;
mod event_store;
mod read_store;
mod snapshot_store;

pub use checkpoint_store::InMemoryCheckpointStore;
pub use event_store::InMemoryEventStore;
pub use read_store::InMemoryReadStore;
pub use snapshot_store::InMemorySnapshotStore;
