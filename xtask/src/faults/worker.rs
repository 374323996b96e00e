//! The process the fault suite kills, freezes and resumes: one projection runner over a
//! target, printing its status as JSON lines on stdout. Deliberately broken variants (for the
//! meta-test) live here too, never in the library.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use cqrsx_core::projection::{
    ErrorPolicy, HandlerResult, LeaseHolder, ParkedEvent, Projection, ProjectionRunner, ReplayRequests, RunnerOptions,
    ShardFault, ShardedRunner, View, ViewKey,
};
use cqrsx_core::raw::{Commit, Lease};
use cqrsx_core::{async_trait, Checkpoint, Error, EventFilter, ProjectionStore, ReadStore, RecordedEvent, Result};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::target::Target;

/// The payload that makes a misbehaving handler misbehave.
pub const POISON: u64 = 666_666;

/// What a worker's handler does with the [`POISON`] event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Misbehave {
    None,
    Panic,
    Hang,
    /// Fails with a transient store error three times, then applies it.
    Transient,
}

/// A deliberately broken runner or store, for the meta-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Broken {
    None,
    /// Commits the checkpoint before the documents, in two steps.
    CheckpointFirst,
    /// Writes its documents around the fence when its commit is refused.
    Unfenced,
    /// Reads the global total as missing every other time (loses updates of shared documents).
    StaleShared,
    /// Exits as soon as a store error is being retried.
    DiesOnError,
    /// Swallows a panicking handler's event.
    HidesPanics,
    /// A store that reports every shard free and, asked for a shard's or a member slot's lease
    /// another process holds, hands out the holder's lease again (two processes take one slot
    /// and reach for the same shards, and two holders apply one shard at once).
    DoubleGrant,
    /// A sharded runner whose shards apply every event, not only their own streams'.
    IgnoresShards,
}

/// `xtask fault-worker`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The target, as JSON (see `target.rs`).
    #[arg(long)]
    pub target: String,
    #[arg(long)]
    pub projection: String,
    /// The aggregate types it follows, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub aggregates: Vec<String>,
    #[arg(long)]
    pub owner: String,
    #[arg(long, default_value_t = 2_000)]
    pub ttl_ms: u64,
    #[arg(long, default_value_t = 64)]
    pub page: usize,
    #[arg(long, value_enum, default_value_t = Misbehave::None)]
    pub misbehave: Misbehave,
    /// Park failing events instead of stopping.
    #[arg(long)]
    pub park: bool,
    #[arg(long, default_value_t = 30_000)]
    pub handler_timeout_ms: u64,
    #[arg(long, value_enum, default_value_t = Broken::None)]
    pub broken: Broken,
    /// Print `{"commit": token}` and wait this long before each commit (0: neither).
    #[arg(long, default_value_t = 0)]
    pub commit_pause_ms: u64,
    /// Run the projection as this many shards (a `ShardedRunner`), sharing them with every
    /// other worker of the same projection.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
}

/// A status line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusLine {
    pub state: String,
    pub token: Option<u64>,
    pub checkpoint: Option<String>,
    pub applied: u64,
    pub parked: u64,
    pub retry: u32,
    pub error: Option<String>,
    pub error_position: Option<String>,
    /// A commit about to be sent under this token (`--commit-pause-ms`).
    pub commit: Option<u64>,
}

fn emit(line: &StatusLine) {
    if let Ok(text) = serde_json::to_string(line) {
        println!("{text}");
    }
}

/// The counts and sums a shared document keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub count: u64,
    pub sum: u64,
}

/// What a per-stream document keeps: a count, a sum, the last version, and any version seen
/// out of order (a repeat or a gap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub sum: u64,
    pub last: u64,
    pub repeats: u64,
    pub gaps: u64,
}

/// The ids of the documents an event changes: its stream's, its aggregate type's, the global
/// total, its event type's.
pub fn document_ids(event: &RecordedEvent) -> [String; 4] {
    [
        format!("s.{}.{}", event.aggregate_type(), event.stream.id()),
        format!("agg.{}", event.aggregate_type()),
        "total".to_string(),
        format!("type.{}", event.event_type),
    ]
}

