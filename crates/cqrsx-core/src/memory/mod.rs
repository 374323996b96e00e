//! The in-memory backend: the embedded default that examples and tests start on. It enforces
//! the same concurrency, idempotency and validation rules as the server backends.

mod event_store;
mod projection_store;
mod read_store;
mod snapshot_store;

pub use event_store::InMemoryEventStore;
pub use projection_store::InMemoryProjectionStore;
pub use read_store::InMemoryReadStore;
pub use snapshot_store::InMemorySnapshotStore;
