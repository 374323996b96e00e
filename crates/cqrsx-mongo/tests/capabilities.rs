//! Capability detection against what the server does: each capability is tried here by hand,
//! on a collection of the test's own, and the detected value must agree — so a server that
//! lacks one (FerretDB 2 + DocumentDB: transactions and change streams, though its `hello`
//! announces sessions and a wire version from which drivers assume transactions; FerretDB 1.x:
//! all of them) is seen lacking it, and one that has it is seen having it.

mod common;

use std::time::Duration;

use cqrsx_mongo::{MongoClientManager, ServerCapabilities};
use futures::future::join_all;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};

/// A client whose capabilities are the detected ones (no test override), and a fresh
/// collection to try things on.
async fn setup(name: &str) -> (MongoClientManager, ServerCapabilities, Collection<Document>) {
    let config = common::config().with_assumed_capabilities(Default::default());
    let client = common::client(config).await;
    let caps = client.capabilities().clone();
    let coll = client.database().collection::<Document>(name);
    client
        .database()
        .create_collection(name)
        .await
        .expect("create collection");
    (client, caps, coll)
}

fn duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

fn code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_detected_by_committing_and_aborting_one() {
    let (client, caps, coll) = setup("tx").await;
    let mut session = client.client().start_session().await.expect("session");
    let committed = async {
        session.start_transaction().await?;
        coll.insert_one(doc! { "_id": "c" }).session(&mut session).await?;
        session.commit_transaction().await
    }
    .await;
    let rolled_back = async {
        session.start_transaction().await?;
        coll.insert_one(doc! { "_id": "a" }).session(&mut session).await?;
        session.abort_transaction().await?;
        Ok::<bool, mongodb::error::Error>(coll.find_one(doc! { "_id": "a" }).await?.is_none())
    }
    .await;
    let works = committed.is_ok() && matches!(rolled_back, Ok(true));
    assert_eq!(
        caps.transactions, works,
        "commit: {committed:?}, abort rolled back: {rolled_back:?}; detected {caps:?}"
    );
    if !works && caps.sessions && caps.max_wire_version >= 7 {
        // The case detection exists for: a server that announces what drivers take as
        // transaction support (FerretDB 2 + DocumentDB) and refuses the commit.
        let refused = committed.as_ref().err().and_then(code);
        assert!(
            committed.is_err(),
            "a server announcing sessions and wire version {} without transactions refuses the commit",
            caps.max_wire_version
        );
        cqrsx_core::testkit::report(
            "mongo",
            &format!(
                "transactions: announced (sessions, wire version {}), commit refused with {refused:?}: detected absent",
                caps.max_wire_version
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_streams_are_detected_by_opening_one() {
    let (_client, caps, coll) = setup("cs").await;
    let opened = coll.watch().await;
    assert_eq!(
        caps.change_streams,
        opened.is_ok(),
        "watch: {:?}; detected {caps:?}",
        opened.as_ref().err()
    );
    if let Err(e) = &opened {
        cqrsx_core::testkit::report(
            "mongo",
            &format!("change streams: refused with {:?}: detected absent", code(e)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_array_indexes_are_detected_by_a_shared_element() {
    let (_client, caps, coll) = setup("ua").await;
    let index = IndexModel::builder()
        .keys(doc! { "tags": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    let refused = match coll.create_index(index).await {
        Err(_) => false,
        Ok(_) => {
            coll.insert_one(doc! { "_id": 1, "tags": ["a", "b"] })
                .await
                .expect("first");
            match coll.insert_one(doc! { "_id": 2, "tags": ["b", "c"] }).await {
                Ok(_) => false,
                Err(e) => duplicate_key(&e),
            }
        }
    };
    assert_eq!(caps.unique_array_indexes, refused, "{caps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_arrays_are_detected_by_storing_one() {
    let (_client, caps, coll) = setup("na").await;
    let stored = coll.insert_one(doc! { "_id": 1, "m": [[1, 2], [3]] }).await.is_ok();
    assert_eq!(caps.nested_arrays, stored, "{caps:?}");
    if stored {
        let back = coll.find_one(doc! { "_id": 1 }).await.expect("find").expect("stored");
        assert_eq!(
            back.get("m"),
            Some(&Bson::from(vec![Bson::from(vec![1, 2]), Bson::from(vec![3])]))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_queries_are_detected_by_the_plan_naming_the_index() {
    let (client, caps, coll) = setup("iq").await;
    coll.create_index(
        IndexModel::builder()
            .keys(doc! { "score": 1 })
            .options(IndexOptions::builder().name("by_score".to_string()).build())
            .build(),
    )
    .await
    .expect("index");
    let docs: Vec<Document> = (0..200).map(|i| doc! { "_id": i, "score": i * 7 % 200 }).collect();
    coll.insert_many(docs).await.expect("insert");
    let plan = client
        .database()
        .run_command(doc! {
            "explain": { "find": "iq", "filter": { "score": { "$gte": 150 } }, "sort": { "score": 1 }, "limit": 5, "hint": "by_score" },
            "verbosity": "queryPlanner",
        })
        .await
        .expect("explain");
    let mut plan = plan;
    plan.remove("command");
    let text = format!("{plan}");
    assert_eq!(caps.indexed_queries, text.contains("\"by_score\""), "{caps:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_loses_increments_is_not_taken_as_atomic() {
    let (_client, caps, coll) = setup("ac").await;
    coll.insert_one(doc! { "_id": "n", "n": 0_i64 }).await.expect("counter");
    let (tasks, each) = (16_i64, 25_i64);
    let racers = (0..tasks).map(|_| {
        let coll = coll.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..each {
                let d = coll
                    .find_one_and_update(doc! { "_id": "n" }, doc! { "$inc": { "n": 1_i64 } })
                    .return_document(ReturnDocument::After)
                    .await
                    .expect("inc")
                    .expect("counter exists");
                seen.push(d.get_i64("n").expect("n"));
            }
            seen
        }
    });
    let mut seen: Vec<i64> = join_all(racers).await.into_iter().flatten().collect();
    let final_value = coll
        .find_one(doc! { "_id": "n" })
        .await
        .expect("find")
        .and_then(|d| d.get_i64("n").ok())
        .expect("n");
    seen.sort_unstable();
    seen.dedup();
    let lost = tasks * each - final_value;
    let atomic = lost == 0 && seen.len() as i64 == tasks * each;
    // Detection races fewer increments, so it can miss a loss this race shows (the store stays
    // correct then, only slower) — but a server detected as atomic must not lose any here.
    if caps.atomic_counters {
        assert!(
            atomic,
            "detected atomic, but {lost} of {} increments were lost",
            tasks * each
        );
    }
    if !atomic {
        assert!(!caps.atomic_counters, "{caps:?}");
    }
    cqrsx_core::testkit::report(
        "mongo",
        &format!(
            "counter race: {} of {} increments kept ({})",
            final_value,
            tasks * each,
            if caps.atomic_counters { "atomic" } else { "not atomic" }
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_indexes_are_detected_by_creating_one() {
    let (_client, caps, coll) = setup("ttl").await;
    let created = coll
        .create_index(
            IndexModel::builder()
                .keys(doc! { "at": 1 })
                .options(IndexOptions::builder().expire_after(Duration::from_secs(60)).build())
                .build(),
        )
        .await;
    assert_eq!(caps.ttl_indexes, created.is_ok(), "{created:?}; {caps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_leaves_no_probe_collection_behind() {
    let (client, _caps, _coll) = setup("left").await;
    let names = client.database().list_collection_names().await.expect("names");
    assert!(
        names.iter().all(|n| !n.contains("cqrsx_probe_")),
        "probe collections left: {names:?}"
    );
}
