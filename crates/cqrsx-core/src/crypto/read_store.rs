//! [`EncryptedReadStore`]: read-model documents whose personal fields are sealed, and the
//! document sealing the projection store shares.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::read_store::{Document, Filter, Query, ReadStore, ReadStoreCapabilities};

use super::keys::Keys;
use super::policy::DocumentPolicy;
use super::seal::{aad, decrypt, encrypt, restore_fields, take_fields, Sealed};
use super::{ERASED_KEY, SEALED_KEY};

fn doc_aad(scope: &str, id: &str, subject: &str, version: u32) -> Vec<u8> {
    aad(&["cqrsx-doc/1", scope, id, subject, &version.to_string()])
}

/// Seals a document's personal fields (in the top-level field `_cqrsx_sealed`). For a
/// forgotten subject the fields are stored as their erased values and the document is marked
/// erased: a document cannot hold personal data of a forgotten subject.
pub(crate) async fn seal_document(
    keys: &Keys,
    policy: &DocumentPolicy,
    scope: &str,
    id: &str,
    mut data: Value,
) -> Result<Value> {
    let Some(object) = data.as_object() else {
        return Err(Error::InvalidInput(format!("document {id} is not a JSON object")));
    };
    if object.contains_key(SEALED_KEY) || object.contains_key(ERASED_KEY) {
        return Err(Error::InvalidInput(format!(
            "document {id} uses a reserved field ({SEALED_KEY} / {ERASED_KEY})"
        )));
    }
    let subject = policy.subject_of(id, &data)?;
    let (version, key) = match keys.sealing_key(&subject).await {
        Ok(found) => found,
        Err(Error::SubjectForgotten(_)) => {
            take_fields(&mut data, &policy.fields);
            if let Some(object) = data.as_object_mut() {
                object.insert(ERASED_KEY.into(), Value::Bool(true));
            }
            return Ok(data);
        }
        Err(e) => return Err(e),
    };
    let taken = take_fields(&mut data, &policy.fields);
    let plain = serde_json::to_vec(&Value::Object(taken)).map_err(|e| Error::serialization("sealed fields", e))?;
    let sealed = encrypt(&key, &subject, version, &plain, &doc_aad(scope, id, &subject, version))?;
    if let Some(object) = data.as_object_mut() {
        object.insert(SEALED_KEY.into(), sealed.to_value());
    }
    Ok(data)
}

/// Opens a document sealed by [`seal_document`]; one of a forgotten subject reads with its
/// erased values and `_cqrsx_erased: true`.
pub(crate) async fn open_document(keys: &Keys, scope: &str, id: &str, mut data: Value) -> Result<Value> {
    let Some(entry) = data.as_object_mut().and_then(|o| o.remove(SEALED_KEY)) else {
        return Ok(data);
    };
    let label = format!("document {id} of {scope}");
    let what = || label.clone();
    let sealed = Sealed::from_value(&entry, &what)?;
    let Some(key) = keys.opening_key(&sealed.subject, sealed.version).await? else {
        if let Some(object) = data.as_object_mut() {
            object.insert(ERASED_KEY.into(), Value::Bool(true));
        }
        return Ok(data);
    };
    let plain = decrypt(
        &key,
        &sealed,
        &doc_aad(scope, id, &sealed.subject, sealed.version),
        &what,
    )?;
    let Ok(Value::Object(taken)) = serde_json::from_slice::<Value>(&plain) else {
        return Err(Error::Tampered {
            what: format!("{label}: sealed fields are not a JSON object"),
        });
    };
    restore_fields(&mut data, taken, &what)?;
    Ok(data)
}

/// A read store whose documents' personal fields are sealed as a [`DocumentPolicy`] says.
///
/// `get` and `query` open them; once the subject is forgotten they read as their erased
/// values, with `_cqrsx_erased: true` ([`super::is_document_erased`]). Sealed fields are not
/// searchable: a query filtering or sorting on one sees the erased placeholder (or nothing),
/// not the value. The scope (e.g. the collection name) is bound to every ciphertext with the
/// document id, so a sealed field copied to another document is [`Error::Tampered`].
pub struct EncryptedReadStore {
    inner: Arc<dyn ReadStore>,
    keys: Arc<Keys>,
    policy: Arc<DocumentPolicy>,
    scope: String,
}

impl EncryptedReadStore {
    /// Wraps `inner`; `scope` names it in what ciphertexts are bound to (use the collection
    /// name; the same scope must be given to read what was written).
    pub fn new(inner: Arc<dyn ReadStore>, keys: Arc<Keys>, policy: DocumentPolicy, scope: impl Into<String>) -> Self {
        Self {
            inner,
            keys,
            policy: Arc::new(policy),
            scope: scope.into(),
        }
    }

    pub(crate) fn shared(
        inner: Arc<dyn ReadStore>,
        keys: Arc<Keys>,
        policy: Arc<DocumentPolicy>,
        scope: String,
    ) -> Self {
        Self {
            inner,
            keys,
            policy,
            scope,
        }
    }

    async fn seal(&self, id: &str, data: Value) -> Result<Value> {
        seal_document(&self.keys, &self.policy, &self.scope, id, data).await
    }
}

#[async_trait]
impl ReadStore for EncryptedReadStore {
    fn capabilities(&self) -> ReadStoreCapabilities {
        self.inner.capabilities()
    }

    async fn save(&self, id: &str, data: Value) -> Result<()> {
        let data = self.seal(id, data).await?;
        self.inner.save(id, data).await
    }

    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        let data = self.seal(id, data).await?;
        self.inner.save_with_ttl(id, data, ttl).await
    }

    async fn get(&self, id: &str) -> Result<Option<Value>> {
        match self.inner.get(id).await? {
            Some(data) => Ok(Some(open_document(&self.keys, &self.scope, id, data).await?)),
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        self.inner.delete(id).await
    }

    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        let docs = self.inner.query(query).await?;
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let data = open_document(&self.keys, &self.scope, &doc.id, doc.data).await?;
            out.push(Document { id: doc.id, data });
        }
        Ok(out)
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        self.inner.count(filters).await
    }

    async fn save_many(&self, docs: Vec<Document>) -> Result<()> {
        let mut sealed = Vec::with_capacity(docs.len());
        for doc in docs {
            let data = self.seal(&doc.id, doc.data).await?;
            sealed.push(Document { id: doc.id, data });
        }
        self.inner.save_many(sealed).await
    }

    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        self.inner.delete_many(ids).await
    }
}
