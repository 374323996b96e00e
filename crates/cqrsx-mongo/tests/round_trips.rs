//! What calls cost in server commands and sequential round trips, counted by the driver's
//! command monitoring, so a regression fails here on any server. Each path (the plain one real
//! MongoDB takes, and the fallbacks a server's declared limitations select) has its own counts.

mod common;

use std::sync::Arc;

use cqrsx_core::query::Op;
use cqrsx_core::{Aggregate, EventStore, ExpectedVersion, Filter, NewEvent, Query, ReadStore, Repository, StreamId};
use cqrsx_mongo::{CommandCount, MongoClientManager, MongoEventStore, MongoReadStore};

fn event(n: u64) -> NewEvent {
    NewEvent::json("Counted", &serde_json::json!({ "n": n })).expect("json")
}

fn stream(name: &str) -> StreamId {
    StreamId::new("Trips", format!("{name}-{}", cqrsx_core::Uuid::now_v7().simple())).expect("stream")
}

async fn cost<T>(client: &MongoClientManager, call: impl std::future::Future<Output = T>) -> (T, CommandCount) {
    let before = client.commands();
    let out = call.await;
    (out, client.commands() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncontended_appends_take_the_round_trips_of_their_path() {
    append_costs(common::config()).await;
}

/// The fallback path of a server without indexed queries and unique array indexes (FerretDB
/// 1.x's), taken on purpose on this server: ids checked through id documents by `_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_on_the_fallback_path_take_its_round_trips() {
    append_costs(
        common::config().with_assumed_capabilities(cqrsx_mongo::AssumedCapabilities {
            indexed_queries: Some(false),
            unique_array_indexes: Some(false),
            ..Default::default()
        }),
    )
    .await;
}

async fn append_costs(config: cqrsx_mongo::MongoConfig) {
    let client = common::client(config).await;
    let caps = client.capabilities().clone();
    let store = MongoEventStore::new(client.clone());
    let s = stream("append");
    // The first appends create the counter document and open the pool's connections, so that
    // the commands of one round trip go out together, as they do in a running service.
    for v in 0..4 {
        store
            .append(&s, ExpectedVersion::Exact(v), vec![event(v)])
            .await
            .expect("append");
    }

    // Commands are exact on every attempt. Round trips are the least over a few attempts:
    // a busy machine can only make commands that go out together look sequential (one
    // finishing before the next started), never the reverse, so the least is the path's own.
    let mut exact = Vec::new();
    let mut any = Vec::new();
    let mut fresh = Vec::new();
    let mut version = 4;
    for _ in 0..5 {
        let (r, cost_exact) = cost(
            &client,
            store.append(&s, ExpectedVersion::Exact(version), vec![event(version)]),
        )
        .await;
        assert_eq!(r.expect("exact").version, version + 1);
        let (r, cost_any) = cost(
            &client,
            store.append(&s, ExpectedVersion::Any, vec![event(version + 1), event(version + 2)]),
        )
        .await;
        assert_eq!(r.expect("any").version, version + 3);
        version += 3;
        let (r, cost_fresh) = cost(
            &client,
            store.append(&stream("new"), ExpectedVersion::NoStream, vec![event(0)]),
        )
        .await;
        assert_eq!(r.expect("no stream").version, 1);
        exact.push(cost_exact);
        any.push(cost_any);
        fresh.push(cost_fresh);
    }
    let least = |costs: &[CommandCount]| costs.iter().map(|c| c.round_trips).min().unwrap_or(0);
    let commands = |costs: &[CommandCount]| {
        let all: Vec<u64> = costs.iter().map(|c| c.commands).collect();
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "commands differ between attempts: {costs:?}"
        );
        all[0]
    };
    let (exact_trips, any_trips, fresh_trips) = (least(&exact), least(&any), least(&fresh));
    let (exact_commands, any_commands, fresh_commands) = (commands(&exact), commands(&any), commands(&fresh));

    // Round trip 1 holds the reservation and the head (not for NoStream); round trip 2 the
    // insert. Without unique array indexes (FerretDB 1.x) heads are hinted and ids checked
    // through id documents read by `_id` (one per event, after the hint; with the reservation
    // for NoStream), and the id documents, then the hint's advance, are written after the
    // insert — never a query that scans the commits. A new stream's first append (NoStream)
    // also writes its head hint, the stream catalogue's entry (`list_streams`), beside the
    // first round trip's reservation: one command more, no round trip more.
    let id_docs = !caps.unique_array_indexes;
    let hinted = !caps.indexed_queries || id_docs;
    let (ids_exact, ids_any, ids_fresh) = if id_docs { (1, 2, 1) } else { (0, 0, 0) };
    let after = u64::from(hinted) + u64::from(id_docs);
    let before = u64::from(id_docs);
    assert_eq!(exact_trips, 2 + before + after, "Exact: {exact:?} ({caps:?})");
    assert_eq!(exact_commands, 3 + ids_exact + after, "Exact: {exact:?} ({caps:?})");
    assert_eq!(any_trips, 2 + before + after, "Any: {any:?} ({caps:?})");
    assert_eq!(any_commands, 3 + ids_any + after, "Any: {any:?} ({caps:?})");
    assert_eq!(fresh_trips, 2 + after, "NoStream: {fresh:?} ({caps:?})");
    assert_eq!(fresh_commands, 3 + ids_fresh + after, "NoStream: {fresh:?} ({caps:?})");
    if !hinted {
        assert!(exact_trips == 2 && any_trips == 2 && fresh_trips == 2);
    }
    cqrsx_core::testkit::report(
        "mongo",
        &format!(
            "append cost (commands / round trips): Exact {exact_commands}/{exact_trips}, Any (2 events) \
             {any_commands}/{any_trips}, NoStream {fresh_commands}/{fresh_trips}"
        ),
    );
}

