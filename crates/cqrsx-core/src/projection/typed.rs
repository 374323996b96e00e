//! Typed projections: a [`TypedProjection`] declares its event enum and its document type and
//! gets each event decoded and upcast through the service's own [`EventCodec`], in an
//! [`Envelope`]; [`Typed`] runs it on the [`super::ProjectionRunner`] as any [`Projection`].

use std::collections::HashSet;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::trace;

use super::{HandlerResult, Projection, View};
use crate::codec::EventCodec;
use crate::error::{Error, Result};
use crate::event::{EventFilter, Metadata, Position, RecordedEvent, Timestamp};
use crate::stream::StreamId;
use crate::tagged::variant_names;
use crate::Uuid;

/// What a [`TypedProjection`] does with an event whose type is not a variant of its event enum
/// (one its filter lets through: e.g. a filter by aggregate type, and a type added to the write
/// side after the projection was built).
///
/// An *unknown type* is told apart by its name alone, before anything is decoded. A payload
/// of a known type that does not decode (corrupt bytes, a missing upcaster, a schema version
/// newer than the registry's) is never skipped: it fails the handler, and the runner's
/// [`super::ErrorPolicy`] retries it, then stops at it or parks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEvents {
    /// The event is passed over, as if the filter had left it out (the default: a projection
    /// usually cares about some of the events it is shown). It still moves the checkpoint.
    #[default]
    Skip,
    /// The event fails the handler like a corrupt payload: the runner stops at it or parks it.
    /// For a projection that must see every event of its aggregate types.
    Fail,
}

/// One decoded event and its envelope, as a [`TypedProjection`] receives it.
#[derive(Debug)]
pub struct Envelope<'a, E> {
    /// The event, decoded into the projection's enum (upcast to the registry's current schema).
    pub event: E,
    recorded: &'a RecordedEvent,
}

impl<'a, E> Envelope<'a, E> {
    /// `event` in the envelope of `recorded` (what [`Typed`] builds; public for tests of a
    /// handler).
    pub fn new(event: E, recorded: &'a RecordedEvent) -> Self {
        Self { event, recorded }
    }

    /// The stream (aggregate type + id) the event belongs to.
    pub fn stream(&self) -> &StreamId {
        &self.recorded.stream
    }

    /// The aggregate id: the stream's id part.
    pub fn aggregate_id(&self) -> &str {
        self.recorded.stream.id()
    }

    /// The aggregate type: the stream's type part.
    pub fn aggregate_type(&self) -> &str {
        self.recorded.aggregate_type()
    }

    /// The event's version in its stream (from 1).
    pub fn version(&self) -> u64 {
        self.recorded.version
    }

    /// Its position in the global log.
    pub fn position(&self) -> Position {
        self.recorded.position
    }

    /// When the store committed it.
    pub fn recorded_at(&self) -> Timestamp {
        self.recorded.recorded_at
    }

    /// Its metadata: correlation, causation, user data.
    pub fn metadata(&self) -> &Metadata {
        &self.recorded.metadata
    }

    /// The id it was appended with.
    pub fn event_id(&self) -> Uuid {
        self.recorded.event_id
    }

    /// Its type: the enum variant's name.
    pub fn event_type(&self) -> &str {
        &self.recorded.event_type
    }

    /// The schema version it was written with (the event itself is already upcast).
    pub fn schema_version(&self) -> u32 {
        self.recorded.schema_version
    }

    /// The event as stored.
    pub fn recorded(&self) -> &RecordedEvent {
        self.recorded
    }
}

