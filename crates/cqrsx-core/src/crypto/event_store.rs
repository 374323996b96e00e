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
use super::master::DataKey;
use super::policy::{Policies, Protection, Subject};
use super::seal::{aad, decrypt_in_place, encrypt, restore_fields, take_fields, SealedRef};
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
    pub async fn open(&self, event: RecordedEvent) -> Result<RecordedEvent> {
        self.open_with(&mut PageKeys::default(), event).await
    }

    /// [`EncryptedEventStore::open`], with the data keys already looked up for this page.
    async fn open_with(&self, page_keys: &mut PageKeys, mut event: RecordedEvent) -> Result<RecordedEvent> {
        let Some(entry) = event.metadata.user.remove(SEALED_KEY) else {
            return Ok(event);
        };
        let (id, stream) = (event.event_id, &event.stream);
        let what = || format!("event {id} of {stream}");
        let sealed = SealedRef::from_value(&entry, &what)?;
        let Some(key) = page_keys.get(&self.keys, sealed.subject, sealed.version).await? else {
            event.metadata.user.insert(ERASED_KEY.into(), Value::Bool(true));
            return Ok(event);
        };
        let bound = event_aad(stream, id, &event.event_type, sealed.subject, sealed.version);
        let plain = decrypt_in_place(&key, sealed, &bound, &what)?;
        let plain: SealedFields = serde_json::from_slice(&plain).map_err(|_| Error::Tampered {
            what: format!("{}: sealed fields are not JSON", what()),
        })?;
        let mut payload = None;
        let mut taken = plain.p.0;
        if taken.len() == 1 && taken[0].0.is_empty() {
            // The whole payload: no need to read what is stored in its place.
            if let Some((_, whole)) = taken.pop() {
                payload = Some(event.content_type.encode(&whole)?);
            }
        } else if !taken.is_empty() {
            let mut stored: Value = event.content_type.decode(&event.payload)?;
            restore_fields(&mut stored, taken, &what)?;
            payload = Some(event.content_type.encode(&stored)?);
        }
        if let Some(payload) = payload {
            event.payload = payload;
        }
        event.metadata.user.extend(plain.m.0);
        Ok(event)
    }

    async fn open_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        let mut page_keys = PageKeys::default();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(self.open_with(&mut page_keys, event).await?);
        }
        Ok(out)
    }
}

/// The plaintext of a sealed event, `{"p": {pointer: value}, "m": {key: value}}`: the taken
/// payload fields by pointer and metadata entries by key, read as plain lists (no map to build
/// and hash: they are only put back, in order).
#[derive(serde::Deserialize)]
struct SealedFields {
    #[serde(default)]
    p: Entries,
    #[serde(default)]
    m: Entries,
}

/// A JSON object's entries, in order.
#[derive(Default)]
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// How many distinct (subject, version) keys one page remembers (then it starts over).
const PAGE_KEYS: usize = 32;

/// The data keys of one page of events, each (subject, version) looked up in [`Keys`] once:
/// the page opens as of one moment, and the rest of its events skip the shared cache (its
/// lock, hash and clock). Dropped with the page, so a forget is seen by the next page.
#[derive(Default)]
struct PageKeys {
    keys: Vec<(String, u32, Option<DataKey>)>,
}

impl PageKeys {
    async fn get(&mut self, keys: &Keys, subject: &str, version: u32) -> Result<Option<DataKey>> {
        if let Some((_, _, key)) = self.keys.iter().find(|(s, v, _)| *v == version && s == subject) {
            return Ok(key.clone());
        }
        let key = keys.opening_key(subject, version).await?;
        if self.keys.len() >= PAGE_KEYS {
            self.keys.clear();
        }
        self.keys.push((subject.to_string(), version, key.clone()));
        Ok(key)
    }
}

/// The associated data of a sealed event.
fn event_aad(stream: &StreamId, event_id: Uuid, event_type: &str, subject: &str, version: u32) -> Vec<u8> {
    let mut id = Uuid::encode_buffer();
    let mut digits = [0u8; 10];
    aad(&[
        "cqrsx-event/1",
        stream.key(),
        event_id.hyphenated().encode_lower(&mut id),
        event_type,
        subject,
        decimal(version, &mut digits),
    ])
}

/// `n` in decimal, written into `buffer` (what `n.to_string()` gives, without allocating).
fn decimal(mut n: u32, buffer: &mut [u8; 10]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or_default()
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
        // The keys are looked up once per `batch` events, as a page read through read_stream.
        let batch = batch.max(1);
        let events = self.inner.stream_events(stream, from_version, batch);
        futures::stream::unfold(
            (events, PageKeys::default(), 0usize),
            move |(mut events, mut page_keys, mut seen)| async move {
                let next = match events.next().await? {
                    Ok(event) => {
                        if seen == batch {
                            page_keys = PageKeys::default();
                            seen = 0;
                        }
                        seen += 1;
                        self.open_with(&mut page_keys, event).await
                    }
                    Err(e) => Err(e),
                };
                Some((next, (events, page_keys, seen)))
            },
        )
        .boxed()
    }

    fn distance(&self, from: Position, to: Position) -> u64 {
        self.inner.distance(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_aad_is_the_stored_format() -> Result<()> {
        let stream = StreamId::new("Person", "p-1")?;
        let id = Uuid::now_v7();
        for version in [0, 1, 9, 10, 12_345, u32::MAX] {
            let former = aad(&[
                "cqrsx-event/1",
                stream.key(),
                &id.to_string(),
                "Registered",
                "subject-1",
                &version.to_string(),
            ]);
            assert_eq!(event_aad(&stream, id, "Registered", "subject-1", version), former);
        }
        Ok(())
    }
}
