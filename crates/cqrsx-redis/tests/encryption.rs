//! Encrypted payloads over Redis beyond the conformance cases: a key store that stops answering.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cqrsx_core::crypto::{EncryptedEventStore, Keys, LocalMasterKey, Policies, Protection, Subject};
use cqrsx_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore, RedisKeyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_key_store_is_a_typed_error_and_writes_nothing() {
    let events_client = RedisClientManager::connect(common::standalone_config())
        .await
        .expect("connect");
    let mut key_server = common::LocalServer::start(&["--save", "", "--appendonly", "no"]);
    let keys_config = RedisConfig::default()
        .with_host("127.0.0.1", key_server.port)
        .with_key_prefix(common::unique_prefix())
        .with_max_retries(0)
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(1));
    let keys_client = RedisClientManager::connect(keys_config).await.expect("connect");
    let keys = Arc::new(Keys::new(
        Arc::new(LocalMasterKey::new([3; 32], "m")),
        Arc::new(RedisKeyStore::new(keys_client)),
    ));
    let policies = Policies::new().protect(
        "Registered",
        Protection::new(Subject::AggregateId).field("/email").expect("pointer"),
    );
    let events = Arc::new(RedisEventStore::new(events_client));
    let store = EncryptedEventStore::new(Arc::clone(&events) as Arc<dyn EventStore>, keys, policies);
    key_server.kill();
    let stream = StreamId::new("User", "u-1").expect("stream");
    let event = NewEvent::json("Registered", &serde_json::json!({ "email": "a@example.com" })).expect("json");
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        store.append(&stream, ExpectedVersion::NoStream, vec![event]),
    )
    .await
    .expect("an answer within the hang bound");
    assert!(
        matches!(
            outcome,
            Err(Error::Backend { .. } | Error::Connect { .. } | Error::Timeout { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(
        events.stream_version(&stream).await.expect("version"),
        0,
        "nothing written"
    );
}
