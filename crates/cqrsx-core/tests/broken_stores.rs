//! Each conformance case must fail against a store that breaks its contract item: deliberately
//! broken wrappers around the in-memory backend show the suite can tell.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::memory::{InMemoryEventStore, InMemoryReadStore, InMemorySnapshotStore};
use cqrsx_core::projection::TypedFault;
use cqrsx_core::testkit::{Fixture, CASES};

#[path = "broken_stores/keys.rs"]
mod keys;
use keys::{BrokenKeys, KeyFault};
#[path = "broken_stores/checkpoints.rs"]
mod checkpoints;
use checkpoints::{broken_checkpoints, CheckpointFault};
use cqrsx_core::raw::{AllPage, EventStoreCapabilities, ReadStoreCapabilities, Wake};
use cqrsx_core::snapshot::{SnapshotInfo, SnapshotRecord};
use cqrsx_core::{
    async_trait, AppendResult, Checkpoint, Document, EventFilter, EventStore, ExpectedVersion, Filter, NewEvent,
    Position, Query, ReadStore, RecordedEvent, Result, SnapshotStore, StreamId, Timestamp, Uuid,
};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    IgnoresExpectedVersion,
    SplitsBatches,
    ForgetsEventIds,
    DropsMetadata,
    SkipsPositions,
    DeleteLeavesNoTombstone,
    AcceptsEmptyBatches,
    TruncateDropsVersion,
    EventsByTypeIgnoresTime,
    PagesLoseEvents,
    /// `read_all` pages that end inside a batch resume one event too far.
    PagesInsideBatchesSkip,
    /// Declares a live signal that never fires.
    SignalNeverFires,
    /// `read_all` ignores the aggregate-type part of a filter that also names event types.
    FilterDropsAggregateTypes,
}

struct BrokenEvents {
    inner: InMemoryEventStore,
    fault: Fault,
    reads: AtomicU64,
}

#[async_trait]
impl EventStore for BrokenEvents {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.inner.capabilities()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        match self.fault {
            Fault::IgnoresExpectedVersion => self.inner.append(stream, ExpectedVersion::Any, events).await,
            Fault::SplitsBatches if events.len() > 1 => {
                let mut last = None;
                let mut expected = expected;
                for e in events {
                    let r = self.inner.append(stream, expected, vec![e]).await?;
                    expected = ExpectedVersion::Any;
                    last = Some(r);
                    tokio::task::yield_now().await;
                }
                Ok(last.expect("non-empty"))
            }
            Fault::ForgetsEventIds => {
                let events = events.into_iter().map(|e| e.with_id(Uuid::now_v7())).collect();
                self.inner.append(stream, expected, events).await
            }
            Fault::AcceptsEmptyBatches if events.is_empty() => Ok(AppendResult {
                version: 0,
                position: Position::default(),
            }),
            Fault::DeleteLeavesNoTombstone => match self.inner.append(stream, expected, events.clone()).await {
                Err(cqrsx_core::Error::StreamDeleted { .. }) => Ok(AppendResult {
                    version: 1,
                    position: Position::default(),
                }),
                other => other,
            },
            _ => self.inner.append(stream, expected, events).await,
        }
    }

    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let mut events = self.inner.read_stream(stream, from, max).await?;
        match self.fault {
            Fault::DropsMetadata => events.iter_mut().for_each(|e| e.metadata = Default::default()),
            Fault::PagesLoseEvents if events.len() > 1 && events.len() == max => {
                events.pop();
            }
            _ => {}
        }
        Ok(events)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let v = self.inner.stream_version(stream).await;
        match (self.fault, v) {
            (Fault::DeleteLeavesNoTombstone, Err(_)) => Ok(0),
            (Fault::TruncateDropsVersion, Ok(v)) => {
                let first = self.inner.read_stream(stream, 1, 1).await?;
                Ok(if first.first().is_some_and(|e| e.version > 1) {
                    v - 1
                } else {
                    v
                })
            }
            (_, v) => v,
        }
    }

    async fn read_all(&self, from: Position, max: usize, filter: &EventFilter) -> Result<AllPage> {
        let mut filter = filter.clone();
        if self.fault == Fault::FilterDropsAggregateTypes && !filter.event_types.is_empty() {
            filter.aggregate_types.clear();
        }
        let filter = &filter;
        let mut page = self.inner.read_all(from, max, filter).await?;
        if self.fault == Fault::PagesInsideBatchesSkip && page.events.len() == max && max < 10 {
            page.next = page.next.next();
        }
        if self.fault == Fault::SkipsPositions
            && !page.events.is_empty()
            && self.reads.fetch_add(1, Ordering::SeqCst) % 5 == 4
        {
            page.events.remove(0);
        }
        Ok(page)
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max: usize) -> Result<Vec<RecordedEvent>> {
        let since = if self.fault == Fault::EventsByTypeIgnoresTime {
            Timestamp(0)
        } else {
            since
        };
        self.inner.events_by_type(event_type, since, max).await
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> Result<Vec<cqrsx_core::raw::StreamInfo>> {
        self.inner.list_streams(after, max_count).await
    }

    async fn import(
        &self,
        stream: &StreamId,
        after: u64,
        events: Vec<RecordedEvent>,
    ) -> Result<cqrsx_core::AppendResult> {
        self.inner.import(stream, after, events).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        self.inner.truncate_before(stream, before).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        if self.fault == Fault::DeleteLeavesNoTombstone {
            let head = self.inner.stream_version(stream).await?;
            return self.inner.truncate_before(stream, head + 1).await.map(|_| ());
        }
        self.inner.delete_stream(stream, expected).await
    }

    async fn head(&self) -> Result<Checkpoint> {
        self.inner.head().await
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        if self.fault == Fault::SignalNeverFires {
            tokio::time::sleep(timeout).await;
            return Ok(Wake::TimedOut);
        }
        self.inner.wait_for_append(checkpoint, timeout).await
    }
}

