//! The [`ProjectionStore`] trait a backend implements for projections: checkpoints, leases with
//! fencing tokens, the views' documents and their atomic commit, dead letters.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::{Position, RecordedEvent, Timestamp};
use crate::read_store::ReadStore;
use crate::stream::validate_type_name;

/// The most shards a projection can run as.
pub const MAX_SHARDS: u16 = 256;

/// One shard of a projection run as several: shard `index` of `count`. An event belongs to the shard of its stream
/// ([`Shard::of_stream`]), so one stream's events stay in order in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    index: u16,
    count: u16,
}

impl Shard {
    /// Shard `index` (from 0) of `count` (2 to [`MAX_SHARDS`]; one shard is an unsharded
    /// projection).
    pub fn new(index: u16, count: u16) -> Result<Self> {
        if !(2..=MAX_SHARDS).contains(&count) || index >= count {
            return Err(Error::InvalidInput(format!(
                "shard {index} of {count} cannot exist: a projection runs as 2 to {MAX_SHARDS} shards, numbered from 0"
            )));
        }
        Ok(Self { index, count })
    }

    /// Every shard of `count`, in order.
    pub fn all(count: u16) -> Result<Vec<Self>> {
        (0..count).map(|i| Self::new(i, count)).collect()
    }

    /// This shard's number, from 0.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// How many shards the projection runs as.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The shard of `count` that the events of stream `key` (a [`crate::StreamId::key`]) belong
    /// to: FNV-1a of the key's bytes, modulo `count`. Stable across processes, versions and
    /// releases (it is part of the stored layout).
    pub fn of_stream(key: &str, count: u16) -> u16 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % u64::from(count.max(1))) as u16
    }

    /// Whether the event of stream `key` belongs to this shard.
    pub fn owns(&self, stream_key: &str) -> bool {
        Self::of_stream(stream_key, self.count) == self.index
    }

    /// The suffix a shard's stored name carries: `.s{index}of{count}`.
    fn suffix(&self) -> String {
        format!(".s{}of{}", self.index, self.count)
    }

    /// The shard a stored name ends with, and the name before it.
    fn parse(name: &str) -> Option<(&str, Self)> {
        Self::parse_marked(name, ".s")
    }

    /// The `{marker}{index}of{count}` a stored name ends with, and the name before it.
    fn parse_marked<'a>(name: &'a str, marker: &str) -> Option<(&'a str, Self)> {
        let (base, suffix) = name.rsplit_once(marker)?;
        let (index, count) = suffix.split_once("of")?;
        let canonical =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if base.is_empty() || !canonical(index) || !canonical(count) {
            return None;
        }
        let shard = Self::new(index.parse().ok()?, count.parse().ok()?).ok()?;
        Some((base, shard))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

/// One version of one projection — or of one shard of it: the unit that has a checkpoint, a
/// lease and a view.
///
/// A shard's key is stored under the name `{projection}.s{index}of{count}` (so every backend
/// keeps it as it keeps any projection, with its own lease, fencing token, checkpoint, view,
/// dead letters and active version); [`ViewKey::new`] reads such a name back as that shard.
///
/// A sharded projection's runner processes also hold *member slots*, leases under the name
/// `{projection}.m{slot}of{count}` ([`ViewKey::member`]); such a key has no view of its own, and
/// lists of projections leave it out ([`ViewKey::is_member`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewKey {
    projection: String,
    version: u32,
    shard: Option<Shard>,
    member: Option<Shard>,
}

impl ViewKey {
    /// A validated key: the name is a type name (`[A-Za-z0-9_.-]`, at most 128 bytes), the
    /// version at least 1. A name ending in `.s{index}of{count}` is that shard of the
    /// projection named before it.
    pub fn new(projection: impl Into<String>, version: u32) -> Result<Self> {
        let projection = projection.into();
        validate_type_name("projection name", &projection)?;
        if projection.len() > 128 {
            return Err(Error::InvalidInput(format!(
                "projection name {projection:?} is longer than 128 bytes"
            )));
        }
        if version == 0 {
            return Err(Error::InvalidInput(format!(
                "projection {projection} has version 0; versions start at 1"
            )));
        }
        let shard = Shard::parse(&projection).map(|(_, shard)| shard);
        let member = Shard::parse_marked(&projection, ".m").map(|(_, slot)| slot);
        Ok(Self {
            projection,
            version,
            shard,
            member,
        })
    }

