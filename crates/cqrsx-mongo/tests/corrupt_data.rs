//! The MongoDB part of the bad-input catalogue: stored documents damaged behind the store's
//! back (written straight into the server) read back as `Error::Integrity`, never as a panic,
//! a wrong value or an opaque error.

mod common;

use std::time::Duration;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::{
    Error, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, ProjectionStore, ReadStore, SnapshotStore,
    StreamId,
};
use cqrsx_mongo::{MongoEventStore, MongoProjectionStore, MongoReadStore, MongoSnapshotStore};
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;

fn integrity<T: std::fmt::Debug>(kind: &str, result: cqrsx_core::Result<T>, failures: &mut Vec<String>) {
    if !matches!(result, Err(Error::Integrity(_))) {
        failures.push(format!("{kind}: expected Integrity, got {result:?}"));
    }
}

/// A valid stored event.
fn event() -> Document {
    doc! {
        "i": cqrsx_core::Uuid::now_v7().to_string(),
        "t": "Broken",
        "c": "application/json",
        "sv": 1_i64,
        "p": { "n": 1_i64 },
    }
}

/// A commit's events: one valid event, changed by `change`.
fn with_event(change: &dyn Fn(&mut Document)) -> Bson {
    let mut e = event();
    change(&mut e);
    Bson::Array(vec![Bson::Document(e)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_stored_documents_read_as_an_integrity_error() {
    let config = common::config();
    let client = common::client(config.clone()).await;
    let store = MongoEventStore::new(client.clone());
    let database = client.database();
    let commits = database.collection::<Document>(&config.events_collection());
    let counters = database.collection::<Document>(&config.counters_collection());

    let commit = |stream: &str, events: Bson| {
        doc! {
            "_id": format!("{stream}\u{1f}1"),
            "stream": stream,
            "at": "Broken",
            "v0": 1_i64,
            "v1": 1_i64,
            "ids": ["x"],
            "types": ["Broken"],
            "ts": DateTime::now(),
            "events": events,
        }
    };

    type Damage = Box<dyn Fn(&mut Document)>;
    let kinds: Vec<(&str, Damage)> = vec![
        (
            "a commit without events",
            Box::new(|c: &mut Document| {
                c.remove("events");
            }),
        ),
        (
            "an event that is not a document",
            Box::new(|c: &mut Document| {
                c.insert("events", vec![Bson::Int64(7)]);
            }),
        ),
        (
            "an event without an id",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.remove("i");
                    }),
                );
            }),
        ),
        (
            "an event id that is not a UUID",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("i", "not-a-uuid");
                    }),
                );
            }),
        ),
        (
            "an event without a type",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.remove("t");
                    }),
                );
            }),
        ),
        (
            "an unknown content type",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("c", "text/x-unknown");
                    }),
                );
            }),
        ),
        (
            "a schema version that is not a number",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("sv", "two");
                    }),
                );
            }),
        ),
        (
            "schema version 0",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("sv", 0_i64);
                    }),
                );
            }),
        ),
        (
            "an event without a payload",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.remove("p");
                    }),
                );
            }),
        ),
        (
            "metadata of the wrong type",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("m", 5_i64);
                    }),
                );
            }),
        ),
        (
            "metadata text that is not JSON",
            Box::new(|c: &mut Document| {
                c.insert(
                    "events",
                    with_event(&|e: &mut Document| {
                        e.insert("mj", "{nope");
                    }),
                );
            }),
        ),
        (
            "a stream that is not a stream key",
            Box::new(|c: &mut Document| {
                c.insert("stream", "no slash");
            }),
        ),
        (
            "a first version that is not an integer",
            Box::new(|c: &mut Document| {
                c.insert("v0", "one");
            }),
        ),
        (
            "a commit without a time",
            Box::new(|c: &mut Document| {
                c.remove("ts");
            }),
        ),
        (
            "a negative truncation count",
            Box::new(|c: &mut Document| {
                c.insert("tr", -1_i64);
            }),
        ),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, (kind, damage)) in kinds.iter().enumerate() {
        count += 1;
        let stream = StreamId::new("Broken", format!("k{i}")).expect("stream");
        let reserved = counters
            .find_one_and_update(doc! { "_id": "global_position" }, doc! { "$inc": { "n": 1_i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .expect("reserve")
            .expect("counter");
        let position = reserved.get_i64("n").expect("n");
        let mut damaged = commit(stream.key(), Bson::Array(vec![Bson::Document(event())]));
        damaged.insert("pos", position);
        damage(&mut damaged);
        commits.insert_one(damaged).await.expect("insert");
        let from = Position {
            partition: 0,
            offset: (position as u64) << 16,
        };
        integrity(
            &format!("{kind} (read_all)"),
            store.read_all(from, 10, &EventFilter::all()).await,
            &mut failures,
        );
        if !kind.contains("stream key") && !kind.contains("first version") {
            integrity(
                &format!("{kind} (read_stream)"),
                store.read_stream(&stream, 1, 10).await,
                &mut failures,
            );
        }
        commits.delete_one(doc! { "pos": position }).await.expect("delete");
        commits
            .insert_one(doc! { "_id": format!("\u{1f}fill\u{1f}{position}"), "pos": position, "filler": true })
            .await
            .expect("filler");
    }

    counters
        .update_one(doc! { "_id": "global_position" }, doc! { "$set": { "n": "many" } })
        .await
        .expect("update");
    count += 1;
    integrity(
        "position counter that is not a number",
        store.head().await,
        &mut failures,
    );

    let reads = MongoReadStore::new(client.clone(), "broken").expect("reads");
    reads.initialize().await.expect("init");
    database
        .collection::<Document>(&config.read_model_collection("broken"))
        .insert_one(doc! { "_id": "doc", "data": 1 })
        .await
        .expect("insert");
    count += 1;
    integrity("read model without its data", reads.get("doc").await, &mut failures);

    let snapshots = MongoSnapshotStore::new(client.clone());
    let snap = StreamId::new("Broken", "snap").expect("stream");
    database
        .collection::<Document>(&config.snapshots_collection())
        .insert_one(doc! { "_id": "s", "s": snap.key(), "v": 3_i64, "sv": 1_i64, "n": 2_i64, "t": DateTime::now() })
        .await
        .expect("insert");
    count += 1;
    integrity(
        "snapshot without a content type",
        snapshots.latest(&snap, None).await,
        &mut failures,
    );

    let checkpoints = MongoProjectionStore::new(client.clone());
    checkpoints.initialize().await.expect("init");
    let state = database.collection::<Document>(&config.read_model_collection("projections"));
    let key = ViewKey::new("broken", 1).expect("key");
    let lease = checkpoints
        // Held through the checks below and released at the end: long enough for a loaded machine.
        .acquire(&key, "me", Duration::from_secs(600))
        .await
        .expect("acquire")
        .expect("lease");
    state
        .update_one(doc! { "kind": "cp", "p": "broken" }, doc! { "$set": { "cp": "1,x" } })
        .await
        .expect("update");
    count += 1;
    integrity(
        "checkpoint that is not offsets",
        checkpoints.checkpoint(&key).await,
        &mut failures,
    );
    state
        .insert_one(
            doc! { "_id": "bad-parked", "kind": "parked", "p": "broken", "v": 1_i64, "live": true, "position": "x" },
        )
        .await
        .expect("insert");
    count += 1;
    integrity(
        "parked event with missing fields",
        checkpoints.parked(&key).await,
        &mut failures,
    );
    state
        .insert_one(doc! { "_id": "bad-active", "kind": "active", "p": "broken", "v": "two" })
        .await
        .expect("insert");
    count += 1;
    integrity(
        "active version that is not a number",
        checkpoints.active_version("broken").await,
        &mut failures,
    );
    database
        .collection::<Document>(&config.read_model_collection("view_broken_v1"))
        .insert_one(doc! { "_id": "doc", "_s": 5_i64 })
        .await
        .expect("insert");
    count += 1;
    integrity(
        "view document without data",
        checkpoints.get(&key, "doc").await,
        &mut failures,
    );
    checkpoints.release(&lease).await.expect("release");
    // The commit log: a record the next holder cannot read is refused before it applies
    // anything or takes the lease.
    let record = |tenure: u64, slot: &str| format!("log\u{1f}broken\u{1f}1\u{1f}{tenure:020}\u{1f}{slot}");
    let bad_records = [
        (
            "projection log record whose id names no slot",
            doc! { "_id": record(lease.token, "x"), "kind": "log" },
        ),
        (
            "projection log record whose writes are not documents",
            doc! {
                "_id": record(lease.token, "0000000001"), "kind": "log", "c": "c1", "g": 1_i64,
                "w": [1_i64], "pk": [], "rp": [], "end": true,
            },
        ),
        (
            "projection log record without a commit",
            doc! { "_id": record(lease.token, "0000000001"), "kind": "log", "g": 1_i64, "w": [], "pk": [], "end": true },
        ),
    ];
    for (kind, bad) in bad_records {
        let id = bad.get_str("_id").expect("id").to_string();
        state.insert_one(bad).await.expect("insert");
        count += 1;
        integrity(
            kind,
            checkpoints.acquire(&key, "next", Duration::from_secs(5)).await,
            &mut failures,
        );
        state.delete_one(doc! { "_id": id }).await.expect("delete");
    }

    let stream = StreamId::new("Broken", "ok").expect("stream");
    let _ = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::json("Ok", &1).expect("json")],
        )
        .await;
    cqrsx_core::testkit::report("mongo", &format!("corrupt-data catalogue: {count} kinds"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What is missing, what is out of range, what disagrees: a stream of three commits damaged
/// one way each reads as `Integrity` naming the stream — by `read_stream` and by the stream of
/// its events a repository loads from — never as a shorter (or empty) stream. One exception,
/// by the layout: where a stream's head is its last commit document (servers with indexed
/// queries and unique array indexes), that document removed whole leaves a shorter stream that
/// nothing else records; where heads are hinted, the hint says the stream was longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_commits_read_as_an_integrity_error_never_a_shorter_stream() {
    use futures::TryStreamExt;
    let config = common::config();
    let client = common::client(config.clone()).await;
    let store = MongoEventStore::new(client.clone());
    let commits = client.database().collection::<Document>(&config.events_collection());
    let caps = client.capabilities();
    let hinted = !caps.indexed_queries || !caps.unique_array_indexes;
    let events_store = &store;
    let fresh = |name: String| async move {
        let stream = StreamId::new("Damaged", name).expect("stream");
        for (expected, n) in [(0, 2), (2, 1), (3, 2)] {
            let events = (0..n)
                .map(|i| NewEvent::json("Ok", &i).expect("json"))
                .collect::<Vec<_>>();
            let at = if expected == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(expected)
            };
            events_store.append(&stream, at, events).await.expect("append");
        }
        stream
    };
    let slot = |stream: &StreamId, v0: u64| format!("{}\u{1f}{v0}", stream.key());
    let mut damages = vec![
        ("missing", "the second commit"),
        ("missing", "the first commit"),
        ("out of range", "a commit ending before it starts"),
        ("out of range", "more events truncated than a commit spans"),
        ("disagrees", "a commit holding more events than its versions span"),
        ("disagrees", "a commit holding fewer events than its versions span"),
        ("disagrees", "a slot holding another stream's commit"),
        ("disagrees", "a slot holding a commit of another version"),
    ];
    if hinted {
        damages.push(("missing", "the last commit"));
    }
    let mut failures = Vec::new();
    for (i, (class, damage)) in damages.iter().enumerate() {
        let stream = fresh(format!("d{i}")).await;
        let second = doc! { "_id": slot(&stream, 3) };
        let set = |update: Document| {
            let commits = commits.clone();
            let filter = second.clone();
            async move {
                commits.update_one(filter, update).await.expect("update");
            }
        };
        match *damage {
            "the second commit" => {
                commits.delete_one(second.clone()).await.expect("delete");
            }
            "the first commit" => {
                commits
                    .delete_one(doc! { "_id": slot(&stream, 1) })
                    .await
                    .expect("delete");
            }
            "the last commit" => {
                commits
                    .delete_one(doc! { "_id": slot(&stream, 4) })
                    .await
                    .expect("delete");
            }
            "a commit ending before it starts" => set(doc! { "$set": { "v1": 1_i64 } }).await,
            "more events truncated than a commit spans" => set(doc! { "$set": { "tr": 5_i64 } }).await,
            "a commit holding more events than its versions span" => {
                set(doc! { "$push": { "events": event() } }).await;
            }
            "a commit holding fewer events than its versions span" => {
                set(doc! { "$set": { "events": [] } }).await;
            }
            "a slot holding another stream's commit" => {
                // (A stream with no commit of its own: the unique (stream, v0) index allows it.)
                set(doc! { "$set": { "stream": "Damaged/elsewhere" } }).await;
            }
            "a slot holding a commit of another version" => set(doc! { "$set": { "v0": 2_i64 } }).await,
            other => panic!("no such damage: {other}"),
        }
        let kind = format!("{class}: {damage}");
        let read = store.read_stream(&stream, 1, 100).await;
        if !matches!(&read, Err(Error::Integrity(why)) if why.contains(&stream.to_string())) {
            failures.push(format!(
                "{kind} (read_stream): expected Integrity naming {stream}, got {read:?}"
            ));
        }
        let loaded = store.stream_events(&stream, 1, 2).try_collect::<Vec<_>>().await;
        if !matches!(loaded, Err(Error::Integrity(_))) {
            failures.push(format!("{kind} (stream_events): expected Integrity, got {loaded:?}"));
        }
    }
    cqrsx_core::testkit::report(
        "mongo",
        &format!("corrupt-data catalogue: {} kinds of damaged commits", damages.len()),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
