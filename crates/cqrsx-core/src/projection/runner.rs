//! [`ProjectionRunner`]: feeds one projection from a subscription, commits its view changes
//! with the checkpoint after them, holds its lease, applies its error policy, rides out store
//! outages, and switches to a rebuilt version once it has caught up.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn, Instrument};

use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error, Result};
use crate::event::{Position, RecordedEvent};
use crate::event_store::EventStore;
use crate::projection::handle::{Command, ProjectionHandle};
use crate::projection::handler::{panic_message, run_handler};
use crate::projection::observe::{apply_span, commit_span, RunnerMetrics};
use crate::projection::options::{OnFailure, RunnerOptions};
use crate::projection::renewal::Renewal;
use crate::projection::sharded::ShardScope;
use crate::projection::status::{ProjectionStatus, Rate, RunnerState};
use crate::projection::store::{Lease, ParkedEvent, ProjectionStore, Shard, ViewKey};
use crate::projection::view::{Batch, DocCache};
use crate::projection::Projection;
use crate::subscription::{subscribe, SubscriptionMessage, SubscriptionOptions};

mod activation;
mod replay;

/// Runs a [`Projection`] over an event store into a [`ProjectionStore`].
///
/// The runner takes the projection version's lease (waiting while another runner holds it),
/// reads its checkpoint, subscribes from it with the projection's filter and, page by page,
/// applies each event through the handler and commits the page's view changes with the
/// checkpoint after them. It renews the lease while it runs.
///
/// What it does when something fails — it never ends without its status saying why:
/// - **A handler** that returns an error, panics, or runs past
///   [`RunnerOptions::handler_timeout`] fails the event: it is retried with back-off, then the
///   runner stops at it or parks it ([`ErrorPolicy`](super::ErrorPolicy)). Its message and the
///   event's position are in the status.
/// - **A store** (event store or projection store) that fails with a transient error (a lost
///   connection, a timeout, a server restarting) is retried with back-off, without limit: the
///   status counts the attempts and shows the last error, and the runner goes on from its
///   last commit once the store answers again.
/// - **A lost lease** (another runner took over while this one stalled) makes it a standby
///   again: it drops what it had not committed and waits to take the lease back.
/// - Anything else — stored data the runner cannot trust, a configuration error, a panic of the
///   runner itself — ends it in [`RunnerState::Failed`] with the error in its status.
///
/// Versions: the first version run becomes the active one (the one [`ProjectionStore::view`]
/// readers should use). A runner of a higher version is a rebuild: it runs from the start into
/// its own view while the active version keeps serving, activates itself once caught up, waits
/// for the old version's runner to step down (it notices within a third of its lease), and
/// drops the old view. A runner of a version below the active one refuses to start.
pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn ProjectionStore>,
    options: RunnerOptions,
    /// The shard it runs for a [`super::ShardedRunner`] (its key, and the streams it applies).
    shard: Option<ShardScope>,
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
    pub fn new(projection: Arc<dyn Projection>, events: Arc<dyn EventStore>, store: Arc<dyn ProjectionStore>) -> Self {
        Self {
            projection,
            events,
            store,
            options: RunnerOptions::default(),
            shard: None,
        }
    }

    /// Runs shard `scope` of the projection only (see [`super::ShardedRunner`]).
    pub(super) fn for_shard(mut self, scope: ShardScope) -> Self {
        self.shard = Some(scope);
        self
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
        let key = match self.shard {
            Some(scope) => ViewKey::sharded(self.projection.name(), self.projection.version(), scope.shard)?,
            None => ViewKey::new(self.projection.name(), self.projection.version())?,
        };
        crate::event_store::validate_filter(&self.projection.filter())?;
        let (status_tx, status_rx) = watch::channel(ProjectionStatus::starting(key.clone()));
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let span = tracing::info_span!("cqrsx.projection", projection = %key);
        let run = Run {
            key: key.clone(),
            projection: self.projection,
            events: Arc::clone(&self.events),
            store: Arc::clone(&self.store),
            options: self.options,
            shard: self.shard.filter(|s| s.skips_foreign).map(|s| s.shard),
            waits_beside: self.shard.is_none_or(|s| s.waits_beside),
            status: status_tx,
            commands: commands_rx,
            cache: DocCache::default(),
            rate: Rate::default(),
            last_lag: None,
            metrics: RunnerMetrics::new(&key),
        };
        let task = tokio::spawn(run.run().instrument(span));
        Ok(ProjectionHandle {
            key,
            partitions: self.events.capabilities().partitions,
            events: self.events,
            checkpoints: self.store,
            status: status_rx,
            commands: commands_tx,
            task: Some(task),
        })
    }
}

