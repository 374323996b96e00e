//! # cqrsx-core
//!
//! The abstractions of cqrsx — aggregates, event envelopes, event / snapshot / read-model
//! stores, the generic [`Repository`], codecs and upcasting — plus the in-memory backend
//! ([`memory`]) and, behind the `testkit` feature, the conformance suite every backend passes.
//!
//! ```
//! use std::sync::Arc;
//! use cqrsx_core::{memory::InMemoryEventStore, Aggregate, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! struct User { email: String }
//!
//! #[derive(Serialize, Deserialize)]
//! enum UserEvent { Created { email: String }, EmailChanged { email: String } }
//!
//! impl Aggregate for User {
//!     const TYPE: &'static str = "User";
//!     type Event = UserEvent;
//!     fn apply(&mut self, event: &UserEvent) {
//!         match event {
//!             UserEvent::Created { email } | UserEvent::EmailChanged { email } => self.email = email.clone(),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
//! let users = Repository::<User>::new(Arc::new(InMemoryEventStore::new()));
//! let mut user = users.create("user-123")?;
//! user.record(UserEvent::Created { email: "user@example.com".into() });
//! user.record(UserEvent::EmailChanged { email: "new@example.com".into() });
//! users.save(&mut user).await?;
//!
//! let loaded = users.load("user-123").await?;
//! assert_eq!((loaded.state().email.as_str(), loaded.version()), ("new@example.com", 2));
//! # Ok(()) }
//! ```

pub mod aggregate;
pub mod archive;
mod checked;
mod checkpoint;
pub mod codec;
#[cfg(feature = "encryption")]
pub mod crypto;
mod error;
mod event;
mod event_store;
mod import;
mod read_store;
pub mod registry;
mod repository;
pub mod retention;
mod snapshot_store;
mod stats;
mod stream;
pub mod subscription;
mod tagged;
pub mod telemetry;

pub mod memory;
pub mod projection;
pub mod raw;
#[cfg(feature = "testkit")]
pub mod testkit;

/// Read-model queries: the criteria beyond the [`Query`] and [`Filter`] at the root.
pub mod query {
    pub use crate::read_store::{Direction, Filter, Op, Query, Sort};
}

/// What a snapshot store keeps and reports, beyond the [`SnapshotStore`] and
/// [`SnapshotStrategy`] at the root.
pub mod snapshot {
    pub use crate::snapshot_store::{LoadInfo, Restored, SnapshotInfo, SnapshotRecord};
}

pub use aggregate::{Aggregate, AggregateRoot};
pub use checkpoint::Checkpoint;
pub use codec::{Codec, EventCodec};
pub use error::{ConnectFailure, Error, Result};
pub use event::{AppendResult, ContentType, EventFilter, Metadata, NewEvent, Position, RecordedEvent, Timestamp};
pub use event_store::EventStore;
pub use projection::{Projection, ProjectionHandle, ProjectionRunner, ProjectionStore, View};
pub use read_store::{Document, Filter, Query, ReadStore, ReadStoreExt};
pub use registry::EventRegistry;
pub use repository::Repository;
pub use snapshot_store::{SnapshotStore, SnapshotStrategy};
pub use stream::{ExpectedVersion, StreamId};

/// Re-exported so that backends and users name the same versions.
pub use async_trait::async_trait;
pub use uuid::Uuid;