/// A snapshot store whose save always overwrites what `latest` returns.
#[derive(Default)]
struct LastWriteWinsSnapshots {
    inner: InMemorySnapshotStore,
}

#[async_trait]
impl SnapshotStore for LastWriteWinsSnapshots {
    async fn save(&self, s: SnapshotRecord) -> Result<()> {
        self.inner.delete_all(&s.stream).await?;
        self.inner.save(s).await
    }
    async fn latest(&self, stream: &StreamId, max: Option<u64>) -> Result<Option<SnapshotRecord>> {
        self.inner.latest(stream, max).await
    }
    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        self.inner.list(stream).await
    }
    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        self.inner.prune(stream, keep).await
    }
    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        self.inner.delete_all(stream).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadFault {
    IgnoresSort,
    NoValidation,
    TtlNeverExpires,
    ReplaceMerges,
    BatchDeleteMiscounts,
}

struct BrokenReads {
    inner: InMemoryReadStore,
    fault: ReadFault,
}

#[async_trait]
impl ReadStore for BrokenReads {
    fn capabilities(&self) -> ReadStoreCapabilities {
        self.inner.capabilities()
    }
    async fn save(&self, id: &str, data: Value) -> Result<()> {
        match self.fault {
            ReadFault::NoValidation if !id.is_empty() => self.inner.save(id, serde_json::json!({"stored": true})).await,
            ReadFault::ReplaceMerges => {
                let mut merged = self.inner.get(id).await.ok().flatten().unwrap_or(serde_json::json!({}));
                if let (Some(m), Value::Object(new)) = (merged.as_object_mut(), data) {
                    m.extend(new);
                }
                self.inner.save(id, merged).await
            }
            _ => self.inner.save(id, data).await,
        }
    }
    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        if self.fault == ReadFault::TtlNeverExpires {
            return self.inner.save(id, data).await;
        }
        self.inner.save_with_ttl(id, data, ttl).await
    }
    async fn get(&self, id: &str) -> Result<Option<Value>> {
        self.inner.get(id).await
    }
    async fn delete(&self, id: &str) -> Result<bool> {
        self.inner.delete(id).await
    }
    async fn query(&self, q: &Query) -> Result<Vec<Document>> {
        if self.fault == ReadFault::IgnoresSort {
            let unsorted = Query {
                sort: Vec::new(),
                ..q.clone()
            };
            let mut docs = self.inner.query(&unsorted).await?;
            docs.reverse();
            return Ok(docs);
        }
        self.inner.query(q).await
    }
    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        self.inner.count(filters).await
    }
    async fn save_many(&self, docs: Vec<Document>) -> Result<()> {
        self.inner.save_many(docs).await
    }
    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        let n = self.inner.delete_many(ids).await?;
        Ok(if self.fault == ReadFault::BatchDeleteMiscounts {
            ids.len() as u64
        } else {
            n
        })
    }
}

fn broken_events(fault: Fault) -> Fixture {
    let f = Fixture::in_memory();
    Fixture::new(
        Arc::new(BrokenEvents {
            inner: InMemoryEventStore::new(),
            fault,
            reads: AtomicU64::new(0),
        }),
        f.snapshots,
        f.reads,
        f.checkpoints,
    )
}

