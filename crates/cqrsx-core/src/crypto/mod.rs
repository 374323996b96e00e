//! Encrypted payloads and crypto-shredding (feature `encryption`; README "Encrypted payloads
//! and crypto-shredding").
//!
//! Personal data is sealed with AES-256-GCM under a per-subject data key ([`Keys`]); the data
//! keys are wrapped by a [`MasterKey`] and kept in a [`KeyStore`]. Forgetting a subject
//! ([`Keys::forget`]) deletes its keys: every event, snapshot, read-model document and view
//! sealed for it then reads with its personal fields erased, while the log stays append-only.
//!
//! The wrappers implement the existing traits, so every backend gets encryption for free:
//! [`EncryptedEventStore`], [`EncryptedSnapshotStore`], [`EncryptedReadStore`] and
//! [`EncryptedProjectionStore`].

mod event_store;
mod key_store;
mod keys;
mod master;
mod policy;
mod projection_store;
mod read_store;
mod seal;
mod snapshot_store;

pub use event_store::EncryptedEventStore;
pub use key_store::{validate_subject, InMemoryKeyStore, KeyStore, StoredKey};
pub use keys::{Keys, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL};
pub use master::{DataKey, LocalMasterKey, MasterKey};
pub use policy::{DocSubject, DocumentPolicy, Field, Policies, Protection, Subject, SubjectFn, ERASED};
pub use projection_store::EncryptedProjectionStore;
pub use read_store::EncryptedReadStore;
pub use snapshot_store::EncryptedSnapshotStore;

use crate::event::RecordedEvent;

/// The metadata user entry (events) or document field (read models, views) holding the sealed
/// fields. Reserved: an append or save that sets it is refused.
pub const SEALED_KEY: &str = "_cqrsx_sealed";
/// The metadata user entry (events) or document field (read models, views) set to `true` on
/// what is read after its subject was forgotten. Reserved like [`SEALED_KEY`].
pub const ERASED_KEY: &str = "_cqrsx_erased";

/// Whether an event read through an [`EncryptedEventStore`] had its protected fields erased
/// (its subject was forgotten).
pub fn is_erased(event: &RecordedEvent) -> bool {
    event.metadata.user.get(ERASED_KEY) == Some(&serde_json::Value::Bool(true))
}

/// Whether a document read through an [`EncryptedReadStore`] or an
/// [`EncryptedProjectionStore`] had its protected fields erased.
pub fn is_document_erased(document: &serde_json::Value) -> bool {
    document.get(ERASED_KEY) == Some(&serde_json::Value::Bool(true))
}

#[cfg(test)]
mod tests;
