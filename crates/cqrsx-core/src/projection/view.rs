//! [`View`]: what a projection handler reads and changes. Changes are staged in a [`Batch`]
//! and reach the store in one commit with the checkpoint after them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Position;
use crate::projection::store::{CheckpointStore, Commit, ParkedEvent, ViewChange, ViewKey, ViewWrite};
use crate::read_store::validate_document;
use crate::stream::validate_id;

/// The largest view document, in bytes of JSON (every backend can store this much).
pub const MAX_VIEW_DOCUMENT_BYTES: usize = 15 * 1024 * 1024;

/// A document as the runner last knew it in the store.
#[derive(Debug, Clone)]
struct Known {
    data: Option<Value>,
    applied: Option<Position>,
    expires: Option<Instant>,
}

impl Known {
    fn live(&self, now: Instant) -> Option<&Value> {
        match self.expires {
            Some(t) if t <= now => None,
            _ => self.data.as_ref(),
        }
    }
}

/// A staged change and the event that made it.
#[derive(Debug, Clone)]
struct Staged {
    change: ViewChange,
    position: Position,
    replay_of: Option<Position>,
}

/// The documents a runner knows, shared by its batches: one runner holds the lease, so what it
/// wrote is what the store holds (bounded; cleared when full or after a failed commit).
#[derive(Debug, Default)]
pub(crate) struct DocCache {
    docs: HashMap<String, Known>,
    capacity: usize,
}

impl DocCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            docs: HashMap::new(),
            capacity,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.docs.clear();
    }

    /// Keeps `known` (a cache of capacity 0 still keeps the document last read, which the
    /// handler reading it borrows).
    fn insert(&mut self, id: String, known: Known) {
        if self.docs.len() >= self.capacity.max(1) && !self.docs.contains_key(&id) {
            self.docs.clear();
        }
        self.docs.insert(id, known);
    }
}

/// The changes of one page of events, staged until the runner commits them.
pub(crate) struct Batch {
    store: Arc<dyn CheckpointStore>,
    key: ViewKey,
    atomic: bool,
    staged: HashMap<String, Staged>,
    parked: Vec<ParkedEvent>,
    /// Documents whose stored `applied` position the batch read before changing them.
    read: HashSet<String>,
    /// The staged state of each document before the current event, to undo a failed handler.
    undo: Vec<(String, Option<Staged>)>,
}

impl Batch {
    pub(crate) fn new(store: Arc<dyn CheckpointStore>, key: ViewKey) -> Self {
        let atomic = store.capabilities().atomic_commit;
        Self {
            store,
            key,
            atomic,
            staged: HashMap::new(),
            parked: Vec::new(),
            read: HashSet::new(),
            undo: Vec::new(),
        }
    }

    /// A view on the batch for the handler of the event at `position`.
    pub(crate) fn view<'a>(
        &'a mut self,
        cache: &'a mut DocCache,
        position: Position,
        replay_of: Option<Position>,
    ) -> View<'a> {
        self.undo.clear();
        View {
            batch: self,
            cache,
            position,
            replay_of,
            skip: HashSet::new(),
        }
    }

    /// Drops what the last handler staged (it failed).
    pub(crate) fn rollback_event(&mut self) {
        for (id, before) in self.undo.drain(..).rev() {
            match before {
                Some(s) => self.staged.insert(id, s),
                None => self.staged.remove(&id),
            };
        }
    }

    pub(crate) fn park(&mut self, parked: ParkedEvent) {
        self.parked.push(parked);
    }

    /// The commit of everything staged (each document's last change), with `checkpoint`
    /// after it.
    pub(crate) fn commit(&self, checkpoint: Option<Checkpoint>, replayed: Vec<Position>) -> Commit {
        let mut writes: Vec<ViewWrite> = self
            .staged
            .iter()
            .map(|(id, s)| ViewWrite {
                id: id.clone(),
                change: s.change.clone(),
                position: s.position,
                replay_of: s.replay_of,
            })
            .collect();
        writes.sort_by(|a, b| a.position.cmp(&b.position).then_with(|| a.id.cmp(&b.id)));
        Commit {
            writes,
            parked: self.parked.clone(),
            replayed,
            checkpoint,
        }
    }

    /// After a successful commit: what the store now holds goes into the cache. Where commits
    /// are guarded rather than atomic, a document written without being read first may have
    /// been refused by its guard (a repeat after a crash), so it is forgotten instead.
    pub(crate) fn settle(self, cache: &mut DocCache) {
        let now = Instant::now();
        for (id, staged) in self.staged {
            if !self.atomic && !self.read.contains(&id) {
                cache.docs.remove(&id);
                continue;
            }
            let known = match staged.change {
                ViewChange::Put { data, ttl } => Known {
                    data: Some(data),
                    applied: Some(staged.position),
                    expires: ttl.map(|t| now + t),
                },
                ViewChange::Delete => Known {
                    data: None,
                    applied: Some(staged.position),
                    expires: None,
                },
            };
            cache.insert(id, known);
        }
    }
}

