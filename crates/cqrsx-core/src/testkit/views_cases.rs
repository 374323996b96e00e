//! [`Views`] over hand-made versions and shards: it reads the active version only, finds a
//! sharded projection's complete layout, refuses a document found in several shards (and reads
//! each copy on request), and merges shard queries in the order one read store gives.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::support::unique;
use super::Fixture;
use crate::error::Error;
use crate::event::Position;
use crate::projection::{Shard, ViewKey, Views};
use crate::query::{Filter, Op, Query};
use crate::raw::{Commit, ViewChange, ViewWrite};

/// Commits `docs` to the view of `key` under a lease of its own, and activates it if asked.
async fn write(f: &Fixture, key: &ViewKey, docs: &[(&str, Value)], activate: bool) {
    let lease = f
        .checkpoints
        .acquire(key, "views-case", Duration::from_secs(10))
        .await
        .expect("acquire")
        .expect("a lease nobody holds");
    let writes = docs
        .iter()
        .enumerate()
        .map(|(i, (id, data))| ViewWrite {
            id: (*id).to_string(),
            change: ViewChange::Put {
                data: data.clone(),
                ttl: None,
            },
            position: Position {
                partition: 0,
                offset: i as u64 + 1,
            },
        })
        .collect();
    let commit = Commit {
        writes,
        ..Commit::default()
    };
    f.checkpoints.commit(&lease, commit).await.expect("commit");
    if activate {
        f.checkpoints.activate(&lease).await.expect("activate");
    }
    f.checkpoints.release(&lease).await.expect("release");
}

fn shard_key(name: &str, version: u32, index: u16, count: u16) -> ViewKey {
    ViewKey::sharded(name, version, Shard::new(index, count).expect("shard")).expect("key")
}

#[derive(Debug, PartialEq, Deserialize)]
struct Doc {
    total: u64,
}

/// [`Views`] reads the active version of every shard of the complete layout.
pub async fn views_read_the_active_version_of_every_shard(f: Fixture) {
    let views = Views::new(Arc::clone(&f.checkpoints));
    let name = unique("sharded");
    for result in [
        views.get::<Value>(&name, "a").await.map(|_| ()),
        views.query_documents(&name, &Query::all()).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::NotFound(_))), "never ran: {result:?}");
    }
    assert!(matches!(
        views.get::<Value>("bad name!", "a").await,
        Err(Error::InvalidInput(_))
    ));

    // Unsharded v1, active: read as it is.
    write(
        &f,
        &ViewKey::new(&name, 1).expect("key"),
        &[("x", json!({ "total": 1 }))],
        true,
    )
    .await;
    assert_eq!(views.get::<Doc>(&name, "x").await.expect("get"), Some(Doc { total: 1 }));

    // Two shards at v2, each active; shard 0 had an older v1 with a document v2 lacks.
    write(
        &f,
        &shard_key(&name, 1, 0, 2),
        &[("stale", json!({ "total": 99 }))],
        true,
    )
    .await;
    let s0 = [
        ("a", json!({ "total": 10 })),
        ("t", json!({ "total": 1 })),
        ("m", json!({ "total": 5 })),
    ];
    let s1 = [
        ("b", json!({ "total": 20 })),
        ("t", json!({ "total": 2 })),
        ("k", json!({ "total": 5 })),
    ];
    write(&f, &shard_key(&name, 2, 0, 2), &s0, true).await;
    // Only shard 0 of three is active: that layout is not complete, so it is not read.
    write(&f, &shard_key(&name, 5, 0, 3), &[("z", json!({ "total": 7 }))], true).await;
    // Shard 1 of 2 is not active yet either: the unsharded v1 is still what readers get.
    assert_eq!(
        views.active(&name).await.expect("active"),
        [ViewKey::new(&name, 1).expect("key")]
    );
    write(&f, &shard_key(&name, 2, 1, 2), &s1, true).await;

    assert_eq!(
        views.active(&name).await.expect("active"),
        [shard_key(&name, 2, 0, 2), shard_key(&name, 2, 1, 2)],
        "the complete layout with the highest active version"
    );
    assert_eq!(
        views.get::<Doc>(&name, "a").await.expect("get a"),
        Some(Doc { total: 10 })
    );
    assert_eq!(
        views.get::<Doc>(&name, "b").await.expect("get b"),
        Some(Doc { total: 20 })
    );
    for gone in ["x", "stale", "z", "nope"] {
        assert_eq!(views.get::<Value>(&name, gone).await.expect("get"), None, "{gone}");
    }
    match views.get::<Doc>(&name, "t").await {
        Err(Error::InSeveralShards { shards, id, .. }) => assert_eq!((shards, id.as_str()), (vec![0, 1], "t")),
        other => panic!("a document in two shards is an error naming them: {other:?}"),
    }
    let per_shard = views.get_per_shard::<Doc>(&name, "t").await.expect("per shard");
    let shard = |i| Some(Shard::new(i, 2).expect("shard"));
    assert_eq!(per_shard, [(shard(0), Doc { total: 1 }), (shard(1), Doc { total: 2 })]);

    // Queries run on each shard and merge in the query's order, ties broken by id.
    let ids = |docs: Vec<crate::read_store::Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let asc = views
        .query_documents(&name, &Query::all().sort_asc("total"))
        .await
        .expect("query");
    assert_eq!(ids(asc), ["t", "t", "k", "m", "a", "b"]);
    let page = views
        .query::<Doc>(&name, &Query::all().sort_desc("total").page(1, 3))
        .await
        .expect("page");
    let page: Vec<(&str, u64)> = page.iter().map(|(id, d)| (id.as_str(), d.total)).collect();
    assert_eq!(page, [("a", 10), ("k", 5), ("m", 5)]);
    let filtered = Query::all().filter(Filter::new("total", Op::Gte, 5)).sort_asc("total");
    assert_eq!(
        ids(views.query_documents(&name, &filtered).await.expect("filtered")),
        ["k", "m", "a", "b"]
    );
    assert_eq!(
        views
            .count(&name, &[Filter::new("total", Op::Gt, 1)])
            .await
            .expect("count"),
        5
    );

    // Once the three-shard layout is complete at a higher version, it is the one read.
    write(&f, &shard_key(&name, 6, 1, 3), &[("y", json!({ "total": 8 }))], true).await;
    write(&f, &shard_key(&name, 6, 2, 3), &[], true).await;
    let active = views.active(&name).await.expect("active");
    assert_eq!(active.len(), 3, "{active:?}");
    assert_eq!(views.get::<Doc>(&name, "z").await.expect("z"), Some(Doc { total: 7 }));
    assert_eq!(views.get::<Doc>(&name, "a").await.expect("a"), None);
    let all = views
        .query_documents(&name, &Query::all().sort_desc("total"))
        .await
        .expect("all");
    assert_eq!(ids(all), ["y", "z"]);
}
