//! Read store cases: CRUD, queries against the reference semantics, batches, TTL, bad input.

use std::time::Duration;

use serde_json::{json, Value};

use super::Fixture;
use crate::error::Error;
use crate::read_store::{Document, Filter, Op, Query, ReadStoreExt};

/// Save, get, replace, delete.
pub async fn read_store_crud(f: Fixture) {
    let store = f.reads.as_ref();
    assert_eq!(store.get("u-1").await.expect("get"), None);
    store
        .save("u-1", json!({"name": "Ana", "age": 30}))
        .await
        .expect("save");
    assert_eq!(
        store.get("u-1").await.expect("get"),
        Some(json!({"name": "Ana", "age": 30}))
    );
    store
        .save("u-1", json!({"name": "Ana B", "tags": ["x"]}))
        .await
        .expect("replace");
    assert_eq!(
        store.get("u-1").await.expect("get"),
        Some(json!({"name": "Ana B", "tags": ["x"]})),
        "save replaces the whole document"
    );
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct User {
        name: String,
        age: u32,
    }
    store
        .save_model(
            "u-2",
            &User {
                name: "Bo".into(),
                age: 41,
            },
        )
        .await
        .expect("save model");
    assert_eq!(
        store.load_model::<User>("u-2").await.expect("load"),
        Some(User {
            name: "Bo".into(),
            age: 41
        })
    );
    assert!(store.delete("u-1").await.expect("delete"));
    assert!(!store.delete("u-1").await.expect("delete again"));
    assert_eq!(store.get("u-1").await.expect("get"), None);
    assert_eq!(store.count(&[]).await.expect("count"), 1);
}

fn people() -> Vec<Document> {
    let cities = ["Seoul", "Busan", "Lisbon", "Oslo"];
    (0..40)
        .map(|i: i64| {
            let mut data = json!({
                "name": format!("user-{i:02}"),
                "age": 18 + (i * 7) % 50,
                "score": (i as f64) * 1.5 - 10.0,
                "active": i % 3 != 0,
                "address": {"city": cities[(i % 4) as usize], "zip": format!("{:05}", i * 37)},
            });
            if i % 5 == 0 {
                data["nickname"] = json!(format!("nick{i}"));
            }
            // A number with many ties, missing from every third document.
            if i % 3 != 2 {
                data["rank"] = json!(i % 7);
            }
            Document {
                id: format!("p-{i:02}"),
                data,
            }
        })
        .collect()
}

/// Queries (every operator, nested fields, sort, pagination) and counts match the reference
/// semantics of [`Query::apply`].
pub async fn read_store_query_matches_reference_semantics(f: Fixture) {
    let store = f.reads.as_ref();
    let docs = people();
    store.save_many(docs.clone()).await.expect("save many");
    let queries = vec![
        Query::all().sort_asc("name"),
        Query::all()
            .filter(Filter::eq("address.city", "Seoul"))
            .sort_desc("age"),
        Query::all()
            .filter(Filter::new("age", Op::Gt, 40))
            .filter(Filter::eq("active", true))
            .sort_asc("age")
            .sort_asc("name"),
        Query::all()
            .filter(Filter::new("age", Op::Gte, 25))
            .filter(Filter::new("age", Op::Lt, 50))
            .sort_desc("score"),
        Query::all()
            .filter(Filter::new("score", Op::Lte, 0.5))
            .sort_asc("score"),
        Query::all()
            .filter(Filter::new("address.city", Op::In, json!(["Busan", "Oslo"])))
            .sort_asc("name")
            .page(3, 5),
        Query::all()
            .filter(Filter::new("address.city", Op::Ne, "Lisbon"))
            .sort_desc("name")
            .page(0, 7),
        Query::all()
            .filter(Filter::new("name", Op::Prefix, "user-1"))
            .sort_asc("name"),
        Query::all()
            .filter(Filter::new("nickname", Op::Exists, true))
            .sort_asc("name"),
        Query::all()
            .filter(Filter::new("nickname", Op::Exists, false))
            .sort_asc("name")
            .page(10, 100),
        Query::all().sort_asc("address.city").sort_desc("age").page(5, 10),
        Query::all().filter(Filter::eq("address.city", "Nowhere")),
        // Sorted and limited on one field: ties at the edge of the page (ids break them),
        // documents without the field (first ascending, last descending), ranges and offsets.
        Query::all().sort_desc("rank").page(0, 1),
        Query::all().sort_desc("rank").page(0, 3),
        Query::all().sort_desc("rank").page(0, 8),
        Query::all().sort_desc("rank").page(4, 4),
        Query::all().sort_desc("rank").page(20, 10),
        Query::all().sort_asc("rank").page(0, 4),
        Query::all()
            .filter(Filter::new("rank", Op::Gte, 2))
            .sort_asc("rank")
            .page(1, 5),
        Query::all()
            .filter(Filter::new("rank", Op::Lt, 5))
            .sort_desc("rank")
            .page(0, 6),
        Query::all().sort_desc("age").page(0, 5),
        Query::all().sort_asc("score").page(2, 6),
    ];
    for q in &queries {
        let got = store.query(q).await.expect("query");
        let want = q.apply(docs.clone());
        let ids = |d: &[Document]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "query {q:?}");
        assert_eq!(got, want, "documents come back intact for {q:?}");
        let count = store.count(&q.filters).await.expect("count");
        let want_count = Query {
            filters: q.filters.clone(),
            ..Query::default()
        }
        .apply(docs.clone())
        .len() as u64;
        assert_eq!(count, want_count, "count {q:?}");
    }
}