/// The view documents as a projection handler sees them while it applies one event.
///
/// Reads see the changes staged by earlier events of the same batch; changes are staged and
/// reach the store with the checkpoint after the batch, so a handler that fails leaves nothing
/// behind. A document's new state must follow from its own current state and the event (the
/// usual one-document-per-key view): that is what makes a repeat after a crash harmless where
/// the store guards documents by position.
pub struct View<'a> {
    batch: &'a mut Batch,
    cache: &'a mut DocCache,
    position: Position,
    replay_of: Option<Position>,
    /// Documents that already include this event (stored `applied` at or past it).
    skip: HashSet<String>,
}

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("key", &self.batch.key)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl View<'_> {
    /// The position of the event being applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// A document by id.
    pub async fn get(&mut self, id: &str) -> Result<Option<Value>> {
        Ok(self.current(id).await?.cloned())
    }

    /// A document decoded into `T` (straight from the view's copy, without cloning it).
    pub async fn get_model<T: DeserializeOwned>(&mut self, id: &str) -> Result<Option<T>> {
        match self.current(id).await? {
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| Error::serialization(format!("view document {id}"), e)),
            None => Ok(None),
        }
    }

    /// The document as the handler should see it: staged by an earlier event of the batch,
    /// else as the store holds it (from the runner's cache, or read).
    async fn current(&mut self, id: &str) -> Result<Option<&Value>> {
        validate_id("view document id", id)?;
        if self.batch.staged.contains_key(id) {
            return Ok(match &self.batch.staged[id].change {
                ViewChange::Put { data, .. } => Some(data),
                ViewChange::Delete => None,
            });
        }
        if !self.cache.docs.contains_key(id) {
            let doc = self.batch.store.get(&self.batch.key, id).await?;
            let known = Known {
                applied: doc.as_ref().and_then(|d| d.applied),
                data: doc.and_then(|d| d.data),
                expires: None,
            };
            self.cache.insert(id.to_string(), known);
        }
        if !self.batch.read.contains(id) {
            self.batch.read.insert(id.to_string());
        }
        let known = &self.cache.docs[id];
        if self.replay_of.is_none() && known.applied.is_some_and(|applied| applied >= self.position) {
            // The store already holds this event's effect on the document (a commit cut short
            // before its checkpoint): changes to it while applying the event are dropped.
            self.skip.insert(id.to_string());
        }
        Ok(known.live(Instant::now()))
    }

    /// Inserts or replaces a document.
    pub fn put(&mut self, id: &str, data: Value) -> Result<()> {
        self.stage(id, ViewChange::Put { data, ttl: None })
    }

    /// Inserts or replaces a document that expires after `ttl`.
    pub fn put_with_ttl(&mut self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        crate::read_store::validate_ttl(ttl)?;
        self.stage(id, ViewChange::Put { data, ttl: Some(ttl) })
    }

    /// Inserts or replaces a document from any serializable value (a JSON object).
    pub fn put_model<T: Serialize + ?Sized>(&mut self, id: &str, model: &T) -> Result<()> {
        let data = serde_json::to_value(model).map_err(|e| Error::serialization(format!("view document {id}"), e))?;
        self.put(id, data)
    }

    /// Removes a document.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        self.stage(id, ViewChange::Delete)
    }

    fn stage(&mut self, id: &str, change: ViewChange) -> Result<()> {
        match &change {
            ViewChange::Put { data, .. } => {
                validate_document(id, data, MAX_VIEW_DOCUMENT_BYTES)?;
            }
            ViewChange::Delete => validate_id("view document id", id)?,
        }
        if self.skip.contains(id) {
            return Ok(());
        }
        let staged = Staged {
            change,
            position: self.position,
            replay_of: self.replay_of,
        };
        let before = match self.batch.staged.get_mut(id) {
            Some(current) => Some(std::mem::replace(current, staged)),
            None => self.batch.staged.insert(id.to_string(), staged),
        };
        self.batch.undo.push((id.to_string(), before));
        Ok(())
    }
}
