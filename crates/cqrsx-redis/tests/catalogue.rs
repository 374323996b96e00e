//! The stream catalogue of a store written before it existed: its streams are missing from
//! `list_streams` until `fill_catalogue` enters them — tiny, small and long streams, deleted
//! ones and ones with every event truncated — on a standalone server and on a Cluster.

mod common;

use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore};
use fred::prelude::*;

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Listed", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

async fn every_stream(store: &RedisEventStore) -> Vec<StreamInfo> {
    let mut all = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = store.list_streams(after.as_ref(), 3).await.expect("list");
        after = page.last().map(|i| i.stream.clone());
        let done = page.len() < 3;
        all.extend(page);
        if done {
            return all;
        }
    }
}

async fn fill_finds_what_the_catalogue_lost(config: RedisConfig) {
    let prefix = config.key_prefix.clone();
    let partitions = config.partitions;
    let client = RedisClientManager::connect(config).await.expect("connect");
    let store = RedisEventStore::new(client.clone());
    let mut expected = Vec::new();
    for (i, (id, n)) in [
        ("tiny", 1),
        ("small", 5),
        ("long", 130),
        ("gone", 3),
        ("emptied", 4),
        ("gone-unwritten", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let stream = StreamId::new("Cat", format!("{id}-{i}")).expect("stream");
        let mut version = 0;
        // Several commits, so a stream past one commit has a meta hash of its own.
        for chunk in events(n).chunks(2) {
            let expected = match version {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v),
            };
            version = store
                .append(&stream, expected, chunk.to_vec())
                .await
                .expect("append")
                .version;
            if id == "tiny" {
                break;
            }
        }
        let deleted = id.starts_with("gone");
        if deleted {
            store
                .delete_stream(&stream, ExpectedVersion::Any)
                .await
                .expect("delete");
        }
        if id == "emptied" {
            store.truncate_before(&stream, version + 1).await.expect("truncate");
        }
        expected.push((stream.key().to_string(), version, deleted));
    }
    // A stream truncated before it was ever written is no stream.
    let never = StreamId::new("Cat", "never").expect("stream");
    store.truncate_before(&never, 5).await.expect("truncate");
    expected.sort();
    let listed = |all: Vec<StreamInfo>| -> Vec<(String, u64, bool)> {
        all.into_iter()
            .map(|i| (i.stream.key().to_string(), i.version, i.deleted))
            .collect()
    };
    assert_eq!(
        listed(every_stream(&store).await),
        expected,
        "written with the catalogue"
    );

    // As a store written before the catalogue: none of its keys.
    for p in 0..partitions {
        let _: i64 = client.client().del(format!("{{{prefix}:{p}}}:cat")).await.expect("DEL");
    }
    assert!(every_stream(&store).await.is_empty(), "the catalogue is gone");
    let found = store.fill_catalogue().await.expect("fill");
    assert_eq!(found, expected.len() as u64);
    assert_eq!(
        listed(every_stream(&store).await),
        expected,
        "filled from the store's keys"
    );
    // Twice is harmless.
    assert_eq!(store.fill_catalogue().await.expect("fill again"), found);
    assert_eq!(listed(every_stream(&store).await), expected);
}

#[tokio::test]
async fn fill_catalogue_finds_every_stream_standalone() {
    fill_finds_what_the_catalogue_lost(common::standalone_config().with_partitions(4)).await;
}

/// In `cluster::`, the Cluster group's tests (the standalone group has no Cluster).
mod cluster {
    #[tokio::test]
    async fn fill_catalogue_finds_every_stream_on_a_cluster() {
        super::fill_finds_what_the_catalogue_lost(super::common::cluster_config()).await;
    }
}