    /// The key of member slot `slot` (slot `index` of `count`) of the processes that run
    /// `projection` at `version` as `count` shards, stored as `{projection}.m{index}of{count}`:
    /// a lease a process holds while it takes part in running the shards (see
    /// [`crate::projection::ShardedRunner`]). It names no view.
    pub fn member(projection: &str, version: u32, slot: Shard) -> Result<Self> {
        if Shard::parse(projection).is_some() || Shard::parse_marked(projection, ".m").is_some() {
            return Err(Error::InvalidInput(format!(
                "projection {projection:?} already names a shard or a member slot"
            )));
        }
        Self::new(format!("{projection}.m{}of{}", slot.index, slot.count), version)
    }

    /// The key of `shard` of `projection` at `version`.
    pub fn sharded(projection: &str, version: u32, shard: Shard) -> Result<Self> {
        if Shard::parse(projection).is_some() {
            return Err(Error::InvalidInput(format!(
                "projection {projection:?} already names a shard; shard the projection it belongs to"
            )));
        }
        Self::new(format!("{projection}{}", shard.suffix()), version)
    }

    /// The name the store keeps this key under: the projection's name, with the shard suffix
    /// for a shard.
    pub fn projection(&self) -> &str {
        &self.projection
    }

    /// The projection's own name (without a shard's suffix).
    pub fn name(&self) -> &str {
        match (
            Shard::parse(&self.projection),
            Shard::parse_marked(&self.projection, ".m"),
        ) {
            (Some((base, _)), _) if self.shard.is_some() => base,
            (_, Some((base, _))) if self.member.is_some() => base,
            _ => &self.projection,
        }
    }

    /// The shard this key is of, if it is one.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The member slot this key is, if it is one ([`ViewKey::member`]).
    pub fn member_slot(&self) -> Option<Shard> {
        self.member
    }

    /// Whether this key is a member slot rather than a view (lists of views leave it out).
    pub fn is_member(&self) -> bool {
        self.member.is_some()
    }

    /// The projection's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The same projection (or shard) at another version.
    pub fn at_version(&self, version: u32) -> Result<Self> {
        Self::new(self.projection.clone(), version)
    }
}

impl fmt::Display for ViewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.v{}", self.projection, self.version)
    }
}

/// The right to run one projection version, held by one runner at a time.
///
/// `token` is a fencing token: every acquisition gets a larger one, and a store refuses a
/// commit whose token is not the current holder's, so a runner that lost its lease (it stalled
/// past the TTL and another took over) cannot write after that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it is a lease on.
    pub key: ViewKey,
    /// Who holds it.
    pub owner: String,
    /// The fencing token.
    pub token: u64,
}

/// Who holds a lease now, as an operator reads it (reading takes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The owner the lease was given to.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// How long it stays valid unless renewed.
    pub expires_in: Duration,
}

/// The requests to replay a version's parked events ([`ProjectionStore::request_replay`]):
/// how many were made, and how many of them the lease holder has handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayRequests {
    /// Requests made, numbered from 1.
    pub requested: u64,
    /// The number of the last request handled (every one up to it is handled).
    pub handled: u64,
    /// Events the last handled replay applied (those that still failed stay parked).
    pub replayed: u64,
}

/// One change to a view document, made while applying the event at `position`.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewWrite {
    /// The document id.
    pub id: String,
    /// What happens to it.
    pub change: ViewChange,
    /// The event that made the change (for the store's traces; a commit is applied whole, so
    /// no store needs it to decide anything).
    pub position: Position,
}

/// What a [`ViewWrite`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewChange {
    /// Inserts or replaces the document; it expires after `ttl` when one is given.
    Put {
        /// The new document.
        data: Value,
        /// Its time to live.
        ttl: Option<Duration>,
    },
    /// Removes the document.
    Delete,
}

/// An event a projection could not apply, kept aside so the rest can go on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParkedEvent {
    /// The event's global position.
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its type.
    pub event_type: String,
    /// The handler's last error.
    pub error: String,
    /// How many times the handler was tried.
    pub attempts: u32,
    /// When it was parked.
    pub parked_at: Timestamp,
}

impl ParkedEvent {
    /// The record of `event` failing with `error` after `attempts` tries.
    pub fn of(event: &RecordedEvent, error: impl Into<String>, attempts: u32) -> Self {
        Self {
            position: event.position,
            stream: event.stream.key().to_string(),
            version: event.version,
            event_type: event.event_type.clone(),
            error: error.into(),
            attempts,
            parked_at: Timestamp::now(),
        }
    }
}

/// What one [`ProjectionStore::commit`] writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// View changes, in the order they were made (a later change to a document wins).
    pub writes: Vec<ViewWrite>,
    /// Events to park.
    pub parked: Vec<ParkedEvent>,
    /// Parked events (by position) whose replay `writes` carry: removed from the dead letters.
    pub replayed: Vec<Position>,
    /// The checkpoint after everything in this commit; `None` leaves it as it is.
    pub checkpoint: Option<Checkpoint>,
}

