//! Cases for imports into streams of every size and id order a backend may keep apart, and
//! for imports racing appends and each other.

use std::sync::Arc;

use super::support::{ev, unique};
use super::Fixture;
use crate::error::Error;
use crate::event::{ContentType, Metadata, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::EventStore;
use crate::stream::{ExpectedVersion, StreamId};
use crate::Uuid;

/// When the synthetic source recorded its first commit: long before any test runs.
const SOURCE_EPOCH_MS: u64 = 1_600_000_000_000;

/// `count` events of `stream` from version `first`, as a source store would hand them over: in
/// commits of `per_commit` events (one recorded-at each, a second apart, long ago), every third
/// commit mixing two event types. Their ids increase with the versions, or, with
/// `decreasing`, decrease.
fn source(stream: &StreamId, first: u64, count: u64, per_commit: u64, decreasing: bool) -> Vec<RecordedEvent> {
    let mut ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    ids.sort_unstable();
    if decreasing {
        ids.reverse();
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, event_id)| {
            let i = i as u64;
            let commit = i / per_commit;
            let event_type = if commit % 3 == 2 && i % 2 == 1 {
                "ShapeB"
            } else {
                "ShapeA"
            };
            RecordedEvent {
                event_id,
                stream: stream.clone(),
                version: first + i,
                position: Position::default(),
                event_type: event_type.to_string(),
                schema_version: 1 + (i % 3) as u32,
                content_type: ContentType::Json,
                payload: serde_json::to_vec(&serde_json::json!({ "n": first + i })).expect("json"),
                metadata: Metadata::correlated(format!("c-{commit}")).with("i", i),
                recorded_at: Timestamp(SOURCE_EPOCH_MS + commit * 1_000),
            }
        })
        .collect()
}

/// What an append of a source event sends.
fn as_new(e: &RecordedEvent) -> NewEvent {
    NewEvent::new(e.event_type.clone(), e.content_type, e.payload.clone())
        .with_id(e.event_id)
        .with_schema_version(e.schema_version)
        .with_metadata(e.metadata.clone())
}

/// One shape: the stream's first `appended` events written by appends of `per_commit`, the
/// rest of `total` imported in batches of `batch`; or, with `appended` 0 and `start` > 0, a
/// stream started by an import at version `start`.
struct Shape {
    name: &'static str,
    start: u64,
    appended: u64,
    total: u64,
    per_commit: u64,
    batch: usize,
    decreasing: bool,
}

