//! The [`Aggregate`] trait and [`AggregateRoot`], which holds an aggregate's state, its persisted
//! version and the events recorded since it was loaded.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::Metadata;
use crate::stream::StreamId;

/// A consistency boundary whose state is the fold of its events.
///
/// Events are an enum; each variant's name is its event type.
///
/// ```
/// use cqrsx_core::Aggregate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Counter { value: i64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Added { by: i64 } }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Counter";
///     type Event = CounterEvent;
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Added { by } => self.value += by }
///     }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type: the first part of every stream id of this aggregate.
    const TYPE: &'static str;
    /// The aggregate's event enum.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Folds one event into the state. Events are facts: this cannot fail.
    fn apply(&mut self, event: &Self::Event);
}

/// An event recorded on an [`AggregateRoot`] and not yet saved.
#[derive(Debug, Clone)]
pub struct Uncommitted<E> {
    /// The domain event.
    pub event: E,
    /// Its metadata.
    pub metadata: Metadata,
}

/// An aggregate instance: its stream, state, persisted version and pending events.
#[derive(Debug)]
pub struct AggregateRoot<A: Aggregate> {
    stream: StreamId,
    version: u64,
    snapshot_version: u64,
    state: A,
    pending: Vec<Uncommitted<A::Event>>,
}

impl<A: Aggregate> AggregateRoot<A> {
    /// A root at `version` with `state` (what a repository builds on load).
    pub(crate) fn from_parts(stream: StreamId, version: u64, state: A) -> Self {
        Self {
            stream,
            version,
            snapshot_version: 0,
            state,
            pending: Vec::new(),
        }
    }

    /// The stream this aggregate lives in.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The aggregate id.
    pub fn id(&self) -> &str {
        self.stream.id()
    }

    /// The state, including pending events.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The version stored when this root was loaded or last saved (0: new).
    pub fn persisted_version(&self) -> u64 {
        self.version
    }

    /// The version including pending events.
    pub fn version(&self) -> u64 {
        self.version + self.pending.len() as u64
    }

    /// Applies an event to the state and keeps it for the next save.
    pub fn record(&mut self, event: A::Event) {
        self.record_with(event, Metadata::default());
    }

    /// Like [`AggregateRoot::record`], with metadata.
    pub fn record_with(&mut self, event: A::Event, metadata: Metadata) {
        self.state.apply(&event);
        self.pending.push(Uncommitted { event, metadata });
    }

    /// Events recorded since the last load or save.
    pub fn pending(&self) -> &[Uncommitted<A::Event>] {
        &self.pending
    }

    /// Marks pending events as stored at `version` (used by repositories after an append).
    pub(crate) fn mark_committed(&mut self, version: u64) {
        self.pending.clear();
        self.version = version;
    }

    /// The version of the last snapshot this root was restored from or saved with (0: none).
    pub fn snapshot_version(&self) -> u64 {
        self.snapshot_version
    }

    /// Records that a snapshot at `version` exists (used by the repository).
    pub(crate) fn set_snapshot_version(&mut self, version: u64) {
        self.snapshot_version = version;
    }

    /// Takes the state out.
    pub fn into_state(self) -> A {
        self.state
    }
}
