//! Encrypted payloads and crypto-shredding (feature `encryption`): the wrappers of
//! `cqrsx_core::crypto` over the backend's stores, with the backend's key store.

use std::sync::Arc;

use serde_json::{json, Value};

use super::crypto_support::{
    assert_absent, keys, lease, put_view, raw_events_hold_none, seal_all, sealed, sealed_version, seed, MASTER_ID,
};
use super::support::{report, unique, CounterEvent};
use super::Fixture;
use crate::crypto::{is_document_erased, is_erased, EncryptedEventStore, Keys, LocalMasterKey, SEALED_KEY};
use crate::error::Error;
use crate::event::{EventFilter, Metadata, NewEvent, Position, Timestamp};
use crate::event_store::EventStore;
use crate::projection::ProjectionStore;
use crate::projection::ViewKey;
use crate::read_store::{Filter, Query, ReadStore};
use crate::stream::{ExpectedVersion, StreamId};

/// Aggregate (through a `Repository`), snapshot, read model and view round-trip in clear,
/// while the unwrapped stores hold none of the personal plaintext.
pub async fn crypto_round_trip_holds_no_plaintext_at_rest(f: Fixture) {
    let s = sealed(&f, keys(&f));
    let p = seed(&s).await;
    let (root, info) = s.repo.load_with_info(&p.id).await.expect("load");
    assert_eq!(
        (root.version(), root.state().value, root.state().name.as_str()),
        (6, 5, p.name.as_str())
    );
    assert_eq!(info.snapshot_version, Some(5), "the sealed snapshot is used");
    let history = s.repo.history(&p.id).await.expect("history");
    let renamed = &history[3].0;
    assert_eq!(renamed.metadata.user.get("ip"), Some(&json!(p.ip)));
    assert!(!is_erased(renamed) && !renamed.metadata.user.contains_key(SEALED_KEY));
    // Every read path opens the event.
    let by_type = s
        .events
        .events_by_type("Renamed", Timestamp(0), 1_000)
        .await
        .expect("by type");
    assert!(by_type
        .iter()
        .any(|e| e.event_id == renamed.event_id && e.payload == renamed.payload));
    let mut seen = false;
    for partition in 0..s.events.capabilities().partitions {
        let mut from = Position::start_of(partition);
        loop {
            let page = s
                .events
                .read_all(from, 500, &EventFilter::event_types(["Renamed"]))
                .await
                .expect("read_all");
            seen |= page
                .events
                .iter()
                .any(|e| e.event_id == renamed.event_id && e.payload == renamed.payload);
            if page.next == from {
                break;
            }
            from = page.next;
        }
    }
    assert!(seen, "read_all opens the sealed event");
    // Raw: the events, the snapshot, the read model and the view hold no plaintext.
    let raw = raw_events_hold_none(&f, &p).await;
    let sealed_count = raw.iter().filter(|e| sealed_version(e).is_some()).count();
    assert_eq!(sealed_count, 1, "only the protected type is sealed");
    assert_eq!(
        raw[0].payload, history[0].0.payload,
        "unprotected events pass through as they are"
    );
    let snapshot = f
        .snapshots
        .latest(&p.stream, None)
        .await
        .expect("raw snapshot")
        .expect("a snapshot");
    assert_absent("raw snapshot", &snapshot.payload, &p.secrets());
    assert!(
        serde_json::from_slice::<Value>(&snapshot.payload).is_err(),
        "the snapshot is sealed"
    );
    let doc = s.reads.get(&p.id).await.expect("get").expect("read model");
    assert_eq!(doc, json!({ "email": p.email, "plan": "gold" }));
    let queried = s
        .reads
        .query(&Query::all().filter(Filter::eq("plan", "gold")))
        .await
        .expect("query");
    assert!(queried.iter().any(|d| d.id == p.id && d.data == doc));
    let raw_doc = f.reads.get(&p.id).await.expect("raw get").expect("raw read model");
    assert_absent("raw read model", raw_doc.to_string().as_bytes(), &p.secrets());
    assert_eq!(raw_doc["email"], json!("[erased]"));
    let view = s.views.get(&p.view, &p.id).await.expect("view get").expect("view doc");
    assert_eq!(view, json!({ "email": p.email, "count": 1 }));
    let through_view = s
        .views
        .view(&p.view)
        .expect("view")
        .get(&p.id)
        .await
        .expect("get")
        .expect("doc");
    assert_eq!(through_view, view);
    let raw_view = f
        .checkpoints
        .get(&p.view, &p.id)
        .await
        .expect("raw view")
        .expect("raw view doc");
    assert_absent("raw view", raw_view.to_string().as_bytes(), &p.secrets());
    report(
        f.label,
        "crypto round trip: 6 events (1 sealed), snapshot, read model, view: no plaintext at rest",
    );
}

