//! Sealing and opening: personal fields taken out of a JSON value, encrypted with AES-256-GCM
//! under the subject's data key, and put back.

use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
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
        let bad = || Error::Tampered {
            what: format!("{}: malformed sealed entry", what()),
        };
        let subject = value.get("s").and_then(Value::as_str).ok_or_else(bad)?.to_string();
        let version = value
            .get("v")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad)?;
        let nonce_bytes = value
            .get("n")
            .and_then(Value::as_str)
            .and_then(|n| B64.decode(n).ok())
            .ok_or_else(bad)?;
        let nonce: [u8; NONCE_LEN] = nonce_bytes.try_into().map_err(|_| bad())?;
        let ciphertext = value
            .get("c")
            .and_then(Value::as_str)
            .and_then(|c| B64.decode(c).ok())
            .ok_or_else(bad)?;
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
pub(crate) fn restore_fields(value: &mut Value, taken: Map<String, Value>, what: &dyn Fn() -> String) -> Result<()> {
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
