//! A holder held up between landing a commit's records and applying them, while its view is
//! dropped: what its late apply writes into the dropped view is withdrawn, and the commit
//! answers `LeaseLost`. The holder talks through a relay that holds its requests; the drop
//! goes straight to the server; the result is read from raw storage.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrsx_core::projection::ViewKey;
use cqrsx_core::raw::{Commit, ViewChange, ViewWrite};
use cqrsx_core::{Checkpoint, Error, Position, ProjectionStore};
use cqrsx_mongo::{MongoClientManager, MongoProjectionStore};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

fn commit(id: &str, offset: u64) -> Commit {
    let position = Position { partition: 0, offset };
    let mut checkpoint = Checkpoint::start(1);
    checkpoint.advance(position);
    Commit {
        writes: vec![ViewWrite {
            id: id.to_string(),
            change: ViewChange::Put {
                data: serde_json::json!({ "id": id }),
                ttl: None,
            },
            position,
        }],
        checkpoint: Some(checkpoint),
        ..Commit::default()
    }
}

/// Two projection stores on one database: the first through a relay that holds its requests
/// (those containing `pattern`, or all) while `delay` says so, the second straight to the
/// server; and the second's client, to read raw storage. The relayed store's socket timeout is
/// past any hold: nothing is given up on.
async fn stores_behind_a_relay(
    delay: &Arc<AtomicU64>,
    pattern: Option<Vec<u8>>,
) -> (MongoProjectionStore, MongoProjectionStore, MongoClientManager) {
    let relay = common::held_relay(Arc::clone(delay), pattern).await;
    let slow_config = common::config_at(&relay).with_timeouts(
        Duration::from_secs(10),
        Duration::from_secs(60),
        Duration::from_secs(30),
    );
    let mut direct_config = common::config();
    direct_config.database = slow_config.database.clone();
    let slow = MongoClientManager::connect(slow_config)
        .await
        .expect("connect through the relay");
    let direct = MongoClientManager::connect(direct_config).await.expect("connect");
    let relayed = MongoProjectionStore::new(slow);
    relayed.initialize().await.expect("initialize");
    (relayed, MongoProjectionStore::new(direct.clone()), direct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_applied_after_its_view_was_dropped_is_withdrawn() {
    let delay = Arc::new(AtomicU64::new(0));
    let (holder, other, direct) = stores_behind_a_relay(&delay, None).await;

    let key = ViewKey::new("dropped", 1).expect("key");
    let lease = holder
        .acquire(&key, "holder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("a free lease");
    holder.commit(&lease, commit("first", 1)).await.expect("first commit");

    // Every request of the holder is held 5 s from here: its records land, and the drop
    // happens before its apply reaches the server.
    let hold = Duration::from_secs(5);
    delay.store(hold.as_millis() as u64, Ordering::SeqCst);
    let late = tokio::spawn({
        let holder = holder.clone();
        let lease = lease.clone();
        async move { holder.commit(&lease, commit("late", 2)).await }
    });
    let database = direct.database().clone();
    let state = database.collection::<Document>("projections");
    let landed = doc! { "w.i": "late" };
    let deadline = Instant::now() + Duration::from_secs(120);
    while state.find_one(landed.clone()).await.expect("find").is_none() {
        assert!(Instant::now() < deadline, "the late commit's records never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let landed_at = Instant::now();
    other.drop_view(&key).await.expect("drop the view");
    // The apply is sent once the records' insert answers, and is held `hold` on its way: a
    // drop done well within that is done before the apply lands.
    let drop_first = landed_at.elapsed() + Duration::from_millis(500) < hold;
    let answer = tokio::time::timeout(Duration::from_secs(300), late)
        .await
        .expect("the late commit answers")
        .expect("the task");
    delay.store(0, Ordering::SeqCst);
    // On a machine too loaded to drop in time the commit may land before the drop, which then
    // removes it: raw storage must be clean all the same.
    if drop_first {
        assert!(matches!(answer, Err(Error::LeaseLost { .. })), "{answer:?}");
    }

    // Raw storage: nothing of the dropped view is left — documents, checkpoint, records.
    let view: Vec<Document> = database
        .collection::<Document>("view_dropped_v1")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    assert!(view.is_empty(), "documents in the dropped view: {view:?}");
    let left: Vec<Document> = state
        .find(doc! { "$or": [ { "kind": { "$in": ["cp", "parked"] }, "p": "dropped" }, { "w.i": { "$in": ["first", "late"] } } ] })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    assert!(left.is_empty(), "state of the dropped view: {left:?}");
}

/// A commit applied a second time (after a lost reply, in a recovery) meets documents already
/// past it: their guarded upserts fail with a duplicate key. A server that stops at the first
/// write error whatever `ordered: false` asks (FerretDB 1.x) would leave the writes after it
/// undone; every other document of the commit must still be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_already_past_a_commit_does_not_stop_its_other_writes() {
    let client = common::client(common::config()).await;
    let store = MongoProjectionStore::new(client.clone());
    store.initialize().await.expect("initialize");
    let key = ViewKey::new("past", 1).expect("key");
    let lease = store
        .acquire(&key, "holder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("a free lease");
    // Written by a commit after this one (by hand: the largest sequence there is).
    let view = client.database().collection::<Document>("view_past_v1");
    view.insert_one(doc! { "_id": "c", "d": { "id": "later" }, "_s": i64::MAX })
        .await
        .expect("plant");
    let ids = ["a", "b", "c", "d", "e"];
    let position = Position {
        partition: 0,
        offset: 1,
    };
    let mut checkpoint = Checkpoint::start(1);
    checkpoint.advance(position);
    let commit = Commit {
        writes: ids
            .iter()
            .map(|id| ViewWrite {
                id: id.to_string(),
                change: ViewChange::Put {
                    data: serde_json::json!({ "id": id }),
                    ttl: None,
                },
                position,
            })
            .collect(),
        checkpoint: Some(checkpoint),
        ..Commit::default()
    };
    store.commit(&lease, commit).await.expect("commit");
    let stored: Vec<Document> = view
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    let got: Vec<(String, String)> = stored
        .iter()
        .map(|d| {
            let id = d.get_str("_id").unwrap_or_default().to_string();
            let data = d
                .get_document("d")
                .ok()
                .and_then(|d| d.get_str("id").ok())
                .unwrap_or_default();
            (id, data.to_string())
        })
        .collect();
    let want: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            (
                id.to_string(),
                if *id == "c" {
                    "later".to_string()
                } else {
                    id.to_string()
                },
            )
        })
        .collect();
    assert_eq!(got, want, "every document but the one past the commit is written");
}

/// A holder's checkpoint write held up on its way (its process frozen, its request slow) until
/// a successor took over and committed lands, late, on a checkpoint already past it: it must
/// change nothing. The holder talks through a relay that holds only its checkpoint writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_checkpoint_write_of_an_older_holder_changes_nothing() {
    let delay = Arc::new(AtomicU64::new(0));
    let key = ViewKey::new("latecp", 1).expect("key");
    // The checkpoint document's id: its kind, the projection and the version, apart by U+001F.
    let pattern = format!("cp\u{1f}{}\u{1f}{}", key.projection(), key.version()).into_bytes();
    let (old, new, direct) = stores_behind_a_relay(&delay, Some(pattern)).await;

    let ttl = Duration::from_secs(2);
    let lease = old
        .acquire(&key, "old", ttl)
        .await
        .expect("acquire")
        .expect("a free lease");
    old.commit(&lease, commit("first", 1)).await.expect("first commit");
    // The old holder's next checkpoint write is held 10 s: well past its lease.
    delay.store(10_000, Ordering::SeqCst);
    let late = tokio::spawn({
        let old = old.clone();
        let lease = lease.clone();
        async move { old.commit(&lease, commit("late", 2)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let successor = loop {
        if let Some(lease) = new
            .acquire(&key, "new", Duration::from_secs(120))
            .await
            .expect("acquire")
        {
            break lease;
        }
        assert!(Instant::now() < deadline, "the successor never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    new.commit(&successor, commit("newer", 3))
        .await
        .expect("the successor's commit");
    let expected = new.checkpoint(&key).await.expect("checkpoint");
    let _ = tokio::time::timeout(Duration::from_secs(300), late)
        .await
        .expect("the late commit answers");
    delay.store(0, Ordering::SeqCst);
    // Read back directly: the successor's checkpoint stands.
    assert_eq!(new.checkpoint(&key).await.expect("checkpoint"), expected);
    let stored = direct
        .database()
        .collection::<Document>("projections")
        .find_one(doc! { "kind": "cp", "p": "latecp" })
        .await
        .expect("find")
        .expect("a checkpoint document");
    let tenure = stored.get_i64("s").expect("its sequence") >> 32;
    assert_eq!(tenure as u64, successor.token, "the checkpoint's tenure: {stored:?}");
}

fn put(id: &str, data: serde_json::Value, offset: u64) -> Commit {
    let mut c = commit(id, offset);
    c.writes[0].change = ViewChange::Put { data, ttl: None };
    c
}

/// Every live document of a view, read through the API: `get` of each id, and the view's
/// read store (query and count).
async fn visible(store: &MongoProjectionStore, key: &ViewKey, ids: &[&str]) -> Vec<(String, serde_json::Value)> {
    let mut got = Vec::new();
    for id in ids {
        if let Some(data) = store.get(key, id).await.expect("get") {
            got.push((id.to_string(), data));
        }
    }
    let view = store.view(key).expect("view");
    let mut queried: Vec<(String, serde_json::Value)> = view
        .query(&cqrsx_core::Query::default())
        .await
        .expect("query")
        .into_iter()
        .map(|d| (d.id, d.data))
        .collect();
    queried.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, queried, "get and query of the view agree");
    assert_eq!(view.count(&[]).await.expect("count"), got.len() as u64);
    got
}

/// A holder held up between landing a commit and applying it, while its view is dropped and
/// the same version rebuilt at once by another runner: whatever of its apply arrives after the
/// drop — before, while or after the rebuilder writes — is not part of the rebuilt view.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_apply_is_not_part_of_the_view_rebuilt_after_a_drop() {
    let delay = Arc::new(AtomicU64::new(0));
    let key = ViewKey::new("rebuilt", 1).expect("key");
    // Only the holder's writes into the view are held: its records land at once.
    let (holder, other, direct) = stores_behind_a_relay(&delay, Some(b"view_rebuilt_v1".to_vec())).await;
    let lease = holder
        .acquire(&key, "holder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("a free lease");
    holder
        .commit(&lease, put("a", serde_json::json!({ "by": "holder", "n": 1 }), 1))
        .await
        .expect("first commit");

    let hold = Duration::from_secs(6);
    delay.store(hold.as_millis() as u64, Ordering::SeqCst);
    let late = tokio::spawn({
        let (holder, lease) = (holder.clone(), lease.clone());
        async move {
            let mut c = put("a", serde_json::json!({ "by": "holder", "n": 2 }), 2);
            for id in ["b", "c"] {
                let mut w = c.writes[0].clone();
                w.id = id.to_string();
                c.writes.push(w);
            }
            holder.commit(&lease, c).await
        }
    });
    let state = direct.database().collection::<Document>("projections");
    let deadline = Instant::now() + Duration::from_secs(120);
    while state.find_one(doc! { "w.i": "c" }).await.expect("find").is_none() {
        assert!(Instant::now() < deadline, "the late commit's records never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.drop_view(&key).await.expect("drop the view");
    let rebuilder = other
        .acquire(&key, "rebuilder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("the dropped view's lease is free");
    other
        .commit(
            &rebuilder,
            put("a", serde_json::json!({ "by": "rebuilder", "n": 1 }), 1),
        )
        .await
        .expect("the rebuilder's commit");
    let expected = other.checkpoint(&key).await.expect("checkpoint");
    let rebuilt = vec![("a".to_string(), serde_json::json!({ "by": "rebuilder", "n": 1 }))];
    assert_eq!(visible(&other, &key, &["a", "b", "c"]).await, rebuilt);

    // The late apply arrives (however it answers: it landed before the drop).
    let _ = tokio::time::timeout(Duration::from_secs(300), late)
        .await
        .expect("the late commit answers")
        .expect("the task");
    delay.store(0, Ordering::SeqCst);
    assert_eq!(
        visible(&other, &key, &["a", "b", "c"]).await,
        rebuilt,
        "after the late apply"
    );
    assert_eq!(other.checkpoint(&key).await.expect("checkpoint"), expected);

    // The rebuilder goes on from what it sees: its next writes replace whatever arrived late.
    other
        .commit(
            &rebuilder,
            put("b", serde_json::json!({ "by": "rebuilder", "n": 1 }), 2),
        )
        .await
        .expect("the rebuilder's next commit");
    let got = visible(&other, &key, &["a", "b", "c"]).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[1],
        ("b".to_string(), serde_json::json!({ "by": "rebuilder", "n": 1 }))
    );
    // Raw storage: every document the view shows carries a sequence of the rebuilder's tenure.
    let raw: Vec<Document> = direct
        .database()
        .collection::<Document>("view_rebuilt_v1")
        .find(doc! { "_id": { "$in": ["a", "b"] } })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    for d in &raw {
        let tenure = d.get_i64("_s").expect("a sequence") >> 32;
        assert_eq!(tenure as u64, rebuilder.token, "{d:?}");
    }
}

/// What a holder from before a drop wrote into the view after it — documents, a checkpoint —
/// is not read as the view's, and the next holder's first act removes it from raw storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_before_a_drop_are_not_read_and_are_cleared_by_the_next_holder() {
    let client = common::client(common::config()).await;
    let store = MongoProjectionStore::new(client.clone());
    store.initialize().await.expect("initialize");
    let key = ViewKey::new("stale", 1).expect("key");
    let lease = store
        .acquire(&key, "holder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("a free lease");
    store
        .commit(&lease, put("kept", serde_json::json!({ "n": 1 }), 1))
        .await
        .expect("commit");
    store.drop_view(&key).await.expect("drop");

    // What the holder's apply, in flight at the drop, writes when it arrives: a document and
    // the checkpoint document, under its own tenure's sequence (raw writes stand in for it).
    let stale = (1_i64 << 32) | 7;
    let database = client.database();
    database
        .collection::<Document>("view_stale_v1")
        .insert_one(doc! { "_id": "ghost", "d": { "n": 99 }, "_s": stale })
        .await
        .expect("plant a document");
    let state = database.collection::<Document>("projections");
    state
        .insert_one(
            doc! { "_id": "cp\u{1f}stale\u{1f}1", "kind": "cp", "p": "stale", "v": 1_i64, "s": stale, "cp": "5" },
        )
        .await
        .expect("plant a checkpoint");
    assert_eq!(store.checkpoint(&key).await.expect("checkpoint"), None);
    assert!(visible(&store, &key, &["ghost", "kept"]).await.is_empty());

    let next = store
        .acquire(&key, "rebuilder", Duration::from_secs(120))
        .await
        .expect("acquire")
        .expect("a free lease");
    assert!(next.token > lease.token);
    assert_eq!(
        store.checkpoint(&key).await.expect("checkpoint"),
        None,
        "the rebuild starts from nothing"
    );
    let left: Vec<Document> = database
        .collection::<Document>("view_stale_v1")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    assert!(left.is_empty(), "{left:?}");
    let cp = state
        .find_one(doc! { "kind": "cp", "p": "stale" })
        .await
        .expect("find")
        .expect("the rebuilder's checkpoint document");
    assert!(cp.get("cp").is_none(), "{cp:?}");
    assert_eq!((cp.get_i64("s").expect("s") >> 32) as u64, next.token);
}

/// A drop racing a holder's commits and another runner's acquire: once both are done, the
/// checkpoint is none (nothing was committed into the view since the drop: a checkpoint from
/// before it must not show through), and any runner may take the view at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drop_racing_commits_and_an_acquire_leaves_no_checkpoint_behind() {
    let client = common::client(common::config()).await;
    let store = MongoProjectionStore::new(client.clone());
    store.initialize().await.expect("initialize");
    let atomic = client.capabilities().atomic_counters;
    let mut lost_after_drop = 0;
    let mut failures = Vec::new();
    for round in 0..10u64 {
        let key = ViewKey::new(format!("race{round}"), 1).expect("key");
        let ttl = Duration::from_secs(60);
        let holder = store
            .acquire(&key, "a", ttl)
            .await
            .expect("acquire")
            .expect("a free lease");
        for n in 1..=2 {
            store
                .commit(&holder, put(&format!("x{n}"), serde_json::json!({ "n": n }), n))
                .await
                .expect("commit");
        }
        // The holder keeps committing until it is fenced.
        let committing = tokio::spawn({
            let (store, holder) = (store.clone(), holder.clone());
            async move {
                for n in 3..1_000 {
                    let commit = put(&format!("x{n}"), serde_json::json!({ "n": n }), n);
                    if store.commit(&holder, commit).await.is_err() {
                        break;
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        let acquirer = async {
            tokio::time::sleep(Duration::from_millis(round % 4)).await;
            store.acquire(&key, "b", ttl).await
        };
        let (dropped, acquired) = tokio::join!(store.drop_view(&key), acquirer);
        dropped.expect("drop");
        // b's lease, if granted after the drop's last look, is a lease of the dropped-and-
        // reopened view like any other.
        let b = acquired.ok().flatten();
        committing.await.expect("the holder's task");
        let checkpoint = store.checkpoint(&key).await.expect("checkpoint");
        if checkpoint.is_some() {
            failures.push(format!("round {round}: checkpoint {checkpoint:?} after the drop"));
        }
        // (FerretDB 1 may answer a retryable error to a command that met the dropped table.)
        let mut taken = store.acquire(&key, "c", ttl).await;
        for _ in 0..20 {
            match &taken {
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    taken = store.acquire(&key, "c", ttl).await;
                }
                _ => break,
            }
        }
        let taken = match taken.expect("acquire") {
            Some(lease) => lease,
            // Held: only by b, granted after the drop was done, so alive.
            None => match b {
                Some(b) if store.renew(&b, ttl).await.is_ok() => b,
                _ => {
                    failures.push(format!("round {round}: a third runner could not take the view"));
                    continue;
                }
            },
        };
        // On FerretDB 1, which updates a document as a read and a write of its own (see the
        // README's "What does not hold"), b's acquire marking its own claim can read it before
        // the drop marks it superseded and write after: b's lease then renews but cannot
        // commit (the drop sealed its tenure), and no other runner takes it until b takes it
        // back under its own name, as a runner does after a lost lease. Elsewhere the lease
        // taken here commits at once.
        let mut lease = taken;
        let mut committed = false;
        for _ in 0..5 {
            match store
                .commit(&lease, put("y", serde_json::json!({ "by": "c" }), 1))
                .await
            {
                Ok(_) => {
                    committed = true;
                    break;
                }
                Err(Error::LeaseLost { .. }) if !atomic => {
                    lost_after_drop += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let again = match store.acquire(&key, "c", ttl).await {
                        Ok(None) => store.acquire(&key, "b", ttl).await,
                        other => other,
                    };
                    match again {
                        Ok(Some(again)) => lease = again,
                        other => {
                            failures.push(format!("round {round}: the view could not be taken again: {other:?}"));
                            break;
                        }
                    }
                }
                Err(e) => {
                    failures.push(format!("round {round}: the new holder's commit: {e}"));
                    break;
                }
            }
        }
        if !committed {
            failures.push(format!("round {round}: the new holder never committed"));
            continue;
        }
        let view = visible(&store, &key, &["x1", "x2", "x3", "y"]).await;
        if view != vec![("y".to_string(), serde_json::json!({ "by": "c" }))] {
            failures.push(format!("round {round}: the view after the drop is {view:?}"));
        }
    }
    cqrsx_core::testkit::report(
        "mongo",
        &format!(
            "drop racing commits and an acquire: {lost_after_drop} of 10 leases after the drop sealed and taken back by their owner"
        ),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
