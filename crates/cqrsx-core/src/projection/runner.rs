//! [`ProjectionRunner`]: feeds one projection from a subscription, commits its view changes
//! with the checkpoint after them, holds its lease, applies its error policy, and switches to a
//! rebuilt version once it has caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn, Instrument};

use crate::error::{BoxError, Error, Result};
use crate::event::{EventFilter, Position, RecordedEvent};
use crate::event_store::EventStore;
use crate::projection::store::{CheckpointStore, Lease, ParkedEvent, ViewKey};
use crate::projection::view::{Batch, DocCache};
use crate::projection::Projection;
use crate::subscription::{subscribe, Checkpoint, SubscriptionMessage, SubscriptionOptions};

/// What happens to an event whose handler keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The runner stops at the event (its checkpoint stays just before it) and reports the
    /// error in its status. The default: nothing is skipped silently.
    Stop,
    /// The event is parked in the dead-letter store (position, error, attempts) and the runner
    /// goes on; [`ProjectionHandle::replay_parked`] applies parked events later.
    Park,
}

/// Retries of a failing handler, then what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// Retries after the first failure.
    pub retries: u32,
    /// Pause before the first retry; it doubles for each further one.
    pub backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// What happens when the retries are used up.
    pub then: OnFailure,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            then: OnFailure::Stop,
        }
    }
}

impl ErrorPolicy {
    /// Stops after `retries` retries.
    pub fn stop_after(retries: u32) -> Self {
        Self {
            retries,
            ..Self::default()
        }
    }

    /// Parks after `retries` retries.
    pub fn park_after(retries: u32) -> Self {
        Self {
            retries,
            then: OnFailure::Park,
            ..Self::default()
        }
    }

    fn pause(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.backoff * factor).min(self.max_backoff)
    }
}

/// How a [`ProjectionRunner`] runs.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Who this runner is, for the lease. A runner restarted under the same owner (a process
    /// with a stable identity) takes its lease back at once; another owner waits for it to
    /// expire. Default: a fresh UUID.
    pub owner: String,
    /// How long a lease lasts without renewal; the runner renews it every third of this.
    /// A stopped runner's successor takes over within it (plus a quarter, its polling).
    pub lease_ttl: Duration,
    /// Events read and committed together.
    pub page_size: usize,
    /// What a failing handler gets.
    pub errors: ErrorPolicy,
    /// View documents kept in memory between batches (the runner is the views' only writer
    /// while it holds the lease, so what it wrote is what the store holds).
    pub cache_docs: usize,
    /// Polling pauses of the live tail where the backend has no signal.
    pub poll: (Duration, Duration),
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            owner: format!("runner-{}", uuid::Uuid::now_v7().simple()),
            lease_ttl: Duration::from_secs(10),
            page_size: 256,
            errors: ErrorPolicy::default(),
            cache_docs: 10_000,
            poll: (Duration::from_millis(5), Duration::from_millis(250)),
        }
    }
}

impl RunnerOptions {
    /// Runs as `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Leases of `ttl`.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Pages of `page_size` events.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// The handler error policy.
    pub fn errors(mut self, policy: ErrorPolicy) -> Self {
        self.errors = policy;
        self
    }

    /// Polling pauses of the live tail (backends without a signal).
    pub fn poll_between(mut self, min: Duration, max: Duration) -> Self {
        self.poll = (min, max);
        self
    }

    fn validate(&self) -> Result<()> {
        crate::stream::validate_id("runner owner", &self.owner)?;
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > Duration::from_secs(24 * 3600) {
            return Err(Error::InvalidInput(format!(
                "lease TTL must be between 100 ms and 24 h, got {:?}",
                self.lease_ttl
            )));
        }
        if self.page_size == 0 || self.page_size > crate::subscription::MAX_PAGE_SIZE {
            return Err(Error::InvalidInput(format!(
                "page size must be 1..={}, got {}",
                crate::subscription::MAX_PAGE_SIZE,
                self.page_size
            )));
        }
        if self.errors.backoff.is_zero() || self.errors.max_backoff < self.errors.backoff {
            return Err(Error::InvalidInput(
                "error backoff must be positive and max_backoff at least backoff".into(),
            ));
        }
        Ok(())
    }
}

/// What a runner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Reading its checkpoint.
    Starting,
    /// Another runner holds the lease; this one waits to take over.
    WaitingForLease,
    /// Reading past events.
    CatchingUp,
    /// Caught up, following new events.
    Live,
    /// Stopped on request.
    Stopped,
    /// A newer version became active; this one stopped.
    Superseded,
    /// Stopped on an error (see [`ProjectionStatus::last_error`]).
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
    /// The last error (a handler's, a commit's, a lost lease).
    pub last_error: Option<String>,
    /// Events parked by this projection version.
    pub parked: u64,
    /// The fencing token of the lease it holds.
    pub token: Option<u64>,
}

impl ProjectionStatus {
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

enum Command {
    ReplayParked(oneshot::Sender<Result<u64>>),
    Stop,
}

/// Runs a [`Projection`] over an event store into a [`CheckpointStore`].
///
/// The runner takes the projection version's lease (waiting while another runner holds it),
/// reads its checkpoint, subscribes from it with the projection's filter and, page by page,
/// applies each event through the handler and commits the page's view changes with the
/// checkpoint after them. It renews the lease while it runs; a commit after the lease was
/// taken over fails with [`Error::LeaseLost`] and stops it. A handler error is retried with
/// back-off, then stops the runner or parks the event ([`ErrorPolicy`]).
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

/// A running projection: its status, and ways to wait for it, stop it or replay what it
/// parked.
#[derive(Debug)]
pub struct ProjectionHandle {
    key: ViewKey,
    status: watch::Receiver<ProjectionStatus>,
    commands: mpsc::Sender<Command>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl ProjectionHandle {
    /// The projection version it runs.
    pub fn key(&self) -> &ViewKey {
        &self.key
    }

    /// The current status.
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Waits until the runner's committed checkpoint covers `position` (for example the
    /// position of an append the caller made), so the caller reads its own writes. Fails with
    /// [`Error::Timeout`] after `timeout`, and with the runner's error if it ends first.
    pub async fn wait_until_caught_up(&self, position: Position, timeout: Duration) -> Result<()> {
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

fn ended_error(status: &ProjectionStatus) -> Error {
    match (&status.state, &status.last_error) {
        (RunnerState::Failed, Some(e)) => Error::InvalidInput(format!("projection {} failed: {e}", status.key)),
        (state, _) => Error::InvalidInput(format!("projection {} ended ({state:?})", status.key)),
    }
}

/// Events per second over the recent past (an exponentially weighted average of commits).
#[derive(Debug, Default)]
struct Rate {
    last: Option<Instant>,
    per_sec: f64,
}

impl Rate {
    fn add(&mut self, events: u64) {
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
