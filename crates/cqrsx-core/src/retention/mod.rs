//! Retention: keeping the hot event store small by policies per aggregate type, safely with
//! concurrent writers and projections, with an optional [`Archive`] that loads transparently.
//!
//! A [`RetentionJob`] walks the store's catalogue ([`EventStore::list_streams`]), and for each
//! stream of an aggregate type with a [`RetentionPolicy`] decides what may go, in two phases:
//! it first plans every stream (reading only), then carries the plans out. What it guarantees:
//! - **Writers are unaffected.** Events are only removed below a version
//!   ([`EventStore::truncate_before`]), so appends during the run go on; a delete expects the
//!   version the run saw ([`ExpectedVersion::Exact`]) and a stream written meanwhile is kept
//!   and reported ([`HoldReason::WrittenDuringRun`]).
//! - **Projections.** With a [`ProjectionStore`], every projection version (and shard) that
//!   has a checkpoint there is read at the start of the run; an event a checkpoint does not
//!   cover (a shard's only for the streams it owns) is kept, with everything after it in its
//!   stream, and reported with the projection's name ([`HoldReason::Unapplied`]). With
//!   [`RetentionJob::refuse_unapplied`], the run fails with [`Error::Unapplied`] instead and
//!   writes nothing. Readers the projection store does not know (plain subscriptions, other
//!   services) are not protected.
//! - **Loads.** Without an archive, nothing an aggregate needs to load is removed: the snapshot
//!   rule removes only versions its snapshot covers, and the age rule only up to the latest
//!   snapshot (the rest is reported, [`HoldReason::NotCoveredBySnapshot`]). With an archive,
//!   events are archived first and removed after ([`Archive::put`] is durable when it returns);
//!   a crash in between leaves them in both places, and the next run skips what is archived.
//!   Load through [`crate::Repository::with_archive`] to get the same state as before.

mod policy;
mod report;

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::{debug, info, warn, Instrument};

use crate::archive::Archive;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::{RecordedEvent, Timestamp};
use crate::event_store::{EventStore, DEFAULT_PAGE_SIZE};
use crate::import::StreamInfo;
use crate::projection::{ProjectionStore, ViewKey};
use crate::snapshot_store::SnapshotStore;
use crate::stream::{ExpectedVersion, StreamId};

pub use policy::{RetentionPolicy, Untouched};
pub use report::{HeldBack, HoldReason, RetentionReport, RetentionTotals, StreamAction, StreamReport};

/// Streams read per catalogue page.
const CATALOGUE_PAGE: usize = 256;

/// One retention run's configuration: the stores, the policies, strict mode. See the
/// [module docs](self) for what a run guarantees.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # use cqrsx_core::memory::{InMemoryEventStore, InMemorySnapshotStore};
/// use cqrsx_core::retention::{RetentionJob, RetentionPolicy};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let job = RetentionJob::new(Arc::new(InMemoryEventStore::new()))
///     .with_snapshots(Arc::new(InMemorySnapshotStore::new()))
///     .with_policy(RetentionPolicy::new("Order")?.keep_before_snapshot(50))?;
/// let report = job.run().await?;
/// assert_eq!(report.totals.removed, 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetentionJob {
    events: Arc<dyn EventStore>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    projections: Option<Arc<dyn ProjectionStore>>,
    archive: Option<Arc<dyn Archive>>,
    policies: Vec<RetentionPolicy>,
    refuse_unapplied: bool,
    page_size: usize,
}

/// What the run will do to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Nothing,
    /// Remove versions below `cut` (archiving them first with an archive).
    Truncate {
        cut: u64,
        whole: bool,
    },
    /// Delete the stream at `version`.
    Delete,
}

struct Plan {
    report: StreamReport,
    hot_first: u64,
    work: Work,
}

/// The checkpoints read at the start of a run.
struct Guard {
    keys: Vec<(ViewKey, Checkpoint)>,
}

impl Guard {
    /// The projections that have not applied `event`.
    fn unapplied<'a>(&'a self, event: &'a RecordedEvent) -> impl Iterator<Item = &'a str> + 'a {
        self.keys
            .iter()
            .filter(|(key, checkpoint)| {
                key.shard().is_none_or(|shard| shard.owns(event.stream.key())) && !checkpoint.covers(event.position)
            })
            .map(|(key, _)| key.projection())
    }
}

