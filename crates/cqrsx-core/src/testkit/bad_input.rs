//! The bad-input catalogue: every kind of bad input the public API can be given — ids, names,
//! batches, numbers at and past every edge, page sizes, filters and query operands, snapshots,
//! read models, subscriptions and projections — each answered with its exact error variant,
//! within a bound, leaving the store as it was.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::support::{ev, evs, report, unique};
use super::Fixture;
use crate::error::{Error, Result};
use crate::event::{ContentType, EventFilter, NewEvent, Position, Timestamp};
use crate::event_store::MAX_NUMBER;
use crate::projection::{Commit, Lease, ViewChange, ViewKey, ViewWrite};
use crate::read_store::{Document, Filter, Op, Query, MAX_TTL};
use crate::snapshot_store::SnapshotRecord;
use crate::stream::{ExpectedVersion, StreamId, MAX_NAME_LEN};
use crate::subscription::{subscribe, Checkpoint, SubscriptionOptions};

/// How long any refusal may take: a bad input is answered at once, never by a hang.
const BOUND: Duration = Duration::from_secs(5);

/// What a kind must come back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    InvalidInput,
    Conflict,
    EventIdReused,
    StreamDeleted,
    NotFound,
    LeaseLost,
    /// An edge that is valid: it succeeds (and what it returns is checked by the kind).
    Valid,
}

fn matches<T: Debug>(expect: Expect, outcome: &Result<T>) -> bool {
    matches!(
        (expect, outcome),
        (Expect::InvalidInput, Err(Error::InvalidInput(_)))
            | (Expect::Conflict, Err(Error::Conflict { .. }))
            | (Expect::EventIdReused, Err(Error::EventIdReused { .. }))
            | (Expect::StreamDeleted, Err(Error::StreamDeleted { .. }))
            | (Expect::NotFound, Err(Error::NotFound(_)))
            | (Expect::LeaseLost, Err(Error::LeaseLost { .. }))
            | (Expect::Valid, Ok(_))
    )
}

/// Everything the catalogue can see of the stores, to show that a refusal wrote nothing.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    log: Vec<(String, u64, Uuid)>,
    reads: Vec<Document>,
    snapshots: Vec<u64>,
    checkpoint: Option<Checkpoint>,
    view: Vec<Document>,
}

struct Catalogue<'a> {
    f: &'a Fixture,
    kinds: Vec<&'static str>,
    failures: Vec<String>,
    baseline: Option<Fingerprint>,
    stream: StreamId,
    view_key: ViewKey,
}

impl Catalogue<'_> {
    async fn fingerprint(&self) -> Fingerprint {
        let mut log = Vec::new();
        let filter = EventFilter::aggregate_types([self.stream.aggregate_type().to_string()]);
        for p in 0..self.f.events.capabilities().partitions {
            let mut from = Position::start_of(p);
            loop {
                let page = self.f.events.read_all(from, 1_000, &filter).await.expect("read_all");
                log.extend(
                    page.events
                        .iter()
                        .map(|e| (e.stream.key().to_string(), e.version, e.event_id)),
                );
                if page.next == from {
                    break;
                }
                from = page.next;
            }
        }
        let reads = self.f.reads.query(&Query::all()).await.expect("read models");
        let snapshots = self
            .f
            .snapshots
            .list(&self.stream)
            .await
            .expect("snapshots")
            .iter()
            .map(|s| s.version)
            .collect();
        let checkpoint = self.f.checkpoints.checkpoint(&self.view_key).await.expect("checkpoint");
        let view = self
            .f
            .checkpoints
            .view(&self.view_key)
            .expect("view")
            .query(&Query::all())
            .await
            .expect("view documents");
        Fingerprint {
            log,
            reads,
            snapshots,
            checkpoint,
            view,
        }
    }

    /// Runs one kind: the exact variant, within the bound, and nothing changed.
    async fn check<T: Debug>(&mut self, kind: &'static str, expect: Expect, call: impl Future<Output = Result<T>>) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(BOUND, call).await;
        let took = started.elapsed();
        match outcome {
            Err(_) => self.failures.push(format!("{kind}: no answer within {BOUND:?}")),
            Ok(outcome) if !matches(expect, &outcome) => self
                .failures
                .push(format!("{kind}: expected {expect:?}, got {outcome:?}")),
            Ok(_) if took > BOUND => self.failures.push(format!("{kind}: took {took:?}")),
            Ok(_) => {}
        }
        let now = self.fingerprint().await;
        if Some(&now) != self.baseline.as_ref() {
            self.failures.push(format!("{kind}: the stores changed"));
            self.baseline = Some(now);
        }
        assert!(!self.kinds.contains(&kind), "kind {kind} listed twice");
        self.kinds.push(kind);
    }
}

