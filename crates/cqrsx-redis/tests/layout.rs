//! A stream's metadata hash: while its event ids arrive in increasing order (time-ordered ids,
//! the default) it holds the version and the largest id only, whatever the stream's length,
//! and while the stream is small its commits (position and count each); each commit index
//! entry of a larger stream holds its commit's ids. The first append out of order writes every
//! id into the hash (id -> version), which stays a compact listpack while appends are small and
//! becomes a hash table with the first batch of 16 or more: a batch looks up and writes every
//! one of its ids, which in a listpack is a scan each.

mod common;

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId, Uuid};
use cqrsx_redis::{RedisClientManager, RedisEventStore, SMALL_STREAM_EVENTS as SMALL};
use fred::prelude::*;
use fred::types::Value;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Laid", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

async fn encoding(client: &RedisClientManager, key: &str) -> String {
    client
        .client()
        .custom(fred::cmd!("OBJECT"), vec!["ENCODING", key])
        .await
        .expect("OBJECT ENCODING")
}

/// The meta hash's fields, by name (ids are their 16 bytes).
async fn fields(client: &RedisClientManager, key: &str) -> Vec<Vec<u8>> {
    let all: Value = client.client().hgetall(key).await.expect("HGETALL");
    let mut names: Vec<Vec<u8>> = all
        .into_array()
        .chunks(2)
        .map(|pair| pair[0].as_bytes().expect("field").to_vec())
        .collect();
    names.sort();
    names
}

/// The commit index entries of a stream's index stream: (entry id, fields).
async fn index_entries(client: &RedisClientManager, key: &str) -> Vec<(String, Vec<Value>)> {
    let all: Value = client.client().xrange(key, "-", "+", None).await.expect("XRANGE");
    all.into_array()
        .into_iter()
        .map(|entry| {
            let entry = entry.into_array();
            (entry[0].as_string().expect("id"), entry[1].clone().into_array())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ids_need_no_hash_field_and_the_first_out_of_order_indexes_them() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "s").expect("stream");
    let [index, meta] = [0, 1].map(|i| store.stream_keys(&stream)[i].clone());
    let mut written = Vec::new();
    let mut positions = Vec::new();
    for n in [1, 1, 1, 15, 16] {
        let batch = events(n);
        written.extend(batch.iter().map(|e| e.event_id));
        let done = store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("ordered");
        positions.push(done.position.offset + 1 - n as u64);
    }
    // A small stream: its commits are fields of the meta hash, and it has no index stream.
    let commits: Vec<Vec<u8>> = [1, 2, 3, 4, 19].iter().map(|v| format!("c{v}").into_bytes()).collect();
    let mut expected = commits.clone();
    expected.push(b"v".to_vec());
    expected.sort();
    assert_eq!(
        fields(&client, &meta).await,
        expected,
        "the version and one field per commit"
    );
    let state: Vec<u8> = client.client().hget(&meta, "v").await.expect("HGET");
    assert_eq!(
        state,
        [&b"34"[..], written[33].as_bytes()].concat(),
        "the version, then the largest id"
    );
    let last: String = client.client().hget(&meta, "c19").await.expect("HGET");
    assert_eq!(last, format!("{} 16", positions[4]), "the commit's position and count");
    let exists: i64 = client.client().exists(&index).await.expect("EXISTS");
    assert_eq!(exists, 0, "no index stream while small");
    assert_eq!(encoding(&client, &meta).await, "listpack");

    // The append past SMALL_STREAM_EVENTS moves the commits into an index stream; the ids of
    // the moved ones stay in their log entries, the new one's are in its entry.
    let batch = events(SMALL as usize - 33);
    written.extend(batch.iter().map(|e| e.event_id));
    store
        .append(&stream, ExpectedVersion::Exact(34), batch)
        .await
        .expect("past small");
    assert_eq!(
        fields(&client, &meta).await,
        vec![b"v".to_vec()],
        "ordered ids: one field"
    );
    let entries = index_entries(&client, &index).await;
    let versions: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(versions, ["1-0", "2-0", "3-0", "4-0", "19-0", "35-0"]);
    for (_, fields) in &entries[..5] {
        assert_eq!(fields.len(), 4, "a moved commit: its position and count");
    }
    assert_eq!(
        entries[4].1[1].as_string().as_deref(),
        Some(positions[4].to_string().as_str())
    );
    let (_, last) = &entries[5];
    assert_eq!(last[4].as_str().as_deref(), Some("i"), "a new commit holds its ids");
    let ids: Vec<u8> = written[34..].iter().flat_map(|id| id.as_bytes().to_vec()).collect();
    assert_eq!(last[5].as_bytes().expect("ids"), &ids[..]);

    // A retry of a moved commit is recognised, and one of a commit in the middle of it refused.
    let retry: Vec<NewEvent> = written[18..34]
        .iter()
        .map(|id| events(1).remove(0).with_id(*id))
        .collect();
    let again = store
        .append(&stream, ExpectedVersion::Any, retry)
        .await
        .expect("a retry");
    assert_eq!(again.version, 34);
    let reused = events(1).remove(0).with_id(written[20]);
    assert!(store.append(&stream, ExpectedVersion::Any, vec![reused]).await.is_err());

    // An id below the others: the stream's ids move into the hash, a compact listpack.
    let low = events(1).remove(0).with_id(Uuid::from_u128(1));
    written.push(low.event_id);
    store
        .append(&stream, ExpectedVersion::Exact(SMALL + 1), vec![low])
        .await
        .expect("out of order");
    let mut expected: Vec<Vec<u8>> = written.iter().map(|id| id.as_bytes().to_vec()).collect();
    expected.push(b"v".to_vec());
    expected.sort();
    assert_eq!(fields(&client, &meta).await, expected, "every id");
    let state: Vec<u8> = client.client().hget(&meta, "v").await.expect("HGET");
    assert_eq!(
        state,
        (SMALL + 2).to_string().into_bytes(),
        "the version alone: no largest id"
    );
    store
        .append(&stream, ExpectedVersion::Any, events(16))
        .await
        .expect("sixteen");
    assert_eq!(encoding(&client, &meta).await, "hashtable", "a batch of 16 converts it");
    assert_eq!(store.stream_version(&stream).await.expect("version"), SMALL + 18);
    let versions: Vec<u64> = store
        .read_stream(&stream, 1, 1000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=SMALL + 18).collect::<Vec<_>>());
}