/// After `forget`: the aggregate loads with the same versions and ids and erased fields, the
/// snapshot is ignored, read models and views read erased, a projection rebuilt from the
/// events holds no personal data, and nothing new can be sealed for the subject.
pub async fn crypto_forget_erases_everywhere(f: Fixture) {
    let s = sealed(&f, keys(&f));
    let p = seed(&s).await;
    let before: Vec<_> = s
        .repo
        .history(&p.id)
        .await
        .expect("history")
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    // Another process has everything cached; erasure reaches it after its TTL (README).
    s.keys.forget(&p.id).await.expect("forget");
    let (root, info) = s.repo.load_with_info(&p.id).await.expect("load after forget");
    assert_eq!(
        (root.version(), root.state().value, root.state().name.as_str()),
        (6, 5, "[erased]")
    );
    assert_eq!(info.snapshot_version, None, "the sealed snapshot reads as absent");
    let after = s.repo.history(&p.id).await.expect("history after forget");
    assert_eq!(after.len(), before.len());
    for ((e, _), b) in after.iter().zip(&before) {
        assert_eq!(
            (e.event_id, e.version, &e.event_type, e.position),
            (b.event_id, b.version, &b.event_type, b.position)
        );
        assert_eq!(
            is_erased(e),
            e.event_type == "Renamed",
            "only the sealed event reads as erased"
        );
    }
    assert_eq!(after[3].0.metadata.user.get("ip"), Some(&json!("[erased]")));
    assert!(after[3].1 == CounterEvent::Renamed("[erased]".into()));
    // A second process (its own cache) sees the erasure too.
    let other = EncryptedEventStore::new(Arc::clone(&f.events), keys(&f), super::crypto_support::policies());
    let read = other.read_stream(&p.stream, 1, 100).await.expect("other process reads");
    assert!(is_erased(&read[3]));
    // Read model and view read erased.
    let doc = s.reads.get(&p.id).await.expect("get").expect("read model");
    assert!(is_document_erased(&doc));
    assert_eq!((&doc["email"], &doc["plan"]), (&json!("[erased]"), &json!("gold")));
    let view = s.views.get(&p.view, &p.id).await.expect("view").expect("view doc");
    assert_eq!(view["email"], json!("[erased]"));
    // A rebuilt projection (version 2) fed from the events holds none of it.
    let rebuilt = ViewKey::new(&s.projection, 2).expect("key");
    let lease2 = lease(&s, &rebuilt).await;
    let name = match &after[3].1 {
        CounterEvent::Renamed(name) => name.clone(),
        other => panic!("unexpected {other:?}"),
    };
    put_view(&s, &lease2, &p.id, json!({ "email": name, "count": after.len() })).await;
    let raw_rebuilt = f
        .checkpoints
        .get(&rebuilt, &p.id)
        .await
        .expect("raw")
        .expect("rebuilt doc");
    assert_absent("rebuilt view", raw_rebuilt.to_string().as_bytes(), &p.secrets());
    assert!(!raw_rebuilt.as_object().is_some_and(|o| o.contains_key(SEALED_KEY)));
    s.views.release(&lease2).await.expect("release");
    // Nothing new for a forgotten subject; nothing written.
    let mut root = s.repo.load(&p.id).await.expect("load");
    root.record(CounterEvent::Renamed(unique("again-")));
    assert!(matches!(s.repo.save(&mut root).await, Err(Error::SubjectForgotten(_))));
    assert_eq!(f.events.stream_version(&p.stream).await.expect("version"), 6);
    assert!(matches!(s.keys.rotate(&p.id).await, Err(Error::SubjectForgotten(_))));
    s.keys.forget(&p.id).await.expect("forgetting twice is a no-op");
    let unknown = unique("nobody-");
    assert!(matches!(s.keys.forget(&unknown).await, Err(Error::UnknownSubject(_))));
    assert!(
        !f.keys.forgotten(&unknown).await.expect("forgotten"),
        "an unknown subject gets no tombstone"
    );
    report(
        f.label,
        "crypto forget: 6 events reload erased with the same ids; snapshot ignored; views erased",
    );
}

