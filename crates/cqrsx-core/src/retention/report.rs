//! What a retention run did: [`RetentionReport`], per stream and in totals.

use crate::stream::StreamId;

/// What a run did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamAction {
    /// Nothing was removed.
    #[default]
    Kept,
    /// Events below a version were removed (and archived first, with an archive).
    Truncated,
    /// An untouched stream: every event was archived and removed; the stream keeps its version
    /// and stays writable.
    Archived,
    /// An untouched stream was deleted (a tombstone; archived first, with an archive).
    Deleted,
}

/// Why events a policy would remove were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// Projections (stored names, a shard's with its suffix) whose checkpoints do not cover
    /// these events yet.
    Unapplied {
        /// The projections.
        projections: Vec<String>,
    },
    /// No archive, and no snapshot covers these versions: removing them would break loads.
    NotCoveredBySnapshot {
        /// The stream's latest snapshot version, if it has one.
        snapshot: Option<u64>,
    },
    /// The stream was written during the run, so the delete expecting the version the run saw
    /// was refused; the stream is as it was (its events may be archived already).
    WrittenDuringRun {
        /// The version the run saw.
        seen: u64,
        /// The version the stream had when the delete was refused.
        actual: u64,
    },
}

/// A range of versions a policy would have removed but the run kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// First version held back.
    pub from_version: u64,
    /// Last version held back.
    pub to_version: u64,
    /// Why.
    pub reason: HoldReason,
}

impl HeldBack {
    /// How many versions the range spans.
    pub fn count(&self) -> u64 {
        self.to_version + 1 - self.from_version
    }
}

/// What a run did to one stream (listed only when it had a policy and something to say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// The stream.
    pub stream: StreamId,
    /// Its version when the run looked at it.
    pub version: u64,
    /// What was done.
    pub action: StreamAction,
    /// Versions below this were removed from the hot store (0 when nothing was truncated; for
    /// a deleted stream, its version + 1).
    pub removed_below: u64,
    /// Events removed from the hot store, as the store counted them.
    pub removed: u64,
    /// Events newly written to the archive (versions already archived are not counted).
    pub archived: u64,
    /// What was kept back, and why.
    pub held_back: Vec<HeldBack>,
    /// The error that stopped the run's work on this stream, if one did (the run goes on with
    /// the next stream; what this stream reports was done before it).
    pub error: Option<String>,
}

impl StreamReport {
    pub(crate) fn new(stream: StreamId, version: u64) -> Self {
        Self {
            stream,
            version,
            action: StreamAction::Kept,
            removed_below: 0,
            removed: 0,
            archived: 0,
            held_back: Vec::new(),
            error: None,
        }
    }

    /// Whether there is anything to say about the stream.
    pub(crate) fn notable(&self) -> bool {
        self.action != StreamAction::Kept || !self.held_back.is_empty() || self.error.is_some() || self.archived > 0
    }
}

/// The totals of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionTotals {
    /// Streams with a policy that the run looked at.
    pub streams_seen: u64,
    /// Streams truncated.
    pub truncated: u64,
    /// Untouched streams archived whole (kept writable).
    pub archived_streams: u64,
    /// Streams deleted.
    pub deleted: u64,
    /// Events removed from the hot store.
    pub removed: u64,
    /// Events newly written to the archive.
    pub archived: u64,
    /// Events held back (sum of the held-back ranges).
    pub held_back: u64,
    /// Streams whose work stopped on an error.
    pub errors: u64,
}

/// What a [`crate::retention::RetentionJob::run`] did: every stream with something to say, in
/// catalogue order, and the totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Streams changed, held back or failed.
    pub streams: Vec<StreamReport>,
    /// The totals.
    pub totals: RetentionTotals,
}

impl RetentionReport {
    pub(crate) fn add(&mut self, stream: StreamReport) {
        let t = &mut self.totals;
        t.streams_seen += 1;
        match stream.action {
            StreamAction::Kept => {}
            StreamAction::Truncated => t.truncated += 1,
            StreamAction::Archived => t.archived_streams += 1,
            StreamAction::Deleted => t.deleted += 1,
        }
        t.removed += stream.removed;
        t.archived += stream.archived;
        t.held_back += stream.held_back.iter().map(HeldBack::count).sum::<u64>();
        t.errors += u64::from(stream.error.is_some());
        if stream.notable() {
            self.streams.push(stream);
        }
    }

    /// The report of `stream`, if it has one.
    pub fn stream(&self, stream: &StreamId) -> Option<&StreamReport> {
        self.streams.iter().find(|s| s.stream == *stream)
    }
}