/// A small stream's ids move into its hash at the first append out of order (a listpack while
/// appends are small), and a small stream truncated keeps the ids of the commits that left the
/// log: their retries are still recognised, before and after the stream grows past small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_streams_index_their_ids_and_keep_them_through_truncation() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "small").expect("stream");
    let meta = store.stream_keys(&stream)[1].clone();
    // Ids full of zero bytes, increasing: kept as they are (a Lua `format` would cut them).
    let first: Vec<NewEvent> = events(3)
        .into_iter()
        .zip(1u128..)
        .map(|(e, i)| e.with_id(Uuid::from_u128(i << 64)))
        .collect();
    let done = store
        .append(&stream, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("first");
    store
        .append(&stream, ExpectedVersion::Exact(3), events(2))
        .await
        .expect("second");
    assert_eq!(store.truncate_before(&stream, 4).await.expect("truncate"), 3);
    let kept: Vec<u8> = client.client().hget(&meta, "c1").await.expect("HGET");
    let ids: Vec<u8> = first.iter().flat_map(|e| e.event_id.as_bytes().to_vec()).collect();
    let head = format!("{} 3 ", done.position.offset - 2);
    assert_eq!(&kept[..head.len()], head.as_bytes(), "its position and count");
    assert_eq!(&kept[head.len()..], &ids[..], "then its ids");
    let retry = store
        .append(&stream, ExpectedVersion::Any, first.clone())
        .await
        .expect("a retry of a truncated commit");
    assert_eq!(retry.version, 3);
    // Out of order: every id, those of the truncated commit too, becomes a field.
    let low = events(1).remove(0).with_id(Uuid::from_u128(7));
    store
        .append(&stream, ExpectedVersion::Exact(5), vec![low])
        .await
        .expect("out of order");
    assert_eq!(
        fields(&client, &meta).await.len(),
        3 + 6 + 2,
        "v, tr, three commits, six ids"
    );
    let again = store
        .append(&stream, ExpectedVersion::Any, first.clone())
        .await
        .expect("a retry, indexed");
    assert_eq!(again.version, 3);
    // Past small: the moved commits and retries.
    store
        .append(&stream, ExpectedVersion::Exact(6), events(SMALL as usize - 5))
        .await
        .expect("past small");
    let retry = store
        .append(&stream, ExpectedVersion::Any, first)
        .await
        .expect("a retry after the move");
    assert_eq!(retry.version, 3);
    let versions: Vec<u64> = store
        .read_stream(&stream, 1, 1000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (4..=SMALL + 1).collect::<Vec<_>>());
}

