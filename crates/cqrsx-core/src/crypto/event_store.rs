//! [`EncryptedEventStore`]: an [`EventStore`] that seals the personal fields of protected
//! events on append and opens them on every read.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::checkpoint::{Checkpoint, Wake};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::{AllPage, AppendResult, EventFilter, NewEvent, Position, RecordedEvent, Timestamp};
use crate::event_store::{EventStore, EventStoreCapabilities};
use crate::raw::StreamInfo;
use crate::stream::{ExpectedVersion, StreamId};

use super::keys::Keys;
use super::policy::{Policies, Protection, Subject};
use super::seal::{aad, decrypt, encrypt, restore_fields, take_fields, Sealed};
use super::{ERASED_KEY, SEALED_KEY};

/// An event store that seals the personal fields of the event types its [`Policies`] protect.
///
/// On append, each protected event's personal payload fields and metadata entries are replaced
/// by their erased values and encrypted (AES-256-GCM, under the subject's latest data key) into
/// the metadata entry `_cqrsx_sealed` (subject, key version, nonce, ciphertext): the plaintext
/// never reaches the inner store. The associated data binds the ciphertext to the stream, event
/// id, event type, subject and key version, so a ciphertext altered or moved to another event
/// fails with [`Error::Tampered`].
///
/// On every read the fields are put back and the entry removed. Once the subject is forgotten
/// the event still reads with the same id, version, type and position, its protected fields
/// read as their erased values, and [`super::is_erased`] tells it.
///
/// An append of a protected event for a forgotten subject is refused with
/// [`Error::SubjectForgotten`] and writes nothing: it would store personal data of a person
/// whose erasure was asked for (and that nobody could read back).
pub struct EncryptedEventStore {
    inner: Arc<dyn EventStore>,
    keys: Arc<Keys>,
    policies: Arc<Policies>,
}

impl EncryptedEventStore {
    /// Wraps `inner`, sealing what `policies` protect with keys from `keys`.
    pub fn new(inner: Arc<dyn EventStore>, keys: Arc<Keys>, policies: Policies) -> Self {
        Self {
            inner,
            keys,
            policies: Arc::new(policies),
        }
    }

    /// The wrapped store (reads through it return the stored, sealed form).
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// The data-key service.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    async fn seal(&self, stream: &StreamId, mut event: NewEvent, policy: &Protection) -> Result<NewEvent> {
        let needs_payload = !policy.payload.is_empty() || matches!(policy.subject, Subject::PayloadField(_));
        let mut payload: Value = if needs_payload {
            event.content_type.decode(&event.payload)?
        } else {
            Value::Null
        };
        let subject = policy.subject_of(stream, &event, &payload)?;
        let (version, key) = self.keys.sealing_key(&subject).await?;
        let taken_payload = take_fields(&mut payload, &policy.payload);
        let mut taken_meta = Map::new();
        for field in &policy.metadata {
            if let Some(value) = event.metadata.user.get_mut(&field.path) {
                taken_meta.insert(field.path.clone(), std::mem::replace(value, field.erased.clone()));
            }
        }
        let plain = serde_json::to_vec(&serde_json::json!({ "p": taken_payload, "m": taken_meta }))
            .map_err(|e| Error::serialization("sealed fields", e))?;
        let bound = event_aad(stream, event.event_id, &event.event_type, &subject, version);
        let sealed = encrypt(&key, &subject, version, &plain, &bound)?;
        if !taken_payload.is_empty() {
            event.payload = event.content_type.encode(&payload)?;
        }
        event.metadata.user.insert(SEALED_KEY.into(), sealed.to_value());
        Ok(event)
    }

    /// Opens one stored event: puts its sealed fields back, or marks it erased.
    pub async fn open(&self, mut event: RecordedEvent) -> Result<RecordedEvent> {
        let Some(entry) = event.metadata.user.remove(SEALED_KEY) else {
            return Ok(event);
        };
        let sealed = Sealed::from_value(&entry, &|| format!("event {} of {}", event.event_id, event.stream))?;
        let Some(key) = self.keys.opening_key(&sealed.subject, sealed.version).await? else {
            event.metadata.user.insert(ERASED_KEY.into(), Value::Bool(true));
            return Ok(event);
        };
        let bound = event_aad(
            &event.stream,
            event.event_id,
            &event.event_type,
            &sealed.subject,
            sealed.version,
        );
        let (id, stream) = (event.event_id, &event.stream);
        let what = || format!("event {id} of {stream}");
        let plain = decrypt(&key, &sealed, &bound, &what)?;
        let mut plain: Value = serde_json::from_slice(&plain).map_err(|_| Error::Tampered {
            what: format!("{}: sealed fields are not JSON", what()),
        })?;
        let mut payload = None;
        if let Some(Value::Object(mut taken)) = plain.get_mut("p").map(Value::take) {
            if taken.len() == 1 && taken.contains_key("") {
                // The whole payload: no need to read what is stored in its place.
                if let Some(whole) = taken.remove("") {
                    payload = Some(event.content_type.encode(&whole)?);
                }
            } else if !taken.is_empty() {
                let mut stored: Value = event.content_type.decode(&event.payload)?;
                restore_fields(&mut stored, taken, &what)?;
                payload = Some(event.content_type.encode(&stored)?);
            }
        }
        if let Some(payload) = payload {
            event.payload = payload;
        }
        if let Some(Value::Object(taken)) = plain.get_mut("m").map(Value::take) {
            event.metadata.user.extend(taken);
        }
        Ok(event)
    }

    async fn open_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(self.open(event).await?);
        }
        Ok(out)
    }
}

