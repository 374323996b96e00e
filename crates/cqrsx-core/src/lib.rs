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

mod aggregate;
mod checkpoint;
mod codec;
mod error;
mod event;
mod event_store;
mod read_store;
mod registry;
mod repository;
mod snapshot_store;
mod stats;
mod stream;
mod subscription;
mod tagged;

pub mod memory;
pub mod projection;
pub mod raw;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use aggregate::{Aggregate, AggregateRoot, Uncommitted};
pub use checkpoint::{Checkpoint, Wake};
pub use codec::{Codec, EventCodec, JsonCodec, MessagePackCodec};
pub use error::{BoxError, ConnectFailure, Error, Result};
pub use event::{
    AllPage, AppendResult, ContentType, EventFilter, Metadata, NewEvent, Position, RecordedEvent, Timestamp,
};
pub use event_store::{EventStore, EventStoreCapabilities, MAX_NUMBER};
pub use projection::{
    CheckpointStore, ErrorPolicy, Projection, ProjectionHandle, ProjectionRunner, RunnerOptions, View,
};
pub use read_store::{Direction, Document, Filter, Op, Query, ReadStore, ReadStoreCapabilities, ReadStoreExt, Sort};
pub use registry::{EventRegistry, EventRegistryBuilder, UpcastFn};
pub use repository::Repository;
pub use snapshot_store::{LoadInfo, Restored, SnapshotInfo, SnapshotRecord, SnapshotStore, SnapshotStrategy};
pub use stream::{ExpectedVersion, StreamId};
pub use subscription::{subscribe, Subscription, SubscriptionMessage, SubscriptionOptions};

/// Re-exported so that backends and users name the same versions.
pub use async_trait::async_trait;
pub use uuid::Uuid;