/// Imports continue streams of every shape — one event, a few commits, hundreds of events,
/// none yet, ids increasing or not, started past version 1 — and leave each as appends would:
/// every event read back as imported, appends continuing it, an append retried recognised, an
/// imported id refused to an append.
pub async fn import_continues_every_stream_shape(f: Fixture) {
    let store = &f.events;
    let ty = unique("Shape");
    let shapes = [
        Shape {
            name: "one event, then imports",
            start: 0,
            appended: 1,
            total: 4,
            per_commit: 1,
            batch: 2,
            decreasing: false,
        },
        Shape {
            name: "a few commits, imports past 120 events",
            start: 0,
            appended: 6,
            total: 200,
            per_commit: 2,
            batch: 97,
            decreasing: false,
        },
        Shape {
            name: "long, then imports",
            start: 0,
            appended: 130,
            total: 300,
            per_commit: 10,
            batch: 500,
            decreasing: false,
        },
        Shape {
            name: "new, long, one call",
            start: 0,
            appended: 0,
            total: 260,
            per_commit: 3,
            batch: 500,
            decreasing: false,
        },
        Shape {
            name: "new, ids decreasing",
            start: 0,
            appended: 0,
            total: 30,
            per_commit: 4,
            batch: 16,
            decreasing: true,
        },
        Shape {
            name: "a few commits, ids below them",
            start: 0,
            appended: 6,
            total: 40,
            per_commit: 3,
            batch: 40,
            decreasing: true,
        },
        Shape {
            name: "long, ids below them",
            start: 0,
            appended: 130,
            total: 200,
            per_commit: 10,
            batch: 50,
            decreasing: true,
        },
        Shape {
            name: "started at version 200",
            start: 200,
            appended: 0,
            total: 10,
            per_commit: 3,
            batch: 10,
            decreasing: false,
        },
        Shape {
            name: "started at version 5, past 120",
            start: 5,
            appended: 0,
            total: 150,
            per_commit: 1,
            batch: 150,
            decreasing: false,
        },
    ];
    for (k, shape) in shapes.iter().enumerate() {
        let stream = StreamId::new(&ty, format!("s{k}")).expect("stream");
        let what = shape.name;
        let count = shape.total - shape.appended;
        // Ids grow with versions across the appended part and the imported one, unless the
        // imported ones are to decrease: then they are all below the appended ones.
        let imported = source(
            &stream,
            shape.start + shape.appended + 1,
            count,
            shape.per_commit,
            shape.decreasing,
        );
        let mut appended = source(&stream, shape.start + 1, shape.appended, shape.per_commit, false);
        if shape.decreasing {
            for (e, id) in appended.iter_mut().zip((0..).map(|_| Uuid::now_v7())) {
                e.event_id = id;
            }
        }
        for chunk in appended.chunks(shape.per_commit as usize) {
            let v = chunk[0].version - 1;
            let expected = if v == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(v)
            };
            store
                .append(&stream, expected, chunk.iter().map(as_new).collect())
                .await
                .unwrap_or_else(|e| panic!("{what}: append: {e}"));
        }
        let mut after = shape.start + shape.appended;
        for batch in imported.chunks(shape.batch) {
            let done = store
                .import(&stream, after, batch.to_vec())
                .await
                .unwrap_or_else(|e| panic!("{what}: import after {after}: {e}"));
            after += batch.len() as u64;
            assert_eq!(done.version, after, "{what}");
        }
        let version = shape.start + shape.total;
        assert_eq!(store.stream_version(&stream).await.expect("version"), version, "{what}");
        let read = store.read_stream(&stream, 1, 1_000).await.expect("read");
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (shape.start + 1..=version).collect::<Vec<_>>(),
            "{what}: versions"
        );
        for (got, sent) in read.iter().zip(appended.iter().chain(&imported)) {
            assert_eq!(got.event_id, sent.event_id, "{what}: id at {}", sent.version);
            assert_eq!(got.event_type, sent.event_type, "{what}: type at {}", sent.version);
            assert_eq!(got.schema_version, sent.schema_version, "{what}");
            assert_eq!(got.payload, sent.payload, "{what}: payload at {}", sent.version);
            assert_eq!(got.metadata, sent.metadata, "{what}: metadata at {}", sent.version);
        }
        for (got, sent) in read[shape.appended as usize..].iter().zip(&imported) {
            assert_eq!(
                got.recorded_at, sent.recorded_at,
                "{what}: recorded-at at {}",
                sent.version
            );
        }
        let positions: Vec<Position> = read.iter().map(|e| e.position).collect();
        assert!(
            positions
                .windows(2)
                .all(|w| w[0].partition != w[1].partition || w[0].offset < w[1].offset),
            "{what}: positions follow the versions"
        );

        // Appends go on from the import; a retry is recognised; an imported id is not new.
        let next = vec![ev("ShapeA", version + 1)];
        let done = store
            .append(&stream, ExpectedVersion::Exact(version), next.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: append after import: {e}"));
        assert_eq!(done.version, version + 1, "{what}");
        let again = store
            .append(&stream, ExpectedVersion::Exact(version), next)
            .await
            .unwrap_or_else(|e| panic!("{what}: retried append: {e}"));
        assert_eq!(again, done, "{what}: a retried append is recognised");
        // (With a new event first: one commit's ids alone would be a retry of it.)
        let reused = as_new(&imported[imported.len() / 2]);
        let err = store
            .append(
                &stream,
                ExpectedVersion::Exact(version + 1),
                vec![ev("ShapeA", 0), reused],
            )
            .await;
        assert!(matches!(err, Err(Error::EventIdReused { .. })), "{what}: {err:?}");
        // An import of an id the stream holds is refused too.
        let mut again = source(&stream, version + 2, 1, 1, false);
        again[0].event_id = imported[0].event_id;
        let err = store.import(&stream, version + 1, again).await;
        assert!(matches!(err, Err(Error::EventIdReused { .. })), "{what}: {err:?}");
        assert_eq!(
            store.stream_version(&stream).await.expect("version"),
            version + 1,
            "{what}"
        );
    }
}

