//! The catalogue's reads: stream and global reads, page sizes, snapshots, read models and queries.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::{json, Value};

use super::{snapshot, Catalogue, Expect, Seeded};
use crate::error::Error;
use crate::event::{EventFilter, Position, Timestamp};
use crate::event_store::MAX_NUMBER;
use crate::read_store::{Document, Filter, Op, Query, MAX_TTL};
use crate::snapshot_store::SnapshotRecord;

pub(super) async fn check(c: &mut Catalogue<'_>, seeded: &Seeded) {
    let f = c.f;
    let store = Arc::clone(&f.events);
    let aggregate = seeded.aggregate.clone();
    let long = seeded.long.clone();
    let s = seeded.s.clone();
    let gone = seeded.gone.clone();
    let partitions = seeded.partitions;
    use Expect::*;

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
    // Positions and times at the largest accepted number: valid, nothing there.
    c.check("read stream: from the largest version", Valid, async {
        empty(store.read_stream(&s, MAX_NUMBER, 10).await?.len()).await
    })
    .await;
    c.check("read all: from the largest offset", Valid, async {
        let mut n = 0;
        for p in 0..partitions {
            let from = at(p, MAX_NUMBER);
            let page = store.read_all(from, 10, &all).await?;
            n += page.events.len() + usize::from(page.next < from);
        }
        empty(n).await
    })
    .await;
    c.check("events by type: since the largest time", Valid, async {
        empty(store.events_by_type("Seed", Timestamp(MAX_NUMBER), 10).await?.len()).await
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
}