/// How a session under one lease ended, when it did not fail.
enum SessionEnd {
    /// The runner is done: stopped on request, or superseded by a newer version.
    Finished(RunnerState),
    /// Another runner took the lease over: this one becomes a standby.
    LeaseLost(String),
}

/// Whether the runner should ride out `error` (retry with back-off) rather than end on it.
fn transient(error: &Error) -> bool {
    error.is_retryable()
}

struct Run {
    key: ViewKey,
    projection: Arc<dyn Projection>,
    events: Arc<dyn EventStore>,
    store: Arc<dyn ProjectionStore>,
    options: RunnerOptions,
    /// Its shard's (it skips others' events) and whether it waits before activating beside another layout.
    shard: Option<Shard>,
    waits_beside: bool,
    status: watch::Sender<ProjectionStatus>,
    commands: mpsc::Receiver<Command>,
    cache: DocCache,
    rate: Rate,
    last_lag: Option<Instant>,
    metrics: RunnerMetrics,
}

impl Run {
    fn set_state(&self, state: RunnerState) {
        self.status.send_modify(|s| s.state = state);
    }

    /// Counts a failed attempt of a store operation that will be retried, and waits its pause.
    async fn retry_after(&self, what: &str, error: &Error) {
        let mut attempts = 0;
        self.status.send_modify(|s| {
            s.retry_attempts += 1;
            attempts = s.retry_attempts;
            s.last_error = Some(format!("{what}: {error}"));
        });
        self.metrics.retries.increment(1);
        warn!(error = %error, attempts, "{what} failed; retrying");
        tokio::time::sleep(self.options.errors.pause(attempts)).await;
    }

