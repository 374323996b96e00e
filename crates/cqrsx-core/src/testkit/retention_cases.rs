//! Retention with writers appending and projections running: what goes, what stays, what the
//! report says, and loads through both archives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::projection_support::{fast, settle};
use super::retention_support::{
    fold, load_by_snapshot, raw, same_event, snapshot_at, write_stream, SeenProjection, Writers,
};
use super::support::{report, Counter};
use super::Fixture;
use crate::archive::{Archive, ArchivedEventStore, FileArchive, StoreArchive};
use crate::error::Error;
use crate::event::RecordedEvent;
use crate::event_store::EventStore;
use crate::memory::InMemoryEventStore;
use crate::projection::ProjectionRunner;
use crate::repository::Repository;
use crate::retention::{HoldReason, RetentionJob, RetentionPolicy, RetentionReport, StreamAction};
use crate::stream::StreamId;

const DAY: Duration = Duration::from_secs(24 * 3600);
const STALE: &str = "ret-stale";
const SETTLE: Duration = Duration::from_secs(120);

/// One archive kind's streams: `{prefix}Snap` (30 events, snapshot at 20, keep 5 before it),
/// `{prefix}Aged` (12 events ten days old then 8 new, snapshot at 8, keep a day), `{prefix}Idle`
/// (10 old events, archived when untouched for a day; none without an archive) and
/// `{prefix}Gone` (6 old events, deleted when untouched for a day).
struct Scenario {
    label: &'static str,
    archive: Option<Arc<dyn Archive>>,
    snap: Vec<StreamId>,
    aged: Vec<StreamId>,
    idle: Vec<StreamId>,
    gone: Vec<StreamId>,
    /// The idle and gone streams written after the stale projection stopped.
    late: Vec<StreamId>,
    types: [String; 4],
}

impl Scenario {
    fn new(label: &'static str, prefix: &str, snap_type: &str, archive: Option<Arc<dyn Archive>>, k: usize) -> Self {
        let types = [
            snap_type.to_string(),
            format!("{prefix}Aged"),
            format!("{prefix}Idle"),
            format!("{prefix}Gone"),
        ];
        let ids = |ty: &str| {
            (0..k)
                .map(|i| StreamId::new(ty, format!("s{i}")).expect("stream"))
                .collect::<Vec<_>>()
        };
        let idle = if archive.is_some() { ids(&types[2]) } else { Vec::new() };
        Self {
            label,
            snap: ids(&types[0]),
            aged: ids(&types[1]),
            idle,
            gone: ids(&types[3]),
            late: Vec::new(),
            types,
            archive,
        }
    }