/// A projection over decoded events and typed documents: the typed form of [`Projection`].
///
/// It declares its event enum (like [`crate::Aggregate::Event`]; a projection over several
/// aggregates declares an enum with the variants it reads) and its document type, and runs on
/// the [`super::ProjectionRunner`] wrapped in [`Typed`], which decodes each event once through
/// the service's [`EventCodec`] — the same registry and upcasters as the
/// [`crate::Repository`] — before the handler sees it.
///
/// ```
/// use cqrsx_core::projection::{Envelope, HandlerResult, TypedProjection, View};
/// use cqrsx_core::async_trait;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// enum OrderEvent { Placed { total: u64 }, Cancelled }
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Orders { placed: u64, cancelled: u64, revenue: u64 }
///
/// struct OrderTotals;
///
/// #[async_trait]
/// impl TypedProjection for OrderTotals {
///     type Event = OrderEvent;
///     type Document = Orders;
///     fn name(&self) -> &str { "order_totals" }
///     async fn apply(&self, e: &Envelope<'_, OrderEvent>, view: &mut View<'_, Orders>) -> HandlerResult {
///         view.update("all", |o| match e.event {
///             OrderEvent::Placed { total } => { o.placed += 1; o.revenue += total }
///             OrderEvent::Cancelled => o.cancelled += 1,
///         }).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait TypedProjection: Send + Sync + 'static {
    /// The event enum: each variant's name is an event type (as [`EventCodec`] writes them).
    type Event: DeserializeOwned + Send + Sync + 'static;
    /// The view's document type, stored as the JSON it serializes to (a JSON object).
    type Document: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The projection's name: letters, digits, `_`, `.` and `-`.
    fn name(&self) -> &str;

    /// Its version; raise it to rebuild the view from the first event.
    fn version(&self) -> u32 {
        1
    }

    /// Which events it is shown. The default: the event types of [`Self::Event`]'s variants.
    /// Narrow it to aggregate types when another aggregate has events of the same names.
    fn filter(&self) -> EventFilter {
        EventFilter::event_types(variant_names::<Self::Event>().iter().copied())
    }

    /// What an event of a type [`Self::Event`] does not have does (see [`UnknownEvents`]).
    fn unknown_events(&self) -> UnknownEvents {
        UnknownEvents::Skip
    }

    /// Applies one decoded event to the view.
    async fn apply(&self, event: &Envelope<'_, Self::Event>, view: &mut View<'_, Self::Document>) -> HandlerResult;
}

/// Runs a [`TypedProjection`] as a [`Projection`]: on the [`super::ProjectionRunner`] (or any
/// runner of projections), with the runner's leases, commits and error policy unchanged.
///
/// Each delivery of an event decodes its payload once, straight into the enum (through a JSON
/// value only when an upcaster must run); a retry of a failed handler decodes it again.
#[derive(Debug)]
pub struct Typed<P> {
    projection: P,
    codec: EventCodec,
    known: HashSet<&'static str>,
    #[cfg(feature = "testkit")]
    fault: Option<TypedFault>,
}

impl<P: TypedProjection> Typed<P> {
    /// `projection` decoding through `codec`: the service's one codec and registry (e.g.
    /// `repository.codec().clone()`), so the upcasters the write side registered run here too.
    ///
    /// [`Error::Config`] when `P::Event` is not an enum (events are enum variants).
    pub fn new(projection: P, codec: EventCodec) -> Result<Self> {
        let variants = variant_names::<P::Event>();
        if variants.is_empty() {
            return Err(Error::Config(format!(
                "{} is not an enum; a typed projection's events must be enum variants",
                std::any::type_name::<P::Event>()
            )));
        }
        Ok(Self {
            projection,
            codec,
            known: variants.iter().copied().collect(),
            #[cfg(feature = "testkit")]
            fault: None,
        })
    }

    /// The typed projection inside.
    pub fn inner(&self) -> &P {
        &self.projection
    }

    /// The codec events are decoded with.
    pub fn codec(&self) -> &EventCodec {
        &self.codec
    }

