//! Removes what the backend tests left on the servers: every test uses a key prefix or database
//! name in [`TEST_NAMESPACE`], and after a backend's tests xtask deletes them, so a run against
//! your own servers leaves nothing behind.

use futures::TryStreamExt;

use crate::cmd::{say, Result};

/// The namespace the backend tests write under (see each backend's `tests/common.rs`).
pub const TEST_NAMESPACE: &str = "cqrsx_test_";

/// Deletes the test keys of a standalone server (`url`) or a cluster (`nodes`).
pub async fn redis(url: Option<&str>, nodes: Option<&str>) -> Result<()> {
    use cqrsx_redis::{RedisClientManager, RedisConfig};
    use fred::prelude::*;

    let mut config = RedisConfig::default();
    let cluster = match (url, nodes) {
        (_, Some(nodes)) => {
            config = config.with_cluster_nodes(nodes.split(',').map(str::to_string));
            true
        }
        (Some(url), None) => {
            config = config.with_url(url);
            false
        }
        (None, None) => return Ok(()),
    };
    let manager = RedisClientManager::connect(config).await.map_err(|e| e.to_string())?;
    let client = manager.client();
    let pattern = format!("*{TEST_NAMESPACE}*");
    let keys: Vec<Key> = if cluster {
        client
            .scan_cluster_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    } else {
        client.scan_buffered(pattern, Some(1000), None).try_collect().await
    }
    .map_err(|e| format!("scanning test keys: {e}"))?;
    // One key per call: test keys span many hash slots.
    for key in &keys {
        let _: i64 = client
            .del(key.clone())
            .await
            .map_err(|e| format!("deleting test keys: {e}"))?;
    }
    let _ = manager.quit().await;
    say(&format!("cleanup: deleted {} test keys", keys.len()));
    Ok(())
}

/// Drops the test databases on the server at `uri`.
pub async fn mongo(uri: &str) -> Result<()> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| format!("connecting for cleanup: {e}"))?;
    let names = client
        .list_database_names()
        .await
        .map_err(|e| format!("listing databases: {e}"))?;
    let mut dropped = 0;
    for name in names.iter().filter(|n| n.starts_with(TEST_NAMESPACE)) {
        client
            .database(name)
            .drop()
            .await
            .map_err(|e| format!("dropping {name}: {e}"))?;
        dropped += 1;
    }
    say(&format!("cleanup: dropped {dropped} test databases"));
    Ok(())
}
