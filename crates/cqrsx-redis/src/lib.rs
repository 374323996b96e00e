//! Redis backend for cqrsx, on [fred](https://docs.rs/fred): event store, snapshot store,
//! read store and projection store, standalone or on Redis Cluster.
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
//! Layout: each partition has a log (a Redis Stream, `{prefix:p}:log`) with one entry per
//! commit at `<first position>-0` holding the commit's events (they take the next dense
//! positions); each stream has a metadata hash (`{prefix:p}:m:<Type/id>`: version, tombstone,
//! truncation point, each event id's version for idempotent retries) and an index of its
//! commits, pointing into the log: fields `c<first version>` of the metadata hash while the
//! stream holds at most [`SMALL_STREAM_EVENTS`] events, then a Redis Stream
//! (`{prefix:p}:s:<Type/id>`, entry ids `<first version>-0`); a stream of one commit keeps its
//! state in a field of a hash shared with other streams (`{prefix:p}:b:<n>`) instead; each
//! event type has an index of the commits that hold it (`{prefix:p}:t:<type>`, auto ids, so
//! `events_by_type` starts at a time). All keys of one call share the hash tag `{prefix:p}` and
//! are declared in the script's `KEYS`, so an append never crosses Cluster slots. Concurrent
//! appends beyond [`RedisConfig::append_concurrency`] calls per partition are grouped into one
//! call. Read models live under `{prefix:rm:<collection>}`, projections under
//! `{prefix:pj:<name>}`.

mod client;
mod collection;
mod config;
mod durability;
mod error;
mod event_store;
#[cfg(feature = "encryption")]
mod key_store;
mod keys;
mod projection_store;
mod read_store;
mod reply;
mod snapshot_store;

use std::sync::Arc;

pub use client::{DurabilityReport, RedisClientManager, RedisMetrics};
pub use config::RedisConfig;
pub use durability::AppendDurability;
pub use error::ProtocolError;
pub use event_store::{RedisEventStore, SMALL_STREAM_EVENTS};
#[cfg(feature = "encryption")]
pub use key_store::RedisKeyStore;
pub use projection_store::RedisProjectionStore;
pub use read_store::{RedisReadStore, MAX_DOCUMENT_BYTES};
pub use snapshot_store::{RedisSnapshotStore, MAX_SNAPSHOT_BYTES};

use cqrsx_core::{Aggregate, Repository};

/// A repository over a [`RedisEventStore`] on this client, writing payloads in the config's
/// content type. Add snapshots with [`Repository::with_snapshots`] (for example a
/// `cqrsx_snapshot::SnapshotManager` over a [`RedisSnapshotStore`]).
pub fn repository<A: Aggregate>(client: &RedisClientManager) -> Repository<A> {
    Repository::new(Arc::new(RedisEventStore::new(client.clone()))).with_content_type(client.config().content_type)
}