    /// Breaks the adapter on purpose, for the meta-test that shows the conformance suite
    /// catches it. Not part of the API.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn with_fault(mut self, fault: Option<TypedFault>) -> Self {
        self.fault = fault;
        self
    }

    /// The event decoded, `None` for an unknown type the projection skips.
    fn decode(&self, event: &RecordedEvent) -> Result<Option<P::Event>> {
        #[cfg(feature = "testkit")]
        match self.fault {
            Some(TypedFault::IgnoresUpcasters) => {
                return match crate::codec::Codec::decode_variant(&event.content_type, &event.event_type, &event.payload)
                {
                    Ok(e) => Ok(Some(e)),
                    Err(_) if !self.known.contains(event.event_type.as_str()) => Ok(None),
                    Err(e) => Err(e),
                };
            }
            Some(TypedFault::SkipsUndecodable) if self.known.contains(event.event_type.as_str()) => {
                return Ok(self.codec.decode(event).ok());
            }
            _ => {}
        }
        if !self.known.contains(event.event_type.as_str()) {
            return match self.projection.unknown_events() {
                UnknownEvents::Skip => {
                    trace!(event_type = %event.event_type, position = %event.position, "skipping an event type the projection does not know");
                    Ok(None)
                }
                UnknownEvents::Fail => Err(Error::serialization_msg(format!(
                    "event type {} at {} is not a variant of {}",
                    event.event_type,
                    event.position,
                    std::any::type_name::<P::Event>()
                ))),
            };
        }
        self.codec.decode(event).map(Some)
    }
}

#[async_trait]
impl<P: TypedProjection> Projection for Typed<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn apply(&self, event: &RecordedEvent, view: &mut View<'_>) -> HandlerResult {
        let Some(decoded) = self.decode(event)? else {
            return Ok(());
        };
        let envelope = Envelope::new(decoded, event);
        self.projection.apply(&envelope, &mut view.typed()).await
    }
}

/// The ways [`Typed::with_fault`] breaks the adapter (testkit only).
#[cfg(feature = "testkit")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypedFault {
    /// Decodes the payload as written, without the registry's upcasters.
    IgnoresUpcasters,
    /// Passes over events of a known type whose payload does not decode, as if their type
    /// were unknown.
    SkipsUndecodable,
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    enum Ev {
        Opened,
        Sold { amount: u64 },
    }

    struct P<E>(std::marker::PhantomData<fn() -> E>);

    #[async_trait]
    impl<E: DeserializeOwned + Send + Sync + 'static> TypedProjection for P<E> {
        type Event = E;
        type Document = serde_json::Value;
        fn name(&self) -> &str {
            "p"
        }
        async fn apply(&self, _: &Envelope<'_, E>, _: &mut View<'_, serde_json::Value>) -> HandlerResult {
            Ok(())
        }
    }

    #[test]
    fn events_must_be_an_enum_and_the_filter_names_its_variants() -> Result<()> {
        let refused = Typed::new(P::<u64>(Default::default()), EventCodec::default());
        assert!(
            matches!(refused, Err(Error::Config(_))),
            "a non-enum event type is refused"
        );
        let typed = Typed::new(P::<Ev>(Default::default()), EventCodec::default())?;
        let filter = Projection::filter(&typed);
        assert_eq!(filter.event_types, ["Opened", "Sold"]);
        assert!(filter.aggregate_types.is_empty());
        Ok(())
    }

    #[test]
    fn an_unknown_type_is_told_apart_from_a_corrupt_payload() -> Result<()> {
        let typed = Typed::new(P::<Ev>(Default::default()), EventCodec::default())?;
        let mut event = RecordedEvent {
            event_id: Uuid::now_v7(),
            stream: StreamId::new("Shop", "a")?,
            version: 1,
            position: Position::START,
            event_type: "Closed".into(),
            schema_version: 1,
            content_type: crate::event::ContentType::Json,
            payload: b"null".to_vec(),
            metadata: Metadata::default(),
            recorded_at: Timestamp::now(),
        };
        assert!(typed.decode(&event)?.is_none(), "skipped");
        event.event_type = "Sold".into();
        event.payload = br#"{"amount": "x"}"#.to_vec();
        assert!(matches!(typed.decode(&event), Err(Error::Serialization { .. })));
        event.payload = br#"{"amount": 3}"#.to_vec();
        assert!(matches!(typed.decode(&event)?, Some(Ev::Sold { amount: 3 })));
        Ok(())
    }
}
