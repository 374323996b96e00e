//! The suite's test aggregate, event helpers and a basic snapshot strategy.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateRoot};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{ContentType, NewEvent, Timestamp};
use crate::snapshot_store::{Restored, SnapshotRecord, SnapshotStore, SnapshotStrategy};
use crate::stream::StreamId;

/// The suite's aggregate: a named counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// The running total.
    pub value: i64,
    /// How many events were applied.
    pub applied: u64,
    /// The last name given.
    pub name: String,
}

/// The [`Counter`]'s events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// Adds to the value.
    Added {
        /// The amount.
        by: i64,
    },
    /// Renames the counter.
    Renamed(String),
    /// Sets the value back to zero.
    Reset,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Event = CounterEvent;

    fn apply(&mut self, event: &CounterEvent) {
        self.applied += 1;
        match event {
            CounterEvent::Added { by } => self.value += by,
            CounterEvent::Renamed(name) => name.clone_into(&mut self.name),
            CounterEvent::Reset => self.value = 0,
        }
    }
}

/// A name no other case or run uses: `prefix` plus a UUIDv7 in simple form.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::now_v7().simple())
}

/// A stream of a fresh aggregate type, so `read_all` filters can isolate a case.
pub(crate) fn fresh_stream(aggregate_type: &str) -> StreamId {
    StreamId::new(aggregate_type, unique("s-")).expect("valid stream id")
}

/// A small JSON event whose payload carries `n`.
pub(crate) fn ev(event_type: &str, n: u64) -> NewEvent {
    NewEvent::json(event_type, &serde_json::json!({ "n": n })).expect("json")
}

/// `count` events numbered from `start`.
pub(crate) fn evs(event_type: &str, start: u64, count: u64) -> Vec<NewEvent> {
    (start..start + count).map(|n| ev(event_type, n)).collect()
}

/// The `n` carried by [`ev`]'s payload.
pub(crate) fn payload_n(payload: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(payload).expect("json payload")["n"]
        .as_u64()
        .expect("n")
}

/// Adds a line to the report file named by `CQRSX_CASE_REPORT` (how `cargo xtask test` shows
/// the counts a case measured, such as the crash case's skipped and repeated events).
pub fn report(label: &str, line: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("CQRSX_CASE_REPORT") else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{label}: {line}");
    }
}

/// Checks a backend's catalogue of refused configurations: every outcome must be an
/// `Error::Config` whose message names the case's needle (the setting or variable at fault).
/// Reports the number of kinds under `label`, then fails listing every case that was answered
/// otherwise.
pub fn expect_config_errors<'a>(label: &str, cases: impl IntoIterator<Item = (&'a str, crate::Result<()>, &'a str)>) {
    let mut failures = Vec::new();
    let mut kinds = 0;
    for (kind, outcome, needle) in cases {
        kinds += 1;
        match outcome {
            Err(crate::Error::Config(m)) if m.contains(needle) => {}
            other => failures.push(format!(
                "{kind}: expected a config error naming {needle}, got {other:?}"
            )),
        }
    }
    report(label, &format!("bad-config catalogue: {kinds} kinds"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A minimal snapshot strategy: JSON state every `every` events. Enough to hold the store and
/// repository to contract item 7; `cqrsx-snapshot` has the full manager.
pub struct BasicSnapshots {
    store: Arc<dyn SnapshotStore>,
    every: u64,
}

/// Content type the basic strategy writes.
pub const BASIC_CONTENT_TYPE: &str = "application/json";

impl BasicSnapshots {
    /// Snapshots every `every` events into `store`.
    pub fn new(store: Arc<dyn SnapshotStore>, every: u64) -> Self {
        Self {
            store,
            every: every.max(1),
        }
    }
}

#[async_trait]
impl SnapshotStrategy<Counter> for BasicSnapshots {
    async fn restore(&self, stream: &StreamId) -> Result<Option<Restored<Counter>>> {
        let Some(record) = self.store.latest(stream, None).await? else {
            return Ok(None);
        };
        if record.content_type != BASIC_CONTENT_TYPE {
            return Err(Error::serialization_msg(format!(
                "unexpected snapshot content type {}",
                record.content_type
            )));
        }
        let state = ContentType::Json.decode(&record.payload)?;
        Ok(Some(Restored {
            state,
            version: record.version,
        }))
    }

    async fn after_save(&self, root: &AggregateRoot<Counter>, _committed: u64) -> Result<bool> {
        if root.version() - root.snapshot_version() < self.every {
            return Ok(false);
        }
        let payload = serde_json::to_vec(root.state()).map_err(|e| Error::serialization("snapshot", e))?;
        self.store
            .save(SnapshotRecord {
                stream: root.stream().clone(),
                version: root.version(),
                content_type: BASIC_CONTENT_TYPE.into(),
                schema_version: 1,
                payload,
                created_at: Timestamp::now(),
            })
            .await?;
        Ok(true)
    }
}
