//! [`RedisKeyStore`]: the wrapped data keys of `cqrsx_core::crypto`, one hash per subject.

use async_trait::async_trait;
use cqrsx_core::crypto::{validate_subject, KeyStore, StoredKey};
use cqrsx_core::{Error, Result, Timestamp};
use fred::types::scripts::Script;
use fred::types::Value;

use crate::client::RedisClientManager;
use crate::error::protocol;
use crate::reply::{bytes, int, status, text};

/// The Redis key store of encrypted payloads (feature `encryption`).
///
/// Each subject's keys sit in one hash (`<prefix>:dk:<subject>`: a field per version, the
/// latest version, a tombstone), changed only by one Lua script, so creating a version is
/// atomic (`HSETNX`: of two processes creating the same version, one wins and both get its
/// key) and works on Redis Cluster (one key per call). Forgetting deletes the hash and leaves
/// the tombstone in its place. An unreachable server is [`Error::Backend`] or
/// [`Error::Connect`], and nothing is written.
pub struct RedisKeyStore {
    client: RedisClientManager,
    prefix: String,
    script: Script,
}

impl std::fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisKeyStore {
    /// A key store over this client, under its key prefix.
    pub fn new(client: RedisClientManager) -> Self {
        let prefix = client.config().key_prefix.clone();
        Self {
            client,
            prefix,
            script: Script::from_lua(include_str!("lua/keys.lua")),
        }
    }

    async fn call(&self, subject: &str, args: Vec<Value>) -> Result<(String, Vec<Value>)> {
        validate_subject(subject)?;
        let key = format!("{}:dk:{subject}", self.prefix);
        let reply = self
            .client
            .run_script(&self.script, || (vec![key.clone()], args.clone()))
            .await?;
        status(reply)
    }

    fn stored(subject: &str, items: &[Value]) -> Result<StoredKey> {
        let bad = || protocol(format!("a stored data key of subject {subject:?} is malformed"));
        Ok(StoredKey {
            subject: subject.to_string(),
            version: items
                .first()
                .and_then(int)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(bad)?,
            wrapped: items.get(1).and_then(bytes).ok_or_else(bad)?,
            master_key_id: items.get(2).and_then(text).ok_or_else(bad)?,
            created_at: Timestamp(items.get(3).and_then(int).ok_or_else(bad)?),
        })
    }

    fn found(subject: &str, (status, items): (String, Vec<Value>)) -> Result<Option<StoredKey>> {
        match status.as_str() {
            "ok" => Self::stored(subject, &items).map(Some),
            "none" => Ok(None),
            other => Err(protocol(format!("unexpected key store reply {other:?}"))),
        }
    }

    fn flag(subject: &str, (status, items): (String, Vec<Value>)) -> Result<bool> {
        match (status.as_str(), items.first().and_then(int)) {
            ("ok", Some(n)) => Ok(n == 1),
            _ => Err(protocol(format!("unexpected key store reply for subject {subject:?}"))),
        }
    }
}

#[async_trait]
impl KeyStore for RedisKeyStore {
    async fn create_if_absent(&self, key: StoredKey) -> Result<StoredKey> {
        let created = i64::try_from(key.created_at.as_millis()).unwrap_or(i64::MAX);
        let args: Vec<Value> = vec![
            "create".into(),
            i64::from(key.version).into(),
            Value::Bytes(key.wrapped.clone().into()),
            key.master_key_id.as_str().into(),
            created.into(),
        ];
        let reply = self.call(&key.subject, args).await?;
        if reply.0 == "forgotten" {
            return Err(Error::SubjectForgotten(key.subject));
        }
        Self::found(&key.subject, reply)?
            .ok_or_else(|| protocol(format!("the key of subject {:?} was not stored", key.subject)))
    }

    async fn get(&self, subject: &str, version: u32) -> Result<Option<StoredKey>> {
        let reply = self
            .call(subject, vec!["get".into(), i64::from(version).into()])
            .await?;
        Self::found(subject, reply)
    }

    async fn latest(&self, subject: &str) -> Result<Option<StoredKey>> {
        let reply = self.call(subject, vec!["latest".into()]).await?;
        Self::found(subject, reply)
    }

    async fn forget(&self, subject: &str) -> Result<bool> {
        let reply = self.call(subject, vec!["forget".into()]).await?;
        Self::flag(subject, reply)
    }

    async fn forgotten(&self, subject: &str) -> Result<bool> {
        let reply = self.call(subject, vec!["forgotten".into()]).await?;
        Self::flag(subject, reply)
    }
}