/// The payload number of an event (`{"n": …}`).
pub fn payload_n(event: &RecordedEvent) -> u64 {
    serde_json::from_slice::<Value>(&event.payload)
        .ok()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(0)
}

/// The worker's projection: every document shape at once (see [`document_ids`]).
struct Shapes {
    name: String,
    aggregates: Vec<String>,
    misbehave: Misbehave,
    hides_panics: bool,
    tries: AtomicU64,
}

impl Shapes {
    async fn apply_inner(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let n = payload_n(event);
        if n == POISON {
            match self.misbehave {
                Misbehave::Panic => panic!("the handler cannot take the poison event at {}", event.position),
                Misbehave::Hang => std::future::pending::<()>().await,
                Misbehave::Transient if self.tries.fetch_add(1, Ordering::SeqCst) < 3 => {
                    return Err(Error::backend(true, "the view store is restarting").into());
                }
                _ => {}
            }
        }
        let [stream, aggregate, total, kind] = document_ids(event);
        let mut tally: Tally = view.get_model(&stream).await?.unwrap_or_default();
        if event.version <= tally.last {
            tally.repeats += 1;
        } else if event.version != tally.last + 1 {
            tally.gaps += 1;
        }
        tally.count += 1;
        tally.sum += n;
        tally.last = tally.last.max(event.version);
        view.put_model(&stream, &tally)?;
        for id in [aggregate, total, kind] {
            let mut totals: Totals = view.get_model(&id).await?.unwrap_or_default();
            totals.count += 1;
            totals.sum += n;
            view.put_model(&id, &totals)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for Shapes {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(self.aggregates.clone())
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        if self.hides_panics {
            return match AssertUnwindSafe(self.apply_inner(event, view)).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Ok(()),
            };
        }
        self.apply_inner(event, view).await
    }
}

/// A projection store that announces its commits, and is broken as asked.
struct Wrapped {
    inner: Arc<dyn ProjectionStore>,
    broken: Broken,
    pause: Duration,
    reads: AtomicU64,
}

#[async_trait]
impl ProjectionStore for Wrapped {
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let granted = self.inner.acquire(key, owner, ttl).await?;
        if granted.is_none() && self.broken == Broken::DoubleGrant && (key.shard().is_some() || key.is_member()) {
            // The holder's own lease, handed out a second time: it passes every fence.
            return Ok(self.inner.holder(key).await?.map(|h| Lease {
                key: key.clone(),
                owner: h.owner,
                token: h.token,
            }));
        }
        Ok(granted)
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        self.inner.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        self.inner.checkpoint(key).await
    }
    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>> {
        if self.broken == Broken::StaleShared
            && id == "total"
            && self.reads.fetch_add(1, Ordering::SeqCst).is_multiple_of(2)
        {
            return Ok(None);
        }
        self.inner.get(key, id).await
    }
    async fn commit(&self, lease: &Lease, mut commit: Commit) -> Result<()> {
        if !self.pause.is_zero() {
            emit(&StatusLine {
                commit: Some(lease.token),
                ..StatusLine::default()
            });
            tokio::time::sleep(self.pause).await;
        }
        match self.broken {
            Broken::CheckpointFirst => {
                let checkpoint = commit.checkpoint.take();
                self.inner
                    .commit(
                        lease,
                        Commit {
                            checkpoint,
                            ..Commit::default()
                        },
                    )
                    .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.inner.commit(lease, commit).await
            }
            Broken::Unfenced => match self.inner.commit(lease, commit.clone()).await {
                Err(Error::LeaseLost { .. }) => {
                    let docs = commit
                        .writes
                        .iter()
                        .filter_map(|w| match &w.change {
                            cqrsx_core::raw::ViewChange::Put { data, .. } => Some(cqrsx_core::Document {
                                id: w.id.clone(),
                                data: data.clone(),
                            }),
                            cqrsx_core::raw::ViewChange::Delete => None,
                        })
                        .collect();
                    self.inner.view(&lease.key)?.save_many(docs).await?;
                    Err(Error::LeaseLost {
                        projection: lease.key.to_string(),
                        token: lease.token,
                        reason: "refused".into(),
                    })
                }
                other => other,
            },
            _ => self.inner.commit(lease, commit).await,
        }
    }
    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        self.inner.parked(key).await
    }
    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        self.inner.active_version(projection).await
    }
    async fn activate(&self, lease: &Lease) -> Result<()> {
        self.inner.activate(lease).await
    }
    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        self.inner.drop_view(key).await
    }
    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        self.inner.view(key)
    }
    async fn views(&self) -> Result<Vec<ViewKey>> {
        self.inner.views().await
    }
    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        if self.broken == Broken::DoubleGrant && key.shard().is_some() {
            // Every shard looks free, so a joining process reaches for held ones too.
            return Ok(None);
        }
        self.inner.holder(key).await
    }
    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        self.inner.request_replay(key).await
    }
    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        self.inner.replay_requests(key).await
    }
    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        self.inner.replay_handled(key, upto, replayed).await
    }
}

