//! Redis rows: our store against raw fred XADD of the same fields, on the same server.

use std::sync::Arc;

use async_trait::async_trait;
use cqrsx_core::NewEvent;
use cqrsx_redis::{RedisClientManager, RedisConfig, RedisEventStore, RedisSnapshotStore};
use fred::prelude::*;

use super::store::{store_rows, RawBaseline, Subject};
use super::{BenchRow, Scale};
use crate::cmd::Result;

struct RawXadd(RedisClientManager);

fn fields(e: &NewEvent) -> Result<Vec<(&'static str, fred::types::Value)>> {
    let metadata = if e.metadata.is_empty() {
        String::new()
    } else {
        e.metadata.to_json().map_err(|e| e.to_string())?
    };
    Ok(vec![
        ("i", e.event_id.to_string().into()),
        ("t", e.event_type.as_str().into()),
        ("c", e.content_type.as_str().into()),
        ("p", fred::types::Value::Bytes(e.payload.clone().into())),
        ("m", metadata.into()),
    ])
}

#[async_trait]
impl RawBaseline for RawXadd {
    fn name(&self, batch: usize) -> String {
        if batch == 1 {
            "XADD".into()
        } else {
            format!("{batch}× XADD pipelined")
        }
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let client = self.0.client();
        if batch.len() == 1 {
            let _: String = client
                .xadd(key, false, None, "*", fields(&batch[0])?)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let pipe = client.pipeline();
        for e in batch {
            let () = pipe
                .xadd(key, false, None, "*", fields(e)?)
                .await
                .map_err(|e| e.to_string())?;
        }
        let _: Vec<String> = pipe.all().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<usize> {
        let entries: fred::types::Value = self
            .0
            .client()
            .xrange(key, "-", "+", None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(entries.into_array().len())
    }
}

/// Redis rows on a standalone server at `url`.
pub async fn rows(url: &str, scale: Scale) -> Result<Vec<BenchRow>> {
    let run_id = format!("b{}", cqrsx_core::Uuid::now_v7().simple());
    let config = RedisConfig::default()
        .with_url(url)
        .with_key_prefix(format!("bench-{run_id}"))
        .with_pool_size(16);
    let client = RedisClientManager::connect(config).await.map_err(|e| e.to_string())?;
    let subject = Subject {
        backend: "redis".into(),
        events: Arc::new(RedisEventStore::new(client.clone())),
        snapshots: super::snapshot_strategy(Arc::new(RedisSnapshotStore::new(client.clone()))),
        baseline: Arc::new(RawXadd(client.clone())),
        run_id,
    };
    let before = client.metrics();
    let mut rows = store_rows(&subject, scale).await?;
    let after = client.metrics();
    if let Some(first) = rows.first_mut() {
        first.note = format!(
            "{}; client p50 {:?}, p99 {:?} over {} ops",
            first.note,
            after.p50,
            after.p99,
            after.operations - before.operations
        );
    }
    Ok(rows)
}
