//! [`RedisSnapshotStore`]: snapshots of a stream keyed by version, under the stream's hash tag.

use async_trait::async_trait;
use cqrsx_core::raw::SnapshotBackend;
use cqrsx_core::snapshot::{SnapshotInfo, SnapshotRecord};
use cqrsx_core::{Result, StreamId, Timestamp};
use fred::types::scripts::Script;
use fred::types::Value;

use crate::client::RedisClientManager;
use crate::error::protocol;
use crate::keys::Keys;
use crate::reply::{array, bytes, int, text};

/// Snapshots larger than this are refused (Redis allows 512 MB values; a snapshot that large
/// would stall the server while loading).
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// The Redis snapshot store.
///
/// A stream's snapshots sit in one hash (fields per version), indexed by a sorted set of
/// versions, so saving an older version never hides a newer one: `latest` always answers with
/// the highest version. Both keys share the stream's hash tag and every script declares them.
pub struct RedisSnapshotStore {
    client: RedisClientManager,
    keys: Keys,
    script: Script,
}

impl std::fmt::Debug for RedisSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSnapshotStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisSnapshotStore {
    /// A snapshot store over this client.
    pub fn new(client: RedisClientManager) -> Self {
        let keys = Keys::new(&client.config().key_prefix, client.config().partitions);
        Self {
            client,
            keys,
            script: Script::from_lua(include_str!("lua/snapshot.lua")),
        }
    }

    async fn call(&self, stream: &StreamId, args: Vec<Value>) -> Result<Value> {
        let index = self.keys.snapshot_index(stream.key());
        let data = format!("{index}:data");
        self.client
            .run_script(&self.script, || (vec![index.clone(), data.clone()], args.clone()))
            .await
    }
}

/// A number already checked against `MAX_NUMBER` (so it fits an `i64`).
fn number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn field<T>(items: &[Value], i: usize, parse: impl Fn(&Value) -> Option<T>) -> Result<T> {
    const NAMES: [&str; 5] = ["version", "content type", "schema version", "payload", "created-at"];
    items
        .get(i)
        .and_then(parse)
        .ok_or_else(|| cqrsx_core::Error::Integrity(format!("a stored snapshot has no valid {}", NAMES[i % 5])))
}

#[async_trait]
impl SnapshotBackend for RedisSnapshotStore {
    fn max_snapshot_bytes(&self) -> usize {
        MAX_SNAPSHOT_BYTES
    }

    async fn save(&self, snapshot: SnapshotRecord) -> Result<()> {
        let args: Vec<Value> = vec![
            "save".into(),
            number(snapshot.version).into(),
            snapshot.content_type.as_str().into(),
            i64::from(snapshot.schema_version).into(),
            Value::Bytes(snapshot.payload.into()),
            number(snapshot.created_at.as_millis()).into(),
        ];
        self.call(&snapshot.stream, args).await?;
        Ok(())
    }

    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>> {
        let max: Value = match max_version {
            // Every stored version is at most MAX_NUMBER, so a larger bound means "any".
            Some(v) => number(v.min(cqrsx_core::raw::MAX_NUMBER)).into(),
            None => "+inf".into(),
        };
        let items = array(self.call(stream, vec!["latest".into(), max]).await?)?;
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(SnapshotRecord {
            stream: stream.clone(),
            version: field(&items, 0, int)?,
            content_type: field(&items, 1, text)?,
            schema_version: field(&items, 2, |v| int(v).and_then(|n| u32::try_from(n).ok()))?,
            payload: field(&items, 3, bytes)?,
            created_at: Timestamp(field(&items, 4, int)?),
        }))
    }

    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        let items = array(self.call(stream, vec!["list".into()]).await?)?;
        items
            .chunks(5)
            .map(|c| {
                Ok(SnapshotInfo {
                    version: field(c, 0, int)?,
                    content_type: field(c, 1, text)?,
                    schema_version: field(c, 2, |v| int(v).and_then(|n| u32::try_from(n).ok()))?,
                    size: field(c, 3, int)?,
                    created_at: Timestamp(field(c, 4, int)?),
                })
            })
            .collect()
    }

    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let reply = self
            .call(
                stream,
                vec!["prune".into(), i64::try_from(keep).unwrap_or(i64::MAX).into()],
            )
            .await?;
        int(&reply).ok_or_else(|| protocol("prune count"))
    }

    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        let reply = self.call(stream, vec!["clear".into()]).await?;
        int(&reply).ok_or_else(|| protocol("clear count"))
    }
}