impl Commit {
    /// Checks every write before a store sends anything: valid ids, documents a view can hold
    /// (see [`crate::raw::validate_document`]), positive TTLs.
    pub fn validate(&self) -> Result<()> {
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint.validate()?;
        }
        for write in &self.writes {
            crate::event_store::validate_number("view write position offset", write.position.offset)?;
            match &write.change {
                ViewChange::Put { data, ttl } => {
                    crate::read_store::validate_document(&write.id, data, crate::projection::MAX_VIEW_DOCUMENT_BYTES)?;
                    if let Some(ttl) = ttl {
                        crate::read_store::validate_ttl(*ttl)?;
                    }
                }
                ViewChange::Delete => crate::stream::validate_id("view document id", &write.id)?,
            }
        }
        Ok(())
    }
}

/// The shortest lease a store grants.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(100);
/// The longest lease a store grants (a day: a runner renews it every third of it).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Checks a lease TTL before anything is sent: [`MIN_LEASE_TTL`] to [`MAX_LEASE_TTL`].
pub fn validate_lease_ttl(ttl: Duration) -> Result<()> {
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(Error::InvalidInput(format!(
            "a lease TTL must be between {MIN_LEASE_TTL:?} and {} h, got {ttl:?}",
            MAX_LEASE_TTL.as_secs() / 3600
        )));
    }
    Ok(())
}

