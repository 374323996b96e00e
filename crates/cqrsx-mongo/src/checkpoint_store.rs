//! [`MongoCheckpointStore`]: projection leases, checkpoints, dead letters and views on MongoDB
//! without transactions — every lease is a document inserted under a unique `_id`, every view
//! document is guarded by the position it has applied and by the fencing token that wrote it.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrsx_core::projection::{
    CheckpointCapabilities, CheckpointStore, Commit, Lease, ParkedEvent, ViewChange, ViewDoc, ViewKey, ViewWrite,
};
use cqrsx_core::raw::validate_id;
use cqrsx_core::{Checkpoint, Error, Position, ReadStore, Result};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use tracing::instrument;

use crate::client::{MongoClientManager, Tracked};
use crate::error::{check_write_reply, corrupt, is_duplicate_key};
use crate::read_store::MongoReadStore;

/// Projection state on MongoDB.
///
/// MongoDB without transactions cannot change two documents atomically, and some MongoDB-wire
/// servers (FerretDB) cannot even compare-and-set one under concurrency; so nothing here
/// depends on either. A lease is a *claim*: a document inserted with a unique `_id` per fencing
/// token (one insert wins each token), which only its holder updates afterwards — with its
/// expiry and its checkpoint. The next holder starts from the last holder's checkpoint.
///
/// A commit checks that no newer claim exists, then writes the view documents in one bulk
/// command — each guarded: written only if the document's applied position (`_p`) is older
/// than the write's, and its fencing token (`_f`) not newer — then the checkpoint. A commit cut
/// short leaves documents ahead of the checkpoint; its repeat after a restart is refused by the
/// guards, so nothing is applied twice. Deleted view documents stay as tombstones (`_del`) that
/// keep their position; a replayed parked event is recorded in `_r` so that it applies once.
///
/// Collections: `<prefix>projections` (claims, active versions, dead letters) and one
/// collection per projection version's view, `<prefix>view_<name>_v<version>`.
#[derive(Clone)]
pub struct MongoCheckpointStore {
    client: MongoClientManager,
    state: Collection<Document>,
}

impl std::fmt::Debug for MongoCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoCheckpointStore")
            .field("collection", &self.state.name())
            .finish_non_exhaustive()
    }
}

const SEP: char = '\u{1f}';

fn claim_id(key: &ViewKey, token: u64) -> String {
    format!("claim{SEP}{}{SEP}{}{SEP}{token:020}", key.projection(), key.version())
}

fn parked_id(key: &ViewKey, position: Position) -> String {
    format!(
        "parked{SEP}{}{SEP}{}{SEP}{}:{}",
        key.projection(),
        key.version(),
        position.partition,
        position.offset
    )
}

fn active_id(key: &ViewKey) -> String {
    format!("active{SEP}{}{SEP}{}", key.projection(), key.version())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn token_of(d: &Document) -> Result<u64> {
    d.get_i64("token")
        .ok()
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| corrupt("a projection claim without a token"))
}

fn lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        projection: lease.key.to_string(),
        token: lease.token,
        reason: "a newer lease was granted".into(),
    }
}

fn expiry(ttl: Duration) -> DateTime {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(DateTime::now().timestamp_millis().saturating_add(ms))
}

/// A view write as an `update` statement, guarded by position (or replay record) and token.
fn statement(write: &ViewWrite, token: u64) -> Result<Document> {
    let fence = doc! { "$or": [ { "_f": { "$lte": i64_of(token) } }, { "_f": { "$exists": false } } ] };
    let data = |data: &serde_json::Value| match Bson::try_from(data.clone()) {
        Ok(Bson::Document(d)) => Ok(d),
        _ => Err(Error::InvalidInput(format!(
            "view document {} cannot be stored in BSON",
            write.id
        ))),
    };
    if let Some(replayed) = write.replay_of {
        // Out of order by nature: guarded by the replay record instead of the position.
        let mark = format!("{}:{}", replayed.partition, replayed.offset);
        let mut update = match &write.change {
            ViewChange::Put { data: d, ttl } => {
                let mut set = doc! { "d": data(d)?, "_f": i64_of(token) };
                let mut unset = doc! { "_del": "" };
                match ttl {
                    Some(t) => {
                        set.insert("exp", expiry(*t));
                    }
                    None => {
                        unset.insert("exp", "");
                    }
                }
                doc! { "$set": set, "$unset": unset }
            }
            ViewChange::Delete => doc! { "$set": { "_del": true, "_f": i64_of(token) } },
        };
        update.insert("$addToSet", doc! { "_r": &mark });
        return Ok(doc! {
            "q": { "_id": &write.id, "_r": { "$ne": &mark }, "$and": [fence] },
            "u": update,
            "upsert": true,
        });
    }
    let offset = i64_of(write.position.offset);
    let mut replacement = match &write.change {
        ViewChange::Put { data: d, ttl } => {
            let mut r = doc! { "d": data(d)? };
            if let Some(t) = ttl {
                r.insert("exp", expiry(*t));
            }
            r
        }
        ViewChange::Delete => doc! { "_del": true },
    };
    replacement.insert("_p", offset);
    replacement.insert("_f", i64_of(token));
    Ok(doc! {
        "q": {
            "_id": &write.id,
            "$and": [
                { "$or": [ { "_p": { "$lt": offset } }, { "_p": { "$exists": false } } ] },
                fence,
            ],
        },
        "u": replacement,
        "upsert": true,
    })
}

