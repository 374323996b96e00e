//! [`ProjectionRunner`]: feeds one projection from a subscription, commits its view changes
//! with the checkpoint after them, holds its lease, applies its error policy, and switches to a
//! rebuilt version once it has caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn, Instrument};

use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error, Result};
use crate::event::{EventFilter, Position, RecordedEvent};
use crate::event_store::EventStore;
use crate::projection::handle::{Command, ProjectionHandle};
use crate::projection::options::{OnFailure, RunnerOptions};
use crate::projection::status::{ProjectionStatus, Rate, RunnerState};
use crate::projection::store::{CheckpointStore, Lease, ParkedEvent, ViewKey};
use crate::projection::view::{Batch, DocCache};
use crate::projection::Projection;
use crate::subscription::{subscribe, SubscriptionMessage, SubscriptionOptions};

/// Runs a [`Projection`] over an event store into a [`CheckpointStore`].
///
/// The runner takes the projection version's lease (waiting while another runner holds it),
/// reads its checkpoint, subscribes from it with the projection's filter and, page by page,
/// applies each event through the handler and commits the page's view changes with the
/// checkpoint after them. It renews the lease while it runs; a commit after the lease was
/// taken over fails with [`Error::LeaseLost`] and stops it. A handler error is retried with
/// back-off, then stops the runner or parks the event ([`ErrorPolicy`](super::ErrorPolicy)).
///
/// Versions: the first version run becomes the active one (the one [`CheckpointStore::view`]
/// readers should use). A runner of a higher version is a rebuild: it runs from the start into
/// its own view while the active version keeps serving, activates itself once caught up, waits
/// for the old version's runner to step down (it notices within a third of its lease), and
/// drops the old view. A runner of a version below the active one refuses to start.
pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn CheckpointStore>,
    options: RunnerOptions,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("version", &self.projection.version())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProjectionRunner {
    /// A runner of `projection` reading `events` and writing to `store`.
    pub fn new(projection: Arc<dyn Projection>, events: Arc<dyn EventStore>, store: Arc<dyn CheckpointStore>) -> Self {
        Self {
            projection,
            events,
            store,
            options: RunnerOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts the runner as a task and returns its handle. Bad names, versions and options are
    /// refused here, before anything runs.
    pub fn spawn(self) -> Result<ProjectionHandle> {
        self.options.validate()?;
        let key = ViewKey::new(self.projection.name(), self.projection.version())?;
        crate::event_store::validate_filter(&self.projection.filter())?;
        let (status_tx, status_rx) = watch::channel(ProjectionStatus {
            key: key.clone(),
            state: RunnerState::Starting,
            checkpoint: None,
            lag: Vec::new(),
            applied: 0,
            events_per_sec: 0.0,
            last_error: None,
            parked: 0,
            token: None,
        });
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let span = tracing::info_span!("cqrsx.projection", projection = %key);
        let run = Run {
            key: key.clone(),
            projection: self.projection,
            events: self.events,
            store: self.store,
            options: self.options,
            status: status_tx,
            commands: commands_rx,
            cache: DocCache::default(),
            rate: Rate::default(),
            last_lag: None,
        };
        let task = tokio::spawn(run.run().instrument(span));
        Ok(ProjectionHandle {
            key,
            status: status_rx,
            commands: commands_tx,
            task: Some(task),
        })
    }
}

/// Renews a lease every third of its TTL until dropped; reports a loss.
struct Renewal {
    task: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<Option<String>>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Renewal {
    fn start(store: Arc<dyn CheckpointStore>, lease: Lease, ttl: Duration) -> Self {
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew(&lease, ttl).await {
                    Ok(()) => {}
                    Err(Error::LeaseLost { .. }) => {
                        let _ = tx.send(Some(format!("lease of {} was taken over", lease.key)));
                        return;
                    }
                    Err(e) => warn!(error = %e, "could not renew the projection lease; retrying"),
                }
            }
        });
        Self { task, lost }
    }
}

/// How processing a page ended.
enum PageEnd {
    Done,
    Stopped(Error),
}

struct Run {
    key: ViewKey,
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn CheckpointStore>,
    options: RunnerOptions,
    status: watch::Sender<ProjectionStatus>,
    commands: mpsc::Receiver<Command>,
    cache: DocCache,
    rate: Rate,
    last_lag: Option<Instant>,
}

