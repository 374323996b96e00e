//! Example 07's flow as a library, so that it is checked on every backend: `main.rs` runs it on
//! the backend `--backend` names and prints what it finds; the `cqrsx-cli` crate's
//! `tests/example_07.rs` runs it on every row of `cargo xtask test` and checks the [`Summary`].
//!
//! Three parts, each a capability of the library rather than of the example:
//! 1. [`forget`]: users' email and name sealed per user (crypto-shredding); one asks to be
//!    forgotten, their events stay and read as erased, and a view rebuilt afterwards holds none
//!    of their data.
//! 2. [`archive`]: a retention run moves last year's orders to a file archive; they still load.
//! 3. [`migrate`]: a store on the embedded in-memory backend moves to the backend under test
//!    while it still takes writes, with a verification report.

use std::path::PathBuf;
use std::sync::Arc;

use cqrsx_core::crypto::KeyStore;
use cqrsx_core::{EventStore, ProjectionStore, SnapshotStore};

pub mod archive;
pub mod forget;
pub mod migrate;

/// The stores of one backend.
pub struct Backend {
    /// Which backend answered.
    pub name: &'static str,
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Projection state: checkpoints, leases, views.
    pub projections: Arc<dyn ProjectionStore>,
    /// Where the per-user data keys live.
    pub keys: Arc<dyn KeyStore>,
}

/// What the example runs on.
pub struct Setup {
    /// The application's stores (parts 1 and 2), and the migration's target (part 3).
    pub app: Backend,
    /// The empty stores the in-memory application migrates to (part 3).
    pub target: Backend,
    /// An empty directory for the file archive and the migration's state file.
    pub dir: PathBuf,
    /// Whether the migration draws its progress bar (on a terminal).
    pub progress: bool,
}

/// What the example found; every field is checked by the tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Part 1.
    pub forget: forget::Forgotten,
    /// Part 2.
    pub archive: archive::Archived,
    /// Part 3.
    pub migrate: migrate::Migrated,
}

/// Where the example says what it does (`main` prints it; tests keep it).
pub type Say<'a> = &'a mut (dyn FnMut(String) + Send);

/// Runs the three parts.
pub async fn run(setup: Setup, say: Say<'_>) -> cqrsx_core::Result<Summary> {
    say(format!("backend: {}", setup.app.name));
    let (forget, directory) = forget::run(&setup.app, say).await?;
    let archive = archive::run(&setup.app, &setup.dir.join("archive"), &directory, say).await;
    directory.stop().await?;
    let archive = archive?;
    let state = setup.dir.join("migration.json");
    let migrate = migrate::run(&setup.target, &state, setup.progress, say).await?;
    Ok(Summary {
        forget,
        archive,
        migrate,
    })
}

/// A JSON value as one line.
pub(crate) fn line(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("<{e}>"))
}
