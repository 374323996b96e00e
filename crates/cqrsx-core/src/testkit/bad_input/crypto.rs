//! The catalogue's encryption kinds: a wrong master key, a forgotten or unknown subject, a
//! missing subject, forged sealed entries — each typed, nothing written.

use std::sync::Arc;

use serde_json::json;

use super::{Catalogue, Expect, Seeded};
use crate::crypto::{EncryptedEventStore, EncryptedReadStore, Keys, LocalMasterKey, SEALED_KEY};
use crate::event::NewEvent;
use crate::read_store::ReadStore;
use crate::stream::ExpectedVersion;
use crate::testkit::crypto_support::{doc_policy, keys, policies, MASTER_ID};
use crate::testkit::support::unique;
use crate::EventStore;

fn registered(subject: &str) -> NewEvent {
    NewEvent::json("Registered", &json!({ "user": subject, "email": "x@example.com" })).expect("json")
}

pub(super) async fn check(c: &mut Catalogue<'_>, seeded: &Seeded) {
    let f = c.f;
    let s = seeded.s.clone();
    let good = keys(f);
    let store = EncryptedEventStore::new(Arc::clone(&f.events), Arc::clone(&good), policies());
    // Subjects with keys (the key store is not part of the fingerprint).
    let known = unique("known-");
    good.sealing_key(&known).await.expect("a first key");
    let gone = unique("gone-");
    good.sealing_key(&gone).await.expect("a first key");
    good.forget(&gone).await.expect("forget");
    use Expect::*;

    for (kind, master) in [
        (
            "encryption: append under another master key (same id)",
            LocalMasterKey::new([1; 32], MASTER_ID),
        ),
        (
            "encryption: append under another master key id",
            LocalMasterKey::new([0x42; 32], "other"),
        ),
    ] {
        let wrong = Arc::new(Keys::new(Arc::new(master), Arc::clone(&f.keys)));
        let wrong = EncryptedEventStore::new(Arc::clone(&f.events), wrong, policies());
        c.check(kind, WrongMasterKey, async {
            wrong.append(&s, ExpectedVersion::Any, vec![registered(&known)]).await
        })
        .await;
    }
    c.check("encryption: append for a forgotten subject", SubjectForgotten, async {
        store.append(&s, ExpectedVersion::Any, vec![registered(&gone)]).await
    })
    .await;
    c.check("encryption: protected event without its subject", InvalidInput, async {
        let event = NewEvent::json("Registered", &json!({ "email": "x@example.com" })).expect("json");
        store.append(&s, ExpectedVersion::Any, vec![event]).await
    })
    .await;
    c.check(
        "encryption: append carrying a forged sealed entry",
        InvalidInput,
        async {
            let mut event = registered(&known);
            event
                .metadata
                .user
                .insert(SEALED_KEY.into(), json!({ "s": known, "v": 1 }));
            store.append(&s, ExpectedVersion::Any, vec![event]).await
        },
    )
    .await;
    c.check(
        "encryption: second event of a batch for a forgotten subject",
        SubjectForgotten,
        async {
            store
                .append(&s, ExpectedVersion::Any, vec![registered(&known), registered(&gone)])
                .await
        },
    )
    .await;
    c.check("encryption: read of a tampered sealed entry", Tampered, async {
        let mut event = f.events.read_stream(&s, 1, 1).await.expect("read").remove(0);
        event.metadata.user.insert(
            SEALED_KEY.into(),
            json!({ "s": known, "v": 1, "n": "AAAAAAAAAAAAAAAA", "c": "AAAAAAAAAAAAAAAAAAAAAAAA" }),
        );
        store.open(event).await
    })
    .await;
    c.check("encryption: forget an unknown subject", UnknownSubject, async {
        good.forget(&unique("nobody-")).await
    })
    .await;
    c.check("encryption: rotate an unknown subject", UnknownSubject, async {
        good.rotate(&unique("nobody-")).await
    })
    .await;
    c.check("encryption: rotate a forgotten subject", SubjectForgotten, async {
        good.rotate(&gone).await
    })
    .await;
    c.check("encryption: subject with a control character", InvalidInput, async {
        good.forget("a\u{1}b").await
    })
    .await;
    let reads = EncryptedReadStore::new(Arc::clone(&f.reads), Arc::clone(&good), doc_policy(), "people");
    c.check(
        "encryption: read model with the reserved sealed field",
        InvalidInput,
        async { reads.save("forged", json!({ "email": "x", SEALED_KEY: {} })).await },
    )
    .await;
    c.check("encryption: read model that is not an object", InvalidInput, async {
        reads.save("forged", json!(["x"])).await
    })
    .await;
}