/// Events sealed before and after a rotation all open; new ones use the new version.
pub async fn crypto_rotation_keeps_old_versions_readable(f: Fixture) {
    let s = sealed(&f, keys(&f));
    let p = seed(&s).await;
    assert!(matches!(
        s.keys.rotate(&unique("nobody-")).await,
        Err(Error::UnknownSubject(_))
    ));
    assert_eq!(s.keys.rotate(&p.id).await.expect("rotate"), 2);
    let second = unique("Second-");
    let mut root = s.repo.load(&p.id).await.expect("load");
    root.record(CounterEvent::Renamed(second.clone()));
    s.repo.save(&mut root).await.expect("save after rotation");
    let raw = f.events.read_stream(&p.stream, 1, 100).await.expect("raw");
    let versions: Vec<_> = raw.iter().filter_map(sealed_version).collect();
    assert_eq!(versions, vec![1, 2], "the new event uses the new key version");
    assert_absent("raw event 7", &raw[6].payload, &[second.as_str()]);
    // A fresh process opens both.
    let fresh = sealed(&f, keys(&f));
    let names: Vec<_> = fresh
        .repo
        .history(&p.id)
        .await
        .expect("history")
        .into_iter()
        .filter_map(|(_, e)| match e {
            CounterEvent::Renamed(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec![p.name.clone(), second]);
    assert_eq!(f.keys.latest(&p.id).await.expect("latest").map(|k| k.version), Some(2));
    report(f.label, "crypto rotation: key versions [1, 2] both open");
}

/// Altered ciphertexts, ciphertexts moved to another event, stream or document, and a wrong
/// master key are typed errors, never garbage.
pub async fn crypto_tampering_is_typed(f: Fixture) {
    let s = sealed(&f, keys(&f));
    let p = seed(&s).await;
    let raw = f.events.read_stream(&p.stream, 1, 100).await.expect("raw");
    let renamed = raw[3].clone();
    // Altered ciphertext.
    let mut altered = renamed.clone();
    let entry = altered.metadata.user.get_mut(SEALED_KEY).expect("sealed entry");
    let c = entry["c"].as_str().expect("ciphertext").to_string();
    let flipped = if c.starts_with('A') {
        c.replacen('A', "B", 1)
    } else {
        format!("A{}", &c[1..])
    };
    entry["c"] = json!(flipped);
    assert!(matches!(s.events.open(altered).await, Err(Error::Tampered { .. })));
    let mut malformed = renamed.clone();
    malformed.metadata.user.insert(SEALED_KEY.into(), json!({ "s": p.id }));
    assert!(matches!(s.events.open(malformed).await, Err(Error::Tampered { .. })));
    // Moved to another event of the stream, and to another stream with the same id.
    let copy =
        NewEvent::new("Renamed", renamed.content_type, renamed.payload.clone()).with_metadata(renamed.metadata.clone());
    f.events
        .append(&p.stream, ExpectedVersion::Exact(6), vec![copy])
        .await
        .expect("raw append");
    assert!(matches!(
        s.events.read_stream(&p.stream, 7, 1).await,
        Err(Error::Tampered { .. })
    ));
    let elsewhere = StreamId::new("Counter", unique("elsewhere-")).expect("stream");
    let moved = NewEvent::new("Renamed", renamed.content_type, renamed.payload.clone())
        .with_id(renamed.event_id)
        .with_metadata(renamed.metadata.clone());
    f.events
        .append(&elsewhere, ExpectedVersion::NoStream, vec![moved])
        .await
        .expect("raw append");
    assert!(matches!(
        s.events.read_stream(&elsewhere, 1, 10).await,
        Err(Error::Tampered { .. })
    ));
    // Wrong master key (same id, other bytes; other id): reads and appends refused.
    for master in [
        LocalMasterKey::new([9; 32], MASTER_ID),
        LocalMasterKey::new([0x42; 32], "other"),
    ] {
        let wrong = Arc::new(Keys::new(Arc::new(master), Arc::clone(&f.keys)));
        let store = EncryptedEventStore::new(Arc::clone(&f.events), wrong, super::crypto_support::policies());
        assert!(matches!(
            store.read_stream(&p.stream, 1, 6).await,
            Err(Error::WrongMasterKey { .. })
        ));
        let event = NewEvent::json("Renamed", &"x")
            .expect("json")
            .with_metadata(Metadata::default());
        let outcome = store.append(&p.stream, ExpectedVersion::Any, vec![event]).await;
        assert!(matches!(outcome, Err(Error::WrongMasterKey { .. })), "{outcome:?}");
        assert_eq!(
            f.events.stream_version(&p.stream).await.expect("version"),
            7,
            "nothing written"
        );
    }
    // Snapshot altered in place; read model moved to another id.
    let mut snap = f
        .snapshots
        .latest(&p.stream, None)
        .await
        .expect("raw")
        .expect("snapshot");
    if let Some(last) = snap.payload.last_mut() {
        *last ^= 1;
    }
    f.snapshots.save(snap).await.expect("raw save");
    assert!(matches!(
        s.snapshots_latest(&p.stream).await,
        Err(Error::Tampered { .. })
    ));
    let raw_doc = f.reads.get(&p.id).await.expect("raw").expect("doc");
    let other_id = unique("other-");
    f.reads.save(&other_id, raw_doc).await.expect("raw save");
    assert!(matches!(s.reads.get(&other_id).await, Err(Error::Tampered { .. })));
    report(f.label, "crypto tampering: 7 kinds typed");
}

/// Two processes (separate key caches) appending at once for the same new subject agree on
/// its first key: every event opens.
pub async fn crypto_concurrent_first_keys_agree(f: Fixture) {
    let writers = 8;
    let rounds = 4;
    for _ in 0..rounds {
        let subject = unique("racer-");
        let processes = [sealed(&f, keys(&f)), sealed(&f, keys(&f))];
        let stores: Vec<_> = processes.iter().map(|p| Arc::clone(&p.events)).collect();
        let streams = seal_all(&stores, writers, &subject).await;
        let reader = sealed(&f, keys(&f));
        for stream in &streams {
            let events = reader
                .events
                .read_stream(stream, 1, 10)
                .await
                .expect("every event opens");
            let doc: Value = serde_json::from_slice(&events[0].payload).expect("json");
            assert_eq!(doc["email"], json!(format!("{subject}@example.com")));
        }
        assert_eq!(
            f.keys.latest(&subject).await.expect("latest").map(|k| k.version),
            Some(1)
        );
    }
    report(
        f.label,
        &format!("crypto first-key race: {rounds} rounds x {writers} writers, all open"),
    );
}