/// An import racing an append, or another import, to the same stream: exactly one writes,
/// whole; the other is refused (or, for the same batch, told it is there) and writes nothing.
pub async fn import_racing_an_append_lets_exactly_one_win(f: Fixture) {
    let store: Arc<dyn EventStore> = Arc::clone(&f.events);
    let ty = unique("Race");
    let rounds = f.stress.rounds.min(30);
    let (mut imports_won, mut appends_won) = (0, 0);
    for round in 0..rounds {
        let stream = StreamId::new(&ty, format!("r{round}")).expect("stream");
        // Every other round races on a stream that exists.
        let at = round % 2;
        if at == 1 {
            store
                .append(&stream, ExpectedVersion::NoStream, vec![ev("Raced", 0)])
                .await
                .expect("append");
        }
        let batch = source(&stream, at + 1, 3, 2, false);
        let mine: Vec<NewEvent> = (0..2).map(|n| ev("Raced", n + 1)).collect();
        let expected = if at == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(at)
        };
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (s1, s2) = (stream.clone(), stream.clone());
        let imported = tokio::spawn({
            let batch = batch.clone();
            async move { a.import(&s1, at, batch).await }
        });
        let appended = tokio::spawn({
            let mine = mine.clone();
            async move { b.append(&s2, expected, mine).await }
        });
        let (imported, appended) = (imported.await.expect("join"), appended.await.expect("join"));
        let read = store.read_stream(&stream, at + 1, 100).await.expect("read");
        let ids: Vec<Uuid> = read.iter().map(|e| e.event_id).collect();
        match (&imported, &appended) {
            (Ok(done), Err(Error::Conflict { .. })) => {
                imports_won += 1;
                assert_eq!(done.version, at + 3);
                assert_eq!(
                    ids,
                    batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
                    "round {round}"
                );
            }
            (Err(Error::Conflict { .. } | Error::EventIdReused { .. }), Ok(done)) => {
                appends_won += 1;
                assert_eq!(done.version, at + 2);
                assert_eq!(
                    ids,
                    mine.iter().map(|e| e.event_id).collect::<Vec<_>>(),
                    "round {round}"
                );
            }
            other => panic!("round {round}: exactly one of an import and an append wins: {other:?}"),
        }

        // The same batch imported twice at once: written once, both told where it ends.
        let twin = StreamId::new(&ty, format!("t{round}")).expect("stream");
        let batch = source(&twin, 1, 4, 2, false);
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (s1, s2, b1, b2) = (twin.clone(), twin.clone(), batch.clone(), batch.clone());
        let one = tokio::spawn(async move { a.import(&s1, 0, b1).await });
        let two = tokio::spawn(async move { b.import(&s2, 0, b2).await });
        let (one, two) = (one.await.expect("join"), two.await.expect("join"));
        let (one, two) = (
            one.unwrap_or_else(|e| panic!("round {round}: twin import: {e}")),
            two.unwrap_or_else(|e| panic!("round {round}: twin import: {e}")),
        );
        assert_eq!(one, two, "round {round}: both imports end at the same event");
        let read = store.read_stream(&twin, 1, 100).await.expect("read");
        assert_eq!(
            read.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "round {round}: the batch is there once"
        );
    }
    super::support::report(
        f.label,
        &format!("import vs append: {imports_won} imports and {appends_won} appends won of {rounds} races"),
    );
}
