//! The baselines the Redis rows are measured against: a raw `XADD`, a minimal checked append in
//! one script, and the unchecked two-step append a user would otherwise write.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use cqrsx_core::NewEvent;
use cqrsx_redis::RedisClientManager;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use super::super::store::{decode_raw, AppendBaseline, RawBaseline};
use super::error;
use crate::cmd::Result;

pub(super) fn metadata_json(e: &NewEvent) -> Result<String> {
    if e.metadata.is_empty() {
        Ok(String::new())
    } else {
        e.metadata.to_json().map_err(error)
    }
}

fn fields(e: &NewEvent) -> Result<Vec<(&'static str, Value)>> {
    Ok(vec![
        ("i", e.event_id.to_string().into()),
        ("t", e.event_type.as_str().into()),
        ("c", e.content_type.as_str().into()),
        ("p", Value::Bytes(e.payload.clone().into())),
        ("m", metadata_json(e)?.into()),
    ])
}

/// One `XADD` per event (pipelined for batches): stores the bytes, checks nothing.
pub(super) struct RawXadd(pub(super) RedisClientManager);

#[async_trait]
impl AppendBaseline for RawXadd {
    fn name(&self, batch: usize) -> String {
        if batch == 1 {
            "XADD (information)".into()
        } else {
            format!("{batch}× XADD pipelined (information)")
        }
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let client = self.0.client();
        let pipe = client.pipeline();
        for e in batch {
            let () = pipe.xadd(key, false, None, "*", fields(e)?).await.map_err(error)?;
        }
        let _: Vec<String> = pipe.all().await.map_err(error)?;
        Ok(())
    }
}

#[async_trait]
impl RawBaseline for RawXadd {
    async fn read(&self, key: &str) -> Result<usize> {
        let entries: Value = self.0.client().xrange(key, "-", "+", None).await.map_err(error)?;
        let entries = entries.into_array();
        for entry in &entries {
            // [id, [field, value, …]]
            let Value::Array(parts) = entry else {
                return Err("an XRANGE entry that is not an array".into());
            };
            let Some(Value::Array(kv)) = parts.get(1) else {
                return Err("an XRANGE entry without fields".into());
            };
            let mut event_type = None;
            let mut payload = None;
            for pair in kv.chunks(2) {
                match (pair[0].as_str().as_deref(), pair.get(1)) {
                    (Some("t"), Some(v)) => event_type = v.as_string(),
                    (Some("p"), Some(v)) => payload = v.as_bytes().map(<[u8]>::to_vec),
                    _ => {}
                }
            }
            let (Some(event_type), Some(payload)) = (event_type, payload) else {
                return Err("an XRANGE entry without type or payload".into());
            };
            decode_raw(&event_type, &payload)?;
        }
        Ok(entries.len())
    }
}

/// Runs a script as our store does: `EVALSHA`, and if the server had lost the script, loads it
/// and runs it again with the keys and arguments `make` makes again (fred's
/// `evalsha_with_reload` would clone them on every call).
pub(super) async fn run_script(
    client: &RedisClientManager,
    script: &Script,
    make: impl Fn() -> Result<(Vec<String>, Vec<Value>)>,
) -> Result<Value> {
    let (keys, args) = make()?;
    match script.evalsha(client.client(), keys, args).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            script.load(client.client()).await.map_err(error)?;
            let (keys, args) = make()?;
            script.evalsha(client.client(), keys, args).await.map_err(error)
        }
        result => result.map_err(error),
    }
}

/// The least a correct optimistic append does: one script that reads the stream's version,
/// compares it with the expected one, `XADD`s the events and writes the version.
pub(super) struct CheckedAppend {
    pub(super) client: RedisClientManager,
    pub(super) script: Script,
    pub(super) versions: Mutex<HashMap<String, u64>>,
}

const CHECKED_APPEND: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return redis.error_reply('conflict') end
local n = 0
for i = 2, #ARGV, 5 do
  redis.call('XADD', KEYS[2], '*', 'i', ARGV[i], 't', ARGV[i + 1], 'c', ARGV[i + 2], 'p', ARGV[i + 3], 'm', ARGV[i + 4])
  n = n + 1
end
redis.call('HSET', KEYS[1], 'v', v + n)
return v + n
";