#[derive(Default)]
struct Tally(u64);

#[derive(serde::Serialize, serde::Deserialize)]
enum TallyEvent {
    Counted { n: u64 },
}

impl Aggregate for Tally {
    const TYPE: &'static str = "Trips";
    type Event = TallyEvent;
    fn apply(&mut self, event: &TallyEvent) {
        let TallyEvent::Counted { n } = event;
        self.0 += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_long_stream_is_one_query() {
    let client = common::client(common::config()).await;
    let store: Arc<dyn EventStore> = Arc::new(MongoEventStore::new(client.clone()));
    let id = format!("long-{}", cqrsx_core::Uuid::now_v7().simple());
    let s = StreamId::new("Trips", &id).expect("stream");
    for b in 0..10u64 {
        let batch = (0..500).map(|i| event(b * 500 + i)).collect();
        store
            .append(&s, ExpectedVersion::Exact(b * 500), batch)
            .await
            .expect("append");
    }
    let repo = Repository::<Tally>::new(Arc::clone(&store));
    let (loaded, load) = cost(&client, repo.load(&id)).await;
    let loaded = loaded.expect("load");
    assert_eq!(loaded.version(), 5_000);
    assert_eq!(loaded.state().0, (0..5_000).sum::<u64>());
    // One `find` (its further batches are getMores of the same cursor); where heads are hinted
    // the first commits come by `_id` first.
    let queries = load.commands - load.get_mores;
    let by_id = if client.capabilities().indexed_queries { 0 } else { 4 };
    assert_eq!(queries, 1 + by_id, "{load:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sorted_limited_query_and_a_count_are_one_command_each() {
    let client = common::client(common::config()).await;
    let store = MongoReadStore::new(client.clone(), "trips").expect("store");
    store.initialize().await.expect("init");
    let docs = (0..300)
        .map(|i: i64| cqrsx_core::Document {
            id: format!("d{i:03}"),
            data: serde_json::json!({ "score": (i * 37) % 101, "kind": if i % 3 == 0 { "a" } else { "b" } }),
        })
        .collect();
    let (saved, save) = cost(&client, store.save_many(docs)).await;
    saved.expect("save many");
    assert_eq!(save.commands, 1, "save_many is one bulk command: {save:?}");
    let query = Query::all()
        .filter(Filter::new("kind", Op::Eq, "b"))
        .sort_desc("score")
        .page(0, 10);
    let (top, q) = cost(&client, store.query(&query)).await;
    let top = top.expect("query");
    assert_eq!(top.len(), 10);
    assert_eq!(q.commands, 1, "{q:?}");
    let (count, c) = cost(&client, store.count(&[Filter::new("score", Op::Gte, 50)])).await;
    assert!(count.expect("count") > 0);
    assert_eq!(c.commands, 1, "{c:?}");
    let ids: Vec<String> = (0..300).map(|i| format!("d{i:03}")).collect();
    let (deleted, d) = cost(&client, store.delete_many(&ids)).await;
    assert_eq!(deleted.expect("delete"), 300);
    assert_eq!(d.commands, 1, "delete_many is one command: {d:?}");
}
