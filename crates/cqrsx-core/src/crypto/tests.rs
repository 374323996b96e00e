//! Unit tests of the sealing paths the conformance cases do not reach.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{ContentType, Metadata, NewEvent};
use crate::event_store::EventStore;
use crate::memory::InMemoryEventStore;
use crate::stream::{ExpectedVersion, StreamId};

fn keys() -> Arc<Keys> {
    Arc::new(Keys::new(
        Arc::new(LocalMasterKey::new([1; 32], "m")),
        Arc::new(InMemoryKeyStore::new()),
    ))
}

#[tokio::test]
async fn message_pack_payloads_and_payload_subjects_seal_and_open() -> Result<()> {
    let inner = Arc::new(InMemoryEventStore::new());
    let keys = keys();
    let policies = Policies::new().protect(
        "Registered",
        Protection::new(Subject::PayloadField("/user".into()))
            .field("/profile/email")?
            .metadata_erased_as("ip", Value::Null),
    );
    let store = EncryptedEventStore::new(inner.clone(), Arc::clone(&keys), policies);
    let stream = StreamId::new("Person", "p1")?;
    let body = json!({ "user": 42, "profile": { "email": "secret@example.com", "age": 30 } });
    let payload = ContentType::MessagePack.encode(&body)?;
    let event = NewEvent::new("Registered", ContentType::MessagePack, payload)
        .with_metadata(Metadata::default().with("ip", "10.9.8.7").with("kept", 1));
    store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;

    let raw = inner.read_stream(&stream, 1, 10).await?.remove(0);
    assert!(!raw.payload.windows(6).any(|w| w == b"secret"));
    let raw_body: Value = ContentType::MessagePack.decode(&raw.payload)?;
    assert_eq!(raw_body["profile"], json!({ "email": "[erased]", "age": 30 }));
    assert_eq!(raw.metadata.user.get("ip"), Some(&Value::Null));

    let read = store.read_stream(&stream, 1, 10).await?.remove(0);
    assert_eq!(ContentType::MessagePack.decode::<Value>(&read.payload)?, body);
    assert_eq!(read.metadata.user.get("ip"), Some(&json!("10.9.8.7")));
    assert_eq!(read.metadata.user.get("kept"), Some(&json!(1)));

    keys.forget("42").await?;
    let erased = store.read_stream(&stream, 1, 10).await?.remove(0);
    assert!(is_erased(&erased));
    assert_eq!(ContentType::MessagePack.decode::<Value>(&erased.payload)?, raw_body);
    Ok(())
}

#[tokio::test]
async fn unprotected_types_pass_through_and_bad_policies_are_refused() -> Result<()> {
    let inner = Arc::new(InMemoryEventStore::new());
    let store = EncryptedEventStore::new(inner.clone(), keys(), Policies::new());
    let stream = StreamId::new("Person", "p2")?;
    let event = NewEvent::json("Other", &json!({ "email": "plain@example.com" }))?;
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await?;
    assert_eq!(inner.read_stream(&stream, 1, 1).await?[0].payload, event.payload);
    assert!(matches!(
        Protection::new(Subject::AggregateId).field("email"),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        DocumentPolicy::new(DocSubject::Id).and_then(|p| p.field("")),
        Err(Error::Config(_))
    ));
    Ok(())
}

#[tokio::test]
async fn pages_of_many_subjects_and_versions_open_and_erase_each() -> Result<()> {
    use futures::TryStreamExt;
    let inner = Arc::new(InMemoryEventStore::new());
    let keys = keys();
    let policies = Policies::new().protect(
        "Noted",
        Protection::new(Subject::PayloadField("/who".into())).field("/text")?,
    );
    let store = EncryptedEventStore::new(inner.clone(), Arc::clone(&keys), policies);
    let stream = StreamId::new("Log", "l1")?;
    let mut expected = Vec::new();
    for round in 0..3 {
        let mut batch = Vec::new();
        for who in ["ann", "bob", "cat"] {
            let body = json!({ "who": who, "text": format!("{who} said {round}") });
            batch.push(NewEvent::new(
                "Noted",
                ContentType::Json,
                ContentType::Json.encode(&body)?,
            ));
            expected.push(body);
        }
        store.append(&stream, ExpectedVersion::Any, batch).await?;
        keys.rotate("bob").await?;
    }
    let bodies = |events: Vec<crate::event::RecordedEvent>| -> Result<Vec<Value>> {
        events.iter().map(|e| ContentType::Json.decode(&e.payload)).collect()
    };
    assert_eq!(bodies(store.read_stream(&stream, 1, 100).await?)?, expected);
    for batch in [1, 2, 4, 100] {
        let streamed: Vec<_> = store.stream_events(&stream, 1, batch).try_collect().await?;
        assert_eq!(bodies(streamed)?, expected, "batch {batch}");
    }

    keys.forget("bob").await?;
    for batch in [2, 100] {
        let streamed: Vec<_> = store.stream_events(&stream, 1, batch).try_collect().await?;
        for (event, body) in streamed.iter().zip(&expected) {
            let bob = body["who"] == "bob";
            assert_eq!(is_erased(event), bob, "batch {batch}");
            let read: Value = ContentType::Json.decode(&event.payload)?;
            assert_eq!(read["text"] == body["text"], !bob);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_nonce_of_another_length_is_tampering() -> Result<()> {
    use base64::Engine;
    let inner = Arc::new(InMemoryEventStore::new());
    let policies = Policies::new().protect("Noted", Protection::new(Subject::AggregateId).field("/text")?);
    let store = EncryptedEventStore::new(inner.clone(), keys(), policies);
    let stream = StreamId::new("Log", "l2")?;
    let body = json!({ "text": "secret" });
    let event = NewEvent::new("Noted", ContentType::Json, ContentType::Json.encode(&body)?);
    store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
    let raw = inner.read_stream(&stream, 1, 1).await?.remove(0);
    let opened = store.open(raw.clone()).await?;
    assert_eq!(ContentType::Json.decode::<Value>(&opened.payload)?, body);
    for len in [0, 11, 13, 16, 64] {
        let mut altered = raw.clone();
        let entry = altered.metadata.user.get_mut(SEALED_KEY).expect("sealed entry");
        entry["n"] = json!(base64::engine::general_purpose::STANDARD_NO_PAD.encode(vec![7u8; len]));
        assert!(
            matches!(store.open(altered).await, Err(Error::Tampered { .. })),
            "nonce of {len} bytes"
        );
    }
    Ok(())
}
