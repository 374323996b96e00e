//! The stream catalogue of a store written before it existed: streams without a head hint
//! are missing from `list_streams` until `fill_catalogue` enters them — live, deleted, and
//! with every event truncated.

mod common;

use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_mongo::MongoEventStore;
use mongodb::bson::{doc, Document, Regex};

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::json("Listed", &serde_json::json!({ "i": i })).expect("json"))
        .collect()
}

async fn every_stream(store: &MongoEventStore) -> Vec<(String, u64, bool)> {
    let mut all: Vec<StreamInfo> = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = store.list_streams(after.as_ref(), 2).await.expect("list");
        after = page.last().map(|i| i.stream.clone());
        let done = page.len() < 2;
        all.extend(page);
        if done {
            break;
        }
    }
    all.into_iter()
        .map(|i| (i.stream.key().to_string(), i.version, i.deleted))
        .collect()
}

#[tokio::test]
async fn fill_catalogue_finds_streams_written_before_it() {
    let config = common::config();
    let counters = config.counters_collection();
    let client = common::client(config).await;
    let store = MongoEventStore::new(client.clone());
    let mut expected = Vec::new();
    for (id, n) in [("a", 1), ("b", 4), ("gone", 2), ("emptied", 3)] {
        let stream = StreamId::new("Cat", id).expect("stream");
        let done = store
            .append(&stream, ExpectedVersion::NoStream, events(n))
            .await
            .expect("append");
        let deleted = id == "gone";
        if deleted {
            store
                .delete_stream(&stream, ExpectedVersion::Any)
                .await
                .expect("delete");
        }
        if id == "emptied" {
            store.truncate_before(&stream, n + 1).await.expect("truncate");
        }
        expected.push((stream.key().to_string(), done.version, deleted));
    }
    expected.sort();
    assert_eq!(every_stream(&store).await, expected, "written with the catalogue");

    // As a store written before the catalogue (on a server whose heads are not hinted): no
    // head hints.
    client
        .database()
        .collection::<Document>(&counters)
        .delete_many(doc! { "_id": Regex { pattern: "^head\u{1f}".into(), options: String::new() } })
        .await
        .expect("delete hints");
    assert!(every_stream(&store).await.is_empty(), "the catalogue is gone");
    assert_eq!(store.fill_catalogue().await.expect("fill"), expected.len() as u64);
    assert_eq!(every_stream(&store).await, expected, "filled from the commits");
    assert_eq!(store.fill_catalogue().await.expect("fill again"), expected.len() as u64);
    assert_eq!(every_stream(&store).await, expected);
}
