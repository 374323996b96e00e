//! [`MongoProjectionStore`]: projection leases, checkpoints, dead letters and views on MongoDB
//! without transactions — leases are claims inserted under unique ids, and every commit is a
//! record of a fenced log, applied to the documents after it landed.

mod commit;
mod fence;
mod log;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::projection::{LeaseHolder, ParkedEvent, ReplayRequests, ViewKey};
use cqrsx_core::raw::ProjectionBackend;
use cqrsx_core::raw::{Commit, Lease};
use cqrsx_core::{Checkpoint, Error, ReadStore, Result};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, DateTime, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};

use crate::client::{MongoClientManager, Tracked};
use crate::error::{corrupt, is_duplicate_key};
use crate::read_store::{Floor, MongoReadStore};
use log::Record;

/// Projection state on MongoDB.
///
/// MongoDB without transactions cannot change two documents atomically, and some MongoDB-wire
/// servers (FerretDB 1) cannot even compare-and-set one under concurrency; so nothing here
/// depends on either. What it depends on is that an insert under an `_id` that exists fails,
/// which every server guarantees.
///
/// - **A lease is a claim**: a document inserted under a unique `_id` per fencing token (one
///   insert wins each token), which only its holder updates afterwards (its expiry).
/// - **A commit is a log record first.** The holder of token `t` writes its commits as records
///   `(t, 1)`, `(t, 2)`, … of the projection's log, each inserted under a unique `_id`, then
///   applies them: every view document, dead letter and the checkpoint document is written
///   guarded by the commit's sequence number (`_s`), so a record applied twice, or an old
///   one after a newer one, changes nothing. A commit larger than a record is a group of
///   records whose last one ends it; a group cut short is never applied.
/// - **Fencing.** A new holder, in [`ProjectionStore::acquire`](cqrsx_core::ProjectionStore::acquire), *seals* every older tenure:
///   it inserts a seal record at the slot after that tenure's last record (checking, after the
///   insert, that the seal is that tenure's last record), so the older holder's next insert
///   fails and nothing it sends afterwards lands. Then it applies every complete commit after
///   the checkpoint (one cut short by a crash), and moves the checkpoint document's sequence
///   to its own tenure, so no older commit can move it again.
/// - **The checkpoint** (`cp` document) is written after the documents it covers: a reader
///   never sees it ahead of the view. A holder removes its own records once applied.
/// - **A drop** seals the last tenure, then raises the view's *floor* (`floor` document) to the
///   next tenure's first sequence before it removes anything. A commit that landed before the
///   drop and is applied after it (its holder frozen in between, or killed with the writes
///   inside the server) writes below the floor: every read skips it, the next holder's writes
///   replace it, and that holder's recovery removes what is left.
///
/// Collections: `<prefix>projections` (claims, the log, checkpoints, active versions, dead
/// letters) and one collection per projection version's view,
/// `<prefix>view_<name>_v<version>` (`{_id, d, exp?, _s}`, deleted documents kept as
/// `{_id, _del: true, _s}` so an older commit cannot bring them back).
#[derive(Clone)]
pub struct MongoProjectionStore {
    client: MongoClientManager,
    state: Collection<Document>,
    tenures: Arc<Mutex<HashMap<(ViewKey, u64), Tenure>>>,
}

impl std::fmt::Debug for MongoProjectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoProjectionStore")
            .field("collection", &self.state.name())
            .finish_non_exhaustive()
    }
}

/// What this process knows of a lease it holds: the next free slot of its tenure, and a
/// commit sent whose outcome is not known yet.
#[derive(Debug, Clone, Default)]
struct Tenure {
    owner: String,
    next: Option<u32>,
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    id: String,
    first: u32,
    commit: Commit,
    activate: bool,
}

fn token_of(d: &Document) -> Result<u64> {
    d.get_i64("token")
        .ok()
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| corrupt("a projection claim without a token"))
}

/// Whether a stored document is not below the drop floor: its sequence (in `field`) is at or
/// above it. One without a sequence was not written by a commit, and is left to the reader.
fn above(d: &Document, field: &str, floor: i64) -> bool {
    d.get_i64(field).map_or(true, |s| s >= floor)
}