/// Batch save and delete.
pub async fn read_store_batches(f: Fixture) {
    let store = f.reads.as_ref();
    let docs: Vec<Document> = (0..50)
        .map(|i| Document {
            id: format!("b-{i}"),
            data: json!({"i": i}),
        })
        .collect();
    store.save_many(docs).await.expect("save many");
    assert_eq!(store.count(&[]).await.expect("count"), 50);
    let doomed: Vec<String> = (0..20)
        .map(|i| format!("b-{i}"))
        .chain(["missing".to_string()])
        .collect();
    assert_eq!(store.delete_many(&doomed).await.expect("delete many"), 20);
    assert_eq!(store.count(&[]).await.expect("count"), 30);
    assert_eq!(store.get("b-25").await.expect("get"), Some(json!({"i": 25})));
    store.save_many(Vec::new()).await.expect("an empty batch is a no-op");
}

/// TTL where the store declares it; `InvalidInput` and nothing written where it does not.
pub async fn read_store_ttl_as_declared(f: Fixture) {
    let store = f.reads.as_ref();
    let result = store
        .save_with_ttl("t-1", json!({"v": 1}), Duration::from_secs(3))
        .await;
    if store.capabilities().ttl {
        result.expect("ttl save");
        store.save("t-2", json!({"v": 2})).await.expect("save");
        assert_eq!(store.get("t-1").await.expect("get"), Some(json!({"v": 1})));
        // Expiry is a matter of time: wait for it, bounded, instead of sleeping a guess.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while store.get("t-1").await.expect("get").is_some() {
            assert!(std::time::Instant::now() < deadline, "the document never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            store.count(&[]).await.expect("count"),
            1,
            "expired documents are not counted"
        );
        assert_eq!(store.query(&Query::all()).await.expect("query").len(), 1);
        assert_eq!(
            store.get("t-2").await.expect("get"),
            Some(json!({"v": 2})),
            "no TTL, no expiry"
        );
    } else {
        assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
        assert_eq!(store.get("t-1").await.expect("get"), None, "nothing written");
    }
}

/// Bad ids, bodies, field names, sizes and query paths: `InvalidInput`, nothing written.
pub async fn read_store_bad_input_writes_nothing(f: Fixture) {
    let store = f.reads.as_ref();
    let max = store.capabilities().max_document_bytes;
    let bad: Vec<(&str, &str, Value)> = vec![
        ("empty id", "", json!({"a": 1})),
        ("not an object", "x1", json!([1, 2])),
        ("dollar field", "x2", json!({"$where": 1})),
        ("dotted field", "x3", json!({"a.b": 1})),
        ("nested dollar field", "x4", json!({"a": {"$set": 1}})),
        ("empty field", "x5", json!({"": 1})),
        ("oversized", "x6", json!({"blob": "x".repeat(max + 1)})),
    ];
    for (what, id, data) in bad {
        match store.save(id, data).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{what}: expected InvalidInput, got {other:?}"),
        }
    }
    let batch = vec![
        Document {
            id: "ok-1".into(),
            data: json!({"a": 1}),
        },
        Document {
            id: "bad".into(),
            data: json!({"$x": 1}),
        },
    ];
    assert!(matches!(store.save_many(batch).await, Err(Error::InvalidInput(_))));
    assert_eq!(
        store.count(&[]).await.expect("count"),
        0,
        "a refused batch writes nothing"
    );
    for q in [
        Query::all().filter(Filter::eq("", 1)),
        Query::all().sort_asc("$a"),
        Query::all().filter(Filter::new("a", Op::In, 3)),
    ] {
        assert!(matches!(store.query(&q).await, Err(Error::InvalidInput(_))), "{q:?}");
    }
    assert!(matches!(store.get("").await, Err(Error::InvalidInput(_))));

    // Arrays inside arrays: stored exactly where the store declares it can, refused before
    // the write where it cannot.
    let nested = json!({"grid": [[1, 2], [3, 4]], "n": i64::MAX});
    let saved = store.save("grid", nested.clone()).await;
    if store.capabilities().nested_arrays {
        saved.expect("nested arrays are declared storable");
        assert_eq!(store.get("grid").await.expect("get"), Some(nested), "read back exactly");
        store.delete("grid").await.expect("delete");
    } else {
        assert!(matches!(saved, Err(Error::InvalidInput(_))), "{saved:?}");
        assert_eq!(store.get("grid").await.expect("get"), None, "nothing written");
    }
    // Integers round-trip exactly at the edges of i64, and past it they are refused.
    let edges = json!({"max": i64::MAX, "min": i64::MIN, "big": 9_007_199_254_740_993_i64});
    store.save("edges", edges.clone()).await.expect("i64 edges");
    assert_eq!(
        store.get("edges").await.expect("get"),
        Some(edges),
        "integers come back as the same integers"
    );
    store.delete("edges").await.expect("delete");
}
