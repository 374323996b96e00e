//! [`RedisProjectionStore`]: projection checkpoints, leases with fencing tokens, views and dead
//! letters, all of one projection under one hash tag; a commit is one script.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::projection::{LeaseHolder, ParkedEvent, ReplayRequests, ViewKey};
use cqrsx_core::raw::{validate_field_path, ProjectionBackend, ReadBackend};
use cqrsx_core::raw::{Commit, Lease, ViewChange};
use cqrsx_core::{Checkpoint, Error, Position, ReadStore, Result};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::Value;

use crate::client::RedisClientManager;
use crate::collection::{Collection, DocWrite};
use crate::error::protocol;
use crate::keys::Keys;
use crate::read_store::RedisReadStore;
use crate::reply::{int, status, text};

/// Projection state in Redis.
///
/// Every key of one projection shares its hash tag (`{prefix:pj:<name>}`), so on a Cluster a
/// projection lives in one slot and a commit — the fencing check, the view's document writes
/// (with their indexes), the dead letters and the checkpoint — is one atomic script with every
/// key declared. A runner that crashes at any point leaves either all of a commit or none.
/// Views are [`RedisReadStore`] collections under the tag; declare their secondary indexes with
/// [`RedisProjectionStore::with_index`].
#[derive(Clone)]
pub struct RedisProjectionStore {
    client: RedisClientManager,
    keys: Keys,
    indexes: Arc<BTreeMap<String, BTreeSet<String>>>,
    script: Script,
    handled: Script,
    /// The versions this process has entered in the set of versions (once each).
    listed: Arc<Mutex<HashSet<ViewKey>>>,
}

impl std::fmt::Debug for RedisProjectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProjectionStore")
            .field("keys", &self.keys)
            .field("indexes", &self.indexes)
            .finish_non_exhaustive()
    }
}

fn lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        projection: lease.key.to_string(),
        token: lease.token,
        reason: "a newer lease was granted".into(),
    }
}

/// The script's first arguments for an operation under a lease: the operation, the token and
/// the owner (see `lua/projection.lua`).
fn held(op: &str, lease: &Lease) -> Vec<Value> {
    vec![op.into(), lease.token.to_string().into(), lease.owner.as_str().into()]
}

/// Records replay requests handled: moves `h` forward only, with the replay's count.
const HANDLED: &str = "local h = tonumber(redis.call('HGET', KEYS[1], 'h') or '0') \
if tonumber(ARGV[1]) > h then redis.call('HSET', KEYS[1], 'h', ARGV[1], 'n', ARGV[2]) end \
return 'ok'";

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis().max(1)).unwrap_or(i64::MAX)
}

fn position_key(p: Position) -> String {
    format!("{}:{}", p.partition, p.offset)
}

impl RedisProjectionStore {
    /// Projection state on this client, under its config's key prefix.
    pub fn new(client: RedisClientManager) -> Self {
        let keys = Keys::new(&client.config().key_prefix, 1);
        Self {
            client,
            keys,
            indexes: Arc::new(BTreeMap::new()),
            script: Script::from_lua(concat!(
                include_str!("lua/docs.lua"),
                include_str!("lua/docs_write.lua"),
                include_str!("lua/projection.lua")
            )),
            handled: Script::from_lua(HANDLED),
            listed: Arc::default(),
        }
    }

    /// Keeps a secondary index on `field` in every version of `projection`'s view (see
    /// [`RedisReadStore::with_index`]).
    pub fn with_index(mut self, projection: &str, field: &str) -> Result<Self> {
        ViewKey::new(projection, 1)?;
        validate_field_path(field)?;
        Arc::make_mut(&mut self.indexes)
            .entry(projection.to_string())
            .or_default()
            .insert(field.to_string());
        Ok(self)
    }

    fn tag(&self, projection: &str) -> String {
        self.keys.projection(projection)
    }

    fn key(&self, key: &ViewKey, what: &str) -> String {
        format!("{}{what}:{}", self.tag(key.projection()), key.version())
    }

    fn collection(&self, key: &ViewKey) -> Collection {
        let empty = BTreeSet::new();
        let indexes = self.indexes.get(key.name()).unwrap_or(&empty);
        Collection::new(format!("{}v{}:", self.tag(key.projection()), key.version()), indexes)
    }