/// A count stored by `$inc` or `$set` (any integer width); 0 when absent.
fn count(d: &Document, field: &str) -> Result<u64> {
    match d.get(field) {
        None => Ok(0),
        Some(Bson::Int32(n)) => u64::try_from(*n).map_err(|_| corrupt(format!("a negative {field}"))),
        Some(Bson::Int64(n)) => u64::try_from(*n).map_err(|_| corrupt(format!("a negative {field}"))),
        Some(other) => Err(corrupt(format!("{field} is {other}"))),
    }
}

/// Whether a claim is the lease someone holds now: not released, not ended by a takeover or a
/// drop, not expired.
fn is_held(claim: &Document) -> bool {
    !claim.get_bool("released").unwrap_or(false)
        && !claim.get_bool("superseded").unwrap_or(false)
        && claim.get_datetime("expires").is_ok_and(|e| *e > DateTime::now())
}

fn lost(lease: &Lease, reason: &str) -> Error {
    Error::LeaseLost {
        projection: lease.key.to_string(),
        token: lease.token,
        reason: reason.into(),
    }
}

fn expiry(ttl: Duration) -> DateTime {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(DateTime::now().timestamp_millis().saturating_add(ms))
}

/// How many times a seal is tried while the older holder keeps writing.
const SEAL_ATTEMPTS: usize = 1_000;

impl MongoProjectionStore {
    /// Projection state in the client's database (collection `<prefix>projections`). Call
    /// [`MongoProjectionStore::initialize`] once before first use.
    pub fn new(client: MongoClientManager) -> Self {
        let state = client
            .database()
            .collection(&client.config().read_model_collection("projections"));
        Self {
            client,
            state,
            tenures: Arc::default(),
        }
    }

    /// Creates the state collection and its index. Idempotent.
    pub async fn initialize(&self) -> Result<()> {
        self.client.create_collection(self.state.name()).await?;
        self.client
            .create_indexes(
                self.state.name(),
                vec![IndexModel::builder()
                    .keys(doc! { "kind": 1, "p": 1, "v": 1, "token": -1 })
                    .options(IndexOptions::builder().name("kind_projection".to_string()).build())
                    .build()],
            )
            .await
    }

    fn view_collection(&self, key: &ViewKey) -> String {
        self.client
            .config()
            .read_model_collection(&format!("view_{}_v{}", key.projection(), key.version()))
    }

    fn floor(&self, key: &ViewKey) -> Floor {
        Floor {
            state: self.state.clone(),
            id: log::floor_id(key),
        }
    }

    /// The drop floor's sequence of `key`; 0 when it was never dropped.
    async fn floor_of(&self, key: &ViewKey) -> Result<i64> {
        self.floor(key).read(&self.client).await
    }