    fn all(&self) -> Vec<StreamId> {
        [&self.snap, &self.aged, &self.idle, &self.gone]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn job(&self, f: &Fixture) -> RetentionJob {
        let mut job = RetentionJob::new(Arc::clone(&f.events))
            .with_snapshots(Arc::clone(&f.snapshots))
            .with_projections(Arc::clone(&f.checkpoints))
            .with_page_size(7);
        let [snap, aged, idle, gone] = &self.types;
        let mut policies = vec![
            RetentionPolicy::new(snap).expect("policy").keep_before_snapshot(5),
            RetentionPolicy::new(aged).expect("policy").keep_younger_than(DAY),
            RetentionPolicy::new(gone).expect("policy").delete_untouched_after(DAY),
        ];
        if let Some(archive) = &self.archive {
            job = job.with_archive(Arc::clone(archive));
            policies.push(RetentionPolicy::new(idle).expect("policy").archive_untouched_after(DAY));
        }
        for policy in policies {
            job = job.with_policy(policy).expect("with policy");
        }
        job
    }

    /// What the run must remove from each stream: versions below the returned cut.
    fn expected_cut(&self, stream: &StreamId) -> u64 {
        let late = self.late.contains(stream);
        let ty = stream.aggregate_type();
        match () {
            _ if ty == self.types[0] => 16,
            _ if ty == self.types[1] => {
                if self.archive.is_some() {
                    13
                } else {
                    9
                }
            }
            _ if late => 0,
            _ if ty == self.types[2] => 11,
            _ => 7,
        }
    }
}

/// Retention with writers appending and two projections: one running, one stopped before the
/// last streams were written. Three runs — a [`FileArchive`] in a temporary directory, a
/// [`StoreArchive`] over an in-memory store, no archive — over streams of every rule. Checks:
/// a strict run refuses with [`Error::Unapplied`] and writes nothing; each run removes exactly
/// what its policies say and holds back, naming the projection, what the stale projection has
/// not applied, and without an archive what no snapshot covers; every removed event was
/// applied by every projection (raw checkpoints); the report's counts equal what changed in
/// raw storage and what the archive holds; every stream loads (full replay through the archive,
/// and by snapshot) to the state of a full replay before the run plus what writers appended;
/// an archived stream stays writable; a second run and a re-archive change nothing.
pub async fn retention_archives_only_what_policies_and_projections_allow(f: Fixture) {
    let k = (f.stress.rounds / 40).clamp(2, 5) as usize;
    let dir = std::env::temp_dir().join(format!("cqrsx-retention-{}", crate::Uuid::now_v7().simple()));
    let file = Arc::new(FileArchive::new(&dir));
    let cold = Arc::new(InMemoryEventStore::new());
    let store_archive = Arc::new(StoreArchive::new(cold.clone()));
    let mut scenarios = [
        Scenario::new("file", "F", "Counter", Some(file.clone()), k),
        Scenario::new("store", "S", "SSnap", Some(store_archive.clone()), k),
        Scenario::new("none", "N", "NSnap", None, k),
    ];
    let types: Vec<String> = scenarios.iter().flat_map(|s| s.types.clone()).collect();
    let live = ProjectionRunner::new(
        Arc::new(SeenProjection {
            name: "ret-live".into(),
            types: types.clone(),
        }),
        Arc::clone(&f.events),
        Arc::clone(&f.checkpoints),
    )
    .with_options(fast("ret-live-owner"))
    .spawn()
    .expect("spawn live projection");

    // Every stream but the second half of the idle and gone ones, then the stale projection
    // catches up and stops; then the rest.
    for s in &mut scenarios {
        for stream in s.snap.clone() {
            write_stream(&f.events, &stream, 0, 30).await;
            snapshot_at(&f, &stream, 20).await;
        }
        for stream in s.aged.clone() {
            write_stream(&f.events, &stream, 12, 20).await;
            snapshot_at(&f, &stream, 8).await;
        }
        s.late = s
            .idle
            .iter()
            .skip(k / 2)
            .chain(s.gone.iter().skip(k / 2))
            .cloned()
            .collect();
        for stream in s.idle.iter().take(k / 2).chain(s.gone.iter().take(k / 2)) {
            let old = if stream.aggregate_type() == s.types[2] { 10 } else { 6 };
            write_stream(&f.events, stream, old, old).await;
        }
    }
    let stale = ProjectionRunner::new(
        Arc::new(SeenProjection {
            name: STALE.into(),
            types: types.clone(),
        }),
        Arc::clone(&f.events),
        Arc::clone(&f.checkpoints),
    )
    .with_options(fast("ret-stale-owner"))
    .spawn()
    .expect("spawn stale projection");
    settle(&f, &stale, SETTLE).await;
    stale.stop().await.expect("stop stale projection");
    for s in &scenarios {
        for stream in &s.late {
            let old = if stream.aggregate_type() == s.types[2] { 10 } else { 6 };
            write_stream(&f.events, stream, old, old).await;
        }
    }
    settle(&f, &live, SETTLE).await;
    let streams: Vec<StreamId> = scenarios.iter().flat_map(Scenario::all).collect();
    let before = raw(f.events.as_ref(), &streams).await;

    // Strict: the stale projection has not applied the late streams; nothing is written.
    let mut strict = scenarios[0].job(&f).refuse_unapplied(true);
    for s in &scenarios[1..] {
        for policy in [
            RetentionPolicy::new(&s.types[0])
                .expect("policy")
                .keep_before_snapshot(5),
            RetentionPolicy::new(&s.types[3])
                .expect("policy")
                .delete_untouched_after(DAY),
        ] {
            strict = strict.with_policy(policy).expect("policy");
        }
    }
    match strict.run().await {
        Err(Error::Unapplied {
            projections, events, ..
        }) => {
            assert!(projections.iter().any(|p| p == STALE), "{projections:?}");
            assert!(events > 0);
        }
        other => panic!("a strict run over unapplied events: expected Unapplied, got {other:?}"),
    }
    assert_eq!(
        raw(f.events.as_ref(), &streams).await,
        before,
        "a refused run wrote nothing"
    );
    assert!(!dir.exists(), "a refused run archived nothing");
    assert!(cold.list_streams(None, 10).await.expect("cold catalogue").is_empty());

    // The runs, while writers append to the snapshot and aged streams.
    let busy: Vec<StreamId> = scenarios
        .iter()
        .flat_map(|s| s.snap.iter().chain(&s.aged).cloned())
        .collect();
    let writers = Writers::start(&f.events, &busy);
    writers.wait_for(busy.len() as u64).await;
    let mut reports = Vec::new();
    for s in &scenarios {
        reports.push(s.job(&f).run().await.expect("retention run"));
    }
    let appended = writers.stop().await;
    let after = raw(f.events.as_ref(), &streams).await;

    let checkpoints = checkpoints_now(&f).await;
    let mut removed_total = 0;
    for (s, run) in scenarios.iter().zip(&reports) {
        check_run(&f, s, run, &before, &after, &checkpoints).await;
        removed_total += run.totals.removed;
        let again = s.job(&f).run().await.expect("second run");
        assert_eq!(
            (again.totals.removed, again.totals.archived),
            (0, 0),
            "{}: a second run changes nothing",
            s.label
        );
    }

    // Re-archiving what is archived (a crash between archive and truncate) writes nothing.
    let snap0 = &scenarios[0].snap[0];
    let pre: &[RecordedEvent] = &before[snap0].1[..15];
    let files = std::fs::read_dir(file.stream_dir(snap0)).expect("segments").count();
    file.put(snap0, pre).await.expect("re-archive to files");
    assert_eq!(
        std::fs::read_dir(file.stream_dir(snap0)).expect("segments").count(),
        files
    );
    let cold_head = cold.head().await.expect("cold head");
    let s_snap0 = &scenarios[1].snap[0];
    store_archive
        .put(s_snap0, &before[s_snap0].1[..15])
        .await
        .expect("re-archive to store");
    assert_eq!(cold.head().await.expect("cold head"), cold_head);

    // The repository over the file archive, with and without snapshots.
    let repo = Repository::<Counter>::new(Arc::clone(&f.events)).with_archive(file.clone());
    for stream in &scenarios[0].snap {
        let want = fold(Counter::default(), &full(&before, &after, stream));
        let plain = repo.load(stream.id()).await.expect("load through the archive");
        let snapped = repo
            .clone()
            .with_snapshots(Arc::clone(&f.strategy))
            .load_with_info(stream.id())
            .await
            .expect("load with snapshot");
        assert_eq!(plain.state(), &want, "{stream}: full replay through the archive");
        assert_eq!(snapped.0.state(), &want, "{stream}: load from the snapshot");
        assert_eq!(snapped.1.snapshot_version, Some(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
    live.stop().await.expect("stop live projection");
    report(
        f.label,
        &format!(
            "retention: {} streams, {removed_total} events removed, {appended} appended during the runs",
            streams.len()
        ),
    );
}

async fn checkpoints_now(f: &Fixture) -> Vec<(String, crate::Checkpoint)> {
    let mut out = Vec::new();
    for key in f.checkpoints.views().await.expect("views") {
        if let Some(c) = f.checkpoints.checkpoint(&key).await.expect("checkpoint") {
            out.push((key.projection().to_string(), c));
        }
    }
    out
}

type Raw = BTreeMap<StreamId, (Option<u64>, Vec<RecordedEvent>)>;

/// Every event of the stream: before the run, then what writers appended.
fn full(before: &Raw, after: &Raw, stream: &StreamId) -> Vec<RecordedEvent> {
    let old = &before[stream].1;
    let last = old.last().map_or(0, |e| e.version);
    let mut all = old.clone();
    all.extend(after[stream].1.iter().filter(|e| e.version > last).cloned());
    all
}

async fn check_run(
    f: &Fixture,
    s: &Scenario,
    run: &RetentionReport,
    before: &Raw,
    after: &Raw,
    checkpoints: &[(String, crate::Checkpoint)],
) {
    let label = s.label;
    let mut removed_sum = 0;
    for stream in s.all() {
        let old = &before[&stream].1;
        let (version_after, hot) = &after[&stream];
        let cut = s.expected_cut(&stream);
        let entry = run.stream(&stream);
        let removed: Vec<&RecordedEvent> = old
            .iter()
            .filter(|e| !hot.iter().any(|h| h.version == e.version))
            .collect();
        let deleted = version_after.is_none();
        let is_gone = stream.aggregate_type() == s.types[3];
        // What went is what the policy says.
        if is_gone && cut > 0 {
            assert!(deleted, "{label} {stream}: an untouched stream is deleted");
            assert_eq!(entry.map(|e| e.action), Some(StreamAction::Deleted));
        } else {
            assert!(!deleted, "{label} {stream}: not deleted");
            let want: Vec<u64> = old.iter().map(|e| e.version).filter(|v| *v < cut).collect();
            let got: Vec<u64> = removed.iter().map(|e| e.version).collect();
            assert_eq!(got, want, "{label} {stream}: removed versions");
        }
        // The report's numbers are the raw change.
        let reported = entry.map_or(0, |e| e.removed);
        assert_eq!(reported, removed.len() as u64, "{label} {stream}: reported removals");
        removed_sum += reported;
        // Nothing a projection had not applied went.
        for e in &removed {
            for (name, c) in checkpoints {
                assert!(
                    c.covers(e.position),
                    "{label} {stream} v{} removed before {name} applied it",
                    e.version
                );
            }
        }
        // Held back: the stale projection's streams, the age rule without snapshots.
        if s.late.contains(&stream) {
            let held = entry.map(|e| e.held_back.clone()).unwrap_or_default();
            assert!(
                held.iter().any(
                    |h| matches!(&h.reason, HoldReason::Unapplied { projections } if projections.iter().any(|p| p == STALE))
                ),
                "{label} {stream}: held back for {STALE}: {held:?}"
            );
        }
        if s.archive.is_none() && stream.aggregate_type() == s.types[1] {
            let held = entry.map(|e| e.held_back.clone()).unwrap_or_default();
            assert!(
                held.iter().any(|h| (h.from_version, h.to_version) == (9, 12)
                    && matches!(h.reason, HoldReason::NotCoveredBySnapshot { snapshot: Some(8) })),
                "{label} {stream}: versions 9-12 are not covered by a snapshot: {held:?}"
            );
        }
        // The archive holds exactly what went, field for field.
        if let Some(archive) = &s.archive {
            let archived = archive.read(&stream, 1, usize::MAX).await.expect("read archive");
            assert_eq!(archived.len(), removed.len(), "{label} {stream}: archived events");
            assert_eq!(entry.map_or(0, |e| e.archived), archived.len() as u64);
            for (a, e) in archived.iter().zip(&removed) {
                assert!(same_event(a, e), "{label} {stream} v{}: archived as it was", e.version);
            }
        }
        if deleted {
            continue;
        }
        // Loads give the state of a full replay.
        let all = full(before, after, &stream);
        let want = (fold(Counter::default(), &all), all.last().map_or(0, |e| e.version));
        let through = s
            .archive
            .as_ref()
            .map(|archive| ArchivedEventStore::new(Arc::clone(&f.events), Arc::clone(archive)));
        if let Some(through) = &through {
            let replayed = through.read_stream(&stream, 1, usize::MAX).await.expect("read through");
            assert_eq!(
                replayed.len(),
                all.len(),
                "{label} {stream}: every version through the archive"
            );
            assert_eq!(
                (
                    fold(Counter::default(), &replayed),
                    replayed.last().map_or(0, |e| e.version)
                ),
                want,
                "{label} {stream}: full replay through the archive"
            );
            if stream.aggregate_type() == s.types[2] && !s.late.contains(&stream) {
                // An archived stream stays writable, and loads with the new event.
                let head = want.1;
                let next = crate::codec::EventCodec::default()
                    .encode(&super::retention_support::counter_event(head + 1), Default::default())
                    .expect("encode");
                let done = f
                    .events
                    .append(&stream, crate::ExpectedVersion::Exact(head), vec![next])
                    .await
                    .expect("append to an archived stream");
                assert_eq!(done.version, head + 1);
                let replayed = through.read_stream(&stream, 1, usize::MAX).await.expect("read through");
                assert_eq!(replayed.len() as u64, head + 1);
                continue;
            }
        }
        if f.snapshots.latest(&stream, None).await.expect("snapshot").is_some() {
            let store: &dyn EventStore = match &through {
                Some(through) => through,
                None => f.events.as_ref(),
            };
            let by_snapshot = load_by_snapshot(f, store, &stream).await.expect("load by snapshot");
            assert_eq!(by_snapshot, want, "{label} {stream}: load by snapshot");
        }
    }
    assert_eq!(run.totals.removed, removed_sum, "{label}: total removals");
}