impl Run {
    fn set_state(&self, state: RunnerState) {
        self.status.send_modify(|s| s.state = state);
    }

    fn fail(&self, error: &Error) {
        self.status.send_modify(|s| {
            s.state = RunnerState::Failed;
            s.last_error = Some(error.to_string());
        });
    }

    async fn run(mut self) -> Result<()> {
        let result = self.run_inner().await;
        if let Err(e) = &result {
            warn!(error = %e, "projection runner failed");
            self.fail(e);
        }
        result
    }

    async fn run_inner(&mut self) -> Result<()> {
        let active = self.store.active_version(self.key.projection()).await?;
        if let Some(active) = active.filter(|&a| a > self.key.version()) {
            return Err(Error::Config(format!(
                "projection {} v{} is older than the active v{active}",
                self.key.projection(),
                self.key.version()
            )));
        }
        let Some(lease) = self.acquire().await? else {
            self.set_state(RunnerState::Stopped);
            return Ok(());
        };
        info!(token = lease.token, owner = %lease.owner, "lease taken");
        self.status.send_modify(|s| s.token = Some(lease.token));
        let renewal = Renewal::start(Arc::clone(&self.store), lease.clone(), self.options.lease_ttl);
        let outcome = self.project(&lease, active, renewal).await;
        // A runner that ends (stopped, superseded, or on an error) lets a standby take over at
        // once; one whose lease was taken over has nothing to release.
        if !matches!(outcome, Err(Error::LeaseLost { .. })) {
            if let Err(e) = self.store.release(&lease).await {
                warn!(error = %e, "could not release the projection lease; it will expire");
            }
        }
        let state = outcome?;
        self.set_state(state);
        Ok(())
    }