    /// The keys that decide whether a lease may still write: the last token given, and to whom.
    fn fence_keys(&self, key: &ViewKey) -> Vec<String> {
        vec![self.key(key, "token"), self.key(key, "holder")]
    }

    /// The lease itself, then the fence.
    fn lease_keys(&self, key: &ViewKey) -> Vec<String> {
        let mut keys = vec![self.key(key, "lease")];
        keys.extend(self.fence_keys(key));
        keys
    }

    /// Enters `key` in the set of versions before its first lease (a separate key: on a
    /// Cluster it lives in another slot than the projection).
    async fn list(&self, key: &ViewKey) -> Result<()> {
        let listed = |s: &Self| s.listed.lock().unwrap_or_else(PoisonError::into_inner).contains(key);
        if listed(self) {
            return Ok(());
        }
        let member = format!("{}:{}", key.projection(), key.version());
        let _: i64 = self
            .client
            .track(self.client.client().sadd(self.keys.projection_versions(), member))
            .await?;
        self.listed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        Ok(())
    }

    async fn eval(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Value> {
        self.client
            .run_script(&self.script, || (keys.clone(), args.clone()))
            .await
    }
}

#[async_trait]
impl ProjectionBackend for RedisProjectionStore {
    fn nested_arrays(&self) -> bool {
        true
    }

    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.list(key).await?;
        let reply = self
            .eval(
                self.lease_keys(key),
                vec!["acquire".into(), "".into(), owner.into(), ttl_ms(ttl).into()],
            )
            .await?;
        let (status, rest) = status(reply)?;
        match status.as_str() {
            "held" => Ok(None),
            "ok" => Ok(Some(Lease {
                key: key.clone(),
                owner: owner.to_string(),
                token: rest.first().and_then(int).ok_or_else(|| protocol("lease token"))?,
            })),
            other => Err(protocol(format!("acquire status {other}"))),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let mut args = held("renew", lease);
        args.push(ttl_ms(ttl).into());
        match text(&self.eval(self.lease_keys(&lease.key), args).await?).as_deref() {
            Some("ok") => Ok(()),
            Some("lost") => Err(lost(lease)),
            other => Err(protocol(format!("renew reply {other:?}"))),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.eval(self.lease_keys(&lease.key), held("release", lease)).await?;
        Ok(())
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        let stored: Option<String> = self.client.track(self.client.client().get(self.key(key, "cp"))).await?;
        stored
            .map(|s| {
                s.parse()
                    .map_err(|e| Error::Integrity(format!("the checkpoint of {key} is {s:?}: {e}")))
            })
            .transpose()
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<serde_json::Value>> {
        let view = RedisReadStore::over(
            self.client.clone(),
            self.collection(key).tag().to_string(),
            BTreeSet::new(),
        );
        ReadBackend::get(&view, id).await
    }

    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()> {
        let collection = self.collection(&lease.key);
        let mut writes = Vec::with_capacity(commit.writes.len());
        for w in commit.writes {
            writes.push(match w.change {
                ViewChange::Put { data, ttl } => DocWrite::Put {
                    json: serde_json::to_string(&data).map_err(|e| Error::serialization("view document", e))?,
                    id: w.id,
                    ttl,
                    data,
                },
                ViewChange::Delete => DocWrite::Delete { id: w.id },
            });
        }
        let write_args = collection.write_args(&writes);
        let mut keys = self.fence_keys(&lease.key);
        keys.extend([self.key(&lease.key, "cp"), self.key(&lease.key, "dl")]);
        keys.extend(collection.keys());
        let mut args = held("commit", lease);
        args.extend([
            commit.checkpoint.map(|c| c.to_string()).unwrap_or_default().into(),
            (commit.parked.len() as i64).into(),
        ]);
        for p in &commit.parked {
            args.push(position_key(p.position).into());
            args.push(
                serde_json::to_string(p)
                    .map_err(|e| Error::serialization("parked event", e))?
                    .into(),
            );
        }
        args.push((commit.replayed.len() as i64).into());
        args.extend(commit.replayed.iter().map(|p| Value::from(position_key(*p))));
        args.extend(collection.descriptor());
        args.extend(write_args);
        match text(&self.eval(keys, args).await?).as_deref() {
            Some("ok") => Ok(()),
            Some("lost") => Err(lost(lease)),
            other => Err(protocol(format!("commit reply {other:?}"))),
        }
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        let stored: std::collections::HashMap<String, String> = self
            .client
            .track(self.client.client().hgetall(self.key(key, "dl")))
            .await?;
        let mut parked = stored
            .into_iter()
            .map(|(position, json)| {
                serde_json::from_str::<ParkedEvent>(&json)
                    .map_err(|e| Error::Integrity(format!("parked event {position} of {key}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        ViewKey::new(projection, 1)?;
        let stored: Option<String> = self
            .client
            .track(self.client.client().get(format!("{}active", self.tag(projection))))
            .await?;
        stored
            .map(|s| {
                s.parse()
                    .map_err(|_| Error::Integrity(format!("the active version of {projection} is {s:?}")))
            })
            .transpose()
    }

    async fn activate(&self, lease: &Lease) -> Result<()> {
        let mut keys = self.fence_keys(&lease.key);
        keys.push(format!("{}active", self.tag(lease.key.projection())));
        let mut args = held("activate", lease);
        args.push(lease.key.version().to_string().into());
        match text(&self.eval(keys, args).await?).as_deref() {
            Some("ok") => Ok(()),
            Some("lost") => Err(lost(lease)),
            other => Err(protocol(format!("activate reply {other:?}"))),
        }
    }

    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        // A view is a fixed set of keys: removed in one call, freed in the background, and
        // fenced in the same call: a new token given to no one, so no lease held before the
        // drop commits, renews or activates again. The lease goes too: any runner may build
        // the version again at once.
        let mut keys = self.fence_keys(key);
        keys.extend([self.key(key, "lease"), self.key(key, "cp"), self.key(key, "dl")]);
        keys.extend(self.collection(key).keys());
        self.eval(keys, vec!["drop".into(), "".into(), "".into()]).await?;
        Ok(())
    }

    async fn views(&self) -> Result<Vec<ViewKey>> {
        let members: Vec<String> = self
            .client
            .track(self.client.client().smembers(self.keys.projection_versions()))
            .await?;
        members
            .iter()
            .map(|m| {
                m.rsplit_once(':')
                    .and_then(|(name, version)| ViewKey::new(name, version.parse().ok()?).ok())
                    .ok_or_else(|| Error::Integrity(format!("the set of projection versions holds {m:?}")))
            })
            .collect()
    }

    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        let lease_key = self.key(key, "lease");
        let held: Option<String> = self.client.track(self.client.client().get(&lease_key)).await?;
        let Some(held) = held else { return Ok(None) };
        let ttl: i64 = self.client.track(self.client.client().pttl(&lease_key)).await?;
        let (token, owner) = held
            .split_once(':')
            .and_then(|(t, o)| Some((t.parse().ok()?, o)))
            .ok_or_else(|| Error::Integrity(format!("the lease of {key} is {held:?}")))?;
        // -2: it expired since the read.
        Ok((ttl >= 0).then(|| LeaseHolder {
            owner: owner.to_string(),
            token,
            expires_in: Duration::from_millis(ttl.unsigned_abs()),
        }))
    }

    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        let n: i64 = self
            .client
            .track(self.client.client().hincrby(self.key(key, "rq"), "r", 1))
            .await?;
        u64::try_from(n).map_err(|_| Error::Integrity(format!("the replay requests of {key} count {n}")))
    }

    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        let stored: Vec<Option<String>> = self
            .client
            .track(self.client.client().hmget(self.key(key, "rq"), vec!["r", "h", "n"]))
            .await?;
        let field = |i: usize| -> Result<u64> {
            match stored.get(i).cloned().flatten() {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::Integrity(format!("the replay requests of {key} hold {v:?}"))),
            }
        };
        Ok(ReplayRequests {
            requested: field(0)?,
            handled: field(1)?,
            replayed: field(2)?,
        })
    }

    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        let rq = self.key(key, "rq");
        self.client
            .run_script(&self.handled, || {
                (
                    vec![rq.clone()],
                    vec![upto.to_string().into(), replayed.to_string().into()],
                )
            })
            .await?;
        Ok(())
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        Ok(Arc::new(RedisReadStore::over(
            self.client.clone(),
            self.collection(key).tag().to_string(),
            self.indexes.get(key.name()).cloned().unwrap_or_default(),
        )))
    }
}
