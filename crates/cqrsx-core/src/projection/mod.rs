//! Projections: a [`Projection`] turns events into view documents; a [`ProjectionRunner`] feeds
//! it from a catch-up subscription and commits its changes with a checkpoint to a
//! [`ProjectionStore`], so that after any crash the view equals the fold of the events — none
//! skipped, none applied twice.

mod handle;
mod handler;
mod observe;
mod options;
mod renewal;
mod runner;
mod sharded;
mod status;
pub(crate) mod store;
mod typed;
mod view;
mod views;

pub use handle::ProjectionHandle;
pub use handler::{HandlerResult, Projection};
pub use options::{ErrorPolicy, OnFailure, RunnerOptions};
pub use runner::ProjectionRunner;
#[cfg(feature = "testkit")]
pub use sharded::ShardFault;
pub use sharded::{ShardReplays, ShardStatus, ShardedHandle, ShardedRunner};
pub use status::{ProjectionStatus, RunnerState};
pub use store::{
    validate_lease_ttl, LeaseHolder, ParkedEvent, ProjectionStore, ReplayRequests, Shard, ViewKey, MAX_LEASE_TTL,
    MAX_SHARDS, MIN_LEASE_TTL,
};
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub use typed::TypedFault;
pub use typed::{Envelope, Typed, TypedProjection, UnknownEvents};
pub use view::IntoDocument;
pub use view::{View, MAX_VIEW_DOCUMENT_BYTES};
pub use views::Views;