/// A commit is one partition log entry, at its first position, with exactly these fields: the
/// stream key (which names the aggregate type), first version, event count, recorded-at, types
/// and the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_one_log_entry_of_six_fields() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "entry").expect("stream");
    let log = store.stream_keys(&stream)[2].clone();
    let mut batch = events(3);
    batch[1] = NewEvent::json("Other", &1).expect("json");
    let done = store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("append");
    let first = done.position.offset - 2;
    let id = format!("{first}-0");
    let entries: Value = client.client().xrange(&log, &id, &id, None).await.expect("XRANGE");
    let entry = entries.into_array().remove(0).into_array();
    let names: Vec<String> = entry[1]
        .clone()
        .into_array()
        .chunks(2)
        .map(|pair| pair[0].as_string().expect("field name"))
        .collect();
    assert_eq!(names, ["s", "v", "n", "r", "t", "e"]);
    let values = entry[1].clone().into_array();
    assert_eq!(values[1].as_str().as_deref(), Some("Laid/entry"));
    assert_eq!(values[3].as_str().as_deref(), Some("1"));
    assert_eq!(values[5].as_str().as_deref(), Some("3"));
    assert_eq!(values[9].as_str().as_deref(), Some("Laid\nOther\nLaid"));
    // Recorded-at is the id of the type index entry the append made: the server's clock, in ms.
    let recorded = values[7].as_string().expect("recorded-at");
    let (ms, seq) = recorded.split_once('-').expect("an <ms>-<seq> id");
    let ms: u64 = ms.parse().expect("ms");
    seq.parse::<u64>().expect("seq");
    let read = store.read_stream(&stream, 1, 1).await.expect("read");
    assert_eq!(read[0].recorded_at.0, ms, "read back as the entry's ms");
}

/// A commit moved out of a small stream reads its ids in its log entry; truncated out of the
/// log, it keeps them in the meta hash (`k<version>`), and its retry is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_commit_truncated_keeps_its_ids() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "moved").expect("stream");
    let meta = store.stream_keys(&stream)[1].clone();
    let first = events(1);
    store
        .append(&stream, ExpectedVersion::NoStream, first.clone())
        .await
        .expect("first");
    store
        .append(&stream, ExpectedVersion::Exact(1), events(2))
        .await
        .expect("second");
    store
        .append(&stream, ExpectedVersion::Exact(3), events(SMALL as usize))
        .await
        .expect("past small");
    assert_eq!(store.truncate_before(&stream, 4).await.expect("truncate"), 3);
    let kept: Vec<u8> = client.client().hget(&meta, "k1").await.expect("HGET");
    assert_eq!(
        kept,
        first[0].event_id.as_bytes().to_vec(),
        "the moved commit's ids, kept"
    );
    let retry = store
        .append(&stream, ExpectedVersion::Any, first)
        .await
        .expect("a retry of the truncated commit");
    assert_eq!(retry.version, 1);
    let reused = events(1)
        .remove(0)
        .with_id(store.read_stream(&stream, 4, 1).await.expect("read")[0].event_id);
    assert!(
        store.append(&stream, ExpectedVersion::Any, vec![reused]).await.is_err(),
        "a reused id"
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), SMALL + 3);
}

