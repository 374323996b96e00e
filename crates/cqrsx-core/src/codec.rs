//! Payload codecs (JSON by default, MessagePack through rmp-serde) behind one [`Codec`] trait, and
//! [`EventCodec`], which turns a domain event enum into [`NewEvent`]s and back, upcasting old
//! schema versions on the way in.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::{ContentType, Metadata, NewEvent, RecordedEvent};
use crate::registry::EventRegistry;
use crate::tagged::{VariantDeserializer, VariantSerializer};

/// Encodes and decodes values, and domain-event enums as (variant name, variant payload).
pub trait Codec: Send + Sync {
    /// The content type stamped beside what this codec writes.
    fn content_type(&self) -> ContentType;

    /// Encodes any value.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>>;

    /// Decodes any value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;

    /// Encodes an enum variant's content, returning the variant name (the event type).
    fn encode_variant<T: Serialize + ?Sized>(&self, value: &T) -> Result<(&'static str, Vec<u8>)>;

    /// Decodes the content of the variant named `variant`.
    fn decode_variant<T: DeserializeOwned>(&self, variant: &str, bytes: &[u8]) -> Result<T>;

    /// Decodes a payload into a JSON value (what upcasters work on).
    fn to_value(&self, bytes: &[u8]) -> Result<serde_json::Value> {
        self.decode(bytes)
    }
}

fn encode_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::serialization("encoding a payload", e)
}

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::serialization("decoding a payload", e)
}

fn variant_name(name: Option<&'static str>) -> Result<&'static str> {
    name.ok_or_else(|| Error::serialization_msg("events must be enum variants"))
}

/// UTF-8 JSON through `serde_json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn content_type(&self) -> ContentType {
        ContentType::Json
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(encode_error)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(decode_error)
    }

    fn encode_variant<T: Serialize + ?Sized>(&self, value: &T) -> Result<(&'static str, Vec<u8>)> {
        let mut out = Vec::with_capacity(128);
        let mut name = None;
        let mut ser = serde_json::Serializer::new(&mut out);
        value
            .serialize(VariantSerializer {
                inner: &mut ser,
                name: &mut name,
            })
            .map_err(encode_error)?;
        Ok((variant_name(name)?, out))
    }

    fn decode_variant<T: DeserializeOwned>(&self, variant: &str, bytes: &[u8]) -> Result<T> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = T::deserialize(VariantDeserializer {
            variant,
            inner: &mut de,
        })
        .map_err(decode_error)?;
        de.end().map_err(decode_error)?;
        Ok(value)
    }
}

/// MessagePack through `rmp-serde`, with struct fields written by name so that payloads stay
/// readable by upcasters and by older or newer code.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePackCodec;

impl Codec for MessagePackCodec {
    fn content_type(&self) -> ContentType {
        ContentType::MessagePack
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(value).map_err(encode_error)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        rmp_serde::from_slice(bytes).map_err(decode_error)
    }

    fn encode_variant<T: Serialize + ?Sized>(&self, value: &T) -> Result<(&'static str, Vec<u8>)> {
        let mut out = Vec::with_capacity(96);
        let mut name = None;
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        value
            .serialize(VariantSerializer {
                inner: &mut ser,
                name: &mut name,
            })
            .map_err(encode_error)?;
        Ok((variant_name(name)?, out))
    }

    fn decode_variant<T: DeserializeOwned>(&self, variant: &str, bytes: &[u8]) -> Result<T> {
        let mut rest = bytes;
        let value = T::deserialize(VariantDeserializer {
            variant,
            inner: &mut rmp_serde::Deserializer::new(&mut rest),
        })
        .map_err(decode_error)?;
        if !rest.is_empty() {
            return Err(Error::serialization_msg("trailing bytes after a MessagePack payload"));
        }
        Ok(value)
    }
}

impl Codec for ContentType {
    fn content_type(&self) -> ContentType {
        *self
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        match self {
            ContentType::Json => JsonCodec.encode(value),
            ContentType::MessagePack => MessagePackCodec.encode(value),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        match self {
            ContentType::Json => JsonCodec.decode(bytes),
            ContentType::MessagePack => MessagePackCodec.decode(bytes),
        }
    }

    fn encode_variant<T: Serialize + ?Sized>(&self, value: &T) -> Result<(&'static str, Vec<u8>)> {
        match self {
            ContentType::Json => JsonCodec.encode_variant(value),
            ContentType::MessagePack => MessagePackCodec.encode_variant(value),
        }
    }

    fn decode_variant<T: DeserializeOwned>(&self, variant: &str, bytes: &[u8]) -> Result<T> {
        match self {
            ContentType::Json => JsonCodec.decode_variant(variant, bytes),
            ContentType::MessagePack => MessagePackCodec.decode_variant(variant, bytes),
        }
    }
}

/// Turns domain events into [`NewEvent`]s and recorded events back into domain events.
///
/// Writes with the configured content type; reads by each event's own content type, so a store
/// can switch codecs without rewriting history. Events whose schema version is older than the
/// registry's current one go through the registry's upcaster chain first.
///
/// ```
/// use cqrsx_core::{ContentType, EventCodec, Metadata};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// enum UserEvent { Created { email: String } }
///
/// let codec = EventCodec::new(ContentType::MessagePack);
/// let event = codec.encode(&UserEvent::Created { email: "a@b.c".into() }, Metadata::default())?;
/// assert_eq!(event.event_type, "Created");
/// # Ok::<(), cqrsx_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventCodec {
    content_type: ContentType,
    registry: Arc<EventRegistry>,
}