    /// Runs to the end and reports it; a panic of the runner's own code ends it `Failed` with
    /// the panic's message, like any other error.
    async fn run(mut self) -> Result<()> {
        let status = self.status.clone();
        let result = match AssertUnwindSafe(self.run_inner()).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(Error::Integrity(format!(
                "the projection runner panicked: {}",
                panic_message(panic.as_ref())
            ))),
        };
        if let Err(e) = &result {
            warn!(error = %e, "projection runner failed");
            status.send_modify(|s| {
                s.state = RunnerState::Failed;
                s.last_error = Some(e.to_string());
                if let Error::Handler { position, .. } = e {
                    s.error_position = Some(*position);
                }
            });
        }
        result
    }

    /// Sessions under a lease, one after the other: a lost lease or a store outage starts a
    /// new one from the last commit.
    async fn run_inner(&mut self) -> Result<()> {
        loop {
            let active = self.read_active().await?;
            if self.older_than_active(active)? {
                self.set_state(RunnerState::Superseded);
                return Ok(());
            }
            let Some(lease) = self.acquire().await? else {
                self.set_state(RunnerState::Stopped);
                return Ok(());
            };
            match self.after_acquire(&lease).await? {
                Some(false) => {}
                Some(true) => return Ok(()),
                None => continue,
            }
            info!(token = lease.token, owner = %lease.owner, "lease taken");
            self.metrics.acquisitions.increment(1);
            self.status.send_modify(|s| s.token = Some(lease.token));
            let renewal = Renewal::start(Arc::clone(&self.store), lease.clone(), self.options.lease_ttl);
            let outcome = self.session(&lease, active, renewal).await;
            // Whatever this session cached may not be what the store holds now.
            self.cache.clear();
            match outcome {
                Ok(SessionEnd::Finished(state)) => {
                    self.release(&lease).await;
                    self.set_state(state);
                    return Ok(());
                }
                Ok(SessionEnd::LeaseLost(reason)) => {
                    warn!(%reason, "lost the projection lease; waiting to take it back");
                    self.metrics.losses.increment(1);
                    self.status.send_modify(|s| {
                        s.token = None;
                        s.last_error = Some(format!("lease lost: {reason}"));
                        s.state = RunnerState::WaitingForLease;
                    });
                }
                Err(e) if transient(&e) => {
                    // Let a standby take over while this runner waits out the outage.
                    self.release(&lease).await;
                    self.status.send_modify(|s| s.token = None);
                    self.retry_after("the projection's stores", &e).await;
                }
                Err(e) => {
                    self.release(&lease).await;
                    return Err(e);
                }
            }
        }
    }

    /// A runner that ends (stopped, superseded, or on an error) lets a standby take over at
    /// once; a lease that was taken over is not released (releasing it does nothing).
    async fn release(&self, lease: &Lease) {
        if let Err(e) = self.store.release(lease).await {
            warn!(error = %e, "could not release the projection lease; it will expire");
        }
    }

    /// Takes the lease, waiting while another runner holds it; `None` when asked to stop.
    async fn acquire(&mut self) -> Result<Option<Lease>> {
        let poll = (self.options.lease_ttl / 4).max(Duration::from_millis(20));
        loop {
            let pause = match self
                .store
                .acquire(&self.key, &self.options.owner, self.options.lease_ttl)
                .await
            {
                Ok(Some(lease)) => return Ok(Some(lease)),
                Ok(None) => {
                    self.set_state(RunnerState::WaitingForLease);
                    poll
                }
                Err(e) if transient(&e) => {
                    self.retry_after("taking the lease", &e).await;
                    Duration::ZERO
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
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

    /// The main loop under a held lease.
    async fn session(&mut self, lease: &Lease, active: Option<u32>, mut renewal: Renewal) -> Result<SessionEnd> {
        let lost = |reason: &str| Ok(SessionEnd::LeaseLost(reason.to_string()));
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
        // The first version run is active at once — unless another layout of the projection
        // serves readers: then this one activates once caught up, as a rebuild does.
        let other_layout = active.is_none() && self.other_layout_active().await?;
        if active.is_none() && !other_layout {
            match self.store.activate(lease).await {
                Err(Error::LeaseLost { reason, .. }) => return lost(&reason),
                other => other?,
            }
        }
        let rebuilding_over = active.filter(|&a| a < self.key.version());
        // What the active version must still be when this runner catches up, for it to activate.
        let activates_over = rebuilding_over.map(Some).or(other_layout.then_some(None));
        let parked = self.store.parked(&self.key).await?.len() as u64;
        self.metrics.parked.set(parked as f64);
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint.clone());
            s.parked = parked;
            s.state = RunnerState::CatchingUp;
            // The stores answer again.
            s.retry_attempts = 0;
        });
        self.cache = DocCache::new(self.options.cache_docs);
        let options = SubscriptionOptions::default()
            .with_start(checkpoint)
            .with_filter(self.projection.filter())
            .with_page_size(self.options.page_size)
            .with_poll_between(self.options.poll.0, self.options.poll.1);
        let mut subscription = subscribe(Arc::clone(&self.events), options)?;
        // The old view to drop: the one this rebuild replaces, or one an earlier holder of this
        // (active) version left undropped when it stopped or crashed before dropping it.
        let mut old_version = match rebuilding_over {
            None if active == Some(self.key.version()) => self.undropped_older().await?,
            replaced => replaced,
        };
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
                    return lost(&reason);
                }
                command = self.commands.recv() => match command {
                    Some(Command::Stop) | None => return Ok(SessionEnd::Finished(RunnerState::Stopped)),
                    Some(Command::ReplayParked(reply)) => {
                        let result = self.replay_parked(lease).await;
                        let end = match &result {
                            Err(Error::LeaseLost { reason, .. }) => Some(Ok(SessionEnd::LeaseLost(reason.clone()))),
                            Err(e) if transient(e) => Some(Err(Error::backend(true, e.to_string()))),
                            _ => None,
                        };
                        let _ = reply.send(result);
                        if let Some(end) = end {
                            return end;
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_check) => {
                    next_check = tokio::time::Instant::now() + check_every;
                    if self.newer_is_active().await? {
                        info!("a newer version is active; stepping down");
                        return Ok(SessionEnd::Finished(RunnerState::Superseded));
                    }
                    if let Some(old) = old_version {
                        if self.status.borrow().state == RunnerState::Live && self.drop_old(old).await? {
                            old_version = None;
                        }
                    }
                    match self.replay_on_request(lease).await {
                        Err(Error::LeaseLost { reason, .. }) => return lost(&reason),
                        other => other?,
                    }
                    self.update_lag().await;
                }
                message = subscription.next() => match message {
                    None => return Ok(SessionEnd::Finished(RunnerState::Stopped)),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(SubscriptionMessage::Events { events, checkpoint })) => {
                        match self.apply_page(lease, events, checkpoint).await {
                            Err(Error::LeaseLost { reason, .. }) => return lost(&reason),
                            other => other?,
                        }
                    }
                    Some(Ok(SubscriptionMessage::CaughtUp { .. })) => {
                        self.set_state(RunnerState::Live);
                        if let Some(old) = activates_over {
                            // A rebuild that caught up becomes the active version.
                            if self.store.active_version(self.key.projection()).await? == old {
                                match self.store.activate(lease).await {
                                    Err(Error::LeaseLost { reason, .. }) => return lost(&reason),
                                    other => other?,
                                }
                                info!(?old, "rebuild caught up; now the active version");
                            }
                        }
                        self.update_lag().await;
                    }
                    Some(Ok(SubscriptionMessage::FellBehind { .. })) => self.set_state(RunnerState::CatchingUp),
                },
            }
        }
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
                let lag = super::status::lag(self.events.as_ref(), &checkpoint, &head);
                self.metrics.lag.set(lag.iter().sum::<u64>() as f64);
                self.status.send_modify(|s| s.lag = lag);
            }
            Err(e) => debug!(error = %e, "could not read the log's head for the lag"),
        }
    }

    /// Applies a page (events of one partition) and commits it with `checkpoint`; the
    /// handler's error when the policy stops the runner at an event.
    async fn apply_page(&mut self, lease: &Lease, events: Vec<RecordedEvent>, checkpoint: Checkpoint) -> Result<()> {
        let mut batch = Batch::new(Arc::clone(&self.store), self.key.clone());
        let mut applied = 0u64;
        let mut parked = 0u64;
        let mut spans = Vec::new();
        for event in &events {
            if self.shard.is_some_and(|shard| !shard.owns(event.stream.key())) {
                continue;
            }
            let span = apply_span(&self.key, event);
            let outcome = self.apply_one(&mut batch, event).instrument(span.clone()).await?;
            spans.push(span);
            match outcome {
                Ok(()) => applied += 1,
                Err((error, attempts)) => match self.options.errors.then {
                    OnFailure::Park => {
                        warn!(position = %event.position, error = %error, "parking an event its handler cannot apply");
                        batch.park(ParkedEvent::of(event, error.to_string(), attempts));
                        parked += 1;
                    }
                    OnFailure::Stop => {
                        // Everything before the event is committed; the checkpoint stops at it
                        // (a page holds the events of one partition).
                        let mut at = self
                            .status
                            .borrow()
                            .checkpoint
                            .clone()
                            .unwrap_or_else(|| Checkpoint::start(checkpoint.partitions()));
                        at.set(event.position);
                        self.commit(lease, batch, Some(at.clone()), Vec::new()).await?;
                        self.metrics.page_committed(applied, self.rate.per_sec, 0);
                        self.status.send_modify(|s| {
                            s.checkpoint = Some(at);
                            s.applied += applied;
                        });
                        return Err(Error::Handler {
                            projection: self.key.to_string(),
                            position: event.position,
                            event_type: event.event_type.clone(),
                            source: error,
                        });
                    }
                },
            }
        }
        let commit = self.commit(lease, batch, Some(checkpoint.clone()), Vec::new());
        commit.instrument(commit_span(&spans, events.len())).await?;
        let rate = self.rate.add(applied);
        self.metrics.page_committed(applied, rate, parked);
        // One change of the status, so a reader never sees the checkpoint without its counts.
        self.status.send_modify(|s| {
            s.checkpoint = Some(checkpoint);
            s.applied += applied;
            s.parked += parked;
            s.events_per_sec = rate;
        });
        self.update_lag().await;
        Ok(())
    }

    /// Runs the handler on one event with the error policy's retries. The outer `Result` is a
    /// store failure (the session ends); the inner one is the handler's last error and how
    /// many times it was tried. A handler that panics or runs past its timeout fails like one
    /// that returns an error.
    async fn apply_one(
        &mut self,
        batch: &mut Batch,
        event: &RecordedEvent,
    ) -> Result<std::result::Result<(), (BoxError, u32)>> {
        let policy = self.options.errors;
        let timeout = self.options.handler_timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = {
                let mut view = batch.view(&mut self.cache, event.position);
                run_handler(self.projection.as_ref(), event, &mut view, timeout).await
            };
            let error = match result {
                Ok(()) => return Ok(Ok(())),
                Err(error) => error,
            };
            batch.rollback_event();
            // A store that failed under the handler is not a poison event: wait and retry.
            if let Some(store_error) = error.downcast_ref::<Error>() {
                if transient(store_error) {
                    attempts -= 1;
                    self.retry_after("reading a view document", store_error).await;
                    continue;
                }
            }
            self.metrics.handler_errors.increment(1);
            self.status.send_modify(|s| {
                s.last_error = Some(format!("{} at {}: {error}", event.event_type, event.position));
                s.error_position = Some(event.position);
            });
            if attempts > policy.retries {
                return Ok(Err((error, attempts)));
            }
            tokio::time::sleep(policy.pause(attempts)).await;
        }
    }

    /// Commits a batch, sending it again while the store's failure is transient (a commit is
    /// applied once however often it is sent); a lost lease ends the session.
    async fn commit(
        &mut self,
        lease: &Lease,
        batch: Batch,
        checkpoint: Option<Checkpoint>,
        replayed: Vec<Position>,
    ) -> Result<()> {
        let commit = batch.commit(checkpoint.clone(), replayed);
        let started = Instant::now();
        loop {
            match self.store.commit(lease, commit.clone()).await {
                Ok(()) => break,
                Err(e) if transient(&e) => self.retry_after("committing", &e).await,
                Err(e) => {
                    self.cache.clear();
                    return Err(e);
                }
            }
        }
        self.metrics.commit.record(started.elapsed().as_secs_f64());
        self.status.send_modify(|s| s.retry_attempts = 0);
        batch.settle(&mut self.cache);
        Ok(())
    }
}
