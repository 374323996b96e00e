//! Fencing and recovery: a new lease holder seals every older tenure of the log, so nothing an
//! older holder sends afterwards lands, and completes the commits they left half-applied.

use std::future::IntoFuture;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::{Error, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use tracing::debug;

use super::log::{self, Record, Seq};
use super::{MongoProjectionStore, SEAL_ATTEMPTS};

/// How many times a drop runs again while runners keep claiming the view it drops.
const DROP_PASSES: usize = 100;

/// What a checkpoint document's move does to the checkpoint it holds.
pub(super) enum CheckpointTo<'a> {
    /// Keeps it: a new tenure takes the view over where it stands.
    Keep,
    /// Sets it: a commit was applied.
    Set(&'a str),
    /// Removes it: the view was dropped, and one from before the drop arrived late.
    Clear,
}
use crate::client::Tracked;
use crate::error::is_duplicate_key;

impl MongoProjectionStore {
    /// Seals `tenure`: a seal record at the slot after its last record, re-checked after the
    /// insert to be the last one (the older holder removes its own applied records, so a slot
    /// below its newest may be free again; a seal there would not stop it). Once the seal is
    /// the tenure's last record, the holder's next insert is at or below it and fails.
    pub(super) async fn seal(&self, key: &ViewKey, tenure: u64, by: u64) -> Result<()> {
        // Its renewals fail from now on, and write nothing.
        self.client
            .track_write(
                self.state
                    .update_one(
                        doc! { "_id": log::claim_id(key, tenure) },
                        doc! { "$set": { "superseded": true } },
                    )
                    .into_future(),
            )
            .await?;
        let mut last = self.last_record(key, tenure).await?;
        for _ in 0..SEAL_ATTEMPTS {
            if last.as_ref().is_some_and(|r| r.is_seal()) {
                return Ok(());
            }
            let slot = last.as_ref().map_or(1, |r| r.seq.slot + 1);
            let seal = log::seal(key, Seq { tenure, slot }, by);
            match self.client.track_raw(self.state.insert_one(seal).into_future()).await {
                Ok(_) => {}
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into_error()),
            }
            last = self.last_record(key, tenure).await?;
        }
        Err(Error::backend(
            true,
            format!("the holder of {key} token {tenure} kept writing while it was being fenced"),
        ))
    }

    /// Seals every tenure below `token` that is not sealed yet: `token - 1`, and further down
    /// while a claim says its own claimer did not finish sealing the ones below it.
    pub(super) async fn seal_older(&self, key: &ViewKey, token: u64, latest: Option<&Document>) -> Result<()> {
        let mut tenure = token - 1;
        let mut claim = latest.cloned();
        while tenure >= 1 {
            self.seal(key, tenure, token).await?;
            let sealed_below = match &claim {
                Some(c) => c.get_bool("sealed").unwrap_or(false),
                None => false,
            };
            if sealed_below || tenure == 1 {
                return Ok(());
            }
            tenure -= 1;
            claim = self.claim(key, tenure).await?;
        }
        Ok(())
    }

    /// Applies every complete commit after the checkpoint document's, in order, then moves
    /// its sequence to `token`'s tenure so that no older commit can move it again.
    pub(super) async fn recover(&self, key: &ViewKey, token: u64) -> Result<()> {
        let (cp, floor) = tokio::join!(
            self.client
                .track(self.state.find_one(doc! { "_id": log::cp_id(key) }).into_future()),
            self.floor_of(key),
        );
        let (cp, floor) = (cp?, floor?);
        let applied = cp.as_ref().and_then(|d| d.get_i64("s").ok()).unwrap_or(0);
        // No tenure since the view was last dropped has started (each starts by moving the
        // checkpoint document to itself): what is there was written before the drop, or
        // arrived late from a holder of before, and is not part of the view. Nothing below
        // the floor is applied again.
        let restart = floor > 0 && applied < floor;
        if restart {
            self.clear_below_floor(key, floor).await?;
        }
        let applied = applied.max(floor);
        let (lo, hi) = log::log_range(key);
        let records: Vec<Document> = self
            .client
            .track(
                self.state
                    .find(doc! { "_id": { "$gte": lo, "$lt": hi } })
                    .sort(doc! { "_id": 1 })
                    .into_future(),
            )
            .await?
            .try_collect()
            .await
            .map_err(crate::error::backend)?;
        let mut group: Vec<Record> = Vec::new();
        let mut redone = 0;
        for doc in records {
            let record = Record::parse(key, doc)?;
            if record.seq.tenure >= token || record.seq.number() <= applied {
                continue;
            }
            if record.is_seal()
                || group
                    .first()
                    .is_some_and(|g| g.group != record.group || g.commit != record.commit)
            {
                // A group that did not end was cut short: it was never committed.
                group.clear();
            }
            if record.is_seal() {
                continue;
            }
            let end = record.end;
            group.push(record);
            if end {
                self.apply(key, &group).await?;
                redone += 1;
                group.clear();
            }
        }
        if redone > 0 {
            debug!(projection = %key, redone, "completed commits cut short");
        }
        // From here on the checkpoint belongs to this tenure.
        let own = Seq { tenure: token, slot: 0 }.number();
        let checkpoint = if restart {
            CheckpointTo::Clear
        } else {
            CheckpointTo::Keep
        };
        self.set_checkpoint(key, own, checkpoint).await?;
        // Older tenures' records are applied: keep their slots (an older holder retrying an
        // insert must still find them taken), drop their contents.
        let (lo, _) = log::log_range(key);
        let (own_lo, _) = log::tenure_range(key, token);
        self.client
            .track(
                self.state
                    .update_many(
                        doc! { "_id": { "$gte": lo, "$lt": own_lo }, "seal": { "$ne": true }, "trimmed": { "$ne": true } },
                        doc! { "$set": { "w": [], "pk": [], "rp": [], "trimmed": true } },
                    )
                    .into_future(),
            )
            .await?;
        Ok(())
    }

    /// Drops the view: fences every tenure given so far, raises the floor past them, and
    /// removes the documents, checkpoint, dead letters and records. A runner that claimed the
    /// view while it was being dropped may have read the floor before it was raised: its
    /// tenure is ended and hidden too, and the drop runs again, until no claim came meanwhile.
    pub(super) async fn drop_tenures(&self, key: &ViewKey) -> Result<()> {
        let mut latest = self.latest_claim(key).await?;
        for _ in 0..DROP_PASSES {
            let next = match &latest {
                Some(latest) => super::token_of(latest)? + 1,
                None => 1,
            };
            // Fenced first: the last holder's tenure is sealed as a takeover seals it, so no
            // commit, renewal or activation under a lease given before the drop lands after
            // it, and its lease is free (`acquire` takes a superseded claim as free).
            if let Some(latest) = &latest {
                self.seal_older(key, next, Some(latest)).await?;
            }
            // A commit already landed may still be applied by a holder that was held up (or
            // killed with its writes in flight), after the drop. The floor, raised before
            // anything is removed, says that whatever any tenure up to the last one wrote is
            // not part of the view: reads skip it, the next holder's writes (of a newer tenure)
            // replace it.
            self.raise_floor(key, Seq { tenure: next, slot: 0 }.number()).await?;
            let view: mongodb::Collection<Document> = self.client.database().collection(&self.view_collection(key));
            self.client.track(view.drop().into_future()).await?;
            // Claims and seals stay: an older holder that wakes up must still find its next
            // slot sealed and its token outdated.
            let (lo, hi) = log::log_range(key);
            self.client
                .track(
                    self.state
                        .delete_many(doc! { "$or": [
                            { "kind": { "$in": ["parked", "cp"] }, "p": key.projection(), "v": i64::from(key.version()) },
                            { "_id": { "$gte": lo, "$lt": hi }, "seal": { "$ne": true } },
                        ] })
                        .into_future(),
                )
                .await?;
            let now = self.latest_claim(key).await?;
            let token = |claim: &Option<Document>| claim.as_ref().map(super::token_of).transpose();
            if token(&now)? == token(&latest)? {
                return Ok(());
            }
            latest = now;
        }
        Err(Error::backend(
            true,
            format!("{key} was claimed again on every one of {DROP_PASSES} passes of its drop"),
        ))
    }

    /// Removes what was written into `key` below its drop floor — a checkpoint, documents and
    /// dead letters a commit of a holder from before the drop left there when it arrived late.
    /// Reads skip them anyway; this keeps them from lingering.
    async fn clear_below_floor(&self, key: &ViewKey, floor: i64) -> Result<()> {
        let view: mongodb::Collection<Document> = self.client.database().collection(&self.view_collection(key));
        let (docs, state) = tokio::join!(
            self.client
                .track_write(view.delete_many(doc! { "_s": { "$lt": floor } }).into_future()),
            self.client.track_write(
                self.state
                    .delete_many(doc! { "$or": [
                        { "_id": log::cp_id(key), "s": { "$lt": floor } },
                        { "kind": "parked", "p": key.projection(), "v": i64::from(key.version()), "_s": { "$lt": floor } },
                    ] })
                    .into_future(),
            ),
        );
        let (docs, state) = (docs?, state?);
        if docs.deleted_count + state.deleted_count > 0 {
            debug!(projection = %key, docs = docs.deleted_count, state = state.deleted_count, "cleared writes from before the drop");
        }
        Ok(())
    }

    /// Moves the checkpoint document to `seq` (and its checkpoint as `checkpoint` says) unless
    /// it is there or past it already; whether there was no checkpoint document (this created
    /// it).
    pub(super) async fn set_checkpoint(&self, key: &ViewKey, seq: i64, checkpoint: CheckpointTo<'_>) -> Result<bool> {
        let mut set = doc! { "kind": "cp", "p": key.projection(), "v": i64::from(key.version()), "s": seq };
        let mut update = doc! {};
        match checkpoint {
            CheckpointTo::Keep => {}
            CheckpointTo::Set(c) => {
                set.insert("cp", c);
            }
            CheckpointTo::Clear => {
                update.insert("$unset", doc! { "cp": "" });
            }
        }
        update.insert("$set", set);
        // Guarded by its own sequence field (`s`; view documents keep theirs in `_s`): a late
        // copy from an older commit finds the document past it and writes nothing.
        let filter = doc! {
            "_id": log::cp_id(key),
            "$or": [ { "s": { "$lt": seq } }, { "s": { "$exists": false } } ],
        };
        let update = self.state.update_one(filter, update).upsert(true).into_future();
        match self.client.track_write_raw(update).await {
            Ok(result) => Ok(result.upserted_id.is_some()),
            // The document is past `seq` already.
            Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into_error()),
        }
    }
}
