//! Example 07: the data lifecycle — a user forgotten by crypto-shredding, last year's orders
//! archived and still loading, and an in-memory application migrated to the backend and
//! verified (the flow is in `lib.rs`, so that the tests run it on every backend).
//!
//! `cargo run -p example-data-lifecycle` runs on the in-memory store (and migrates into a second
//! in-memory store); `--features redis -- --backend redis` (with `CQRSX_REDIS_URL`) and
//! `--features mongo -- --backend mongo` (with `CQRSX_MONGO_URI`) run it on a server, under a
//! namespace of the run's own, and migrate into another.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::io::IsTerminal;

use example_data_lifecycle::{run, Backend, Setup};

async fn backend(namespace: &str) -> cqrsx_core::Result<Backend> {
    let stores = cqrsx_example_backend::connect_fresh("users", namespace).await?;
    Ok(Backend {
        name: stores.name,
        events: stores.events,
        snapshots: stores.snapshots,
        projections: stores.checkpoints,
        keys: stores.keys,
    })
}

#[tokio::main]
async fn main() -> cqrsx_core::Result<()> {
    let run_id = format!("ex07_{}", cqrsx_core::Uuid::now_v7().simple());
    let dir = std::env::temp_dir().join(&run_id);
    std::fs::create_dir_all(&dir).map_err(|e| cqrsx_core::Error::Config(format!("{}: {e}", dir.display())))?;
    let setup = Setup {
        app: backend(&run_id).await?,
        target: backend(&format!("{run_id}_target")).await?,
        dir: dir.clone(),
        progress: std::io::stderr().is_terminal(),
    };
    let summary = run(setup, &mut |line| println!("{line}")).await?;
    let ok = !summary.forget.plaintext_in_raw_events
        && !summary.forget.plaintext_in_rebuilt_view
        && summary.archive.old_orders_load_the_same
        && summary.migrate.differences == 0;
    println!(
        "\nall as promised: {ok} (archive and migration state in {})",
        dir.display()
    );
    Ok(())
}
