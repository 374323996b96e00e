//! [`EncryptedSnapshotStore`]: snapshots sealed whole under their stream's subject.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::snapshot_store::{SnapshotInfo, SnapshotRecord, SnapshotStore};
use crate::stream::StreamId;

use super::keys::Keys;
use super::master::NONCE_LEN;
use super::seal::{aad, decrypt, encrypt, Sealed};

/// What a sealed snapshot payload starts with.
const MAGIC: &[u8; 6] = b"CQXS1\0";

/// A closure naming the subject of a stream's snapshots.
pub type StreamSubjectFn = Arc<dyn Fn(&StreamId) -> String + Send + Sync>;

/// A snapshot store that seals every snapshot's payload (the whole state) under the subject
/// of its stream, by default the aggregate id.
///
/// Once the subject is forgotten, [`SnapshotStore::latest`] reads as absent, so a repository
/// replays the (erased) events instead. A sealed payload that was altered or moved to another
/// stream or version is [`Error::Tampered`]. Payloads stored before encryption was enabled
/// (without the sealed header) pass through.
pub struct EncryptedSnapshotStore {
    inner: Arc<dyn SnapshotStore>,
    keys: Arc<Keys>,
    subject: StreamSubjectFn,
}

impl EncryptedSnapshotStore {
    /// Wraps `inner`; the subject of a stream is its aggregate id.
    pub fn new(inner: Arc<dyn SnapshotStore>, keys: Arc<Keys>) -> Self {
        Self {
            inner,
            keys,
            subject: Arc::new(|stream: &StreamId| stream.id().to_string()),
        }
    }

    /// Names the subject of a stream's snapshots otherwise.
    pub fn with_subject(mut self, subject: StreamSubjectFn) -> Self {
        self.subject = subject;
        self
    }

    fn bound(record: &SnapshotRecord, subject: &str, version: u32) -> Vec<u8> {
        aad(&[
            "cqrsx-snapshot/1",
            record.stream.key(),
            &record.version.to_string(),
            &record.content_type,
            &record.schema_version.to_string(),
            subject,
            &version.to_string(),
        ])
    }

    async fn open(&self, mut record: SnapshotRecord) -> Result<Option<SnapshotRecord>> {
        let Some(body) = record.payload.strip_prefix(MAGIC.as_slice()) else {
            return Ok(Some(record));
        };
        let label = format!("snapshot {} of {}", record.version, record.stream);
        let what = || label.clone();
        let tampered = || Error::Tampered {
            what: format!("{label}: malformed sealed payload"),
        };
        let (len, rest) = body.split_first_chunk::<2>().ok_or_else(tampered)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len + 4 + NONCE_LEN {
            return Err(tampered());
        }
        let (subject, rest) = rest.split_at(len);
        let subject = std::str::from_utf8(subject).map_err(|_| tampered())?.to_string();
        let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(tampered)?;
        let version = u32::from_be_bytes(*version);
        let (nonce, ciphertext) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(tampered)?;
        let sealed = Sealed {
            subject,
            version,
            nonce: *nonce,
            ciphertext: ciphertext.to_vec(),
        };
        let Some(key) = self.keys.opening_key(&sealed.subject, version).await? else {
            return Ok(None);
        };
        let bound = Self::bound(&record, &sealed.subject, version);
        record.payload = decrypt(&key, &sealed, &bound, &what)?;
        Ok(Some(record))
    }
}

#[async_trait]
impl SnapshotStore for EncryptedSnapshotStore {
    async fn save(&self, mut snapshot: SnapshotRecord) -> Result<()> {
        let subject = (self.subject)(&snapshot.stream);
        let subject_len = u16::try_from(subject.len())
            .map_err(|_| Error::InvalidInput(format!("snapshot subject of {} bytes is too long", subject.len())))?;
        let (version, key) = self.keys.sealing_key(&subject).await?;
        let bound = Self::bound(&snapshot, &subject, version);
        let sealed = encrypt(&key, &subject, version, &snapshot.payload, &bound)?;
        let mut payload = Vec::with_capacity(MAGIC.len() + 2 + subject.len() + 4 + NONCE_LEN + sealed.ciphertext.len());
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&subject_len.to_be_bytes());
        payload.extend_from_slice(subject.as_bytes());
        payload.extend_from_slice(&version.to_be_bytes());
        payload.extend_from_slice(&sealed.nonce);
        payload.extend_from_slice(&sealed.ciphertext);
        snapshot.payload = payload;
        self.inner.save(snapshot).await
    }

    async fn latest(&self, stream: &StreamId, max_version: Option<u64>) -> Result<Option<SnapshotRecord>> {
        match self.inner.latest(stream, max_version).await? {
            Some(record) => self.open(record).await,
            None => Ok(None),
        }
    }

    async fn list(&self, stream: &StreamId) -> Result<Vec<SnapshotInfo>> {
        self.inner.list(stream).await
    }

    async fn prune(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        self.inner.prune(stream, keep).await
    }

    async fn delete_all(&self, stream: &StreamId) -> Result<u64> {
        self.inner.delete_all(stream).await
    }
}