/// Where projections keep their state, served by every backend: checkpoints, leases with
/// fencing tokens, the view documents, dead letters, and which version of a projection is the
/// active one.
///
/// Contract (the conformance suite and the fault suite check it, in raw storage too):
/// - **Leases.** [`ProjectionStore::acquire`] grants a lease to one owner at a time; an owner
///   that holds it (or held it, and it expired unclaimed) gets it again at once with a larger
///   token; another owner gets it only after it expired or was released. TTLs outside
///   [`MIN_LEASE_TTL`]..=[`MAX_LEASE_TTL`] are refused with [`Error::InvalidInput`] before
///   anything is sent.
/// - **Fencing.** Once a larger token was granted, everything the older lease sends is refused
///   with [`Error::LeaseLost`] and changes nothing: no view document, no dead letter, no
///   checkpoint, no active version — whatever the older holder had in flight.
/// - **Atomic commits.** A [`ProjectionStore::commit`] — view changes, dead letters, the
///   checkpoint, an activation — lands whole or not at all, as seen by the runner that holds
///   the lease next: a store that cannot write it in one step (MongoDB without transactions)
///   writes it first as one record and completes a cut-short commit in `acquire`, before the
///   new holder reads anything. The stored checkpoint is never ahead of the view documents.
///   A commit may be sent again after an error whose outcome is unknown: it is applied once.
/// - Documents written through a commit are what [`ProjectionStore::get`] and
///   [`ProjectionStore::view`] read.
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// Takes the lease of `key` for `owner` for `ttl`, or `None` while another owner holds it.
    /// The lease it returns fences every older one, and the state it guards is complete: a
    /// commit an older holder had in flight is either whole or gone.
    async fn acquire(&self, key: &ViewKey, owner: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends a held lease by `ttl`; [`Error::LeaseLost`] when it was taken over, dropped, or
    /// is not one this store gave (a lease is its token *and* its owner).
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<()>;

    /// Gives a lease up, so another runner can take it at once. Releasing a lease that was
    /// taken over does nothing.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The stored checkpoint of `key`, if it has one.
    async fn checkpoint(&self, key: &ViewKey) -> Result<Option<Checkpoint>>;

    /// A live view document; `None` when there is none (never written, deleted or expired).
    async fn get(&self, key: &ViewKey, id: &str) -> Result<Option<Value>>;

    /// Stores a commit under `lease`, whole or not at all; [`Error::LeaseLost`] (and nothing
    /// written) when the lease was taken over.
    async fn commit(&self, lease: &Lease, commit: Commit) -> Result<()>;

    /// The parked events of `key`, oldest position first.
    async fn parked(&self, key: &ViewKey) -> Result<Vec<ParkedEvent>>;

    /// The version of `projection` that readers use, once one was activated.
    async fn active_version(&self, projection: &str) -> Result<Option<u32>>;

    /// Makes the lease's version the active one (never moves back to a lower version); fenced
    /// like a commit.
    async fn activate(&self, lease: &Lease) -> Result<()>;

    /// Removes a version's documents, checkpoint and dead letters (after a newer one took over),
    /// and fences it: no lease given before the drop commits, renews or activates after it
    /// (each is [`Error::LeaseLost`]); a new lease on the version gets a larger token.
    async fn drop_view(&self, key: &ViewKey) -> Result<()>;

    /// A read store over a version's documents, for queries.
    fn view(&self, key: &ViewKey) -> Result<Arc<dyn ReadStore>>;

    /// Every projection version a lease was ever granted for, by name and version: what an
    /// operator lists. A dropped version stays listed (its fencing token is kept).
    async fn views(&self) -> Result<Vec<ViewKey>>;

    /// Who holds the lease of `key` now; `None` when nobody does (never taken, released,
    /// expired, or ended by a drop). Reading it changes nothing.
    async fn holder(&self, key: &ViewKey) -> Result<Option<LeaseHolder>>;

    /// Asks whichever runner holds `key` to replay its parked events through its handler, as
    /// [`crate::ProjectionHandle::replay_parked`] does in its own process; returns the
    /// request's number. A runner checks for requests every third of its lease TTL and handles
    /// all made before it looked; with no runner, they wait for the next one.
    async fn request_replay(&self, key: &ViewKey) -> Result<u64>;

    /// The replay requests of `key`: made, and handled.
    async fn replay_requests(&self, key: &ViewKey) -> Result<ReplayRequests>;

    /// Records that the requests up to `upto` were handled by a replay that applied `replayed`
    /// events; never moves back to an older request.
    async fn replay_handled(&self, key: &ViewKey, upto: u64, replayed: u64) -> Result<()>;

    /// The active version of `projection` and a read store over its documents: what a query
    /// of the projection's view should use. [`Error::NotFound`] for a projection that never
    /// ran; [`Error::InvalidInput`] for a name no projection can have.
    async fn active_view(&self, projection: &str) -> Result<(ViewKey, Arc<dyn ReadStore>)> {
        ViewKey::new(projection, 1)?;
        let version = self
            .active_version(projection)
            .await?
            .ok_or_else(|| Error::NotFound(format!("projection {projection} has no active version")))?;
        let key = ViewKey::new(projection, version)?;
        let view = self.view(&key)?;
        Ok((key, view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_key_round_trips_through_its_stored_name() -> Result<()> {
        let key = ViewKey::sharded("orders", 3, Shard::new(2, 4)?)?;
        assert_eq!(key.projection(), "orders.s2of4");
        assert_eq!(key.name(), "orders");
        assert_eq!(key.shard(), Some(Shard::new(2, 4)?));
        let read_back = ViewKey::new(key.projection(), 3)?;
        assert_eq!(read_back, key);
        assert_eq!(read_back.at_version(4)?.shard(), key.shard());
        Ok(())
    }

    #[test]
    fn names_that_only_look_like_shards_are_plain_projections() -> Result<()> {
        for name in [
            "orders.s4of4",
            "orders.s01of4",
            "orders.s1of1",
            "orders.s1of",
            ".s0of2",
            "orders.sxof2",
            "a.s0of257",
        ] {
            let key = ViewKey::new(name, 1)?;
            assert_eq!(key.shard(), None, "{name}");
            assert_eq!(key.name(), name);
        }
        assert!(ViewKey::sharded("orders.s0of2", 1, Shard::new(1, 2)?).is_err());
        assert!(Shard::new(2, 2).is_err() && Shard::new(0, 1).is_err() && Shard::new(0, MAX_SHARDS + 1).is_err());
        Ok(())
    }

    #[test]
    fn a_member_slot_key_round_trips_and_names_no_shard() -> Result<()> {
        let key = ViewKey::member("orders", 2, Shard::new(1, 4)?)?;
        assert_eq!(key.projection(), "orders.m1of4");
        assert_eq!(key.name(), "orders");
        assert_eq!(
            (key.member_slot(), key.shard(), key.is_member()),
            (Some(Shard::new(1, 4)?), None, true)
        );
        assert_eq!(ViewKey::new(key.projection(), 2)?, key);
        assert!(!ViewKey::sharded("orders", 2, Shard::new(1, 4)?)?.is_member());
        assert!(ViewKey::member("orders.s0of2", 1, Shard::new(1, 2)?).is_err());
        assert!(ViewKey::member("orders.m0of2", 1, Shard::new(1, 2)?).is_err());
        assert_eq!(ViewKey::new("orders.m4of4", 1)?.member_slot(), None);
        Ok(())
    }

    #[test]
    fn streams_spread_over_shards_and_stay_put() {
        // Part of the stored layout: these values must never change.
        assert_eq!(
            [
                Shard::of_stream("order-o1", 4),
                Shard::of_stream("order-o2", 4),
                Shard::of_stream("user-42", 16)
            ],
            [2, 3, 11]
        );
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[Shard::of_stream(&format!("order-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
