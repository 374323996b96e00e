//! Example 03: a bank account with thousands of events, loaded by full replay and from a
//! snapshot, with the time and event count of each path and the manager's statistics.
//!
//! `cargo run -p example-snapshots` runs on the in-memory store; add `--features redis --
//! --backend redis` or `--features mongo -- --backend mongo` to run it on a server. The snapshot
//! settings come from the environment (`CQRSX_SNAPSHOT_POLICY`, `CQRSX_SNAPSHOT_SERIALIZER`, …;
//! see `SnapshotConfig::from_env`), defaulting here to every 500 events, MessagePack + zstd.

#![allow(clippy::print_stdout)] // examples are for people: plain println!

use std::collections::BTreeMap;
use std::sync::Arc;

use cqrsx_core::{Aggregate, Repository};
use cqrsx_snapshot::{Compression, Format, PolicyConfig, SnapshotConfig, SnapshotManager, SnapshotSerializer};
use serde::{Deserialize, Serialize};

const EVENTS: u32 = 4_321;
const BATCH: u32 = 50;

/// An account: balance plus a per-category spending summary, so the state has some shape.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    transactions: u64,
    spent_by_category: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64 },
    Spent { amount: i64, category: String },
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Event = AccountEvent;

    fn apply(&mut self, event: &AccountEvent) {
        self.transactions += 1;
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Spent { amount, category } => {
                self.balance -= amount;
                *self.spent_by_category.entry(category.clone()).or_default() += amount;
            }
        }
    }
}

fn config() -> cqrsx_core::Result<SnapshotConfig> {
    let defaults = SnapshotConfig::default()
        .with_policy(PolicyConfig::EveryEvents { events: 500 })
        .with_serializer(SnapshotSerializer::new(Format::MessagePack, Compression::ZSTD_DEFAULT));
    let from_env = SnapshotConfig::from_env()?;
    // Keep the example's defaults unless the environment says otherwise.
    Ok(if from_env == SnapshotConfig::default() {
        defaults
    } else {
        from_env
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> cqrsx_core::Result<()> {
    let stores = cqrsx_example_backend::connect("accounts").await?;
    let config = config()?;
    let manager = Arc::new(SnapshotManager::<Account>::from_config(
        Arc::clone(&stores.snapshots),
        &config,
    )?);
    let plain = Repository::<Account>::new(Arc::clone(&stores.events)).with_content_type(stores.content_type);
    let with_snapshots = plain.clone().with_snapshots(manager.clone());
    println!(
        "backend: {}; snapshots: {:?}, {}, keep {}",
        stores.name, config.policy, config.serializer, config.retention
    );

    let id = format!("acc-{}", cqrsx_core::Uuid::now_v7().simple());
    let mut account = with_snapshots.create(&id)?;
    let categories = ["rent", "food", "travel", "books", "energy"];
    for i in 0..EVENTS {
        if i % 3 == 0 {
            account.record(AccountEvent::Deposited { amount: 1_000 });
        } else {
            let category = categories[i as usize % categories.len()].to_string();
            account.record(AccountEvent::Spent {
                amount: i64::from(i % 97),
                category,
            });
        }
        if (i + 1) % BATCH == 0 {
            with_snapshots.save(&mut account).await?;
        }
    }
    with_snapshots.save(&mut account).await?;
    println!("wrote {EVENTS} events in batches of {BATCH}");

    let (replayed, replay_info) = plain.load_with_info(&id).await?;
    println!(
        "full replay:   {:>5} events replayed in {:>9.3?} (version {})",
        replay_info.events_replayed,
        replay_info.elapsed,
        replayed.version()
    );
    let (restored, snap_info) = with_snapshots.load_with_info(&id).await?;
    println!(
        "with snapshot: {:>5} events replayed in {:>9.3?} (snapshot at version {})",
        snap_info.events_replayed,
        snap_info.elapsed,
        snap_info.snapshot_version.unwrap_or(0)
    );
    println!(
        "same state either way: {} (balance {}, {} transactions)",
        restored.state() == replayed.state(),
        restored.state().balance,
        restored.state().transactions
    );

    let stream = with_snapshots.stream_id(&id)?;
    for info in manager.list(&stream).await? {
        println!(
            "snapshot v{:<5} {:>5} bytes  {}  schema {}",
            info.version, info.size, info.content_type, info.schema_version
        );
    }
    let stats = manager.stats();
    println!(
        "stats: taken {}, hits {}, misses {}, fallbacks {}, pruned {}, {} bytes written, avg restore {:.3?}",
        stats.taken,
        stats.hits,
        stats.misses,
        stats.fallbacks,
        stats.pruned,
        stats.bytes_written,
        stats.avg_restore_time
    );
    Ok(())
}