/// The associated data of a sealed event.
fn event_aad(stream: &StreamId, event_id: Uuid, event_type: &str, subject: &str, version: u32) -> Vec<u8> {
    aad(&[
        "cqrsx-event/1",
        stream.key(),
        &event_id.to_string(),
        event_type,
        subject,
        &version.to_string(),
    ])
}

#[async_trait]
impl EventStore for EncryptedEventStore {
    fn capabilities(&self) -> EventStoreCapabilities {
        self.inner.capabilities()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            if event.metadata.user.contains_key(SEALED_KEY) || event.metadata.user.contains_key(ERASED_KEY) {
                return Err(Error::InvalidInput(format!(
                    "event {} uses a reserved metadata key ({SEALED_KEY} / {ERASED_KEY})",
                    event.event_id
                )));
            }
            match self.policies.get(&event.event_type) {
                Some(policy) => sealed.push(self.seal(stream, event, policy).await?),
                None => sealed.push(event),
            }
        }
        self.inner.append(stream, expected, sealed).await
    }

    async fn read_stream(&self, stream: &StreamId, from_version: u64, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_stream(stream, from_version, max_count).await?;
        self.open_all(events).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(&self, from: Position, max_count: usize, filter: &EventFilter) -> Result<AllPage> {
        let page = self.inner.read_all(from, max_count, filter).await?;
        Ok(AllPage {
            events: self.open_all(page.events).await?,
            next: page.next,
        })
    }

    async fn events_by_type(&self, event_type: &str, since: Timestamp, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.events_by_type(event_type, since, max_count).await?;
        self.open_all(events).await
    }

    async fn truncate_before(&self, stream: &StreamId, before: u64) -> Result<u64> {
        self.inner.truncate_before(stream, before).await
    }

    async fn delete_stream(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
        self.inner.delete_stream(stream, expected).await
    }

    /// Passes through: the catalogue holds no payloads.
    async fn list_streams(&self, after: Option<&StreamId>, max_count: usize) -> Result<Vec<StreamInfo>> {
        self.inner.list_streams(after, max_count).await
    }

    /// Passes through: the events are copied in their stored form as they are (sealed events
    /// stay sealed, bound to the same stream and ids; events read through an encrypted store
    /// and imported here are stored in clear, so import what the inner store holds).
    async fn import(&self, stream: &StreamId, after: u64, events: Vec<RecordedEvent>) -> Result<AppendResult> {
        self.inner.import(stream, after, events).await
    }

    async fn head(&self) -> Result<Checkpoint> {
        self.inner.head().await
    }

    async fn wait_for_append(&self, checkpoint: &Checkpoint, timeout: Duration) -> Result<Wake> {
        self.inner.wait_for_append(checkpoint, timeout).await
    }

    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from_version: u64,
        batch: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        self.inner
            .stream_events(stream, from_version, batch)
            .then(move |event| async move {
                match event {
                    Ok(event) => self.open(event).await,
                    Err(e) => Err(e),
                }
            })
            .boxed()
    }

    fn distance(&self, from: Position, to: Position) -> u64 {
        self.inner.distance(from, to)
    }
}
