//! Projection cases for leases that must write nothing: contract item 12 for a lease value
//! built by hand (a forged one) and for a lease held when its view is dropped.

use std::time::Duration;

use serde_json::json;

use super::support::unique;
use super::Fixture;
use crate::checkpoint::Checkpoint;
use crate::error::Error;
use crate::event::{Position, Timestamp};
use crate::projection::{ParkedEvent, ProjectionStore, ViewKey};
use crate::raw::{Commit, Lease, ViewChange, ViewWrite};

/// Everything a commit can write: a document, a checkpoint and a parked event.
fn everything(partitions: u32, by: &str, offset: u64) -> Commit {
    let position = Position { partition: 0, offset };
    let mut checkpoint = Checkpoint::start(partitions);
    checkpoint.advance(position);
    Commit {
        writes: vec![ViewWrite {
            id: format!("by-{by}"),
            change: ViewChange::Put {
                data: json!({ "by": by }),
                ttl: None,
            },
            position,
        }],
        checkpoint: Some(checkpoint),
        parked: vec![ParkedEvent {
            position,
            stream: "Fenced/x".to_string(),
            version: 1,
            event_type: "Forged".to_string(),
            error: format!("parked by {by}"),
            attempts: 1,
            parked_at: Timestamp::now(),
        }],
        ..Commit::default()
    }
}

/// A commit, a renewal and an activation under `lease` are each refused with `LeaseLost`
/// (or, for a token no store can give, `InvalidInput`).
async fn refused(store: &dyn ProjectionStore, lease: &Lease, what: &str, partitions: u32) {
    let lost = |r: &crate::Result<()>| matches!(r, Err(Error::LeaseLost { .. } | Error::InvalidInput(_)));
    let commit = store.commit(lease, everything(partitions, what, 9)).await;
    assert!(lost(&commit), "{what}: a commit is refused, not {commit:?}");
    let renew = store.renew(lease, Duration::from_secs(30)).await;
    assert!(lost(&renew), "{what}: a renewal is refused, not {renew:?}");
    let activate = store.activate(lease).await;
    assert!(lost(&activate), "{what}: an activation is refused, not {activate:?}");
}

/// What the store holds for `key`: the view's documents the case writes, the checkpoint, the
/// parked events and the active version.
async fn held(store: &dyn ProjectionStore, key: &ViewKey, ids: &[&str]) -> String {
    let view = store.view(key).expect("view");
    let mut docs = Vec::new();
    for id in ids {
        docs.push(view.get(id).await.expect("view document"));
    }
    let parked: Vec<_> = store
        .parked(key)
        .await
        .expect("parked")
        .into_iter()
        .map(|p| p.error)
        .collect();
    format!(
        "docs {docs:?}, checkpoint {:?}, parked {parked:?}, active {:?}",
        store.checkpoint(key).await.expect("checkpoint"),
        store.active_version(key.projection()).await.expect("active version"),
    )
}

/// Contract 12: a lease built by hand — the holder's token under another owner, the next
/// token, a far one, token 0 — commits, renews, activates and releases nothing; and once a
/// view is dropped, the lease held before the drop writes nothing either, so the dropped data
/// never comes back, while the version can be built again under a new, larger token. Checked
/// in everything the store holds for the view, not only in the answers.
pub async fn projection_forged_and_dropped_leases_write_nothing(f: Fixture) {
    let store = f.checkpoints.as_ref();
    let partitions = f.events.capabilities().partitions;
    let key = ViewKey::new(unique("fence"), 1).expect("key");
    let ttl = Duration::from_secs(30);
    let real = store
        .acquire(&key, "holder", ttl)
        .await
        .expect("acquire")
        .expect("free lease");
    store
        .commit(&real, everything(partitions, "holder", 3))
        .await
        .expect("the holder commits");
    let ids = ["by-holder", "by-forged", "by-dropped", "by-again"];
    let before = held(store, &key, &ids).await;
    let forged = [
        ("the holder's token, another owner", "mallory", real.token),
        ("the next token, the holder's name", "holder", real.token + 1),
        ("the next token, another owner", "mallory", real.token + 1),
        ("a far token", "mallory", real.token + 1_000_000),
        ("token 0", "holder", 0),
        ("the largest token", "holder", u64::MAX),
    ];
    for (what, owner, token) in forged {
        let lease = Lease {
            key: key.clone(),
            owner: owner.to_string(),
            token,
        };
        refused(store, &lease, &format!("forged: {what}"), partitions).await;
        let _ = store.release(&lease).await;
        assert_eq!(held(store, &key, &ids).await, before, "forged: {what}: nothing changed");
        assert!(
            store.acquire(&key, "bob", ttl).await.expect("acquire").is_none(),
            "forged: {what}: releasing it did not free the holder's lease"
        );
    }
    store.renew(&real, ttl).await.expect("the holder still holds its lease");

    store.drop_view(&key).await.expect("drop");
    let dropped = held(store, &key, &ids).await;
    assert_eq!(
        dropped, "docs [None, None, None, None], checkpoint None, parked [], active None",
        "the drop removed the view"
    );
    refused(store, &real, "a lease held before the drop", partitions).await;

    // By anyone, at once: the drop ended the lease held before it (whose holder, frozen or
    // dead, never releases it).
    let again = store
        .acquire(&key, "rebuilder", ttl)
        .await
        .expect("acquire")
        .expect("the dropped version can be built again, by another owner, at once");
    let _ = store.release(&real).await;
    assert!(
        store.acquire(&key, "mallory", ttl).await.expect("acquire").is_none(),
        "releasing the lease held before the drop did not free the new one"
    );
    assert_eq!(held(store, &key, &ids).await, dropped, "nothing came back");
    assert!(
        again.token > real.token,
        "a new lease after the drop gets a larger token"
    );
    store
        .commit(&again, everything(partitions, "again", 4))
        .await
        .expect("the new holder commits");
    refused(store, &real, "the old lease after the new one", partitions).await;
    let view = store.view(&key).expect("view");
    assert_eq!(view.get("by-again").await.expect("get"), Some(json!({ "by": "again" })));
    assert_eq!(view.get("by-dropped").await.expect("get"), None);
    assert_eq!(view.get("by-holder").await.expect("get"), None);
    store.release(&again).await.expect("release");
}
