//! The [`Migration`]: open (or resume), catch up, cut over, verify.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use cqrsx_core::{EventFilter, Position, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Mutex;

use crate::copy::{copy_page, finish_catalogue, preflight};
use crate::extras::{active_views, copy_projection, copy_read_model, copy_snapshots, ProjectionOutcome};
use crate::options::{MigrationOptions, ReadModelPair, Stores};
use crate::state::State;
use crate::translate::PositionMap;
use crate::verify::{verify, VerifyReport};

/// A migration from one set of stores to another.
///
/// [`Migration::open`] starts one (refusing a target that holds a stream of the source) or
/// resumes the one its state file describes. [`Migration::catch_up`] copies the events
/// written so far, page by page, saving the source checkpoint it reached to the state file
/// after each page; the source may go on taking writes. Once the caller stopped the writers,
/// [`Migration::cut_over`] copies the rest, the tombstones and fully truncated streams, the
/// snapshots, read models and projection state, and verifies.
pub struct Migration {
    source: Stores,
    target: Stores,
    read_models: Vec<ReadModelPair>,
    options: MigrationOptions,
    state: Mutex<State>,
    progress: ProgressBar,
}

/// What one [`Migration::catch_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Events copied by this call.
    pub events: u64,
    /// How far the copy is behind the source's head after it (events, or commits where the
    /// source's positions number commits).
    pub lag: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// What [`Migration::cut_over`] did.
#[derive(Debug, Clone)]
pub struct CutOver {
    /// Events copied during the cut-over (what was left after the last catch-up).
    pub events: u64,
    /// Streams in the source catalogue.
    pub streams: u64,
    /// Latest snapshots copied.
    pub snapshots: u64,
    /// Read-model documents copied.
    pub documents: u64,
    /// Projections copied, by key.
    pub projections: Vec<String>,
    /// Projections not copied because their checkpoint does not translate, with why.
    pub needs_rebuild: Vec<(String, String)>,
    /// From the call to everything copied: how long writers must stay stopped at least.
    pub copy_time: Duration,
    /// The whole cut-over, verification included.
    pub elapsed: Duration,
    /// The verification of the target against the source.
    pub verification: VerifyReport,
}