impl EventCodec {
    /// A codec writing `content_type`, with an empty registry (every type at schema version 1).
    pub fn new(content_type: ContentType) -> Self {
        Self {
            content_type,
            registry: Arc::new(EventRegistry::default()),
        }
    }

    /// Uses `registry` for schema versions and upcasting.
    pub fn with_registry(mut self, registry: Arc<EventRegistry>) -> Self {
        self.registry = registry;
        self
    }

    /// The content type new events are written with.
    pub fn content_type(&self) -> ContentType {
        self.content_type
    }

    /// The registry in use.
    pub fn registry(&self) -> &EventRegistry {
        &self.registry
    }

    /// Encodes one domain event (an enum variant) with its metadata.
    pub fn encode<E: Serialize>(&self, event: &E, metadata: Metadata) -> Result<NewEvent> {
        let (event_type, payload) = self.content_type.encode_variant(event)?;
        Ok(NewEvent::new(event_type, self.content_type, payload)
            .with_schema_version(self.registry.current_version(event_type))
            .with_metadata(metadata))
    }

    /// Decodes a recorded event into the domain enum, upcasting if it was written with an older
    /// schema. Unknown types, corrupt payloads and missing upcasters give
    /// [`Error::Serialization`].
    pub fn decode<E: DeserializeOwned>(&self, recorded: &RecordedEvent) -> Result<E> {
        let current = self.registry.current_version(&recorded.event_type);
        let context = |e: Error| match e {
            Error::Serialization { context, source } => Error::Serialization {
                context: format!(
                    "{context} ({} v{} at {} version {})",
                    recorded.event_type, recorded.schema_version, recorded.stream, recorded.version
                ),
                source,
            },
            other => other,
        };
        if recorded.schema_version == current {
            return recorded
                .content_type
                .decode_variant(&recorded.event_type, &recorded.payload)
                .map_err(context);
        }
        let value = recorded.content_type.to_value(&recorded.payload).map_err(context)?;
        let value = self
            .registry
            .upcast(&recorded.event_type, recorded.schema_version, value)
            .map_err(context)?;
        E::deserialize(VariantDeserializer {
            variant: &recorded.event_type,
            inner: value,
        })
        .map_err(|e| context(Error::serialization("decoding an upcast payload", e)))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Unit,
        Newtype(u32),
        Tuple(u8, String),
        Struct { a: String, b: Option<i64> },
    }

    fn all() -> Vec<Ev> {
        vec![
            Ev::Unit,
            Ev::Newtype(7),
            Ev::Tuple(1, "x".into()),
            Ev::Struct {
                a: "é".into(),
                b: Some(-3),
            },
        ]
    }

    #[test]
    fn variants_round_trip_in_both_codecs() {
        for ct in [ContentType::Json, ContentType::MessagePack] {
            for ev in all() {
                let (name, bytes) = ct.encode_variant(&ev).expect("encode");
                let back: Ev = ct.decode_variant(name, &bytes).expect("decode");
                assert_eq!(back, ev, "{ct}");
            }
        }
    }

    #[test]
    fn json_payload_is_the_variant_content() {
        let (name, bytes) = JsonCodec
            .encode_variant(&Ev::Struct { a: "x".into(), b: None })
            .expect("encode");
        assert_eq!(name, "Struct");
        assert_eq!(bytes, br#"{"a":"x","b":null}"#);
    }

    #[test]
    fn non_enum_values_are_refused() {
        assert!(JsonCodec.encode_variant(&5u32).is_err());
        assert!(MessagePackCodec.encode_variant(&"s").is_err());
    }

    #[test]
    fn unknown_variant_and_corrupt_bytes_are_serialization_errors() {
        for ct in [ContentType::Json, ContentType::MessagePack] {
            let (_, bytes) = ct.encode_variant(&Ev::Newtype(1)).expect("encode");
            let e = ct.decode_variant::<Ev>("Nope", &bytes).expect_err("unknown type");
            assert!(matches!(e, Error::Serialization { .. }), "{e}");
            let e = ct
                .decode_variant::<Ev>("Struct", &[0xc1, 0xff, 0x00])
                .expect_err("corrupt");
            assert!(matches!(e, Error::Serialization { .. }), "{e}");
        }
    }
}
