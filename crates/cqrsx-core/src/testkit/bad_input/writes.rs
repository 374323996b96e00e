//! The catalogue's writes: stream ids, batches, expected versions, event ids, deletion and truncation.

use std::sync::Arc;

use uuid::Uuid;

use crate::testkit::support::{ev, evs};

use super::{stream_id, Catalogue, Expect, Seeded};
use crate::error::Error;
use crate::event::{ContentType, Metadata, NewEvent};
use crate::event_store::MAX_NUMBER;
use crate::stream::{ExpectedVersion, StreamId};

pub(super) async fn check(c: &mut Catalogue<'_>, seeded: &Seeded) {
    let f = c.f;
    let store = Arc::clone(&f.events);
    let caps = store.capabilities();
    let aggregate = seeded.aggregate.clone();
    let long = seeded.long.clone();
    let s = seeded.s.clone();
    let gone = seeded.gone.clone();
    let first = seeded.first.clone();
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
    for (what, traceparent) in [
        ("traceparent: not one", "hello"),
        (
            "traceparent: uppercase hex",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        ),
        (
            "traceparent: zero trace id",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ),
        (
            "traceparent: version ff",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ] {
        let event = ev("E", 1).with_metadata(Metadata::default().with_traceparent(traceparent));
        c.check(what, InvalidInput, append(vec![event])).await;
    }
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
    // Valid at its edges: before 0 and 1 remove nothing; before the largest number removes
    // every event and keeps the version. A type of its own: the seeded streams stay as they are.
    let edges = StreamId::new(format!("{aggregate}Edges"), "truncate").map_err(|e| e.to_string());
    c.check("truncate: before 0 and 1 of a stream never written", Valid, async {
        let edges = edges.clone().map_err(Error::InvalidInput)?;
        let removed = store.truncate_before(&edges, 0).await? + store.truncate_before(&edges, 1).await?;
        match removed {
            0 => Ok(()),
            n => Err(Error::InvalidInput(format!("{n} events removed"))),
        }
    })
    .await;
    c.check("truncate: before 0, 1 and the largest version", Valid, async {
        let edges = edges.clone().map_err(Error::InvalidInput)?;
        store.append(&edges, ExpectedVersion::NoStream, evs("T", 1, 3)).await?;
        let none = store.truncate_before(&edges, 0).await? + store.truncate_before(&edges, 1).await?;
        let all = store.truncate_before(&edges, MAX_NUMBER).await?;
        let version = store.stream_version(&edges).await?;
        let left = store.read_stream(&edges, 0, 100).await?.len();
        match (none, all, version, left) {
            (0, 3, 3, 0) => Ok(()),
            got => Err(Error::InvalidInput(format!(
                "(removed by 0 and 1, removed by the largest, version, left) = {got:?}, not (0, 3, 3, 0)"
            ))),
        }
    })
    .await;
}