impl MongoCheckpointStore {
    /// Projection state in the client's database (collection `<prefix>projections`). Call
    /// [`MongoCheckpointStore::initialize`] once before first use.
    pub fn new(client: MongoClientManager) -> Self {
        let state = client
            .database()
            .collection(&client.config().read_model_collection("projections"));
        Self { client, state }
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

    /// Whether a claim newer than the lease's exists.
    async fn superseded(&self, lease: &Lease) -> Result<bool> {
        let next = self
            .client
            .track(
                self.state
                    .find_one(doc! { "_id": claim_id(&lease.key, lease.token + 1) })
                    .projection(doc! { "_id": 1 })
                    .into_future(),
            )
            .await?;
        Ok(next.is_some())
    }

    fn parse_checkpoint(key: &ViewKey, value: &str) -> Result<Checkpoint> {
        value
            .parse()
            .map_err(|e| Error::Integrity(format!("the checkpoint of {key} is {value:?}: {e}")))
    }
}

#[async_trait]
impl CheckpointStore for MongoCheckpointStore {
    fn capabilities(&self) -> CheckpointCapabilities {
        CheckpointCapabilities { atomic_commit: false }
    }

    #[instrument(level = "debug", skip(self), fields(projection = %key))]
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_id("lease owner", owner)?;
        let latest = self.latest_claim(key).await?;
        let (token, start) = match &latest {
            None => (1, None),
            Some(claim) => {
                let held = !claim.get_bool("released").unwrap_or(false)
                    && claim.get_datetime("expires").is_ok_and(|e| *e > DateTime::now());
                if held && claim.get_str("owner").ok() != Some(owner) {
                    return Ok(None);
                }
                let start = claim.get_str("cp").or_else(|_| claim.get_str("start")).ok();
                (token_of(claim)? + 1, start.map(str::to_string))
            }
        };
        let mut claim = doc! {
            "_id": claim_id(key, token),
            "kind": "claim",
            "p": key.projection(),
            "v": i64::from(key.version()),
            "token": i64_of(token),
            "owner": owner,
            "expires": expiry(ttl),
        };
        if let Some(start) = start {
            claim.insert("start", start);
        }
        match self.client.track_raw(self.state.insert_one(claim).into_future()).await {
            Ok(_) => Ok(Some(Lease {
                key: key.clone(),
                owner: owner.to_string(),
                token,
            })),
            // Another runner claimed this token first.
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e.into_error()),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()> {
        let own = self.state.update_one(
            doc! { "_id": claim_id(&lease.key, lease.token) },
            doc! { "$set": { "expires": expiry(ttl) } },
        );
        let (superseded, renewed) = tokio::join!(self.superseded(lease), self.client.track(own.into_future()));
        if superseded? || renewed?.matched_count == 0 {
            return Err(lost(lease));
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.client
            .track(
                self.state
                    .update_one(
                        doc! { "_id": claim_id(&lease.key, lease.token) },
                        doc! { "$set": { "released": true } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>> {
        let Some(claim) = self.latest_claim(key).await? else {
            return Ok(None);
        };
        match claim.get_str("cp").or_else(|_| claim.get_str("start")) {
            Ok(value) => Self::parse_checkpoint(key, value).map(Some),
            Err(_) => Ok(None),
        }
    }

    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<ViewDoc>> {
        validate_id("view document id", id)?;
        let docs: Collection<Document> = self.client.database().collection(&self.view_collection(key));
        let Some(d) = self
            .client
            .track(docs.find_one(doc! { "_id": id }).into_future())
            .await?
        else {
            return Ok(None);
        };
        let applied = match d.get("_p") {
            Some(Bson::Int64(p)) => Some(Position {
                partition: 0,
                offset: u64::try_from(*p)
                    .map_err(|_| corrupt(format!("view document {id} has a negative position")))?,
            }),
            _ => None,
        };
        let live = !d.get_bool("_del").unwrap_or(false) && d.get_datetime("exp").map_or(true, |e| *e > DateTime::now());
        let data = match (live, d.get_document("d")) {
            (true, Ok(data)) => Some(Bson::Document(data.clone()).into_relaxed_extjson()),
            (true, Err(_)) => return Err(corrupt(format!("view document {id} of {key} has no data"))),
            (false, _) => None,
        };
        Ok(Some(ViewDoc { data, applied }))
    }

    #[instrument(level = "debug", skip(self, commit), fields(projection = %lease.key, writes = commit.writes.len()))]
    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()> {
        commit.validate()?;
        if !self.client.capabilities().nested_arrays {
            for w in &commit.writes {
                if let ViewChange::Put { data, .. } = &w.change {
                    if cqrsx_core::raw::has_nested_arrays(data) {
                        return Err(crate::read_store::nested(&w.id));
                    }
                }
            }
        }
        let statements = commit
            .writes
            .iter()
            .map(|w| statement(w, lease.token))
            .collect::<Result<Vec<_>>>()?;
        if self.superseded(lease).await? {
            return Err(lost(lease));
        }
        let view = self.view_collection(&lease.key);
        let database = self.client.database();
        let documents = async {
            if statements.is_empty() {
                return Ok(());
            }
            let reply = self
                .client
                .track(database.run_command(doc! { "update": &view, "updates": statements, "ordered": false }))
                .await?;
            // A duplicate key is a guarded upsert whose document is already past it.
            check_write_reply(&reply, true)
        };
        let parked = async {
            if commit.parked.is_empty() {
                return Ok(());
            }
            let docs = commit
                .parked
                .iter()
                .map(|p| {
                    let mut d = bson::to_document(p).map_err(|e| Error::serialization("parked event", e))?;
                    d.insert("_id", parked_id(&lease.key, p.position));
                    d.insert("kind", "parked");
                    d.insert("p", lease.key.projection());
                    d.insert("v", i64::from(lease.key.version()));
                    Ok(d)
                })
                .collect::<Result<Vec<_>>>()?;
            match self
                .client
                .track_raw(self.state.insert_many(docs).ordered(false).into_future())
                .await
            {
                Ok(_) => Ok(()),
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
                Err(e) => Err(e.into_error()),
            }
        };
        let unparked = async {
            if commit.replayed.is_empty() {
                return Ok(());
            }
            let ids: Vec<String> = commit.replayed.iter().map(|p| parked_id(&lease.key, *p)).collect();
            self.client
                .track(self.state.delete_many(doc! { "_id": { "$in": ids } }).into_future())
                .await
                .map(|_| ())
        };
        let (documents, parked, unparked) = tokio::join!(documents, parked, unparked);
        documents?;
        parked?;
        unparked?;
        // The checkpoint follows the documents, in the holder's own claim.
        if let Some(checkpoint) = commit.checkpoint {
            let updated = self
                .client
                .track(
                    self.state
                        .update_one(
                            doc! { "_id": claim_id(&lease.key, lease.token) },
                            doc! { "$set": { "cp": checkpoint.to_string() } },
                        )
                        .into_future(),
                )
                .await?;
            if updated.matched_count == 0 {
                return Err(lost(lease));
            }
        }
        Ok(())
    }

    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>> {
        let docs: Vec<Document> = self
            .client
            .track(
                self.state
                    .find(doc! { "kind": "parked", "p": key.projection(), "v": i64::from(key.version()) })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        let mut parked = docs
            .into_iter()
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
        if self.superseded(lease).await? {
            return Err(lost(lease));
        }
        let active = doc! {
            "_id": active_id(&lease.key),
            "kind": "active",
            "p": lease.key.projection(),
            "v": i64::from(lease.key.version()),
        };
        match self.client.track_raw(self.state.insert_one(active).into_future()).await {
            Ok(_) => Ok(()),
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    #[instrument(level = "debug", skip(self), fields(projection = %key))]
    async fn drop_view(&self, key: &ViewKey) -> Result<()> {
        let view: Collection<Document> = self.client.database().collection(&self.view_collection(key));
        self.client.track(view.drop().into_future()).await?;
        self.client
            .track(
                self.state
                    .delete_many(doc! {
                        "kind": { "$in": ["claim", "parked"] },
                        "p": key.projection(),
                        "v": i64::from(key.version()),
                    })
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>> {
        Ok(Arc::new(MongoReadStore::view(
            self.client.clone(),
            &self.view_collection(key),
        )))
    }
}
