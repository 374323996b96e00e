//! [`ReadBackend`], the unchecked half of a read store, and the checked [`ReadStore`] every
//! backend gets from it.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::trace::{backend, measured};
use crate::error::{Error, Result};
use crate::read_store::{
    validate_document_for, validate_ttl, Document, Filter, Query, ReadStore, ReadStoreCapabilities,
};
use crate::stream::validate_id;

/// What a read-store backend implements: the [`ReadStore`] contract on input that core has
/// already checked. A type implementing it is a [`ReadStore`]; before any method here runs, the
/// checked layer has refused (with [`Error::InvalidInput`]) bad ids, documents over the
/// backend's size limit or of a shape it cannot hold ([`ReadBackend::capabilities`]), TTLs out
/// of range or on a store without expiry, and invalid queries and filters. Each method's
/// contract is that of the [`ReadStore`] method of the same name.
#[async_trait]
pub trait ReadBackend: Send + Sync {
    /// What this store can do (the checks use its limits).
    fn capabilities(&self) -> ReadStoreCapabilities;

    /// Inserts or replaces valid documents, each expiring after `ttl` when one is given (the
    /// store's default otherwise); all or, on an error, possibly some (as the store documents).
    async fn save_docs(&self, docs: Vec<Document>, ttl: Option<Duration>) -> Result<()>;

    /// [`ReadStore::get`].
    async fn get(&self, id: &str) -> Result<Option<Value>>;

    /// [`ReadStore::query`], on a valid query.
    async fn query(&self, query: &Query) -> Result<Vec<Document>>;

    /// [`ReadStore::count`], on valid filters.
    async fn count(&self, filters: &[Filter]) -> Result<u64>;

    /// [`ReadStore::delete_many`], every id valid.
    async fn delete_many(&self, ids: &[String]) -> Result<u64>;
}

/// Checks documents before any is written.
fn validate_docs<B: ReadBackend>(store: &B, docs: &[Document]) -> Result<()> {
    let caps = ReadBackend::capabilities(store);
    docs.iter()
        .try_for_each(|d| validate_document_for(&d.id, &d.data, &caps))
}

fn one(id: &str, data: Value) -> Vec<Document> {
    vec![Document {
        id: id.to_string(),
        data,
    }]
}

#[async_trait]
impl<B: ReadBackend> ReadStore for B {
    fn capabilities(&self) -> ReadStoreCapabilities {
        ReadBackend::capabilities(self)
    }

    async fn save(&self, id: &str, data: Value) -> Result<()> {
        let span = tracing::debug_span!("save", store = backend::<B>(), id);
        measured(backend::<B>(), "save", span, async move {
            let docs = one(id, data);
            validate_docs(self, &docs)?;
            self.save_docs(docs, None).await
        })
        .await
    }

    async fn save_with_ttl(&self, id: &str, data: Value, ttl: Duration) -> Result<()> {
        let span = tracing::debug_span!("save_with_ttl", store = backend::<B>(), id, ?ttl);
        measured(backend::<B>(), "save_with_ttl", span, async move {
            if !ReadBackend::capabilities(self).ttl {
                return Err(Error::InvalidInput("this read store cannot expire documents".into()));
            }
            validate_ttl(ttl)?;
            let docs = one(id, data);
            validate_docs(self, &docs)?;
            self.save_docs(docs, Some(ttl)).await
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Value>> {
        let span = tracing::debug_span!("get", store = backend::<B>(), id);
        measured(backend::<B>(), "get", span, async move {
            validate_id("read model id", id)?;
            ReadBackend::get(self, id).await
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let span = tracing::debug_span!("delete", store = backend::<B>(), id);
        measured(backend::<B>(), "delete", span, async move {
            validate_id("read model id", id)?;
            Ok(ReadBackend::delete_many(self, &[id.to_string()]).await? > 0)
        })
        .await
    }

    async fn query(&self, query: &Query) -> Result<Vec<Document>> {
        let span = tracing::debug_span!("query", store = backend::<B>(), filters = query.filters.len());
        measured(backend::<B>(), "query", span, async move {
            query.validate()?;
            ReadBackend::query(self, query).await
        })
        .await
    }

    async fn count(&self, filters: &[Filter]) -> Result<u64> {
        let span = tracing::debug_span!("count", store = backend::<B>(), filters = filters.len());
        measured(backend::<B>(), "count", span, async move {
            Query::counting(filters)?;
            ReadBackend::count(self, filters).await
        })
        .await
    }

    async fn save_many(&self, docs: Vec<Document>) -> Result<()> {
        let span = tracing::debug_span!("save_many", store = backend::<B>(), count = docs.len());
        measured(backend::<B>(), "save_many", span, async move {
            validate_docs(self, &docs)?;
            if docs.is_empty() {
                return Ok(());
            }
            self.save_docs(docs, None).await
        })
        .await
    }

    async fn delete_many(&self, ids: &[String]) -> Result<u64> {
        let span = tracing::debug_span!("delete_many", store = backend::<B>(), count = ids.len());
        measured(backend::<B>(), "delete_many", span, async move {
            for id in ids {
                validate_id("read model id", id)?;
            }
            if ids.is_empty() {
                return Ok(0);
            }
            ReadBackend::delete_many(self, ids).await
        })
        .await
    }
}