impl Migration {
    /// Opens a migration: resumes the one `options.state_path` describes, or starts one after
    /// checking that the target holds none of the source's streams
    /// ([`cqrsx_core::Error::TargetNotEmpty`] otherwise, and nothing is written).
    /// [`cqrsx_core::Error::InvalidInput`] for options out of range or a state file of a source
    /// with another number of partitions.
    pub async fn open(source: Stores, target: Stores, options: MigrationOptions) -> Result<Self> {
        options.validate(source.events.as_ref(), target.events.as_ref())?;
        let partitions = source.events.capabilities().partitions;
        let state = match State::load(&options.state_path)? {
            Some(state) if state.next.len() == partitions.max(1) as usize => state,
            Some(state) => {
                return Err(cqrsx_core::Error::InvalidInput(format!(
                    "state file {} is of a source with {} partitions; this source has {partitions}",
                    options.state_path.display(),
                    state.next.len()
                )))
            }
            None => {
                preflight(source.events.as_ref(), target.events.as_ref()).await?;
                let state = State::fresh(partitions);
                state.save(&options.state_path)?;
                state
            }
        };
        let progress = if options.progress && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            {
                bar.set_style(style);
            }
            bar.set_message("migrating");
            bar
        } else {
            ProgressBar::hidden()
        };
        progress.set_position(state.events_copied);
        Ok(Self {
            source,
            target,
            read_models: Vec::new(),
            options,
            state: Mutex::new(state),
            progress,
        })
    }

    /// Adds a read model to copy at the cut-over (and to verify).
    pub fn with_read_model(mut self, pair: ReadModelPair) -> Self {
        self.read_models.push(pair);
        self
    }

    /// How far the copy is behind the source's head, summed over partitions.
    pub async fn lag(&self) -> Result<u64> {
        let head = self.source.events.head().await?;
        let state = self.state.lock().await;
        let checkpoint = state.checkpoint()?;
        Ok(head
            .positions()
            .map(|h| self.source.events.distance(checkpoint.next(h.partition), h))
            .sum())
    }

    /// Copies the events the source held when the call started (later ones too where a page
    /// reaches them), every partition in turn, page by page; the state file is saved after
    /// each page. Cancelling it (dropping the future, aborting its task) at any point loses
    /// nothing: the next call or the next [`Migration::open`] on the same state file goes on
    /// from the last page saved.
    pub async fn catch_up(&self) -> Result<CatchUp> {
        let started = Instant::now();
        let head = self.source.events.head().await?;
        self.progress.set_length(self.progress.position() + self.lag().await?);
        let filter = EventFilter::all();
        let mut copied = 0;
        let mut state = self.state.lock().await;
        for end in head.positions() {
            let p = end.partition as usize;
            loop {
                let from = Position {
                    partition: end.partition,
                    offset: state.next[p],
                };
                if from.offset >= end.offset {
                    break;
                }
                let page = self
                    .source
                    .events
                    .read_all(from, self.options.page_size, &filter)
                    .await?;
                if page.next == from {
                    break;
                }
                copy_page(
                    self.target.events.as_ref(),
                    &page.events,
                    self.options.order,
                    self.options.concurrency,
                )
                .await?;
                let n = page.events.len() as u64;
                state.next[p] = page.next.offset;
                state.events_copied += n;
                state.save(&self.options.state_path)?;
                copied += n;
                self.progress.inc(n);
                // A point where a caller's cancellation lands, even over stores that never wait.
                tokio::task::yield_now().await;
            }
        }
        drop(state);
        Ok(CatchUp {
            events: copied,
            lag: self.lag().await?,
            elapsed: started.elapsed(),
        })
    }

    /// Calls [`Migration::catch_up`] until the lag is at most `max_lag` (or `rounds` calls
    /// were made); returns the last call's result.
    pub async fn catch_up_until(&self, max_lag: u64, rounds: u32) -> Result<CatchUp> {
        let mut last = self.catch_up().await?;
        for _ in 1..rounds.max(1) {
            if last.lag <= max_lag {
                break;
            }
            last = self.catch_up().await?;
        }
        Ok(last)
    }

    /// The cut-over, once the caller stopped every writer of the source: copies the events
    /// left, sets tombstones and fully truncated streams, copies the latest snapshots, the
    /// read models and the active version of every projection (checkpoint translated; one
    /// whose checkpoint does not translate is left for a rebuild and listed), then verifies.
    pub async fn cut_over(&self) -> Result<CutOver> {
        let started = Instant::now();
        let mut events = 0;
        loop {
            let round = self.catch_up().await?;
            events += round.events;
            if round.lag == 0 || round.events == 0 {
                break;
            }
        }
        let (source, target) = (self.source.events.as_ref(), self.target.events.as_ref());
        let streams = finish_catalogue(source, target, self.options.concurrency).await?;
        let snapshots = match (&self.source.snapshots, &self.target.snapshots) {
            (Some(s), Some(t)) => copy_snapshots(s.as_ref(), t.as_ref(), &streams, self.options.concurrency).await?,
            _ => 0,
        };
        let mut documents = 0;
        for pair in &self.read_models {
            documents += copy_read_model(pair.source.as_ref(), pair.target.as_ref()).await?;
        }
        let (mut projections, mut needs_rebuild) = (Vec::new(), Vec::new());
        if let (Some(s), Some(t)) = (&self.source.projections, &self.target.projections) {
            let keys = active_views(s.as_ref()).await?;
            if !keys.is_empty() {
                let map = PositionMap::build(source, target).await?;
                for key in keys {
                    match copy_projection(s.as_ref(), t.as_ref(), &key, &map, &self.options.lease_owner).await? {
                        ProjectionOutcome::Copied(n) => {
                            documents += n;
                            projections.push(key.to_string());
                        }
                        ProjectionOutcome::NeedsRebuild(why) => {
                            tracing::warn!(projection = %key, %why, "projection not copied: it needs a rebuild on the target");
                            needs_rebuild.push((key.to_string(), why));
                        }
                    }
                }
            }
        }
        let copy_time = started.elapsed();
        self.progress.finish_and_clear();
        let verification = self.verify().await?;
        Ok(CutOver {
            events,
            streams: streams.len() as u64,
            snapshots,
            documents,
            projections,
            needs_rebuild,
            copy_time,
            elapsed: started.elapsed(),
            verification,
        })
    }

    /// Verifies the target against the source ([`crate::verify`]) with this migration's
    /// stores and read models.
    pub async fn verify(&self) -> Result<VerifyReport> {
        verify(&self.source, &self.target, &self.read_models, self.options.concurrency).await
    }
}