impl CheckedAppend {
    pub(super) fn new(client: RedisClientManager) -> Self {
        Self {
            client,
            script: Script::from_lua(CHECKED_APPEND),
            versions: Mutex::default(),
        }
    }
}

#[async_trait]
impl AppendBaseline for CheckedAppend {
    fn name(&self, _batch: usize) -> String {
        "checked append (version check + XADD in one script)".into()
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let expected = self
            .versions
            .lock()
            .map_err(|_| "poisoned")?
            .get(key)
            .copied()
            .unwrap_or(0);
        let make = || {
            let mut args: Vec<Value> = vec![expected.to_string().into()];
            for e in batch {
                args.extend(fields(e)?.into_iter().map(|(_, v)| v));
            }
            Ok((vec![format!("{{{key}}}:v"), format!("{{{key}}}:s")], args))
        };
        let version = run_script(&self.client, &self.script, make).await?;
        let version = version.as_u64().ok_or("the checked append's reply is not a version")?;
        self.versions
            .lock()
            .map_err(|_| "poisoned")?
            .insert(key.to_string(), version);
        Ok(())
    }
}

/// The six commands a single-event append of our layout makes, with none of its checks: the
/// read of the version and largest id (one field), the position counter, the type index, the
/// log entry, the commit index entry, the version and largest id write; its reply is one line,
/// as ours; its keys are named as ours, the stream key and event type are read from their
/// ends, and the id and events travel in one argument, as ours. Information: the least any store writing this layout pays, against which
/// the checked baseline's ratio is a ceiling for ours.
pub(super) const LAYOUT_ONLY: &str = r"
local got = redis.call('HGET', KEYS[4], 'v')
local v = string.format('%d', (got and tonumber(string.sub(got, 1, -17)) or 0) + 1)
local seq = string.format('%d', redis.call('INCRBY', KEYS[2], 1))
local now = redis.call('XADD', KEYS[5], '*', 'g', seq)
local s, t = string.sub(KEYS[4], #KEYS[1]), string.sub(KEYS[5], #KEYS[1])
local id, e = string.sub(ARGV[1], 1, 16), string.sub(ARGV[1], 17)
redis.call('XADD', KEYS[1], seq, 's', s, 'v', v, 'n', '1', 'r', now, 't', t, 'e', e)
redis.call('XADD', KEYS[3], v, 'g', seq, 'n', '1', 'i', id)
redis.call('HSET', KEYS[4], 'v', v .. id)
return 'ok ' .. v .. ' ' .. seq
";

/// What a user would otherwise write (the Go package's pattern): read the version, compare in
/// the client, then one pipeline of `RPUSH` per event (a JSON record each), `HSET` of the
/// version and `EXPIRE`. Not atomic: racing writers both pass the check.
pub(super) struct TwoStep(pub(super) RedisClientManager);

#[async_trait]
impl AppendBaseline for TwoStep {
    fn name(&self, _batch: usize) -> String {
        "unchecked two-step (HGET, then RPUSH + HSET + EXPIRE)".into()
    }

    async fn write(&self, key: &str, batch: &[NewEvent]) -> Result<()> {
        let client = self.0.client();
        let meta = format!("{{{key}}}:meta");
        let list = format!("{{{key}}}:events");
        let version: Option<u64> = client.hget(&meta, "version").await.map_err(error)?;
        let version = version.unwrap_or(0);
        let pipe = client.pipeline();
        for (i, e) in batch.iter().enumerate() {
            let record = format!(
                r#"{{"id":"{}","type":"{}","version":{},"content_type":"{}","data":{},"metadata":{}}}"#,
                e.event_id,
                e.event_type,
                version + i as u64 + 1,
                e.content_type.as_str(),
                String::from_utf8_lossy(&e.payload),
                if e.metadata.is_empty() {
                    "null".to_string()
                } else {
                    metadata_json(e)?
                },
            );
            let () = pipe.rpush(&list, record).await.map_err(error)?;
        }
        let () = pipe
            .hset(&meta, ("version", version + batch.len() as u64))
            .await
            .map_err(error)?;
        let () = pipe.expire(&list, 86_400, None).await.map_err(error)?;
        let _: Vec<Value> = pipe.all().await.map_err(error)?;
        Ok(())
    }
}
