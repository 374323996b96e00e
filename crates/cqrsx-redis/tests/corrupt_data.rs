//! The Redis part of the bad-input catalogue: stored data damaged behind the store's back
//! (written straight into the server) reads back as `Error::Integrity`, never as a panic, a
//! wrong value or an opaque error.

mod common;

use std::time::Duration;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::{
    Error, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, ProjectionStore, ReadStore, SnapshotStore,
    StreamId,
};
use cqrsx_redis::{
    RedisClientManager, RedisEventStore, RedisProjectionStore, RedisReadStore, RedisSnapshotStore, SMALL_STREAM_EVENTS,
};
use fred::prelude::*;
use fred::types::Value;

fn integrity<T: std::fmt::Debug>(kind: &str, result: cqrsx_core::Result<T>, failures: &mut Vec<String>) {
    if !matches!(result, Err(Error::Integrity(_))) {
        failures.push(format!("{kind}: expected Integrity, got {result:?}"));
    }
}

/// A valid events field for one event, then the same with one part broken.
fn events_field(event: &NewEvent) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(event.event_id.as_bytes());
    out.push(0);
    out.push(1);
    out.push(event.payload.len() as u8);
    out.extend_from_slice(&event.payload);
    out.push(0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_stored_data_reads_as_an_integrity_error() {
    let config = common::standalone_config();
    let prefix = config.key_prefix.clone();
    let client = RedisClientManager::connect(config).await.expect("connect");
    let store = RedisEventStore::new(client.clone());
    let raw = client.client();
    let event = NewEvent::json("Broken", &serde_json::json!({"n": 1})).expect("json");
    let good = events_field(&event);
    let mut truncated = good.clone();
    truncated.truncate(10);
    let mut unknown_format = good.clone();
    unknown_format[0] = 9;
    let mut unknown_content = good.clone();
    unknown_content[17] = 7;
    let mut bad_metadata = good.clone();
    bad_metadata.pop();
    bad_metadata.extend_from_slice(&[3, b'{', b'x', b'!']);

    // Each kind: the fields of a commit's log entry (some missing or broken).
    let base = |stream: &str| -> Vec<(String, Value)> {
        vec![
            ("s".into(), stream.into()),
            ("v".into(), "1".into()),
            ("n".into(), "1".into()),
            ("r".into(), "1700000000000".into()),
            ("t".into(), "Broken".into()),
            ("e".into(), Value::Bytes(good.clone().into())),
        ]
    };
    let with = |stream: &str, field: &str, value: Option<Value>| {
        let mut fields = base(stream);
        match value {
            Some(v) => fields
                .iter_mut()
                .filter(|(k, _)| k == field)
                .for_each(|(_, old)| *old = v.clone()),
            None => fields.retain(|(k, _)| k != field),
        }
        fields
    };
    type Entry<'a> = Box<dyn Fn(&str) -> Vec<(String, Value)> + 'a>;
    let kinds: Vec<(&str, Entry<'_>)> = vec![
        ("log entry without events", Box::new(|s| with(s, "e", None))),
        (
            "events of an unknown format",
            Box::new(|s| with(s, "e", Some(Value::Bytes(unknown_format.clone().into())))),
        ),
        (
            "events cut short",
            Box::new(|s| with(s, "e", Some(Value::Bytes(truncated.clone().into())))),
        ),
        (
            "an unknown content type",
            Box::new(|s| with(s, "e", Some(Value::Bytes(unknown_content.clone().into())))),
        ),
        (
            "metadata that is not JSON",
            Box::new(|s| with(s, "e", Some(Value::Bytes(bad_metadata.clone().into())))),
        ),
        ("an event count of 0", Box::new(|s| with(s, "n", Some("0".into())))),
        (
            "an event count past the largest position",
            Box::new(|s| with(s, "n", Some("18446744073709551615".into()))),
        ),
        (
            "an event count that is not a number",
            Box::new(|s| with(s, "n", Some("one".into()))),
        ),
        (
            "a stream that is not a stream key",
            Box::new(|s| with(s, "s", Some("no slash".into()))),
        ),
        ("no first version", Box::new(|s| with(s, "v", None))),
        ("fewer types than events", Box::new(|s| with(s, "n", Some("2".into())))),
        ("no recorded-at", Box::new(|s| with(s, "r", None))),
        (
            "a recorded-at that is not a clock id",
            Box::new(|s| with(s, "r", Some("1700000000000-".into()))),
        ),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, (kind, fields)) in kinds.iter().enumerate() {
        count += 1;
        let stream = StreamId::new("Broken", format!("k{i}")).expect("stream");
        let keys = store.stream_keys(&stream);
        let (meta, log, seq) = (&keys[1], &keys[2], &keys[3]);
        let position: u64 = raw.incr(seq).await.expect("reserve");
        let id = format!("{position}-0");
        let _: String = raw
            .xadd(log, false, None, id.as_str(), fields(stream.key()))
            .await
            .expect("xadd");
        // A small stream's commit: a field of its meta hash.
        let _: i64 = raw
            .hset(meta, vec![("v", "1".to_string()), ("c1", format!("{position} 1"))])
            .await
            .expect("hset");
        integrity(
            &format!("{kind} (read_stream)"),
            store.read_stream(&stream, 1, 10).await,
            &mut failures,
        );
        let from = Position {
            partition: 0,
            offset: position,
        };
        integrity(
            &format!("{kind} (read_all)"),
            store.read_all(from, 10, &EventFilter::all()).await,
            &mut failures,
        );
        // Remove it again, so the next kind reads its own.
        let _: i64 = raw.xdel(log, id.as_str()).await.expect("xdel");
    }

    // An ordered stream (time-ordered ids) finds a retry by the ids of its commits: a small
    // one's are read from its log entries, a larger one's kept in its commit index. A commit
    // whose ids are in neither is damage, reported before anything is written.
    let ordered = StreamId::new("Broken", "ordered").expect("stream");
    let batch = vec![NewEvent::json("Ok", &1).expect("json")];
    let first_id = batch[0].event_id;
    let result = store
        .append(&ordered, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let log = store.stream_keys(&ordered)[2].clone();
    let _: i64 = raw
        .xdel(&log, format!("{}-0", result.position.offset))
        .await
        .expect("xdel");
    count += 1;
    integrity(
        "a small stream's commit without its log entry (a retry)",
        store.append(&ordered, ExpectedVersion::Any, batch).await,
        &mut failures,
    );
    assert_eq!(
        store.stream_version(&ordered).await.expect("version"),
        1,
        "nothing written"
    );
    let large = StreamId::new("Broken", "ordered-large").expect("stream");
    let batch: Vec<NewEvent> = (0..=SMALL_STREAM_EVENTS)
        .map(|i| NewEvent::json("Ok", &i).expect("json"))
        .collect();
    let result = store
        .append(&large, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let index = store.stream_keys(&large)[0].clone();
    let _: i64 = raw.del(&index).await.expect("del");
    let _: String = raw
        .xadd(
            &index,
            false,
            None,
            "1-0",
            vec![
                ("g", (result.position.offset - SMALL_STREAM_EVENTS).to_string()),
                ("n", (SMALL_STREAM_EVENTS + 1).to_string()),
            ],
        )
        .await
        .expect("xadd index");
    // Without its ids, an entry's ids are read from its log entry: gone too, they are nowhere.
    let log = store.stream_keys(&large)[2].clone();
    let _: i64 = raw
        .xdel(&log, format!("{}-0", result.position.offset - SMALL_STREAM_EVENTS))
        .await
        .expect("xdel");
    count += 1;
    integrity(
        "commit index entry without its ids and its log entry (a retry)",
        store.append(&large, ExpectedVersion::Any, batch).await,
        &mut failures,
    );
    assert_eq!(
        store.stream_version(&large).await.expect("version"),
        SMALL_STREAM_EVENTS + 1,
        "nothing written"
    );
    let meta = store.stream_keys(&ordered)[1].clone();
    let mut broken = b"1x".to_vec();
    broken.extend_from_slice(first_id.as_bytes());
    let _: i64 = raw.hset(&meta, ("v", broken.as_slice())).await.expect("hset");
    count += 1;
    integrity(
        "version that is not digits before the largest event id",
        store
            .append(
                &ordered,
                ExpectedVersion::Any,
                vec![NewEvent::json("Ok", &2).expect("json")],
            )
            .await,
        &mut failures,
    );
    let kept: Vec<u8> = raw.hget(&meta, "v").await.expect("hget");
    assert_eq!(kept, broken, "nothing written");
    integrity(
        "version that is not digits before the largest event id (stream_version)",
        store.stream_version(&ordered).await,
        &mut failures,
    );

    // A tiny stream's state (a field of a shared bucket: its largest id, then '<version>
    // <first position>') damaged each way.
    let other = StreamId::new("Broken", "tiny-other").expect("stream");
    let elsewhere = store
        .append(
            &other,
            ExpectedVersion::NoStream,
            vec![NewEvent::json("Ok", &1).expect("json")],
        )
        .await
        .expect("append");
    for (i, kind) in [
        "not a tiny state",
        "a version past its commit",
        "a position with no log entry",
        "another stream's commit",
    ]
    .into_iter()
    .enumerate()
    {
        let tiny = StreamId::new("Broken", format!("tiny{i}")).expect("stream");
        let batch: Vec<NewEvent> = (0..2).map(|n| NewEvent::json("Ok", &n).expect("json")).collect();
        let done = store
            .append(&tiny, ExpectedVersion::NoStream, batch.clone())
            .await
            .expect("append");
        let bucket = store.stream_keys(&tiny)[6].clone();
        let mut value = batch[1].event_id.as_bytes().to_vec();
        let first = done.position.offset - 1;
        value.extend_from_slice(
            match kind {
                "not a tiny state" => "two".to_string(),
                "a version past its commit" => format!("3 {first}"),
                "a position with no log entry" => format!("2 {}", first + 1000),
                _ => format!("1 {}", elsewhere.position.offset),
            }
            .as_bytes(),
        );
        let _: i64 = raw.hset(&bucket, (tiny.key(), value.as_slice())).await.expect("hset");
        count += 1;
        integrity(
            &format!("tiny: {kind} (read_stream)"),
            store.read_stream(&tiny, 1, 10).await,
            &mut failures,
        );
        if kind == "not a tiny state" {
            integrity(
                &format!("tiny: {kind} (stream_version)"),
                store.stream_version(&tiny).await,
                &mut failures,
            );
            integrity(
                &format!("tiny: {kind} (append)"),
                store.append(&tiny, ExpectedVersion::Any, batch).await,
                &mut failures,
            );
        }
    }

    // Numbers and documents other stores keep.
    let meta_stream = StreamId::new("Broken", "meta").expect("stream");
    store
        .append(
            &meta_stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::json("Ok", &1).expect("json")],
        )
        .await
        .expect("append");
    let keys = store.stream_keys(&meta_stream);
    let _: i64 = raw.hset(&keys[1], ("v", "x")).await.expect("hset");
    count += 1;
    integrity(
        "stream version that is not a number",
        store.stream_version(&meta_stream).await,
        &mut failures,
    );
    let _: () = raw.set(&keys[3], "x", None, None, false).await.expect("set");
    count += 1;
    integrity(
        "position counter that is not a number",
        store.head().await,
        &mut failures,
    );

    let reads = RedisReadStore::new(client.clone(), "broken").expect("reads");
    reads.save("doc", serde_json::json!({"a": 1})).await.expect("save");
    let _: i64 = raw
        .hset(format!("{{{prefix}:rm:broken}}:docs"), ("doc", "{not json"))
        .await
        .expect("hset");
    count += 1;
    integrity("read model that is not JSON", reads.get("doc").await, &mut failures);
    count += 1;
    integrity(
        "read model that is not JSON, met by a query",
        reads.query(&cqrsx_core::Query::all()).await,
        &mut failures,
    );

    let snapshots = RedisSnapshotStore::new(client.clone());
    let snap = StreamId::new("Broken", "snap").expect("stream");
    snapshots
        .save(cqrsx_core::snapshot::SnapshotRecord {
            stream: snap.clone(),
            version: 3,
            content_type: "application/json".into(),
            schema_version: 1,
            payload: b"{}".to_vec(),
            created_at: cqrsx_core::Timestamp(1),
        })
        .await
        .expect("snapshot");
    let snap_data = format!("{}:data", store.stream_keys(&snap)[0].replace(":s:", ":snap:"));
    let _: i64 = raw.hset(&snap_data, ("3:sv", "x")).await.expect("hset");
    count += 1;
    integrity(
        "snapshot schema version that is not a number",
        snapshots.latest(&snap, None).await,
        &mut failures,
    );
    let _: i64 = raw.hdel(&snap_data, "3:c").await.expect("hdel");
    count += 1;
    integrity(
        "snapshot without a content type",
        snapshots.latest(&snap, None).await,
        &mut failures,
    );

    let checkpoints = RedisProjectionStore::new(client.clone());
    let key = ViewKey::new("broken", 1).expect("key");
    let tag = format!("{{{prefix}:pj:broken}}:");
    let _: () = raw
        .set(format!("{tag}cp:1"), "1,x", None, None, false)
        .await
        .expect("set");
    count += 1;
    integrity(
        "checkpoint that is not offsets",
        checkpoints.checkpoint(&key).await,
        &mut failures,
    );
    let _: i64 = raw.hset(format!("{tag}dl:1"), ("0:1", "{oops")).await.expect("hset");
    count += 1;
    integrity(
        "parked event that is not JSON",
        checkpoints.parked(&key).await,
        &mut failures,
    );
    let _: () = raw
        .set(format!("{tag}active"), "v2", None, None, false)
        .await
        .expect("set");
    count += 1;
    integrity(
        "active version that is not a number",
        checkpoints.active_version("broken").await,
        &mut failures,
    );
    let lease = checkpoints
        .acquire(&key, "me", Duration::from_secs(5))
        .await
        .expect("acquire")
        .expect("lease");
    // A live document (its id in the view's ids) whose JSON is damaged.
    let _: i64 = raw
        .zadd(format!("{tag}v1:ids"), None, None, false, false, (f64::INFINITY, "doc"))
        .await
        .expect("zadd");
    let _: i64 = raw
        .hset(format!("{tag}v1:docs"), ("doc", "[not json"))
        .await
        .expect("hset");
    count += 1;
    integrity(
        "view document that is not JSON",
        checkpoints.get(&key, "doc").await,
        &mut failures,
    );
    checkpoints.release(&lease).await.expect("release");

    cqrsx_core::testkit::report("redis standalone", &format!("corrupt-data catalogue: {count} kinds"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The damaged-commits catalogue's streams: three commits of these sizes (the third takes the
/// large one past `SMALL_STREAM_EVENTS`, into a commit index stream).
const SHAPES: [(&str, [u64; 3]); 2] = [("small", [2, 1, 2]), ("large", [2, 1, SMALL_STREAM_EVENTS - 2])];

/// What is missing, what is out of range, what disagrees: a stream of three commits damaged
/// one way each reads as `Integrity` naming the stream — by `read_stream`, by the stream of its
/// events a repository loads from, and never as a shorter (or empty) stream. Each damage is
/// done to a small stream (its commits in its meta hash) and to a large one (a commit index
/// stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_commits_read_as_an_integrity_error_never_a_shorter_stream() {
    use futures::TryStreamExt;
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let raw = client.client();
    // A fresh stream of three commits: its id and each commit's (first version, position, count).
    let events_store = &store;
    let commits = |name: String, sizes: [u64; 3]| {
        let store = events_store;
        async move {
            let stream = StreamId::new("Damaged", name).expect("stream");
            let mut out = Vec::new();
            let mut version = 0;
            for n in sizes {
                let events = (0..n)
                    .map(|i| NewEvent::json("Ok", &i).expect("json"))
                    .collect::<Vec<_>>();
                let at = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let result = store.append(&stream, at, events).await.expect("append");
                out.push((version + 1, result.position.offset + 1 - n, n));
                version += n;
            }
            (stream, out)
        }
    };
    let damages: Vec<(&str, &str)> = vec![
        ("missing", "the second commit's log entry"),
        ("missing", "the second commit's index entry"),
        ("missing", "the last commit's index entry"),
        ("missing", "the first commit's index entry"),
        ("missing", "the version field"),
        ("out of range", "the version past the last commit"),
        ("out of range", "the version below the last commit"),
        ("out of range", "the version over 2^53"),
        ("out of range", "an index entry that is not a position and a count"),
        ("disagrees", "an index entry pointing to another stream's commit"),
        ("disagrees", "an index entry's count larger than its commit's"),
        ("disagrees", "an index entry at another version than its commit's"),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for (shape, sizes) in SHAPES {
        let small = shape == "small";
        let other = commits(format!("{shape}-other"), sizes).await;
        let mut cases = damages.clone();
        if small {
            // An index stream beside a small stream's fields: its commits may be in either.
            // (A large stream reads its index stream alone, and stray fields in its meta hash
            // change nothing it reads.)
            cases.push(("disagrees", "an index stream beside the fields"));
        } else {
            // A small stream's meta hash is its only key: without it the stream reads as never
            // written (see the README). A large one still has its commit index.
            cases.push(("missing", "the meta hash"));
        }
        for (i, (class, damage)) in cases.iter().enumerate() {
            let (stream, c) = commits(format!("{shape}-d{i}"), sizes).await;
            let c: [(u64, u64, u64); 3] = c.try_into().expect("three commits");
            let keys = store.stream_keys(&stream);
            let (index, meta, log) = (&keys[0], &keys[1], &keys[2]);
            let last = c[2].0 + c[2].2 - 1;
            // One index entry (version, position, count): a field of the meta hash or an entry
            // of the index stream.
            let put = |small: bool, (version, position, n): (u64, u64, u64)| {
                let raw = raw.clone();
                let (index, meta) = (index.clone(), meta.clone());
                async move {
                    if small {
                        let _: i64 = raw
                            .hset(&meta, (format!("c{version}"), format!("{position} {n}")))
                            .await
                            .expect("hset");
                    } else {
                        let _: String = raw
                            .xadd(
                                &index,
                                false,
                                None,
                                format!("{version}-0"),
                                vec![("g", position.to_string()), ("n", n.to_string())],
                            )
                            .await
                            .expect("xadd");
                    }
                }
            };
            let remove = |at: u64| {
                let raw = raw.clone();
                let (index, meta) = (index.clone(), meta.clone());
                async move {
                    let _: i64 = if small {
                        raw.hdel(&meta, format!("c{at}")).await.expect("hdel")
                    } else {
                        raw.xdel(&index, format!("{at}-0")).await.expect("xdel")
                    };
                }
            };
            // The index rewritten whole (entries go in order).
            let set_index = |entries: Vec<(u64, u64, u64)>| {
                let raw = raw.clone();
                let index = index.clone();
                async move {
                    for at in [c[0].0, c[1].0, c[2].0] {
                        remove(at).await;
                    }
                    if !small {
                        let _: i64 = raw.del(&index).await.expect("del");
                    }
                    for entry in entries {
                        put(small, entry).await;
                    }
                }
            };
            match *damage {
                "the second commit's log entry" => {
                    let _: i64 = raw.xdel(log, format!("{}-0", c[1].1)).await.expect("xdel");
                }
                "the second commit's index entry" => remove(c[1].0).await,
                "the last commit's index entry" => remove(c[2].0).await,
                "the first commit's index entry" => remove(c[0].0).await,
                "the version field" => {
                    let _: i64 = raw.hdel(meta, "v").await.expect("hdel");
                }
                "the meta hash" => {
                    let _: i64 = raw.del(meta).await.expect("del");
                }
                "the version past the last commit" => {
                    let _: i64 = raw.hset(meta, ("v", (last + 4).to_string())).await.expect("hset");
                }
                "the version below the last commit" => {
                    let _: i64 = raw.hset(meta, ("v", (last - 1).to_string())).await.expect("hset");
                }
                "the version over 2^53" => {
                    let _: i64 = raw.hset(meta, ("v", "99999999999999999")).await.expect("hset");
                }
                "an index entry that is not a position and a count" => {
                    remove(c[1].0).await;
                    if small {
                        let _: i64 = raw.hset(meta, (format!("c{}", c[1].0), "three")).await.expect("hset");
                    } else {
                        // (Index stream entries go in order: the index is written anew.)
                        let _: i64 = raw.del(index).await.expect("del");
                        put(false, c[0]).await;
                        let _: String = raw
                            .xadd(index, false, None, format!("{}-0", c[1].0), vec![("g", "three")])
                            .await
                            .expect("xadd");
                        put(false, c[2]).await;
                    }
                }
                "an index entry pointing to another stream's commit" => {
                    set_index(vec![c[0], (c[1].0, other.1[1].1, 1), c[2]]).await;
                }
                "an index entry's count larger than its commit's" => {
                    set_index(vec![c[0], (c[1].0, c[1].1, 2), c[2]]).await;
                }
                "an index entry at another version than its commit's" => {
                    set_index(vec![c[0], (c[1].0, c[2].1, c[2].2)]).await;
                }
                "an index stream beside the fields" => put(false, c[0]).await,
                other => panic!("no such damage: {other}"),
            }
            count += 1;
            let kind = format!("{shape} stream, {class}: {damage}");
            let read = store.read_stream(&stream, 1, 1000).await;
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
    }
    cqrsx_core::testkit::report(
        "redis standalone",
        &format!("corrupt-data catalogue: {count} kinds of damaged commits"),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
