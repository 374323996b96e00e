//! A commit under a lease: its records inserted in the holder's tenure, then applied with
//! every write guarded by the commit's sequence number; the same commit sent again lands once.

use std::future::IntoFuture;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::raw::{Commit, Lease};
use cqrsx_core::Result;
use mongodb::bson::{doc, Document};

use super::fence::CheckpointTo;
use super::log::{self, Record, Seq};
use super::{lost, MongoProjectionStore, Pending, Tenure};
use crate::client::Tracked;
use crate::error::{check_write_reply, is_duplicate_key};

impl MongoProjectionStore {
    /// Applies one complete commit (its group of records): the documents, dead letters and
    /// activation, then the checkpoint. Every write is guarded by the group's sequence, so
    /// applying it again changes nothing. Whether the checkpoint document was missing: every
    /// holder's tenure starts by writing it (`recover`), and only `drop_view` removes it.
    pub(super) async fn apply(&self, key: &ViewKey, group: &[Record]) -> Result<bool> {
        let Some(last) = group.last() else {
            return Ok(false);
        };
        let seq = last.seq.number();
        let view = self.view_collection(key);
        let mut views = Vec::new();
        let mut state = Vec::new();
        for record in group {
            let applied = log::statements(key, &record.doc, seq)?;
            if !applied.views.is_empty() {
                views.push((record, applied.views));
            }
            state.extend(applied.state);
        }
        let view_writes = futures::future::try_join_all(views.into_iter().map(|(record, updates)| {
            self.guarded_updates(
                &view,
                updates,
                move || Ok(log::statements(key, &record.doc, seq)?.views),
            )
        }));
        let state_writes = async {
            if state.is_empty() {
                return Ok(());
            }
            let again = || {
                let mut all = Vec::new();
                for record in group {
                    all.extend(log::statements(key, &record.doc, seq)?.state);
                }
                Ok(all)
            };
            self.guarded_updates(self.state.name(), state, again).await
        };
        let activation = async {
            if !last.doc.get_bool("act").unwrap_or(false) {
                return Ok(());
            }
            let active = doc! {
                "_id": log::active_id(key),
                "kind": "active",
                "p": key.projection(),
                "v": i64::from(key.version()),
            };
            match self.client.track_raw(self.state.insert_one(active).into_future()).await {
                Ok(_) => Ok(()),
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => Ok(()),
                Err(e) => Err(e.into_error()),
            }
        };
        let (views, state, activation) = tokio::join!(view_writes, state_writes, activation);
        views?;
        state?;
        activation?;
        let checkpoint = last.doc.get_str("cp").map_or(CheckpointTo::Keep, CheckpointTo::Set);
        self.set_checkpoint(key, seq, checkpoint).await
    }

    /// Runs guarded upserts (see `log::statements`) in one `update` command. A duplicate key is
    /// a statement whose document is already past this commit. A server may stop at the first
    /// write error whatever `ordered: false` asks (FerretDB 1.x does, and does not say which
    /// statement failed), leaving the statements after it undone: so a reply with any
    /// duplicate sends each statement again on its own — a path only a commit applied a second
    /// time takes (a retry, a recovery, a stale holder). `again` makes the statements again for
    /// it (the first ones are moved into the command).
    async fn guarded_updates(
        &self,
        collection: &str,
        updates: Vec<Document>,
        again: impl Fn() -> Result<Vec<Document>>,
    ) -> Result<()> {
        let database = self.client.database();
        let command = doc! { "update": collection, "updates": updates, "ordered": false };
        let reply = self.client.track_write(database.run_command(command)).await?;
        check_write_reply(&reply, true)?;
        if reply.get_array("writeErrors").map_or(true, |e| e.is_empty()) {
            return Ok(());
        }
        for update in again()? {
            let command = doc! { "update": collection, "updates": [update] };
            let reply = self.client.track_write(database.run_command(command)).await?;
            check_write_reply(&reply, true)?;
        }
        Ok(())
    }

    /// Inserts a commit's records from `first` on; `LeaseLost` when a slot holds a seal (or
    /// another commit) instead.
    pub(super) async fn insert_records(&self, lease: &Lease, records: &[Document], id: &str) -> Result<()> {
        for record in records {
            match self
                .client
                .track_raw(self.state.insert_one(record.clone()).into_future())
                .await
            {
                Ok(_) => {}
                Err(Tracked::Driver(e)) if is_duplicate_key(&e) => {
                    // Ours, from an earlier try whose reply was lost — or a seal.
                    let slot = record.get_str("_id").unwrap_or_default();
                    let found = self
                        .client
                        .track(
                            self.state
                                .find_one(doc! { "_id": slot })
                                .projection(doc! { "c": 1 })
                                .into_future(),
                        )
                        .await?;
                    if found.as_ref().and_then(|d| d.get_str("c").ok()) != Some(id) {
                        return Err(lost(lease, "a newer lease sealed this one"));
                    }
                }
                Err(e) => return Err(e.into_error()),
            }
        }
        Ok(())
    }