    /// Takes the lease, waiting while another runner holds it; `None` when asked to stop.
    async fn acquire(&mut self) -> Result<Option<Lease>> {
        let poll = (self.options.lease_ttl / 4).max(Duration::from_millis(20));
        loop {
            if let Some(lease) = self
                .store
                .acquire(&self.key, &self.options.owner, self.options.lease_ttl)
                .await?
            {
                return Ok(Some(lease));
            }
            self.set_state(RunnerState::WaitingForLease);
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                command = self.commands.recv() => match command {
                    Some(Command::Stop) | None => return Ok(None),
                    Some(Command::ReplayParked(reply)) => {
                        let _ = reply.send(Err(Error::InvalidInput(format!(
                            "projection {} does not hold its lease yet", self.key
                        ))));
                    }
                },
            }
        }
    }

    /// The main loop under a held lease; returns the state it ended in.
    async fn project(&mut self, lease: &Lease, active: Option<u32>, mut renewal: Renewal) -> Result<RunnerState> {
        let partitions = self.events.capabilities().partitions;
        let checkpoint = match self.store.checkpoint(&self.key).await? {
            Some(c) if c.partitions() != partitions => {
                return Err(Error::Integrity(format!(
                    "the checkpoint of {} covers {} partitions, the event store has {partitions}",
                    self.key,
                    c.partitions()
                )))
            }
            Some(c) => c,
            None => Checkpoint::start(partitions),
        };
        if active.is_none() {
            self.store.activate(lease).await?;
        }
        let rebuilding_over = active.filter(|&a| a < self.key.version());
        let parked = self.store.parked(&self.key).await?.len() as u64;
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint.clone());
            s.parked = parked;
            s.state = RunnerState::CatchingUp;
        });
        self.cache = DocCache::new(self.options.cache_docs);
        let options = SubscriptionOptions::default()
            .from(checkpoint)
            .filter(self.projection.filter())
            .page_size(self.options.page_size)
            .poll_between(self.options.poll.0, self.options.poll.1);
        let mut subscription = subscribe(Arc::clone(&self.events), options)?;
        let mut old_version = rebuilding_over;
        let check_every = (self.options.lease_ttl / 3).max(Duration::from_millis(20));
        let mut next_check = tokio::time::Instant::now() + check_every;
        loop {
            tokio::select! {
                biased;
                _ = renewal.lost.changed() => {
                    // A loss was reported, or the renewal task is gone and the lease will lapse.
                    let reason = renewal
                        .lost
                        .borrow()
                        .clone()
                        .unwrap_or_else(|| "the lease could not be renewed".into());
                    return Err(Error::LeaseLost { projection: self.key.to_string(), token: lease.token, reason });
                }
                command = self.commands.recv() => match command {
                    Some(Command::Stop) | None => return Ok(RunnerState::Stopped),
                    Some(Command::ReplayParked(reply)) => {
                        let result = self.replay_parked(lease).await;
                        let lost = matches!(result, Err(Error::LeaseLost { .. }));
                        let _ = reply.send(result);
                        if lost {
                            return Err(Error::LeaseLost { projection: self.key.to_string(), token: lease.token, reason: "commit refused".into() });
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_check) => {
                    next_check = tokio::time::Instant::now() + check_every;
                    if self.superseded().await? {
                        info!("a newer version is active; stepping down");
                        return Ok(RunnerState::Superseded);
                    }
                    if let Some(old) = old_version {
                        if self.status.borrow().state == RunnerState::Live && self.drop_old(old).await? {
                            old_version = None;
                        }
                    }
                    self.update_lag().await;
                }
                message = subscription.next() => match message {
                    None => return Ok(RunnerState::Stopped),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(SubscriptionMessage::Events { events, checkpoint })) => {
                        if let PageEnd::Stopped(e) = self.apply_page(lease, events, checkpoint).await? {
                            return Err(e);
                        }
                    }
                    Some(Ok(SubscriptionMessage::CaughtUp { .. })) => {
                        self.set_state(RunnerState::Live);
                        if let Some(old) = rebuilding_over {
                            // A rebuild that caught up becomes the active version.
                            if self.store.active_version(self.key.projection()).await? == Some(old) {
                                self.store.activate(lease).await?;
                                info!(old, "rebuild caught up; now the active version");
                            }
                        }
                        self.update_lag().await;
                    }
                    Some(Ok(SubscriptionMessage::FellBehind { .. })) => self.set_state(RunnerState::CatchingUp),
                },
            }
        }
    }

    async fn superseded(&self) -> Result<bool> {
        Ok(self
            .store
            .active_version(self.key.projection())
            .await?
            .is_some_and(|a| a > self.key.version()))
    }

    /// Drops the old version's view once no runner holds its lease; whether it was dropped.
    async fn drop_old(&self, old: u32) -> Result<bool> {
        let old_key = self.key.at_version(old)?;
        let Some(lease) = self
            .store
            .acquire(&old_key, &self.options.owner, self.options.lease_ttl)
            .await?
        else {
            return Ok(false);
        };
        self.store.drop_view(&old_key).await?;
        let _ = self.store.release(&lease).await;
        info!(old = %old_key, "dropped the old version's view");
        Ok(true)
    }

    async fn update_lag(&mut self) {
        if self.last_lag.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last_lag = Some(Instant::now());
        let Some(checkpoint) = self.status.borrow().checkpoint.clone() else {
            return;
        };
        match self.events.head().await {
            Ok(head) => {
                let lag: Vec<u64> = checkpoint
                    .positions()
                    .map(|from| self.events.distance(from, head.next(from.partition)))
                    .collect();
                self.status.send_modify(|s| s.lag = lag);
            }
            Err(e) => debug!(error = %e, "could not read the log's head for the lag"),
        }
    }

    /// Applies a page and commits it with `checkpoint`.
    async fn apply_page(
        &mut self,
        lease: &Lease,
        events: Vec<RecordedEvent>,
        checkpoint: Checkpoint,
    ) -> Result<PageEnd> {
        let mut batch = Batch::new(Arc::clone(&self.store), self.key.clone());
        let mut applied = 0u64;
        let mut parked = 0u64;
        for event in &events {
            match self.apply_one(&mut batch, event, None).await? {
                Ok(()) => applied += 1,
                Err((error, attempts)) => match self.options.errors.then {
                    OnFailure::Park => {
                        warn!(position = %event.position, error = %error, "parking an event its handler cannot apply");
                        batch.park(ParkedEvent::of(event, error.to_string(), attempts));
                        parked += 1;
                    }
                    OnFailure::Stop => {
                        // Everything before the event is committed; the checkpoint stops at it.
                        let mut at = self
                            .status
                            .borrow()
                            .checkpoint
                            .clone()
                            .unwrap_or_else(|| Checkpoint::start(checkpoint.partitions()));
                        at.set(event.position);
                        self.commit(lease, batch, Some(at.clone()), Vec::new()).await?;
                        self.status.send_modify(|s| {
                            s.checkpoint = Some(at);
                            s.applied += applied;
                        });
                        return Ok(PageEnd::Stopped(Error::Handler {
                            projection: self.key.to_string(),
                            position: event.position,
                            event_type: event.event_type.clone(),
                            source: error,
                        }));
                    }
                },
            }
        }
        self.commit(lease, batch, Some(checkpoint.clone()), Vec::new()).await?;
        self.rate.add(applied);
        let rate = self.rate.per_sec;
        // One change of the status, so a reader never sees the checkpoint without its counts.
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint);
            s.applied += applied;
            s.parked += parked;
            s.events_per_sec = rate;
        });
        self.update_lag().await;
        Ok(PageEnd::Done)
    }

    /// Runs the handler on one event with the error policy's retries. The outer `Result` is a
    /// store failure (the runner stops); the inner one is the handler's last error.
    async fn apply_one(
        &mut self,
        batch: &mut Batch,
        event: &RecordedEvent,
        replay_of: Option<Position>,
    ) -> Result<std::result::Result<(), (BoxError, u32)>> {
        let policy = self.options.errors;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = {
                let mut view = batch.view(&mut self.cache, event.position, replay_of);
                self.projection.apply(event, &mut view).await
            };
            let error = match result {
                Ok(()) => return Ok(Ok(())),
                Err(error) => error,
            };
            batch.rollback_event();
            // A store that failed under the handler is not a poison event: wait and retry.
            if let Some(store_error) = error.downcast_ref::<Error>() {
                if store_error.is_retryable() {
                    warn!(error = %store_error, "the view store failed under the handler; retrying");
                    tokio::time::sleep(policy.pause(attempts)).await;
                    continue;
                }
            }
            self.status
                .send_modify(|s| s.last_error = Some(format!("{} at {}: {error}", event.event_type, event.position)));
            if attempts > policy.retries {
                return Ok(Err((error, attempts)));
            }
            tokio::time::sleep(policy.pause(attempts)).await;
        }
    }

    /// Commits a batch, retrying while the store's failure is transient; a lost lease ends the
    /// runner.
    async fn commit(
        &mut self,
        lease: &Lease,
        batch: Batch,
        checkpoint: Option<Checkpoint>,
        replayed: Vec<Position>,
    ) -> Result<()> {
        let commit = batch.commit(checkpoint.clone(), replayed);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.store.commit(lease, commit.clone()).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    // Commits are idempotent (whole documents, the same checkpoint), so a
                    // commit whose reply was lost can be sent again.
                    warn!(error = %e, attempt, "commit failed; retrying");
                    tokio::time::sleep(self.options.errors.pause(attempt)).await;
                }
                Err(e) => {
                    self.cache.clear();
                    return Err(e);
                }
            }
        }
        batch.settle(&mut self.cache);
        Ok(())
    }

    /// Replays every parked event; how many were applied.
    async fn replay_parked(&mut self, lease: &Lease) -> Result<u64> {
        let parked = self.store.parked(&self.key).await?;
        let mut replayed = 0;
        for p in &parked {
            let page = self.events.read_all(p.position, 1, &EventFilter::all()).await?;
            let Some(event) = page.events.into_iter().find(|e| e.position == p.position) else {
                // The event is gone (its stream was truncated or deleted): nothing to apply.
                let batch = Batch::new(Arc::clone(&self.store), self.key.clone());
                self.commit(lease, batch, None, vec![p.position]).await?;
                continue;
            };
            let mut batch = Batch::new(Arc::clone(&self.store), self.key.clone());
            match self.apply_one(&mut batch, &event, Some(p.position)).await? {
                Ok(()) => {
                    self.commit(lease, batch, None, vec![p.position]).await?;
                    replayed += 1;
                }
                Err((error, _)) => warn!(position = %p.position, error = %error, "a parked event still fails"),
            }
        }
        let left = self.store.parked(&self.key).await?.len() as u64;
        self.status.send_modify(|s| s.parked = left);
        Ok(replayed)
    }
}