/// How long one case may run: a case must end, passing or failing, never hang.
const CASE_BOUND: Duration = Duration::from_secs(180);

/// Runs a case to its end; `Err` when it panicked, a hang being a failure of this test.
async fn run_case(case: &str, fixture: Fixture) -> Result<(), tokio::task::JoinError> {
    let run = CASES.iter().find(|(name, _)| *name == case).expect("case exists").1;
    let task = tokio::spawn(run(fixture));
    let abort = task.abort_handle();
    match tokio::time::timeout(CASE_BOUND, task).await {
        Ok(result) => result,
        Err(_) => {
            abort.abort();
            panic!("{case} did not end within {CASE_BOUND:?}");
        }
    }
}

async fn fails(case: &str, fixture: Fixture) -> bool {
    run_case(case, fixture).await.is_err_and(|e| e.is_panic())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_case_passes_on_the_in_memory_store() {
    for (name, _) in CASES {
        let result = run_case(name, Fixture::in_memory()).await;
        assert!(result.is_ok(), "{name} failed on the in-memory store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_case_catches_the_fault_it_guards_against() {
    let event_faults = [
        (
            "append_with_wrong_expected_version_conflicts",
            Fault::IgnoresExpectedVersion,
        ),
        (
            "concurrent_writers_never_duplicate_or_skip_versions",
            Fault::IgnoresExpectedVersion,
        ),
        ("batch_append_is_all_or_nothing", Fault::SplitsBatches),
        ("retried_append_is_idempotent", Fault::ForgetsEventIds),
        ("event_ids_are_unique_in_any_order", Fault::ForgetsEventIds),
        ("read_returns_every_envelope_field_in_order", Fault::DropsMetadata),
        ("catch_up_reader_sees_every_event_once", Fault::SkipsPositions),
        (
            "truncate_and_delete_behave_as_documented",
            Fault::DeleteLeavesNoTombstone,
        ),
        ("truncate_and_delete_behave_as_documented", Fault::TruncateDropsVersion),
        ("bad_input_is_rejected_and_writes_nothing", Fault::AcceptsEmptyBatches),
        ("events_by_type_since_a_time", Fault::EventsByTypeIgnoresTime),
        ("long_stream_reads_in_pages", Fault::PagesLoseEvents),
        (
            "retention_archives_only_what_policies_and_projections_allow",
            Fault::PagesLoseEvents,
        ),
        ("read_all_pages_inside_batches", Fault::PagesInsideBatchesSkip),
        (
            "subscription_catches_up_from_zero_and_from_a_checkpoint",
            Fault::SkipsPositions,
        ),
        ("subscription_goes_live_and_wakes_on_appends", Fault::SignalNeverFires),
        (
            "subscription_filters_by_type_and_aggregate_type",
            Fault::FilterDropsAggregateTypes,
        ),
    ];
    for (case, fault) in event_faults {
        assert!(
            fails(case, broken_events(fault)).await,
            "{case} did not catch {fault:?}"
        );
    }

    let checkpoint_faults = [
        (
            "projection_survives_crashes_without_skips_or_repeats",
            CheckpointFault::CheckpointBeforeView,
        ),
        (
            "projection_lease_admits_one_runner_and_fences_the_stale_one",
            CheckpointFault::NoFencing,
        ),
        ("projection_poison_event_stops_or_parks", CheckpointFault::ForgetsParked),
        (
            "projection_rebuild_equals_the_live_view",
            CheckpointFault::VersionsShareOneView,
        ),
        ("projection_bad_input_is_refused", CheckpointFault::AcceptsBadWrites),
        (
            "projection_survives_crashes_without_skips_or_repeats",
            CheckpointFault::LosesSharedUpdates,
        ),
        (
            "projection_failing_handlers_are_contained",
            CheckpointFault::ForgetsParked,
        ),
        (
            "projection_forged_and_dropped_leases_write_nothing",
            CheckpointFault::TrustsTokens,
        ),
        (
            "projection_forged_and_dropped_leases_write_nothing",
            CheckpointFault::DropDoesNotFence,
        ),
        (
            "projection_admin_reads_and_replay_requests",
            CheckpointFault::HandledMovesBack,
        ),
        (
            "projection_admin_reads_and_replay_requests",
            CheckpointFault::HolderOutlivesRelease,
        ),
        (
            "views_read_the_active_version_of_every_shard",
            CheckpointFault::VersionsShareOneView,
        ),
    ];
    for (case, fault) in checkpoint_faults {
        assert!(
            fails(case, broken_checkpoints(fault)).await,
            "{case} did not catch {fault:?}"
        );
    }

    // A typed adapter that decodes without the registry's upcasters, or passes over what it
    // cannot decode, must fail the typed case.
    for fault in [TypedFault::IgnoresUpcasters, TypedFault::SkipsUndecodable] {
        let fixture = Fixture::in_memory().with_typed_fault(fault);
        assert!(
            fails("typed_projection_decodes_through_the_registry", fixture).await,
            "the typed case did not catch {fault:?}"
        );
    }

    let key_faults = [
        ("crypto_forget_erases_everywhere", KeyFault::ForgetKeepsKeys),
        (
            "crypto_rotation_keeps_old_versions_readable",
            KeyFault::GetIgnoresVersion,
        ),
    ];
    for (case, fault) in key_faults {
        let fixture = Fixture::in_memory().with_keys(Arc::new(BrokenKeys {
            inner: cqrsx_core::crypto::InMemoryKeyStore::new(),
            fault,
            kept: Default::default(),
        }));
        assert!(fails(case, fixture).await, "{case} did not catch {fault:?}");
    }

    let f = Fixture::in_memory();
    let overwriting = Fixture::new(
        f.events,
        Arc::new(LastWriteWinsSnapshots::default()),
        f.reads,
        f.checkpoints,
    );
    assert!(fails("snapshot_store_never_hides_a_newer_snapshot", overwriting).await);

    // A strategy that restores the wrong state must make the snapshot/replay comparison fail.
    let f = Fixture::in_memory();
    let lying = f.clone().with_strategy(Arc::new(LyingSnapshots));
    assert!(fails("snapshot_load_equals_full_replay", lying).await);

    let read_faults = [
        ("read_store_query_matches_reference_semantics", ReadFault::IgnoresSort),
        ("read_store_bad_input_writes_nothing", ReadFault::NoValidation),
        ("read_store_ttl_as_declared", ReadFault::TtlNeverExpires),
        ("read_store_crud", ReadFault::ReplaceMerges),
        ("read_store_batches", ReadFault::BatchDeleteMiscounts),
    ];
    for (case, fault) in read_faults {
        let f = Fixture::in_memory();
        let fixture = Fixture::new(
            f.events,
            f.snapshots,
            Arc::new(BrokenReads {
                inner: InMemoryReadStore::new(),
                fault,
            }),
            f.checkpoints,
        );
        assert!(fails(case, fixture).await, "{case} did not catch {fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_sharded_case_catches_a_broken_sharded_runner() {
    use cqrsx_core::projection::ShardFault;
    let faults = [
        (
            "projection_shards_apply_each_stream_in_one_shard_once",
            ShardFault::IgnoresOwnership,
        ),
        (
            "projection_shards_rebalance_as_processes_join_stop_and_die",
            ShardFault::KeepsExtraShards,
        ),
        (
            "projection_shards_rebalance_as_processes_join_stop_and_die",
            ShardFault::IgnoresNewMembers,
        ),
        (
            "projection_shards_change_layout_and_version_without_a_gap",
            ShardFault::ActivatesNewLayoutAtOnce,
        ),
    ];
    // Together: a case that catches a balancing fault waits out its bound first.
    let runs = faults.map(|(case, fault)| async move {
        let caught = fails(case, Fixture::in_memory().with_shard_fault(fault)).await;
        (case, fault, caught)
    });
    for (case, fault, caught) in futures::future::join_all(runs).await {
        assert!(caught, "{case} did not catch {fault:?}");
    }
}

/// Restores a state that does not match the stream.
struct LyingSnapshots;

#[async_trait]
impl cqrsx_core::SnapshotStrategy<cqrsx_core::testkit::Counter> for LyingSnapshots {
    async fn restore(
        &self,
        _: &StreamId,
    ) -> Result<Option<cqrsx_core::snapshot::Restored<cqrsx_core::testkit::Counter>>> {
        Ok(Some(cqrsx_core::snapshot::Restored {
            state: cqrsx_core::testkit::Counter {
                value: 42,
                applied: 0,
                name: String::new(),
            },
            version: 1,
        }))
    }
    async fn after_save(&self, _: &cqrsx_core::AggregateRoot<cqrsx_core::testkit::Counter>, _: u64) -> Result<bool> {
        Ok(false)
    }
}
