//! # cqrsx-migrate
//!
//! Copies everything a cqrsx application keeps from one set of stores to another — event
//! streams (with tombstones and fully truncated streams), the latest snapshot of every stream,
//! read models, and the active version of every projection — keeping event ids, versions,
//! recorded-at times and metadata; global positions are assigned by the target, in source
//! order. It resumes after a crash from a small state file, catches up while the source still
//! takes writes, cuts over once the caller stopped the writers, and verifies the copy,
//! listing every difference.
//!
//! ```
//! use std::sync::Arc;
//! use cqrsx_core::{memory::InMemoryEventStore, EventStore, NewEvent, StreamId, ExpectedVersion};
//! use cqrsx_migrate::{Migration, MigrationOptions, Stores};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
//! let source = Arc::new(InMemoryEventStore::new());
//! let stream = StreamId::new("order", "o1")?;
//! source.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("Placed", &1)?]).await?;
//! let target = Arc::new(InMemoryEventStore::new());
//!
//! let state = std::env::temp_dir().join(format!("cqrsx-doc-{}.json", cqrsx_core::Uuid::now_v7()));
//! let options = MigrationOptions::new(&state).with_progress(false);
//! let migration = Migration::open(Stores::new(source), Stores::new(target.clone()), options).await?;
//! migration.catch_up().await?;
//! let done = migration.cut_over().await?;
//! assert!(done.verification.is_equal(), "{:?}", done.verification.differences);
//! assert_eq!(target.stream_version(&stream).await?, 1);
//! # std::fs::remove_file(&state).ok();
//! # Ok(()) }
//! ```

mod copy;
mod extras;
mod hash;
mod migration;
mod options;
mod state;
mod translate;
mod verify;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use hash::{document_hash, event_hash, snapshot_hash};
pub use migration::{CatchUp, CutOver, Migration};
pub use options::{MigrationOptions, Order, ReadModelPair, Stores};
pub use verify::{verify, Difference, VerifyReport, VerifySummary};