fn stream_id(ty: &str, id: &str) -> Result<StreamId> {
    StreamId::new(ty, id)
}

fn snapshot(stream: &StreamId, version: u64, content_type: &str, payload: Vec<u8>, created_ms: u64) -> SnapshotRecord {
    SnapshotRecord {
        stream: stream.clone(),
        version,
        content_type: content_type.into(),
        schema_version: 1,
        payload,
        created_at: Timestamp(created_ms),
    }
}

fn put(id: &str, data: Value, ttl: Option<Duration>) -> Commit {
    Commit {
        writes: vec![ViewWrite {
            id: id.into(),
            change: ViewChange::Put { data, ttl },
            position: Position::START,
            replay_of: None,
        }],
        ..Commit::default()
    }
}

/// The catalogue: more than a hundred kinds of bad input across the public API, each refused
/// with its exact error variant within five seconds, with every store reading back unchanged
/// (an edge that is valid — a page of 0 events, say — is checked to answer as documented).
pub async fn bad_input_catalogue(f: Fixture) {
    let store = Arc::clone(&f.events);
    let aggregate = unique("Bad");
    let s = StreamId::new(&aggregate, "s").expect("stream");
    let gone = StreamId::new(&aggregate, "gone").expect("stream");
    let first = evs("Seed", 1, 3);
    store
        .append(&s, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("seed");
    store
        .append(&s, ExpectedVersion::Exact(3), evs("Seed", 4, 2))
        .await
        .expect("seed");
    store
        .append(&gone, ExpectedVersion::NoStream, evs("Seed", 9, 1))
        .await
        .expect("seed");
    store.delete_stream(&gone, ExpectedVersion::Any).await.expect("delete");
    f.reads.save("keep", json!({"a": 1})).await.expect("read model");
    f.snapshots
        .save(snapshot(&s, 2, "application/json", b"{}".to_vec(), 1))
        .await
        .expect("snapshot");
    let view_key = ViewKey::new(unique("badview"), 1).expect("key");
    let lease = f
        .checkpoints
        .acquire(&view_key, "catalogue", Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("lease");
    let partitions = store.capabilities().partitions;
    let mut checkpoint = Checkpoint::start(partitions);
    checkpoint.advance(Position::START.next());
    let mut seed_view = put("doc", json!({"v": 1}), None);
    seed_view.checkpoint = Some(checkpoint);
    f.checkpoints.commit(&lease, seed_view).await.expect("view commit");
    let mut c = Catalogue {
        f: &f,
        kinds: Vec::new(),
        failures: Vec::new(),
        baseline: None,
        stream: s.clone(),
        view_key: view_key.clone(),
    };
    c.baseline = Some(c.fingerprint().await);
    let caps = store.capabilities();
    let long = "x".repeat(MAX_NAME_LEN + 1);
    use Expect::*;

    // Stream ids and aggregate types.
    c.check("stream id: empty aggregate type", InvalidInput, async {
        stream_id("", "x")
    })
    .await;
    c.check("stream id: empty id", InvalidInput, async { stream_id("T", "") })
        .await;
    c.check("stream id: aggregate type over 256 bytes", InvalidInput, async {
        stream_id(&long, "x")
    })
    .await;
    c.check("stream id: id over 256 bytes", InvalidInput, async {
        stream_id("T", &long)
    })
    .await;
    c.check("stream id: space in aggregate type", InvalidInput, async {
        stream_id("A B", "x")
    })
    .await;
    c.check("stream id: slash in aggregate type", InvalidInput, async {
        stream_id("A/B", "x")
    })
    .await;
    c.check("stream id: colon in aggregate type", InvalidInput, async {
        stream_id("A:B", "x")
    })
    .await;
    c.check("stream id: hash-tag braces in aggregate type", InvalidInput, async {
        stream_id("{A}", "x")
    })
    .await;
    c.check("stream id: unicode in aggregate type", InvalidInput, async {
        stream_id("Übung", "x")
    })
    .await;
    c.check("stream id: NUL in aggregate type", InvalidInput, async {
        stream_id("A\0", "x")
    })
    .await;
    c.check("stream id: NUL in id", InvalidInput, async { stream_id("T", "a\0b") })
        .await;
    c.check("stream id: newline in id", InvalidInput, async {
        stream_id("T", "a\nb")
    })
    .await;
    c.check("stream id: tab in id", InvalidInput, async { stream_id("T", "a\tb") })
        .await;
    c.check("stream id: DEL in id", InvalidInput, async {
        stream_id("T", "a\u{7f}")
    })
    .await;
    c.check("stream id: C1 control in id", InvalidInput, async {
        stream_id("T", "a\u{85}b")
    })
    .await;
    c.check("stream key: no slash", InvalidInput, async {
        StreamId::parse("noslash")
    })
    .await;
    c.check("stream key: empty type", InvalidInput, async { StreamId::parse("/x") })
        .await;

    // Batches.
    let append = |events: Vec<NewEvent>| {
        let (store, s) = (Arc::clone(&store), s.clone());
        async move { store.append(&s, ExpectedVersion::Any, events).await }
    };
    c.check("batch: empty", InvalidInput, append(Vec::new())).await;
    c.check(
        "batch: over the backend's batch limit",
        InvalidInput,
        append(evs("E", 1, caps.max_batch as u64 + 1)),
    )
    .await;
    c.check(
        "batch: payload over the backend's event limit",
        InvalidInput,
        append(vec![NewEvent::new(
            "E",
            ContentType::Json,
            vec![b'1'; caps.max_event_bytes + 1],
        )]),
    )
    .await;
    c.check(
        "batch: nil event id",
        InvalidInput,
        append(vec![ev("E", 1).with_id(Uuid::nil())]),
    )
    .await;
    let twice = ev("E", 1);
    c.check("batch: one id twice", InvalidInput, append(vec![twice.clone(), twice]))
        .await;
    c.check(
        "batch: schema version 0",
        InvalidInput,
        append(vec![ev("E", 1).with_schema_version(0)]),
    )
    .await;
    c.check("event type: empty", InvalidInput, append(vec![ev("", 1)]))
        .await;
    c.check("event type: space", InvalidInput, append(vec![ev("A B", 1)]))
        .await;
    c.check("event type: over 256 bytes", InvalidInput, append(vec![ev(&long, 1)]))
        .await;
    c.check(
        "event type: control character",
        InvalidInput,
        append(vec![ev("A\u{1}", 1)]),
    )
    .await;
    c.check("event type: unicode", InvalidInput, append(vec![ev("Ereignis-ü", 1)]))
        .await;
    c.check("event type: slash", InvalidInput, append(vec![ev("A/B", 1)]))
        .await;

    // Expected versions.
    let append_at = |expected: ExpectedVersion, stream: StreamId| {
        let store = Arc::clone(&store);
        async move { store.append(&stream, expected, vec![ev("E", 1)]).await }
    };
    c.check(
        "expected: 2^53",
        InvalidInput,
        append_at(ExpectedVersion::Exact(MAX_NUMBER + 1), s.clone()),
    )
    .await;
    c.check(
        "expected: u64::MAX",
        InvalidInput,
        append_at(ExpectedVersion::Exact(u64::MAX), s.clone()),
    )
    .await;
    c.check(
        "expected: version past 2^53 - 1 after the append",
        InvalidInput,
        append_at(ExpectedVersion::Exact(MAX_NUMBER), s.clone()),
    )
    .await;
    c.check(
        "expected: one past the head",
        Conflict,
        append_at(ExpectedVersion::Exact(6), s.clone()),
    )
    .await;
    c.check(
        "expected: one before the head",
        Conflict,
        append_at(ExpectedVersion::Exact(4), s.clone()),
    )
    .await;
    c.check(
        "expected: no stream on an existing one",
        Conflict,
        append_at(ExpectedVersion::NoStream, s.clone()),
    )
    .await;
    c.check(
        "expected: exact 0 on an existing one",
        Conflict,
        append_at(ExpectedVersion::Exact(0), s.clone()),
    )
    .await;
    c.check(
        "expected: inside an earlier batch",
        Conflict,
        append_at(ExpectedVersion::Exact(2), s.clone()),
    )
    .await;
    let missing = StreamId::new(&aggregate, "missing").expect("stream");
    c.check(
        "expected: stream exists on a missing one",
        Conflict,
        append_at(ExpectedVersion::StreamExists, missing.clone()),
    )
    .await;
    c.check(
        "append: deleted stream",
        StreamDeleted,
        append_at(ExpectedVersion::Any, gone.clone()),
    )
    .await;
    c.check(
        "append: deleted stream, no stream expected",
        StreamDeleted,
        append_at(ExpectedVersion::NoStream, gone.clone()),
    )
    .await;

    // Event ids: a batch repeating ids of an earlier commit without being its retry.
    c.check(
        "ids: a later id of a commit first",
        EventIdReused,
        append(vec![first[2].clone(), ev("E", 7)]),
    )
    .await;
    c.check(
        "ids: a new id, then an old one",
        EventIdReused,
        append(vec![ev("E", 7), first[0].clone()]),
    )
    .await;
    c.check(
        "ids: a commit's ids out of order",
        EventIdReused,
        append(vec![first[1].clone(), first[0].clone(), first[2].clone()]),
    )
    .await;
    c.check(
        "ids: a commit's first ids only",
        EventIdReused,
        append(vec![first[0].clone(), first[1].clone()]),
    )
    .await;

    // Deletion and truncation.
    c.check(
        "delete: stale expected version",
        Conflict,
        store.delete_stream(&s, ExpectedVersion::Exact(2)),
    )
    .await;
    c.check(
        "delete: expected u64::MAX",
        InvalidInput,
        store.delete_stream(&s, ExpectedVersion::Exact(u64::MAX)),
    )
    .await;
    c.check(
        "delete: deleted stream",
        StreamDeleted,
        store.delete_stream(&gone, ExpectedVersion::Any),
    )
    .await;
    c.check(
        "truncate: deleted stream",
        StreamDeleted,
        store.truncate_before(&gone, 2),
    )
    .await;
    c.check(
        "truncate: before u64::MAX",
        InvalidInput,
        store.truncate_before(&s, u64::MAX),
    )
    .await;
    c.check(
        "truncate: before 2^53",
        InvalidInput,
        store.truncate_before(&s, MAX_NUMBER + 1),
    )
    .await;

    // Reads.
    c.check(
        "read stream: from 2^53",
        InvalidInput,
        store.read_stream(&s, MAX_NUMBER + 1, 10),
    )
    .await;
    c.check(
        "read stream: from u64::MAX",
        InvalidInput,
        store.read_stream(&s, u64::MAX, 10),
    )
    .await;
    c.check("read stream: deleted", StreamDeleted, store.read_stream(&gone, 1, 10))
        .await;
    c.check("stream version: deleted", StreamDeleted, store.stream_version(&gone))
        .await;
    c.check(
        "read stream as a stream: deleted",
        StreamDeleted,
        store.stream_events(&gone, 1, 10).try_collect::<Vec<_>>(),
    )
    .await;
    let all = EventFilter::all();
    let at = |partition, offset| Position { partition, offset };
    c.check(
        "read all: a partition the store lacks",
        InvalidInput,
        store.read_all(at(partitions, 1), 10, &all),
    )
    .await;
    c.check(
        "read all: partition u32::MAX",
        InvalidInput,
        store.read_all(at(u32::MAX, 1), 10, &all),
    )
    .await;
    c.check(
        "read all: offset 2^53",
        InvalidInput,
        store.read_all(at(0, MAX_NUMBER + 1), 10, &all),
    )
    .await;
    c.check(
        "read all: offset u64::MAX",
        InvalidInput,
        store.read_all(at(0, u64::MAX), 10, &all),
    )
    .await;
    c.check(
        "read all: bad event type in the filter",
        InvalidInput,
        store.read_all(Position::START, 10, &EventFilter::event_types(["A B"])),
    )
    .await;
    c.check(
        "read all: empty aggregate type in the filter",
        InvalidInput,
        store.read_all(Position::START, 10, &EventFilter::aggregate_types([""])),
    )
    .await;
    c.check(
        "events by type: empty type",
        InvalidInput,
        store.events_by_type("", Timestamp(0), 10),
    )
    .await;
    c.check(
        "events by type: type with a space",
        InvalidInput,
        store.events_by_type("A B", Timestamp(0), 10),
    )
    .await;
    c.check(
        "events by type: since u64::MAX",
        InvalidInput,
        store.events_by_type("Seed", Timestamp(u64::MAX), 10),
    )
    .await;
    c.check(
        "events by type: since 2^53",
        InvalidInput,
        store.events_by_type("Seed", Timestamp(MAX_NUMBER + 1), 10),
    )
    .await;
    // Page sizes at the edges are valid: 0 reads nothing, a huge one reads what there is.
    let empty = |n: usize| async move {
        if n == 0 {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("{n} events")))
        }
    };
    c.check("read stream: 0 events", Valid, async {
        empty(store.read_stream(&s, 1, 0).await?.len()).await
    })
    .await;
    c.check("read all: 0 events", Valid, async {
        let page = store.read_all(Position::START, 0, &all).await?;
        empty(page.events.len() + usize::from(page.next != Position::START)).await
    })
    .await;
    c.check("events by type: 0 events", Valid, async {
        empty(store.events_by_type("Seed", Timestamp(0), 0).await?.len()).await
    })
    .await;
    let five = |n: usize| async move {
        if n == 5 {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("{n} events, not 5")))
        }
    };
    c.check("read stream: usize::MAX events", Valid, async {
        five(store.read_stream(&s, 1, usize::MAX).await?.len()).await
    })
    .await;
    c.check("read all: usize::MAX events", Valid, async {
        let filter = EventFilter::aggregate_types([aggregate.clone()]);
        let mut n = 0;
        for p in 0..partitions {
            n += store
                .read_all(Position::start_of(p), usize::MAX, &filter)
                .await?
                .events
                .len();
        }
        five(n).await
    })
    .await;
    c.check("read stream: from version 0 reads from the start", Valid, async {
        five(store.read_stream(&s, 0, 100).await?.len()).await
    })
    .await;

    // Snapshots.
    let snapshots = Arc::clone(&f.snapshots);
    let save = |record: SnapshotRecord| {
        let snapshots = Arc::clone(&snapshots);
        async move { snapshots.save(record).await }
    };
    c.check(
        "snapshot: version 0",
        InvalidInput,
        save(snapshot(&s, 0, "x", vec![1], 1)),
    )
    .await;
    c.check(
        "snapshot: version 2^53",
        InvalidInput,
        save(snapshot(&s, MAX_NUMBER + 1, "x", vec![1], 1)),
    )
    .await;
    c.check(
        "snapshot: version u64::MAX",
        InvalidInput,
        save(snapshot(&s, u64::MAX, "x", vec![1], 1)),
    )
    .await;
    c.check(
        "snapshot: empty content type",
        InvalidInput,
        save(snapshot(&s, 3, "", vec![1], 1)),
    )
    .await;
    c.check(
        "snapshot: 65 MiB payload",
        InvalidInput,
        save(snapshot(&s, 3, "x", vec![0; 65 << 20], 1)),
    )
    .await;
    c.check(
        "snapshot: created at u64::MAX",
        InvalidInput,
        save(snapshot(&s, 3, "x", vec![1], u64::MAX)),
    )
    .await;
    c.check(
        "snapshot: created at 2^53",
        InvalidInput,
        save(snapshot(&s, 3, "x", vec![1], MAX_NUMBER + 1)),
    )
    .await;
    c.check(
        "snapshot: latest at or below u64::MAX",
        Valid,
        snapshots.latest(&s, Some(u64::MAX)),
    )
    .await;

    // Read models.
    let reads = Arc::clone(&f.reads);
    let save_doc = |id: String, data: Value| {
        let reads = Arc::clone(&reads);
        async move { reads.save(&id, data).await }
    };
    let max_doc = f.reads.capabilities().max_document_bytes;
    let mut deep = json!(1);
    for _ in 0..101 {
        deep = json!({ "d": deep });
    }
    let cases: Vec<(&'static str, String, Value)> = vec![
        ("read model: empty id", String::new(), json!({"a": 1})),
        ("read model: id over 256 bytes", long.clone(), json!({"a": 1})),
        ("read model: control character in id", "a\u{1}".into(), json!({"a": 1})),
        ("read model: array body", "x".into(), json!([1, 2])),
        ("read model: string body", "x".into(), json!("text")),
        ("read model: number body", "x".into(), json!(7)),
        ("read model: null body", "x".into(), Value::Null),
        ("read model: field starting with $", "x".into(), json!({"$where": 1})),
        ("read model: dotted field", "x".into(), json!({"a.b": 1})),
        ("read model: empty field name", "x".into(), json!({"": 1})),
        ("read model: nested $ field", "x".into(), json!({"a": {"$set": 1}})),
        (
            "read model: $ field inside an array",
            "x".into(),
            json!({"a": [{"$x": 1}]}),
        ),
        ("read model: NUL in a field name", "x".into(), json!({"a\u{0}b": 1})),
        ("read model: integer past i64", "x".into(), json!({"n": u64::MAX})),
        (
            "read model: integer past i64 in an array",
            "x".into(),
            json!({"n": [1, u64::MAX]}),
        ),
        (
            "read model: over the size limit",
            "x".into(),
            json!({"s": "x".repeat(max_doc)}),
        ),
        ("read model: nested deeper than 100", "x".into(), deep),
    ];
    for (kind, id, data) in cases {
        c.check(kind, InvalidInput, save_doc(id, data)).await;
    }
    c.check(
        "read model: zero TTL",
        InvalidInput,
        f.reads.save_with_ttl("x", json!({"a": 1}), Duration::ZERO),
    )
    .await;
    c.check(
        "read model: TTL over 100 years",
        InvalidInput,
        f.reads
            .save_with_ttl("x", json!({"a": 1}), MAX_TTL + Duration::from_secs(1)),
    )
    .await;
    let batch = vec![
        Document {
            id: "good".into(),
            data: json!({"a": 1}),
        },
        Document {
            id: "bad".into(),
            data: json!({"$a": 1}),
        },
    ];
    c.check(
        "read model: a batch with one bad document",
        InvalidInput,
        f.reads.save_many(batch),
    )
    .await;
    c.check(
        "read model: delete a batch with a bad id",
        InvalidInput,
        f.reads.delete_many(&["keep".into(), String::new()]),
    )
    .await;
    c.check("read model: get an empty id", InvalidInput, f.reads.get(""))
        .await;
    c.check(
        "read model: delete a control-character id",
        InvalidInput,
        f.reads.delete("a\nb"),
    )
    .await;

    // Queries: paths and operands.
    let query = |q: Query| {
        let reads = Arc::clone(&reads);
        async move { reads.query(&q).await }
    };
    let with = |field: &str, op: Op, value: Value| Query::all().filter(Filter::new(field, op, value));
    let queries: Vec<(&'static str, Query)> = vec![
        ("query: empty path", with("", Op::Eq, json!(1))),
        ("query: empty path segment", with("a..b", Op::Eq, json!(1))),
        ("query: $ path", with("$where", Op::Eq, json!(1))),
        ("query: path starting with a dot", with(".a", Op::Eq, json!(1))),
        ("query: control character in a path", with("a\u{1}", Op::Eq, json!(1))),
        ("query: In without an array", with("a", Op::In, json!(1))),
        ("query: In with an object", with("a", Op::In, json!([{"b": 1}]))),
        ("query: Exists with a string", with("a", Op::Exists, json!("yes"))),
        ("query: Exists with a number", with("a", Op::Exists, json!(1))),
        ("query: Prefix with a number", with("a", Op::Prefix, json!(1))),
        ("query: Prefix with a boolean", with("a", Op::Prefix, json!(true))),
        ("query: Gt with an object", with("a", Op::Gt, json!({"b": 1}))),
        ("query: Gt with an array", with("a", Op::Gt, json!([1]))),
        ("query: Lt with null", with("a", Op::Lt, Value::Null)),
        ("query: Lte with a boolean", with("a", Op::Lte, json!(true))),
        ("query: Eq with an object", with("a", Op::Eq, json!({"b": 1}))),
        ("query: Ne with an array", with("a", Op::Ne, json!([1]))),
        ("query: Eq with null", with("a", Op::Eq, Value::Null)),
        ("query: sort by an empty path", Query::all().sort_asc("")),
        ("query: sort by a $ path", Query::all().sort_desc("$natural")),
    ];
    for (kind, q) in queries {
        c.check(kind, InvalidInput, query(q)).await;
    }
    c.check(
        "count: bad operand",
        InvalidInput,
        f.reads.count(&[Filter::new("a", Op::Exists, json!(0))]),
    )
    .await;
    c.check("count: bad path", InvalidInput, f.reads.count(&[Filter::eq("a..b", 1)]))
        .await;

    // Subscriptions and checkpoints.
    let sub = |options: SubscriptionOptions| {
        let store = Arc::clone(&store);
        async move { subscribe(store, options).map(|_| ()) }
    };
    c.check(
        "subscribe: page size 0",
        InvalidInput,
        sub(SubscriptionOptions::default().page_size(0)),
    )
    .await;
    c.check(
        "subscribe: page size 10,001",
        InvalidInput,
        sub(SubscriptionOptions::default().page_size(10_001)),
    )
    .await;
    c.check(
        "subscribe: checkpoint of another layout",
        InvalidInput,
        sub(SubscriptionOptions::default().from(Checkpoint::start(partitions + 1))),
    )
    .await;
    c.check(
        "subscribe: bad type in the filter",
        InvalidInput,
        sub(SubscriptionOptions::default().filter(EventFilter::event_types(["A B"]))),
    )
    .await;
    c.check("subscribe: checkpoint from the future", InvalidInput, async {
        let head = store.head().await?;
        let future = Checkpoint::from_offsets(head.positions().map(|p| p.offset + 1_000))?;
        let mut sub = subscribe(Arc::clone(&store), SubscriptionOptions::default().from(future))?;
        sub.try_next().await.map(|_| ())
    })
    .await;
    c.check("checkpoint: offset 0", InvalidInput, async {
        Checkpoint::from_offsets([0])
    })
    .await;
    c.check("checkpoint: no partitions", InvalidInput, async {
        Checkpoint::from_offsets([])
    })
    .await;
    c.check("checkpoint: not numbers", InvalidInput, async {
        "1,x".parse::<Checkpoint>()
    })
    .await;

    // Projections: names, options, leases, view writes.
    let checkpoints = Arc::clone(&f.checkpoints);
    c.check("projection: empty name", InvalidInput, async { ViewKey::new("", 1) })
        .await;
    c.check("projection: name with a space", InvalidInput, async {
        ViewKey::new("a b", 1)
    })
    .await;
    c.check("projection: name over 128 bytes", InvalidInput, async {
        ViewKey::new("p".repeat(129), 1)
    })
    .await;
    c.check("projection: version 0", InvalidInput, async { ViewKey::new("p", 0) })
        .await;
    c.check("projection: unknown name", NotFound, async {
        checkpoints.active_view(&unique("unknown")).await.map(|(k, _)| k)
    })
    .await;
    c.check("projection: impossible name", InvalidInput, async {
        checkpoints.active_view("a b").await.map(|(k, _)| k)
    })
    .await;
    c.check(
        "lease: empty owner",
        InvalidInput,
        checkpoints.acquire(&view_key, "", Duration::from_secs(1)),
    )
    .await;
    c.check("lease: held by another owner", Valid, async {
        match checkpoints
            .acquire(&view_key, "someone-else", Duration::from_secs(1))
            .await?
        {
            None => Ok(()),
            Some(_) => Err(Error::InvalidInput("a held lease was granted".into())),
        }
    })
    .await;
    c.check(
        "view write: empty document id",
        InvalidInput,
        checkpoints.commit(&lease, put("", json!({"a": 1}), None)),
    )
    .await;
    c.check(
        "view write: not an object",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!([1]), None)),
    )
    .await;
    c.check(
        "view write: $ field",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"$a": 1}), None)),
    )
    .await;
    c.check(
        "view write: zero TTL",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"a": 1}), Some(Duration::ZERO))),
    )
    .await;
    c.check(
        "view write: TTL over 100 years",
        InvalidInput,
        checkpoints.commit(&lease, put("d", json!({"a": 1}), Some(MAX_TTL * 2))),
    )
    .await;
    let stale = Lease {
        token: lease.token.saturating_sub(1),
        ..lease.clone()
    };
    c.check(
        "view write: a lease that was taken over",
        LeaseLost,
        checkpoints.commit(&stale, put("d", json!({"a": 2}), None)),
    )
    .await;
    c.check(
        "lease: renew one that was taken over",
        LeaseLost,
        checkpoints.renew(&stale, Duration::from_secs(1)),
    )
    .await;

    report(f.label, &format!("bad-input catalogue: {} kinds", c.kinds.len()));
    checkpoints.release(&lease).await.expect("release");
    assert!(
        c.failures.is_empty(),
        "{} of {} kinds failed:\n{}",
        c.failures.len(),
        c.kinds.len(),
        c.failures.join("\n")
    );
    assert!(c.kinds.len() >= 100, "the catalogue has {} kinds", c.kinds.len());
}
