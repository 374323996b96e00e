//! Redis backend for cqrsx, on [fred](https://docs.rs/fred): event store, snapshot store and
//! read store, standalone or on Redis Cluster.
//!
//! ```no_run
//! use cqrsx_core::{Aggregate, EventStore};
//! use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};
//!
//! # async fn demo() -> cqrsx_core::Result<()> {
//! let client = RedisClientManager::connect(RedisConfig::from_env()?).await?;
//! let events = RedisEventStore::new(client.clone());
//! let metrics = client.metrics();
//! assert_eq!(metrics.errors, 0);
//! # Ok(()) }
//! ```
//!
//! Layout: a stream's events live in a Redis Stream (`{prefix:p}:s:<Type/id>`, entry ids
//! `<version>-0`), next to a metadata hash (`{prefix:p}:m:<Type/id>`: version, tombstone, and
//! each event id's version, for idempotent retries); each append also adds one entry for the
//! commit to its partition's log (`{prefix:p}:log`, entry id `<first position>-0`; the commit's
//! events take the next dense positions) and one per event type to that type's index stream
//! (`{prefix:p}:t:<type>`, auto ids, so `events_by_type` starts at a time). All keys of one
//! stream and its partition share the hash tag `{prefix:p}`, so an append never crosses Cluster
//! slots. Concurrent appends beyond
//! [`RedisConfig::append_concurrency`] calls per partition are grouped into one call.

mod checkpoint_store;
mod client;
mod config;
mod error;
mod event_store;
mod keys;
mod read_store;
mod reply;
mod snapshot_store;

use std::sync::Arc;

pub use checkpoint_store::RedisCheckpointStore;
pub use client::{DurabilityReport, RedisClientManager, RedisMetrics};
pub use config::RedisConfig;
pub use error::ProtocolError;
pub use event_store::RedisEventStore;
pub use read_store::{RedisReadStore, MAX_DOCUMENT_BYTES};
pub use snapshot_store::{RedisSnapshotStore, MAX_SNAPSHOT_BYTES};

use cqrsx_core::{Aggregate, Repository};

/// A repository over a [`RedisEventStore`] on this client, writing payloads in the config's
/// content type. Add snapshots with [`Repository::with_snapshots`] (for example a
/// `cqrsx_snapshot::SnapshotManager` over a [`RedisSnapshotStore`]).
pub fn repository<A: Aggregate>(client: &RedisClientManager) -> Repository<A> {
    Repository::new(Arc::new(RedisEventStore::new(client.clone()))).with_content_type(client.config().content_type)
}
