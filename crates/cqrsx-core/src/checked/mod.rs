//! The checked layer: every store method a service calls passes through core once, whichever
//! backend serves it. The layer validates the input (so a backend receives only input that is
//! already valid, and a new backend cannot forget a check), runs the operation in a `debug`
//! span named after it, and traces its outcome and duration.
//!
//! A backend implements the unchecked half — [`EventBackend`], [`ReadBackend`],
//! [`SnapshotBackend`], [`ProjectionBackend`] (re-exported in [`crate::raw`]) — and gets the
//! service-facing trait ([`crate::EventStore`], …) from the blanket implementation here.

mod event_store;
mod projection_store;
mod read_store;
mod snapshot_store;
mod trace;

pub use event_store::EventBackend;
pub use projection_store::ProjectionBackend;
pub use read_store::ReadBackend;
pub use snapshot_store::SnapshotBackend;
