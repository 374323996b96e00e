//! What a runner reports: its state, checkpoint, lag, rate and last error.

use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::projection::store::ViewKey;

/// What a runner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Reading its checkpoint.
    Starting,
    /// Another runner holds the lease (or took it over from this one); this one waits to take
    /// over.
    WaitingForLease,
    /// Reading past events.
    CatchingUp,
    /// Caught up, following new events.
    Live,
    /// Stopped on request.
    Stopped,
    /// A newer version became active; this one stopped.
    Superseded,
    /// Ended on an error it cannot ride out (see [`ProjectionStatus::last_error`]): a handler
    /// that kept failing under the `Stop` policy, stored data it cannot trust, a bad
    /// configuration, a panic of the runner itself.
    Failed,
}

/// A runner's status, readable at any time (and traced).
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// The projection version it runs.
    pub key: ViewKey,
    /// What it is doing.
    pub state: RunnerState,
    /// The checkpoint it last committed: everything before it is applied.
    pub checkpoint: Option<Checkpoint>,
    /// How far behind the log it is, per partition (events; commits on MongoDB, whose
    /// positions count commits).
    pub lag: Vec<u64>,
    /// Events applied by this runner.
    pub applied: u64,
    /// Recent throughput.
    pub events_per_sec: f64,
    /// The last error (a handler's, a store's, a lost lease), kept after the runner recovered.
    pub last_error: Option<String>,
    /// The position of the last event a handler failed on (with the error in `last_error`).
    pub error_position: Option<crate::event::Position>,
    /// Failed attempts of the store operation the runner is retrying now (0 once it
    /// succeeded): a store outage shows here while the runner waits it out.
    pub retry_attempts: u32,
    /// Events parked by this projection version.
    pub parked: u64,
    /// The fencing token of the lease it holds.
    pub token: Option<u64>,
}

impl ProjectionStatus {
    /// The status of a runner that has not read its checkpoint yet.
    pub(super) fn starting(key: ViewKey) -> Self {
        Self {
            key,
            state: RunnerState::Starting,
            checkpoint: None,
            lag: Vec::new(),
            applied: 0,
            events_per_sec: 0.0,
            last_error: None,
            error_position: None,
            retry_attempts: 0,
            parked: 0,
            token: None,
        }
    }

    /// The lag over all partitions.
    pub fn total_lag(&self) -> u64 {
        self.lag.iter().sum()
    }

    /// Whether the runner has ended.
    pub fn ended(&self) -> bool {
        matches!(
            self.state,
            RunnerState::Stopped | RunnerState::Superseded | RunnerState::Failed
        )
    }
}

/// Events per second over the recent past (an exponentially weighted average of commits).
#[derive(Debug, Default)]
pub(super) struct Rate {
    last: Option<Instant>,
    pub(super) per_sec: f64,
}

impl Rate {
    /// Adds a commit of `events`; the rate after it.
    pub(super) fn add(&mut self, events: u64) -> f64 {
        let now = Instant::now();
        if let Some(last) = self.last {
            let secs = now.duration_since(last).as_secs_f64().max(1e-6);
            let sample = events as f64 / secs;
            self.per_sec = if self.per_sec == 0.0 {
                sample
            } else {
                0.8 * self.per_sec + 0.2 * sample
            };
        }
        self.last = Some(now);
        self.per_sec
    }
}

/// How far `checkpoint` is behind `head`, per partition.
pub(super) fn lag(events: &dyn crate::event_store::EventStore, checkpoint: &Checkpoint, head: &Checkpoint) -> Vec<u64> {
    checkpoint
        .positions()
        .map(|from| events.distance(from, head.next(from.partition)))
        .collect()
}