    /// Writes a commit (or an activation) under `lease`: its records, then their application.
    /// The same commit sent again after an error goes to the same slots, so it lands once.
    pub(super) async fn commit_log(&self, lease: &Lease, commit: Commit, activate: bool) -> Result<()> {
        let key = &lease.key;
        let fresh = |first: u32, commit: Commit| Pending {
            id: cqrsx_core::Uuid::now_v7().simple().to_string(),
            first,
            commit,
            activate,
        };
        let known = self.tenure(key, lease.token);
        let pending = match known {
            Tenure {
                next: Some(next),
                pending: None,
                ref owner,
            } if *owner == lease.owner => fresh(next, commit),
            Tenure {
                pending: Some(p),
                ref owner,
                ..
            } if *owner == lease.owner && p.commit == commit && p.activate == activate => p,
            // The lease was taken by another process (or is forged), or an earlier commit's
            // outcome is unknown: its claim and the tenure's last record say where it stands.
            Tenure { pending, .. } => {
                let (claim, last) = tokio::join!(self.claim(key, lease.token), self.last_record(key, lease.token));
                let granted = claim?.is_some_and(|c| {
                    c.get_str("owner").ok() == Some(lease.owner.as_str()) && !c.get_bool("superseded").unwrap_or(false)
                });
                if !granted {
                    return Err(lost(lease, "no such lease was granted, or a newer one was"));
                }
                let last = last?;
                if last.as_ref().is_some_and(Record::is_seal) {
                    self.set_tenure(key, lease.token, None);
                    return Err(lost(lease, "a newer lease sealed this one"));
                }
                if let Some(p) = pending {
                    if last
                        .as_ref()
                        .is_some_and(|r| r.end && r.commit.as_deref() == Some(p.id.as_str()))
                    {
                        // It landed though its sender saw an error: it is committed, and is
                        // applied before anything after it.
                        self.finish(lease, &p).await?;
                    }
                }
                fresh(last.as_ref().map_or(1, |r| r.seq.slot + 1), commit)
            }
        };
        self.set_tenure(
            key,
            lease.token,
            Some(Tenure {
                owner: lease.owner.clone(),
                next: None,
                pending: Some(pending.clone()),
            }),
        );
        let records = self.finish(lease, &pending).await?;
        self.set_tenure(
            key,
            lease.token,
            Some(Tenure {
                owner: lease.owner.clone(),
                next: Some(pending.first + records),
                pending: None,
            }),
        );
        Ok(())
    }

    /// Inserts a pending commit's records and applies them, while this tenure's records before
    /// them (applied by the commit before) are removed; how many records it has.
    pub(super) async fn finish(&self, lease: &Lease, pending: &Pending) -> Result<u32> {
        let key = &lease.key;
        let first = Seq {
            tenure: lease.token,
            slot: pending.first,
        };
        let records = log::encode_commit(key, &pending.commit, pending.activate, &pending.id, first)?;
        self.insert_records(lease, &records, &pending.id).await?;
        let group = records
            .into_iter()
            .map(|d| Record::parse(key, d))
            .collect::<Result<Vec<_>>>()?;
        let cleanup = async {
            if pending.first == 1 {
                return Ok(());
            }
            // Nothing of this tenure lands past a seal, so no seal is among these.
            let (lo, _) = log::tenure_range(key, lease.token);
            let below = log::record_id(key, first);
            self.client
                .track(
                    self.state
                        .delete_many(doc! { "_id": { "$gte": lo, "$lt": below }, "seal": { "$ne": true }, "trimmed": { "$ne": true } })
                        .into_future(),
                )
                .await
                .map(|_| ())
        };
        let (applied, cleaned) = tokio::join!(self.apply(key, &group), cleanup);
        let dropped = applied?;
        cleaned?;
        if dropped {
            // The view was dropped after this commit's records landed (its holder was held up
            // between landing and applying them): what it just wrote is taken back.
            self.withdraw(key, &group).await?;
            return Err(lost(lease, "the view was dropped"));
        }
        Ok(group.len() as u32)
    }

    /// Removes what applying `group` wrote into a dropped view: its documents, dead letters,
    /// checkpoint and records (each carries the group's sequence), so that neither a reader
    /// of the dropped version nor a later holder of it finds them.
    async fn withdraw(&self, key: &ViewKey, group: &[Record]) -> Result<()> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(());
        };
        let seq = last.seq.number();
        tracing::warn!(projection = %key, seq, "a commit landed in a view dropped meanwhile; withdrawing it");
        let view: mongodb::Collection<Document> = self.client.database().collection(&self.view_collection(key));
        let after = log::record_id(
            key,
            Seq {
                tenure: last.seq.tenure,
                slot: last.seq.slot + 1,
            },
        );
        let (docs, state) = tokio::join!(
            self.client
                .track_write(view.delete_many(doc! { "_s": seq }).into_future()),
            self.client.track_write(
                self.state
                    .delete_many(doc! { "$or": [
                        { "_id": log::cp_id(key), "s": seq },
                        { "kind": "parked", "p": key.projection(), "v": i64::from(key.version()), "_s": seq },
                        { "_id": { "$gte": log::record_id(key, first.seq), "$lt": after }, "seal": { "$ne": true } },
                    ] })
                    .into_future(),
            ),
        );
        docs?;
        state?;
        Ok(())
    }
}