    /// Raises the drop floor of `key` to `seq` (it never goes down).
    async fn raise_floor(&self, key: &ViewKey, seq: i64) -> Result<()> {
        let filter = doc! {
            "_id": log::floor_id(key),
            "$or": [ { "s": { "$lt": seq } }, { "s": { "$exists": false } } ],
        };
        let set = doc! { "$set": { "kind": "floor", "p": key.projection(), "v": i64::from(key.version()), "s": seq } };
        match self
            .client
            .track_write_raw(self.state.update_one(filter, set).upsert(true).into_future())
            .await
        {
            Ok(_) => Ok(()),
            // At or past `seq` already.
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    fn tenure(&self, key: &ViewKey, token: u64) -> Tenure {
        self.tenures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(key.clone(), token))
            .cloned()
            .unwrap_or_default()
    }

    fn set_tenure(&self, key: &ViewKey, token: u64, tenure: Option<Tenure>) {
        let mut tenures = self.tenures.lock().unwrap_or_else(PoisonError::into_inner);
        match tenure {
            Some(t) => tenures.insert((key.clone(), token), t),
            None => tenures.remove(&(key.clone(), token)),
        };
    }

    /// The newest claim of `key`, if any.
    async fn latest_claim(&self, key: &ViewKey) -> Result<Option<Document>> {
        self.client
            .track(
                self.state
                    .find_one(doc! { "kind": "claim", "p": key.projection(), "v": i64::from(key.version()) })
                    .sort(doc! { "token": -1 })
                    .into_future(),
            )
            .await
    }

    async fn claim(&self, key: &ViewKey, token: u64) -> Result<Option<Document>> {
        self.client
            .track(
                self.state
                    .find_one(doc! { "_id": log::claim_id(key, token) })
                    .into_future(),
            )
            .await
    }

    /// The last record of one tenure (a seal included), if it has any.
    async fn last_record(&self, key: &ViewKey, tenure: u64) -> Result<Option<Record>> {
        let (lo, hi) = log::tenure_range(key, tenure);
        let found = self
            .client
            .track(
                self.state
                    .find_one(doc! { "_id": { "$gte": lo, "$lt": hi } })
                    .sort(doc! { "_id": -1 })
                    .projection(doc! { "w": 0, "pk": 0 })
                    .into_future(),
            )
            .await?;
        found.map(|d| Record::parse(key, d)).transpose()
    }
}

#[async_trait]
impl ProjectionBackend for MongoProjectionStore {
    fn nested_arrays(&self) -> bool {
        self.client.capabilities().nested_arrays
    }

    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        let latest = self.latest_claim(key).await?;
        let token = match &latest {
            None => 1,
            Some(claim) => {
                // A lease released, expired, or ended by a drop (which seals the last
                // holder's tenure, as a takeover does) is free.
                if is_held(claim) && claim.get_str("owner").ok() != Some(owner) {
                    return Ok(None);
                }
                token_of(claim)? + 1
            }
        };
        let claim = doc! {
            "_id": log::claim_id(key, token),
            "kind": "claim",
            "p": key.projection(),
            "v": i64::from(key.version()),
            "token": log::i64_of(token),
            "owner": owner,
            "expires": expiry(ttl),
            "sealed": false,
        };
        match self.client.track_raw(self.state.insert_one(claim).into_future()).await {
            Ok(_) => {}
            // Another runner claimed this token first.
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => return Ok(None),
            Err(e) => return Err(e.into_error()),
        }
        // Fence every older holder, then complete what they left half-done.
        self.seal_older(key, token, latest.as_ref()).await?;
        self.recover(key, token).await?;
        self.client
            .track_write(
                self.state
                    .update_one(
                        doc! { "_id": log::claim_id(key, token) },
                        doc! { "$set": { "sealed": true } },
                    )
                    .into_future(),
            )
            .await?;
        self.set_tenure(
            key,
            token,
            Some(Tenure {
                owner: owner.to_string(),
                next: Some(1),
                pending: None,
            }),
        );
        Ok(Some(Lease {
            key: key.clone(),
            owner: owner.to_string(),
            token,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let own = self.state.update_one(
            doc! { "_id": log::claim_id(&lease.key, lease.token), "owner": &lease.owner, "superseded": { "$ne": true } },
            doc! { "$set": { "expires": expiry(ttl) } },
        );
        // No store gives the largest token: one is forged.
        let Some(next) = lease.token.checked_add(1) else {
            return Err(lost(lease, "no such lease was granted"));
        };
        let (newer, renewed) = tokio::join!(self.claim(&lease.key, next), self.client.track_write(own.into_future()));
        if newer?.is_some() || renewed?.matched_count == 0 {
            return Err(lost(lease, "a newer lease was granted"));
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.set_tenure(&lease.key, lease.token, None);
        self.client
            .track_write(
                self.state
                    .update_one(
                        doc! {
                            "_id": log::claim_id(&lease.key, lease.token),
                            "owner": &lease.owner,
                            "superseded": { "$ne": true },
                        },
                        doc! { "$set": { "released": true } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        let (found, floor) = tokio::join!(
            self.client
                .track(self.state.find_one(doc! { "_id": log::cp_id(key) }).into_future()),
            self.floor_of(key),
        );
        let (found, floor) = (found?, floor?);
        // A checkpoint written before the view was dropped (by a holder's commit that arrived
        // late) is not this view's.
        let found = found.filter(|d| above(d, "s", floor));
        match found.as_ref().map(|d| d.get("cp")) {
            Some(Some(Bson::String(value))) => value
                .parse()
                .map(Some)
                .map_err(|e| Error::Integrity(format!("the checkpoint of {key} is {value:?}: {e}"))),
            Some(Some(other)) => Err(corrupt(format!("the checkpoint of {key} is {other}"))),
            _ => Ok(None),
        }
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<serde_json::Value>> {
        let docs: Collection<Document> = self.client.database().collection(&self.view_collection(key));
        let (found, floor) = tokio::join!(
            self.client.track(docs.find_one(doc! { "_id": id }).into_future()),
            self.floor_of(key),
        );
        let (Some(d), floor) = (found?, floor?) else {
            return Ok(None);
        };
        let live = !d.get_bool("_del").unwrap_or(false)
            && d.get_datetime("exp").map_or(true, |e| *e > DateTime::now())
            && above(&d, "_s", floor);
        match (live, d.get_document("d")) {
            (true, Ok(data)) => Ok(Some(Bson::Document(data.clone()).into_relaxed_extjson())),
            (true, Err(_)) => Err(corrupt(format!("view document {id} of {key} has no data"))),
            (false, _) => Ok(None),
        }
    }

    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()> {
        self.commit_log(lease, commit, false).await
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        let floor = self.floor_of(key).await?;
        let docs: Vec<Document> = self
            .client
            .track(
                self.state
                    .find(doc! { "kind": "parked", "p": key.projection(), "v": i64::from(key.version()), "live": true })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        let mut parked = docs
            .into_iter()
            .filter(|d| above(d, "_s", floor))
            .map(|d| {
                bson::from_document::<ParkedEvent>(d)
                    .map_err(|e| Error::Integrity(format!("a parked event of {key}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        parked.sort_by_key(|p| p.position);
        Ok(parked)
    }

    async fn active_version(&self, projection: &str) -> Result<Option<u32>> {
        ViewKey::new(projection, 1)?;
        let found = self
            .client
            .track(
                self.state
                    .find_one(doc! { "kind": "active", "p": projection })
                    .sort(doc! { "v": -1 })
                    .into_future(),
            )
            .await?;
        found
            .map(|d| {
                d.get_i64("v")
                    .ok()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| corrupt(format!("the active version of {projection}")))
            })
            .transpose()
    }

    async fn activate(&self, lease: &Lease) -> Result<()> {
        self.commit_log(lease, Commit::default(), true).await
    }

    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        self.drop_tenures(key).await
    }

    async fn views(&self) -> Result<Vec<ViewKey>> {
        let found: Vec<Document> = self
            .client
            .track(async {
                self.state
                    .find(doc! { "kind": { "$in": ["claim", "active"] } })
                    .projection(doc! { "p": 1, "v": 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        found
            .iter()
            .map(|d| {
                let version = d.get_i64("v").ok().and_then(|v| u32::try_from(v).ok());
                match (d.get_str("p"), version) {
                    (Ok(name), Some(version)) => ViewKey::new(name, version),
                    _ => Err(corrupt(format!("a projection claim without a name or version: {d}"))),
                }
            })
            .collect()
    }

    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>> {
        let Some(claim) = self.latest_claim(key).await? else {
            return Ok(None);
        };
        if !is_held(&claim) {
            return Ok(None);
        }
        let left = claim
            .get_datetime("expires")
            .map(|e| e.timestamp_millis().saturating_sub(DateTime::now().timestamp_millis()))
            .unwrap_or(0);
        Ok(Some(LeaseHolder {
            owner: claim
                .get_str("owner")
                .map_err(|_| corrupt(format!("a claim of {key} without an owner")))?
                .to_string(),
            token: token_of(&claim)?,
            expires_in: Duration::from_millis(left.unsigned_abs()),
        }))
    }

    async fn request_replay(&self, key: &ViewKey) -> Result<u64> {
        let updated = self
            .client
            .track_write(
                self.state
                    .find_one_and_update(
                        doc! { "_id": log::request_id(key) },
                        doc! {
                            "$inc": { "r": 1_i64 },
                            "$setOnInsert": { "kind": "rq", "p": key.projection(), "v": i64::from(key.version()) },
                        },
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .into_future(),
            )
            .await?;
        let updated = updated.ok_or_else(|| corrupt(format!("the replay requests of {key} vanished")))?;
        count(&updated, "r")
    }

    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests> {
        let found = self
            .client
            .track(self.state.find_one(doc! { "_id": log::request_id(key) }).into_future())
            .await?;
        let Some(d) = found else {
            return Ok(ReplayRequests::default());
        };
        Ok(ReplayRequests {
            requested: count(&d, "r")?,
            handled: count(&d, "h")?,
            replayed: count(&d, "n")?,
        })
    }

    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()> {
        let (upto, replayed) = (log::i64_of(upto), log::i64_of(replayed));
        self.client
            .track_write(
                self.state
                    .update_one(
                        doc! {
                            "_id": log::request_id(key),
                            "$or": [{ "h": { "$lt": upto } }, { "h": { "$exists": false } }],
                        },
                        doc! { "$set": { "h": upto, "n": replayed } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        Ok(Arc::new(MongoReadStore::view(
            self.client.clone(),
            &self.view_collection(key),
            self.floor(key),
        )))
    }
}