/// Runs the worker until killed.
pub async fn run(args: WorkerArgs) -> crate::cmd::Result<()> {
    let target: Target = serde_json::from_str(&args.target).map_err(|e| format!("--target: {e}"))?;
    let stores = target.connect(Duration::from_secs(120)).await?;
    let checkpoints: Arc<dyn ProjectionStore> = Arc::new(Wrapped {
        inner: stores.checkpoints,
        broken: args.broken,
        pause: Duration::from_millis(args.commit_pause_ms),
        reads: AtomicU64::new(0),
    });
    let projection = Arc::new(Shapes {
        name: args.projection.clone(),
        aggregates: args.aggregates.clone(),
        misbehave: args.misbehave,
        hides_panics: args.broken == Broken::HidesPanics,
        tries: AtomicU64::new(0),
    });
    let mut errors = ErrorPolicy {
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        ..ErrorPolicy::stop_after(2)
    };
    if args.park {
        errors.then = cqrsx_core::projection::OnFailure::Park;
    }
    let options = RunnerOptions::default()
        .with_owner(&args.owner)
        .with_lease_ttl(Duration::from_millis(args.ttl_ms))
        .with_page_size(args.page)
        .with_poll_between(Duration::from_millis(2), Duration::from_millis(50))
        .with_handler_timeout(Duration::from_millis(args.handler_timeout_ms))
        .with_errors(errors);
    if args.shards > 1 {
        let fault = (args.broken == Broken::IgnoresShards).then_some(ShardFault::IgnoresOwnership);
        let handle = ShardedRunner::new(projection, stores.events, checkpoints, args.shards)
            .with_options(options)
            .with_fault(fault)
            .spawn()
            .map_err(|e| e.to_string())?;
        loop {
            emit(&sharded_line(&handle.local_status(), handle.held().len()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let handle = ProjectionRunner::new(projection, stores.events, checkpoints)
        .with_options(options)
        .spawn()
        .map_err(|e| e.to_string())?;
    loop {
        let s = handle.last_status();
        emit(&StatusLine {
            state: format!("{:?}", s.state),
            token: s.token,
            checkpoint: s.checkpoint.as_ref().map(|c| c.to_string()),
            applied: s.applied,
            parked: s.parked,
            retry: s.retry_attempts,
            error: s.last_error.clone(),
            error_position: s.error_position.map(|p| p.to_string()),
            commit: None,
        });
        if args.broken == Broken::DiesOnError && s.retry_attempts > 0 {
            std::process::exit(3);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One status line for every shard runner of a sharded worker: the states it holds leases in,
/// its largest token, and the sums of what they applied, parked and retried.
fn sharded_line(statuses: &[cqrsx_core::projection::ProjectionStatus], held: usize) -> StatusLine {
    StatusLine {
        state: format!("{held} shard(s) held"),
        token: statuses.iter().filter_map(|s| s.token).max(),
        checkpoint: None,
        applied: statuses.iter().map(|s| s.applied).sum(),
        parked: statuses.iter().map(|s| s.parked).sum(),
        retry: statuses.iter().map(|s| s.retry_attempts).sum(),
        error: statuses
            .iter()
            .filter(|s| s.state == cqrsx_core::projection::RunnerState::Failed)
            .find_map(|s| s.last_error.clone()),
        error_position: None,
        commit: None,
    }
}