impl RetentionJob {
    /// A job over `events` with no policies (a run then does nothing).
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self {
            events,
            snapshots: None,
            projections: None,
            archive: None,
            policies: Vec::new(),
            refuse_unapplied: false,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// The snapshot store the snapshot rule and the no-archive limit read.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The projection store whose checkpoints hold back events not yet applied.
    pub fn with_projections(mut self, projections: Arc<dyn ProjectionStore>) -> Self {
        self.projections = Some(projections);
        self
    }

    /// Archives events before removing them.
    pub fn with_archive(mut self, archive: Arc<dyn Archive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Adds the policy of one aggregate type; [`Error::InvalidInput`] for a policy without
    /// rules, numbers out of range, or a second policy for the same type.
    pub fn with_policy(mut self, policy: RetentionPolicy) -> Result<Self> {
        policy.validate()?;
        if self.policies.iter().any(|p| p.aggregate_type == policy.aggregate_type) {
            return Err(Error::InvalidInput(format!(
                "aggregate type {} has two retention policies",
                policy.aggregate_type
            )));
        }
        self.policies.push(policy);
        Ok(self)
    }

    /// Strict mode: when the policies would remove events a projection has not applied, the
    /// run fails with [`Error::Unapplied`] and writes nothing (instead of holding them back).
    pub fn refuse_unapplied(mut self, refuse: bool) -> Self {
        self.refuse_unapplied = refuse;
        self
    }

    /// Events read per round trip.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Checks that every policy has the stores it needs ([`Error::Config`] otherwise).
    fn check_config(&self) -> Result<()> {
        for policy in &self.policies {
            let ty = &policy.aggregate_type;
            if policy.keep_before_snapshot.is_some() && self.snapshots.is_none() {
                return Err(Error::Config(format!(
                    "the retention policy of {ty} keeps events before a snapshot, but the job has no snapshot store"
                )));
            }
            if policy.keep_younger_than.is_some() && self.snapshots.is_none() && self.archive.is_none() {
                return Err(Error::Config(format!(
                    "the retention policy of {ty} removes old events, which needs an archive or a snapshot store"
                )));
            }
            if matches!(policy.untouched, Some((_, Untouched::Archive))) && self.archive.is_none() {
                return Err(Error::Config(format!(
                    "the retention policy of {ty} archives untouched streams, but the job has no archive"
                )));
            }
        }
        Ok(())
    }

    /// Runs the policies once; see the [module docs](self). Fails before writing anything on
    /// a configuration that cannot work ([`Error::Config`]), on a strict run that would
    /// remove unapplied events ([`Error::Unapplied`]), and when the catalogue, the
    /// checkpoints or a planning read fail; an error while carrying out one stream's plan is
    /// reported on that stream and the run goes on.
    pub async fn run(&self) -> Result<RetentionReport> {
        let span = tracing::info_span!("cqrsx.retention.run", policies = self.policies.len());
        self.run_inner().instrument(span).await
    }

    async fn run_inner(&self) -> Result<RetentionReport> {
        self.check_config()?;
        let now = Timestamp::now();
        let guard = self.guard().await?;
        let mut plans = Vec::new();
        let mut after: Option<StreamId> = None;
        loop {
            let page = self.events.list_streams(after.as_ref(), CATALOGUE_PAGE).await?;
            for info in &page {
                if let Some(policy) = self.policy_of(info) {
                    plans.push(self.plan(info, policy, &guard, now).await?);
                }
            }
            if page.len() < CATALOGUE_PAGE {
                break;
            }
            after = page.last().map(|i| i.stream.clone());
        }
        if self.refuse_unapplied {
            refuse_unapplied(&plans)?;
        }
        let mut report = RetentionReport::default();
        for plan in plans {
            report.add(self.carry_out(plan).await);
        }
        info!(
            removed = report.totals.removed,
            archived = report.totals.archived,
            deleted = report.totals.deleted,
            held_back = report.totals.held_back,
            errors = report.totals.errors,
            "retention run done"
        );
        Ok(report)
    }

    fn policy_of(&self, info: &StreamInfo) -> Option<&RetentionPolicy> {
        if info.deleted || info.version == 0 {
            return None;
        }
        self.policies
            .iter()
            .find(|p| p.aggregate_type == info.stream.aggregate_type())
    }

    async fn guard(&self) -> Result<Guard> {
        let mut keys = Vec::new();
        if let Some(store) = &self.projections {
            for key in store.views().await? {
                if key.is_member() {
                    continue;
                }
                if let Some(checkpoint) = store.checkpoint(&key).await? {
                    keys.push((key, checkpoint));
                }
            }
        }
        Ok(Guard { keys })
    }

    async fn snapshot_version(&self, stream: &StreamId, head: u64) -> Result<Option<u64>> {
        match &self.snapshots {
            Some(store) => Ok(store.latest(stream, Some(head)).await?.map(|s| s.version)),
            None => Ok(None),
        }
    }

    async fn one(&self, stream: &StreamId, version: u64) -> Result<Option<RecordedEvent>> {
        Ok(self.events.read_stream(stream, version, 1).await?.into_iter().next())
    }

    /// Decides what goes from one stream (reads only).
    async fn plan(&self, info: &StreamInfo, policy: &RetentionPolicy, guard: &Guard, now: Timestamp) -> Result<Plan> {
        let (stream, head) = (&info.stream, info.version);
        let mut report = StreamReport::new(stream.clone(), head);
        let Some(first) = self.one(stream, 1).await? else {
            return Ok(Plan {
                report,
                hot_first: head + 1,
                work: Work::Nothing,
            });
        };
        let hot_first = first.version;
        let before = |age: std::time::Duration| now.as_millis().saturating_sub(age.as_millis() as u64);
        let last_at = self.one(stream, head).await?.map(|e| e.recorded_at);
        let untouched = policy
            .untouched
            .filter(|(age, _)| last_at.is_some_and(|at| at.as_millis() < before(*age)));
        let mut work = match untouched {
            Some((_, Untouched::Delete)) => Work::Delete,
            Some((_, Untouched::Archive)) => Work::Truncate {
                cut: head + 1,
                whole: true,
            },
            None => {
                let mut cut = head + 1;
                let mut limited = false;
                if let Some(n) = policy.keep_before_snapshot {
                    let snapshot = self.snapshot_version(stream, head).await?.unwrap_or(0);
                    cut = cut.min((snapshot + 1).saturating_sub(n).max(1));
                    limited = true;
                }
                if let Some(age) = policy.keep_younger_than {
                    let mut young = self
                        .first_young(stream, hot_first, before(age))
                        .await?
                        .unwrap_or(head + 1);
                    if self.archive.is_none() {
                        let snapshot = self.snapshot_version(stream, head).await?;
                        let covered = snapshot.unwrap_or(0) + 1;
                        if young > covered {
                            let from = covered.max(hot_first);
                            if young > from {
                                report.held_back.push(HeldBack {
                                    from_version: from,
                                    to_version: young - 1,
                                    reason: HoldReason::NotCoveredBySnapshot { snapshot },
                                });
                            }
                            young = covered;
                        }
                    }
                    cut = cut.min(young);
                    limited = true;
                }
                if limited && cut > hot_first {
                    Work::Truncate { cut, whole: false }
                } else {
                    Work::Nothing
                }
            }
        };
        let end = match work {
            Work::Nothing => hot_first,
            Work::Truncate { cut, .. } => cut,
            Work::Delete => head + 1,
        };
        if end > hot_first {
            if let Some((held_from, projections)) = self.unapplied(stream, hot_first, end, guard).await? {
                report.held_back.push(HeldBack {
                    from_version: held_from,
                    to_version: end - 1,
                    reason: HoldReason::Unapplied { projections },
                });
                work = match work {
                    Work::Truncate { .. } if held_from > hot_first => Work::Truncate {
                        cut: held_from,
                        whole: false,
                    },
                    _ => Work::Nothing,
                };
            }
        }
        debug!(stream = %stream, ?work, "retention plan");
        Ok(Plan {
            report,
            hot_first,
            work,
        })
    }

    /// The first version from `from` recorded at or after `since_ms`.
    async fn first_young(&self, stream: &StreamId, from: u64, since_ms: u64) -> Result<Option<u64>> {
        let mut next = from;
        loop {
            let page = self.events.read_stream(stream, next, self.page_size).await?;
            if let Some(young) = page.iter().find(|e| e.recorded_at.as_millis() >= since_ms) {
                return Ok(Some(young.version));
            }
            match page.last() {
                Some(last) if page.len() == self.page_size => next = last.version + 1,
                _ => return Ok(None),
            }
        }
    }

    /// The first version in `from..end` some projection has not applied, with the names of
    /// every projection that has not applied some event from there to `end`.
    async fn unapplied(
        &self,
        stream: &StreamId,
        from: u64,
        end: u64,
        guard: &Guard,
    ) -> Result<Option<(u64, Vec<String>)>> {
        if guard.keys.is_empty() {
            return Ok(None);
        }
        let mut first = None;
        let mut names = BTreeSet::new();
        let mut next = from;
        while next < end {
            let page = self.events.read_stream(stream, next, self.page_size).await?;
            for event in page.iter().filter(|e| e.version < end) {
                let before = names.len();
                names.extend(guard.unapplied(event).map(str::to_string));
                if first.is_none() && names.len() > before {
                    first = Some(event.version);
                }
            }
            match page.last() {
                Some(last) if page.len() == self.page_size => next = last.version + 1,
                _ => break,
            }
        }
        Ok(first.map(|v| (v, names.into_iter().collect())))
    }

    /// Carries out one plan: archive first, then remove.
    async fn carry_out(&self, plan: Plan) -> StreamReport {
        let Plan {
            mut report,
            hot_first,
            work,
        } = plan;
        let outcome = match work {
            Work::Nothing => Ok(()),
            Work::Truncate { cut, whole } => self.truncate(&mut report, hot_first, cut, whole).await,
            Work::Delete => self.delete(&mut report, hot_first).await,
        };
        if let Err(e) = outcome {
            warn!(stream = %report.stream, error = %e, "retention failed on a stream");
            report.error = Some(e.to_string());
        }
        report
    }

    /// Archives versions `from..end` (when there is an archive); returns how many were new.
    async fn archive_range(&self, stream: &StreamId, from: u64, end: u64) -> Result<u64> {
        let Some(archive) = &self.archive else {
            return Ok(0);
        };
        let before = archive.archived_version(stream).await?;
        let mut next = from;
        while next < end {
            let page: Vec<RecordedEvent> = self
                .events
                .read_stream(stream, next, self.page_size)
                .await?
                .into_iter()
                .filter(|e| e.version < end)
                .collect();
            let Some(last) = page.last().map(|e| e.version) else {
                break;
            };
            archive.put(stream, &page).await?;
            next = last + 1;
        }
        let after = archive.archived_version(stream).await?;
        Ok(after.saturating_sub(before.max(from.saturating_sub(1))))
    }

    async fn truncate(&self, report: &mut StreamReport, hot_first: u64, cut: u64, whole: bool) -> Result<()> {
        let stream = report.stream.clone();
        report.archived = self.archive_range(&stream, hot_first, cut).await?;
        report.removed = self.events.truncate_before(&stream, cut).await?;
        report.removed_below = cut;
        report.action = if whole {
            StreamAction::Archived
        } else {
            StreamAction::Truncated
        };
        Ok(())
    }

    async fn delete(&self, report: &mut StreamReport, hot_first: u64) -> Result<()> {
        let (stream, head) = (report.stream.clone(), report.version);
        report.archived = self.archive_range(&stream, hot_first, head + 1).await?;
        match self.events.delete_stream(&stream, ExpectedVersion::Exact(head)).await {
            Ok(()) => {
                report.removed = head + 1 - hot_first;
                report.removed_below = head + 1;
                report.action = StreamAction::Deleted;
                Ok(())
            }
            Err(Error::Conflict { actual, .. }) => {
                report.held_back.push(HeldBack {
                    from_version: hot_first,
                    to_version: head,
                    reason: HoldReason::WrittenDuringRun { seen: head, actual },
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Strict mode: [`Error::Unapplied`] when some plan held events back for a projection.
fn refuse_unapplied(plans: &[Plan]) -> Result<()> {
    let mut first: Option<(&StreamId, u64)> = None;
    let mut projections = BTreeSet::new();
    let mut events = 0;
    for plan in plans {
        for held in &plan.report.held_back {
            if let HoldReason::Unapplied { projections: names } = &held.reason {
                first.get_or_insert((&plan.report.stream, held.from_version));
                projections.extend(names.iter().cloned());
                events += held.count();
            }
        }
    }
    match first {
        Some((stream, version)) => Err(Error::Unapplied {
            stream: stream.clone(),
            version,
            projections: projections.into_iter().collect(),
            events,
        }),
        None => Ok(()),
    }
}
