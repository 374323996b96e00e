//! A stream's metadata hash: while its event ids arrive in increasing order (time-ordered ids,
//! the default) it holds the version and the largest id only, whatever the stream's length;
//! each commit index entry holds its commit's ids. The first append out of order writes every
//! id into the hash (id -> version), which stays a compact listpack while appends are small and
//! becomes a hash table with the first batch of 16 or more: a batch looks up and writes every
//! one of its ids, which in a listpack is a scan each.

mod common;

use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId, Uuid};
use cqrsx_redis::{RedisClientManager, RedisEventStore};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ids_need_no_hash_field_and_the_first_out_of_order_indexes_them() {
    let client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let store = RedisEventStore::new(client.clone());
    let stream = StreamId::new("Laid", "s").expect("stream");
    let [index, meta] = [0, 1].map(|i| store.stream_keys(&stream)[i].clone());
    let mut written = Vec::new();
    for n in [1, 1, 1, 15, 16] {
        let batch = events(n);
        written.extend(batch.iter().map(|e| e.event_id));
        store
            .append(&stream, ExpectedVersion::Any, batch)
            .await
            .expect("ordered");
    }
    assert_eq!(
        fields(&client, &meta).await,
        vec![b"v".to_vec()],
        "ordered ids: one field"
    );
    let state: Vec<u8> = client.client().hget(&meta, "v").await.expect("HGET");
    assert_eq!(
        state,
        [&b"34"[..], written[33].as_bytes()].concat(),
        "the version, then the largest id"
    );
    let last: Value = client
        .client()
        .xrevrange(&index, "+", "-", Some(1))
        .await
        .expect("XREVRANGE");
    let last = last.into_array();
    let entry = last[0].clone().into_array();
    let entry_fields = entry[1].clone().into_array();
    assert_eq!(
        entry_fields[4].as_str().as_deref(),
        Some("i"),
        "the commit holds its ids"
    );
    let ids: Vec<u8> = written[18..].iter().flat_map(|id| id.as_bytes().to_vec()).collect();
    assert_eq!(entry_fields[5].as_bytes().expect("ids"), &ids[..]);

    // An id below the others: the stream's ids move into the hash, a compact listpack.
    let low = events(1).remove(0).with_id(Uuid::from_u128(1));
    written.push(low.event_id);
    store
        .append(&stream, ExpectedVersion::Exact(34), vec![low])
        .await
        .expect("out of order");
    let mut expected: Vec<Vec<u8>> = written.iter().map(|id| id.as_bytes().to_vec()).collect();
    expected.push(b"v".to_vec());
    expected.sort();
    assert_eq!(fields(&client, &meta).await, expected, "every id");
    let state: Vec<u8> = client.client().hget(&meta, "v").await.expect("HGET");
    assert_eq!(state, b"35".to_vec(), "the version alone: no largest id");
    assert_eq!(
        encoding(&client, &meta).await,
        "listpack",
        "small appends keep the listpack"
    );
    for n in [1, 15] {
        store
            .append(&stream, ExpectedVersion::Any, events(n))
            .await
            .expect("indexed");
    }
    assert_eq!(
        encoding(&client, &meta).await,
        "listpack",
        "small appends keep the listpack"
    );
    store
        .append(&stream, ExpectedVersion::Any, events(16))
        .await
        .expect("sixteen");
    assert_eq!(encoding(&client, &meta).await, "hashtable", "a batch of 16 converts it");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 67);
    let versions: Vec<u64> = store
        .read_stream(&stream, 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=67).collect::<Vec<_>>());
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
