//! MongoDB backend for cqrsx, on the official `mongodb` driver: event store, snapshot store,
//! read store and projection store. Needs no transactions (each commit is one document); the
//! live tail of a subscription follows a change stream where the server has them (a replica
//! set) and polls elsewhere (FerretDB).
//!
//! ```no_run
//! use cqrsx_mongo::{MongoClientManager, MongoConfig, MongoEventStore};
//!
//! # async fn demo() -> cqrsx_core::Result<()> {
//! let client = MongoClientManager::connect(MongoConfig::from_env()?).await?;
//! client.initialize_event_sourcing_schema().await?;
//! let events = MongoEventStore::new(client.clone());
//! # Ok(()) }
//! ```
//!
//! Layout: the commits collection holds one document per append (`_id` = its version slot,
//! the stream key and first version; `stream`, `v0`..`v1`, `ids`, `types`, `ts`, `pos` (its
//! global commit number), `events`), the counters collection the last reserved commit number,
//! the snapshots collection one document per (stream, version), the projections collection
//! checkpoints, leases and parked events, and each projection version's view its own
//! collection. [`ServerCapabilities`], detected at connect, pick the plain path or a
//! server's fallback (see [`MongoEventStore`]).

mod backoff;
mod capabilities;
mod client;
mod config;
mod connect;
mod detect;
mod error;
mod event_store;
#[cfg(feature = "encryption")]
mod key_store;
mod projection_store;
mod read_store;
mod snapshot_store;

use std::sync::Arc;

pub use capabilities::{AssumedCapabilities, ServerCapabilities};
pub use client::{CommandCount, MongoClientManager, MongoMetrics, TimeoutError};
pub use config::MongoConfig;
pub use event_store::{CounterContention, MongoEventStore, StreamContention, MAX_COMMIT_BYTES};
#[cfg(feature = "encryption")]
pub use key_store::{MongoKeyStore, DEFAULT_KEYS_COLLECTION};
pub use projection_store::MongoProjectionStore;
pub use read_store::{MongoReadStore, MAX_DOCUMENT_BYTES};
pub use snapshot_store::{MongoSnapshotStore, MAX_SNAPSHOT_BYTES};

use cqrsx_core::{Aggregate, Repository};

/// A repository over a [`MongoEventStore`] on this client, writing payloads in the config's
/// content type. Add snapshots with [`Repository::with_snapshots`] (for example a
/// `cqrsx_snapshot::SnapshotManager` over a [`MongoSnapshotStore`]).
pub fn repository<A: Aggregate>(client: &MongoClientManager) -> Repository<A> {
    Repository::new(Arc::new(MongoEventStore::new(client.clone()))).with_content_type(client.config().content_type)
}