/// A stream of one commit is tiny: no key of its own, its state a field of a shared bucket.
/// Its second append, a truncation or a deletion moves it into a meta hash of its own first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_one_commit_has_no_key_of_its_own() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let raw = client.client();
    let tiny_state = |stream: &StreamId| {
        let (raw, bucket, field) = (
            raw.clone(),
            store.stream_keys(stream)[6].clone(),
            stream.key().to_string(),
        );
        async move {
            let value: Option<Vec<u8>> = raw.hget(&bucket, &field).await.expect("HGET");
            value
        }
    };
    let own_key = |stream: &StreamId| {
        let (raw, meta) = (raw.clone(), store.stream_keys(stream)[1].clone());
        async move { raw.exists::<i64, _>(&meta).await.expect("EXISTS") == 1 }
    };

    let s = StreamId::new("Laid", "tiny").expect("stream");
    let batch = events(3);
    let done = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    assert!(!own_key(&s).await, "no meta hash");
    let state = tiny_state(&s).await.expect("its bucket field");
    let mut expected = batch[2].event_id.as_bytes().to_vec();
    expected.extend_from_slice(format!("3 {}", done.position.offset - 2).as_bytes());
    assert_eq!(state, expected, "the largest id, the version, the first position");
    assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    let read = store.read_stream(&s, 2, 10).await.expect("read");
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
    let retry = store.append(&s, ExpectedVersion::Any, batch).await.expect("a retry");
    assert_eq!(retry, done);
    assert!(!own_key(&s).await, "a retry writes nothing");
    store
        .append(&s, ExpectedVersion::Exact(3), events(1))
        .await
        .expect("second");
    assert_eq!(
        fields(&client, &store.stream_keys(&s)[1]).await,
        [b"c1".to_vec(), b"c4".to_vec(), b"v".to_vec()]
    );

    // Truncation and deletion move it first; a first batch out of order or past SMALL is never
    // tiny.
    let t = StreamId::new("Laid", "tiny-truncated").expect("stream");
    store
        .append(&t, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");
    assert_eq!(store.truncate_before(&t, 2).await.expect("truncate"), 1);
    assert!(own_key(&t).await && tiny_state(&t).await.is_none());
    assert_eq!(store.read_stream(&t, 1, 10).await.expect("read")[0].version, 2);
    let d = StreamId::new("Laid", "tiny-deleted").expect("stream");
    store
        .append(&d, ExpectedVersion::NoStream, events(1))
        .await
        .expect("append");
    store
        .delete_stream(&d, ExpectedVersion::Exact(1))
        .await
        .expect("delete");
    assert!(tiny_state(&d).await.is_none());
    assert!(matches!(
        store.append(&d, ExpectedVersion::Any, events(1)).await,
        Err(cqrsx_core::Error::StreamDeleted { .. })
    ));
    let mut descending = events(2);
    descending.reverse();
    let u = StreamId::new("Laid", "tiny-unordered").expect("stream");
    store
        .append(&u, ExpectedVersion::NoStream, descending)
        .await
        .expect("append");
    assert!(own_key(&u).await && tiny_state(&u).await.is_none());
    let l = StreamId::new("Laid", "tiny-large").expect("stream");
    store
        .append(&l, ExpectedVersion::NoStream, events(SMALL as usize + 1))
        .await
        .expect("append");
    assert!(own_key(&l).await && tiny_state(&l).await.is_none());
}

/// A retry of a tiny stream's commit, a refused reuse of its ids and a conflict write nothing:
/// the stream stays tiny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_refused_or_retried_leave_a_tiny_stream_as_it_was() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let s = StreamId::new("Laid", "tiny-kept").expect("stream");
    let batch = events(2);
    let done = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let keys = store.stream_keys(&s);
    let state = || {
        let (raw, bucket, meta, field) = (client.client(), keys[6].clone(), keys[1].clone(), s.key().to_string());
        async move {
            let value: Option<Vec<u8>> = raw.hget(&bucket, &field).await.expect("HGET");
            let own: i64 = raw.exists(&meta).await.expect("EXISTS");
            (value, own)
        }
    };
    let before = state().await;
    assert!(before.0.is_some() && before.1 == 0, "tiny");
    assert_eq!(
        store
            .append(&s, ExpectedVersion::Any, batch.clone())
            .await
            .expect("retry"),
        done
    );
    let reused = vec![batch[1].clone(), events(1).remove(0)];
    assert!(store.append(&s, ExpectedVersion::Any, reused).await.is_err());
    assert!(store.append(&s, ExpectedVersion::Exact(5), events(1)).await.is_err());
    assert_eq!(state().await, before, "nothing written");
}
