//! Sealing and opening: personal fields taken out of a JSON value, encrypted with AES-256-GCM
//! under the subject's data key, and put back.

use aes_gcm::aead::{Aead, AeadCore, AeadInPlace, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

use super::master::{DataKey, NONCE_LEN};
use super::policy::Field;

/// The sealed form kept beside the data: subject and key version in clear, nonce and
/// ciphertext in base64. Stored as a JSON object `{"s", "v", "n", "c"}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sealed {
    pub subject: String,
    pub version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "s": self.subject,
            "v": self.version,
            "n": B64.encode(self.nonce),
            "c": B64.encode(&self.ciphertext),
        })
    }

    /// Parses [`Sealed::to_value`]; anything else is [`Error::Tampered`].
    pub fn from_value(value: &Value, what: &dyn Fn() -> String) -> Result<Self> {
        let sealed = SealedRef::from_value(value, what)?;
        Ok(Self {
            subject: sealed.subject.to_string(),
            version: sealed.version,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        })
    }
}

/// A sealed entry parsed where it lies: the subject borrowed from the stored entry, nonce and
/// ciphertext decoded once (the ciphertext into the buffer [`decrypt_in_place`] then opens).
pub(crate) struct SealedRef<'a> {
    pub subject: &'a str,
    pub version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl<'a> SealedRef<'a> {
    /// Parses [`Sealed::to_value`]; anything else is [`Error::Tampered`].
    pub fn from_value(value: &'a Value, what: &dyn Fn() -> String) -> Result<Self> {
        let bad = || Error::Tampered {
            what: format!("{}: malformed sealed entry", what()),
        };
        let Value::Object(entry) = value else {
            return Err(bad());
        };
        let subject = entry.get("s").and_then(Value::as_str).ok_or_else(bad)?;
        let version = entry
            .get("v")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad)?;
        let encoded_nonce = entry.get("n").and_then(Value::as_str).ok_or_else(bad)?;
        // Room for more than a nonce, so that a longer one is refused by its length.
        let mut nonce_bytes = [0u8; NONCE_LEN + 6];
        let nonce_len = B64.decode_slice(encoded_nonce, &mut nonce_bytes).map_err(|_| bad())?;
        let nonce: [u8; NONCE_LEN] = nonce_bytes
            .get(..nonce_len)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(bad)?;
        let encoded = entry.get("c").and_then(Value::as_str).ok_or_else(bad)?;
        let mut ciphertext = Vec::with_capacity(encoded.len() / 4 * 3 + 3);
        B64.decode_vec(encoded, &mut ciphertext).map_err(|_| bad())?;
        Ok(Self {
            subject,
            version,
            nonce,
            ciphertext,
        })
    }
}

/// Encrypts `plain` under `key`, binding `aad`.
pub(crate) fn encrypt(key: &DataKey, subject: &str, version: u32, plain: &[u8], aad: &[u8]) -> Result<Sealed> {
    let nonce = Aes256Gcm::generate_nonce(OsRng);
    let ciphertext = key
        .cipher()
        .encrypt(&nonce, Payload { msg: plain, aad })
        .map_err(|_| Error::Config("AES-GCM refused to encrypt".into()))?;
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce.as_slice());
    Ok(Sealed {
        subject: subject.to_string(),
        version,
        nonce: n,
        ciphertext,
    })
}

/// Decrypts a sealed entry; a wrong key, altered bytes or another `aad` is [`Error::Tampered`].
pub(crate) fn decrypt(key: &DataKey, sealed: &Sealed, aad: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    key.cipher()
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| Error::Tampered {
            what: format!("{}: the ciphertext does not authenticate", what()),
        })
}

/// Decrypts a sealed entry in its own buffer (no copy of the plaintext); a wrong key, altered
/// bytes or another `aad` is [`Error::Tampered`].
pub(crate) fn decrypt_in_place(
    key: &DataKey,
    sealed: SealedRef<'_>,
    aad: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let mut buffer = sealed.ciphertext;
    key.cipher()
        .decrypt_in_place(Nonce::from_slice(&sealed.nonce), aad, &mut buffer)
        .map_err(|_| Error::Tampered {
            what: format!("{}: the ciphertext does not authenticate", what()),
        })?;
    Ok(buffer)
}

/// Takes the personal fields out of `value`, leaving each one's erased value in its place;
/// returns the taken values by pointer (fields the value lacks are skipped).
pub(crate) fn take_fields(value: &mut Value, fields: &[Field]) -> Map<String, Value> {
    let mut taken = Map::new();
    for field in fields {
        if let Some(target) = value.pointer_mut(&field.path) {
            let original = std::mem::replace(target, field.erased.clone());
            taken.insert(field.path.clone(), original);
        }
    }
    taken
}

/// Puts taken fields back; a pointer the value lacks is [`Error::Tampered`].
pub(crate) fn restore_fields(
    value: &mut Value,
    taken: impl IntoIterator<Item = (String, Value)>,
    what: &dyn Fn() -> String,
) -> Result<()> {
    for (pointer, original) in taken {
        let target = value.pointer_mut(&pointer).ok_or_else(|| Error::Tampered {
            what: format!("{}: sealed field {pointer} has no place in the stored data", what()),
        })?;
        *target = original;
    }
    Ok(())
}

/// Length-prefixed parts, joined: the associated data binding a ciphertext to where it lives.
pub(crate) fn aad(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}
