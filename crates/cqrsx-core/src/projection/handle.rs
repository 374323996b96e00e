//! [`ProjectionHandle`]: a running projection's status, waits, stop and replay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::event::Position;
use crate::event_store::EventStore;
use crate::projection::status::{ProjectionStatus, RunnerState};
use crate::projection::store::{ProjectionStore, ViewKey};

/// What a handle asks of its runner.
pub(super) enum Command {
    ReplayParked(oneshot::Sender<Result<u64>>),
    Stop,
}

/// A running projection: its status, and ways to wait for it, stop it or replay what it
/// parked.
pub struct ProjectionHandle {
    pub(super) key: ViewKey,
    /// The event store's partitions (a position in another can never be waited for).
    pub(super) partitions: u32,
    /// The event store, for a lag that is true when read.
    pub(super) events: Arc<dyn EventStore>,
    /// The projection store, for the lag of a runner that has not read its checkpoint yet.
    pub(super) checkpoints: Arc<dyn ProjectionStore>,
    pub(super) status: watch::Receiver<ProjectionStatus>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for ProjectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("key", &self.key)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ProjectionHandle {
    /// The projection version it runs.
    pub fn key(&self) -> &ViewKey {
        &self.key
    }

    /// The status as the runner last reported it, with its lag measured now against the log's
    /// head (one read of the head; before the runner has read its checkpoint, one read of the
    /// stored checkpoint too): right after an acknowledged append, the lag counts its events
    /// until the runner has applied them. When they cannot be read, the lag is the one the
    /// runner last measured.
    pub async fn status(&self) -> ProjectionStatus {
        let mut status = self.last_status();
        // A runner still starting (or waiting for its lease) is as far behind as the stored
        // checkpoint, or the whole log when there is none.
        let checkpoint = match &status.checkpoint {
            Some(checkpoint) => Some(checkpoint.clone()),
            None => match self.checkpoints.checkpoint(&self.key).await {
                Ok(stored) => Some(stored.unwrap_or_else(|| crate::checkpoint::Checkpoint::start(self.partitions))),
                Err(_) => None,
            },
        };
        if let Some(checkpoint) = checkpoint {
            if let Ok(head) = self.events.head().await {
                status.lag = super::status::lag(self.events.as_ref(), &checkpoint, &head);
            }
        }
        status
    }

    /// The status as the runner last reported it, without reading anything (its lag is as of
    /// the runner's last commit or check, a fraction of a second to a few seconds old).
    pub fn last_status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Waits until the runner's committed checkpoint covers `position` (for example the
    /// position of an append the caller made), so the caller reads its own writes — in this
    /// runner's version (once a rebuilt version is active, readers read that one: wait on its
    /// runner's handle). Fails with
    /// [`Error::Timeout`] after `timeout`, and with the runner's error if it ends first; a
    /// position no event can have (a partition the store does not have, offset 0) is refused
    /// with [`Error::InvalidInput`] at once.
    pub async fn wait_until_caught_up(&self, position: Position, timeout: Duration) -> Result<()> {
        check_wait_position(position, self.partitions)?;
        self.wait_for(timeout, |s| s.checkpoint.as_ref().is_some_and(|c| c.covers(position)))
            .await
            .map(|_| ())
    }

    /// Waits until the status satisfies `condition`; [`Error::Timeout`] after `timeout`, or
    /// the runner's error if it ends without satisfying it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&ProjectionStatus) -> bool,
    ) -> Result<ProjectionStatus> {
        let mut rx = self.status.clone();
        let wait = async {
            loop {
                {
                    let status = rx.borrow_and_update();
                    if condition(&status) {
                        return Ok(status.clone());
                    }
                    if status.ended() {
                        return Err(ended_error(&status));
                    }
                }
                if rx.changed().await.is_err() {
                    let status = rx.borrow().clone();
                    return if condition(&status) {
                        Ok(status)
                    } else {
                        Err(ended_error(&status))
                    };
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("waiting for projection {}", self.key),
                after: timeout,
            }),
        }
    }

    /// Applies every parked event of this version through the handler again (once the cause
    /// is fixed); each one that succeeds is applied once and leaves the dead letters. Returns
    /// how many were applied; those that still fail stay parked.
    pub async fn replay_parked(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ReplayParked(tx))
            .await
            .map_err(|_| Error::InvalidInput(format!("projection {} is not running", self.key)))?;
        rx.await
            .map_err(|_| Error::InvalidInput(format!("projection {} stopped", self.key)))?
    }

    /// Asks the runner to stop after its current page, release its lease and end; returns how
    /// it ended.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.commands.send(Command::Stop).await;
        self.join_inner().await
    }

    /// Kills the runner where it is, as a crash would: its lease is not released.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Waits for the runner to end; its result.
    pub async fn join(mut self) -> Result<()> {
        self.join_inner().await
    }

    async fn join_inner(&mut self) -> Result<()> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(Error::backend(false, e)),
            },
            None => Ok(()),
        }
    }
}

/// Refuses a position no event of a store with `partitions` partitions can have (a partition it
/// does not have, offset 0, or past the largest offset), before anything waits for it.
pub(super) fn check_wait_position(position: Position, partitions: u32) -> Result<()> {
    if position.partition >= partitions || position.offset == 0 || position.offset > crate::event_store::MAX_NUMBER {
        return Err(Error::InvalidInput(format!(
            "position {position} cannot exist: the event store has {partitions} partition(s) and offsets run from 1 to 2^53 - 1"
        )));
    }
    Ok(())
}

fn ended_error(status: &ProjectionStatus) -> Error {
    match (&status.state, &status.last_error) {
        (RunnerState::Failed, Some(e)) => Error::InvalidInput(format!("projection {} failed: {e}", status.key)),
        (state, _) => Error::InvalidInput(format!("projection {} ended ({state:?})", status.key)),
    }
}
