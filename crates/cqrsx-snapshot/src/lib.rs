//! # cqrsx-snapshot
//!
//! Snapshots for cqrsx repositories: a [`SnapshotManager`] that decides when to snapshot
//! ([`SnapshotPolicy`]: every N events, version interval, time since last, any / all, closure,
//! always, never, adaptive), how to write it ([`SnapshotSerializer`]: JSON or MessagePack, plain
//! or compressed with LZ4 or zstd, stamped with content type and schema version), how many to
//! keep, and what happened ([`SnapshotStats`]). A snapshot that cannot be used — corrupt bytes,
//! unknown content type, another schema version — never fails a load: the repository replays
//! and the manager counts the fallback.
//!
//! It works over any core [`cqrsx_core::SnapshotStore`]: in-memory, Redis or Mongo, chosen by
//! configuration ([`SnapshotConfig`], [`RepositorySnapshotExt`]).
//!
//! ```
//! use std::sync::Arc;
//! use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
//! use cqrsx_core::{Aggregate, Repository};
//! use cqrsx_snapshot::{RepositorySnapshotExt, SnapshotConfig};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Account { balance: i64 }
//! #[derive(Serialize, Deserialize)]
//! enum AccountEvent { Deposited { amount: i64 } }
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     type Event = AccountEvent;
//!     fn apply(&mut self, e: &AccountEvent) {
//!         match e { AccountEvent::Deposited { amount } => self.balance += amount }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
//! let config = SnapshotConfig::default().with_policy("every:100".parse()?);
//! let accounts = Repository::<Account>::new(Arc::new(InMemoryEventStore::new()))
//!     .with_snapshot_config(Arc::new(InMemorySnapshotStore::new()), &config)?;
//! let mut account = accounts.create("acc-1")?;
//! for _ in 0..150 { account.record(AccountEvent::Deposited { amount: 10 }); }
//! accounts.save(&mut account).await?;
//!
//! let (loaded, info) = accounts.load_with_info("acc-1").await?;
//! assert_eq!(loaded.state().balance, 1500);
//! assert_eq!((info.snapshot_version, info.events_replayed), (Some(150), 0));
//! # Ok(()) }
//! ```

mod config;
mod manager;
mod policy;
mod serializer;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{Retention, SnapshotConfig};
pub use manager::{RepositorySnapshotExt, SnapshotManager, SnapshotStats};
pub use policy::{
    Adaptive, AllOf, Always, AnyOf, EveryNEvents, FnPolicy, LoadSample, Never, PolicyConfig, SnapshotContext,
    SnapshotPolicy, TimeSinceLast, VersionInterval,
};
pub use serializer::{Compression, Format, SnapshotSerializer, MAX_DECODED_BYTES};
