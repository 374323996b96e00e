//! [`View`]: what a projection handler reads and changes. Changes are staged in a [`Batch`]
//! and reach the store in one commit with the checkpoint after them.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Position;
use crate::projection::store::{Commit, ParkedEvent, ProjectionStore, ViewChange, ViewKey, ViewWrite};
use crate::read_store::validate_document;
use crate::stream::validate_id;

/// The largest view document, in bytes of JSON (every backend can store this much).
pub const MAX_VIEW_DOCUMENT_BYTES: usize = 15 * 1024 * 1024;

/// A document as the runner last knew it in the store.
#[derive(Debug, Clone)]
struct Known {
    data: Option<Value>,
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
    store: Arc<dyn ProjectionStore>,
    key: ViewKey,
    staged: HashMap<String, Staged>,
    parked: Vec<ParkedEvent>,
    /// The staged state of each document before the current event, to undo a failed handler.
    undo: Vec<(String, Option<Staged>)>,
}

impl Batch {
    pub(crate) fn new(store: Arc<dyn ProjectionStore>, key: ViewKey) -> Self {
        Self {
            store,
            key,
            staged: HashMap::new(),
            parked: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// A view on the batch for the handler of the event at `position`.
    pub(crate) fn view<'a>(&'a mut self, cache: &'a mut DocCache, position: Position) -> View<'a> {
        self.undo.clear();
        View {
            batch: self,
            cache,
            position,
            doc: PhantomData,
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

    /// After a successful commit: what the store now holds goes into the cache (a commit lands
    /// whole, and this runner is the only writer while it holds the lease).
    pub(crate) fn settle(self, cache: &mut DocCache) {
        let now = Instant::now();
        for (id, staged) in self.staged {
            let known = match staged.change {
                ViewChange::Put { data, ttl } => Known {
                    data: Some(data),
                    expires: ttl.map(|t| now + t),
                },
                ViewChange::Delete => Known {
                    data: None,
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
/// reach the store together with the checkpoint after the batch, in one commit that lands whole
/// or not at all; so a handler that fails leaves nothing behind, and after a crash the view
/// holds exactly the events before the checkpoint. Any document shape works: one document per
/// stream, one fed by every partition, one global total, documents several event types change.
///
/// `T` is the document type: [`serde_json::Value`] for an untyped [`super::Projection`], the
/// projection's own document type for a [`super::TypedProjection`] (documents are stored as
/// the JSON `T` serializes to). [`View::untyped`] and [`View::typed`] look at the same staged
/// changes as another type.
pub struct View<'a, T = Value> {
    batch: &'a mut Batch,
    cache: &'a mut DocCache,
    position: Position,
    doc: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for View<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("key", &self.batch.key)
            .field("position", &self.position)
            .field("document", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// What [`View::put`] takes for a view of `T` documents: `&T` for any serializable `T`, or a
/// [`serde_json::Value`] by value for an untyped view (moved in, not copied).
pub trait IntoDocument<T: ?Sized> {
    /// The document as JSON.
    fn into_document(self) -> serde_json::Result<Value>;
}

impl IntoDocument<Value> for Value {
    fn into_document(self) -> serde_json::Result<Value> {
        Ok(self)
    }
}

impl<T: Serialize + ?Sized> IntoDocument<T> for &T {
    fn into_document(self) -> serde_json::Result<Value> {
        serde_json::to_value(self)
    }
}

/// Decodes a stored document into `T`; a `Value` is cloned, not decoded.
pub(crate) fn from_document<T: DeserializeOwned + 'static>(id: &str, data: &Value) -> Result<T> {
    let mut out: Option<T> = None;
    if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<Value>>() {
        *slot = Some(data.clone());
    }
    match out {
        Some(doc) => Ok(doc),
        None => T::deserialize(data).map_err(|e| Error::serialization(format!("view document {id}"), e)),
    }
}

impl<T> View<'_, T> {
    /// The position of the event being applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The same view with documents of type `U` (what was staged stays staged).
    pub fn typed<U>(&mut self) -> View<'_, U> {
        View {
            batch: &mut *self.batch,
            cache: &mut *self.cache,
            position: self.position,
            doc: PhantomData,
        }
    }

    /// The same view with untyped documents (JSON values).
    pub fn untyped(&mut self) -> View<'_, Value> {
        self.typed()
    }

    /// A document by id: `None` when there is none.
    ///
    /// A stored document that does not decode into `T` is an [`Error::Serialization`] (the
    /// handler fails, under the runner's error policy).
    pub async fn get(&mut self, id: &str) -> Result<Option<T>>
    where
        T: DeserializeOwned + 'static,
    {
        match self.current(id).await? {
            Some(v) => from_document(id, v).map(Some),
            None => Ok(None),
        }
    }

    /// A document decoded into any `U` (straight from the view's copy, without cloning it).
    pub async fn get_model<U: DeserializeOwned>(&mut self, id: &str) -> Result<Option<U>> {
        match self.current(id).await? {
            Some(v) => U::deserialize(v)
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
            let data = self.batch.store.get(&self.batch.key, id).await?;
            self.cache.insert(id.to_string(), Known { data, expires: None });
        }
        Ok(self.cache.docs[id].live(Instant::now()))
    }

    /// Inserts or replaces a document: `&T` (or, in an untyped view, a JSON object by value).
    /// A document that is not a JSON object, or is larger than [`MAX_VIEW_DOCUMENT_BYTES`], is
    /// an [`Error::InvalidInput`] and stages nothing.
    pub fn put(&mut self, id: &str, data: impl IntoDocument<T>) -> Result<()> {
        let data = data
            .into_document()
            .map_err(|e| Error::serialization(format!("view document {id}"), e))?;
        self.stage(id, ViewChange::Put { data, ttl: None })
    }

    /// Inserts or replaces a document that expires after `ttl`.
    pub fn put_with_ttl(&mut self, id: &str, data: impl IntoDocument<T>, ttl: Duration) -> Result<()> {
        crate::read_store::validate_ttl(ttl)?;
        let data = data
            .into_document()
            .map_err(|e| Error::serialization(format!("view document {id}"), e))?;
        self.stage(id, ViewChange::Put { data, ttl: Some(ttl) })
    }

    /// Inserts or replaces a document from any serializable value (a JSON object).
    pub fn put_model<U: Serialize + ?Sized>(&mut self, id: &str, model: &U) -> Result<()> {
        let data = serde_json::to_value(model).map_err(|e| Error::serialization(format!("view document {id}"), e))?;
        self.stage(id, ViewChange::Put { data, ttl: None })
    }

    /// Changes a document in place: `f` gets the current one (or `T::default()` when there is
    /// none), and what it leaves is put back.
    pub async fn update<F>(&mut self, id: &str, f: F) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Default + 'static,
        F: FnOnce(&mut T),
    {
        let mut doc = self.get(id).await?.unwrap_or_default();
        f(&mut doc);
        self.put_model(id, &doc)
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
        let staged = Staged {
            change,
            position: self.position,
        };
        let before = match self.batch.staged.get_mut(id) {
            Some(current) => Some(std::mem::replace(current, staged)),
            None => self.batch.staged.insert(id.to_string(), staged),
        };
        self.batch.undo.push((id.to_string(), before));
        Ok(())
    }
}
