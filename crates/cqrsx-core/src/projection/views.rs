//! [`Views`]: the read side of projections for a service's queries — documents by id and
//! queries, typed or not, from each projection's active version, over every shard of a sharded
//! one.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::try_join_all;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::store::{ProjectionStore, Shard, ViewKey};
use super::view::from_document;
use crate::error::{Error, Result};
use crate::read_store::{Document, Filter, Query};
use crate::stream::validate_id;

/// Reads the views projections write, as a service's queries should: from the projection's
/// **active** version (see [`ProjectionStore::active_version`]), so a rebuild running beside it
/// is not seen until it is switched to; and, for a projection run as shards, from every shard.
///
/// **Shards.** Each shard of a sharded projection is its own [`ViewKey`]
/// (`{name}.s{index}of{count}`) with its own documents and active version. `Views` finds them
/// through [`ProjectionStore::views`] and uses the layout (shard count) all of whose shards
/// have an active version — the unsharded projection counting as a layout of one; when several
/// do, the one with the highest active version (then the most shards). A layout some of whose
/// shards are not active yet (a resharding under way) is not read.
///
/// Documents come back as `T`: any deserializable type, or [`serde_json::Value`] for the
/// document as stored. A stored document that does not decode into `T` is an
/// [`Error::Serialization`].
///
/// ```
/// use std::sync::Arc;
/// use cqrsx_core::memory::InMemoryProjectionStore;
/// use cqrsx_core::projection::Views;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrsx_core::Result<()> {
/// let views = Views::new(Arc::new(InMemoryProjectionStore::new()));
/// // A projection that never ran has nothing to read.
/// let missing = views.get::<serde_json::Value>("order_totals", "all").await;
/// assert!(matches!(missing, Err(cqrsx_core::Error::NotFound(_))));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Views {
    store: Arc<dyn ProjectionStore>,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").finish_non_exhaustive()
    }
}

impl Views {
    /// Reads the views kept in `store` (the projection store the runners commit to).
    pub fn new(store: Arc<dyn ProjectionStore>) -> Self {
        Self { store }
    }

    /// The projection store read.
    pub fn store(&self) -> &Arc<dyn ProjectionStore> {
        &self.store
    }

    /// The keys a read of `projection` uses now: its active version, or one key per shard (in
    /// shard order) of its active sharded layout. [`Error::NotFound`] for a projection with no
    /// active version in any complete layout (it never ran, or no version was activated yet);
    /// [`Error::InvalidInput`] for a name no projection can have.
    pub async fn active(&self, projection: &str) -> Result<Vec<ViewKey>> {
        ViewKey::new(projection, 1)?;
        // The unsharded version and the list of keys, read together: one round trip's wait.
        let (unsharded, listed) = futures::try_join!(self.store.active_version(projection), self.store.views())?;
        // (highest active version, shard count, keys) of the best complete layout so far.
        let mut best: Option<(u32, u16, Vec<ViewKey>)> = None;
        if let Some(version) = unsharded {
            best = Some((version, 1, vec![ViewKey::new(projection, version)?]));
        }
        let counts: BTreeSet<u16> = listed
            .iter()
            .filter(|k| k.name() == projection)
            .filter_map(|k| k.shard().map(|s| s.count()))
            .collect();
        for count in counts {
            let shards = Shard::all(count)?;
            let names = shards
                .iter()
                .map(|shard| ViewKey::sharded(projection, 1, *shard))
                .collect::<Result<Vec<_>>>()?;
            let versions = try_join_all(names.iter().map(|name| self.store.active_version(name.projection()))).await?;
            // A layout is read only when every shard of it has an active version.
            let Some(versions) = versions.into_iter().collect::<Option<Vec<u32>>>() else {
                continue;
            };
            let top = versions.iter().copied().max().unwrap_or(0);
            if best.as_ref().is_none_or(|(v, n, _)| (top, count) > (*v, *n)) {
                let keys = shards
                    .iter()
                    .zip(&versions)
                    .map(|(shard, version)| ViewKey::sharded(projection, *version, *shard))
                    .collect::<Result<Vec<_>>>()?;
                best = Some((top, count, keys));
            }
        }
        best.map(|(_, _, keys)| keys)
            .ok_or_else(|| Error::NotFound(format!("projection {projection} has no active version")))
    }

    /// The document `id` of `projection`, decoded into `T`; `None` when no shard holds it.
    ///
    /// A document found in several shards is [`Error::InSeveralShards`]: the projection keeps
    /// a copy per shard, which [`Views::get_per_shard`] reads.
    pub async fn get<T: DeserializeOwned + 'static>(&self, projection: &str, id: &str) -> Result<Option<T>> {
        let mut found = self.read_all_shards(projection, id).await?;
        match found.len() {
            0 => Ok(None),
            1 => {
                let (_, data) = found.remove(0);
                from_document(id, &data).map(Some)
            }
            _ => Err(Error::InSeveralShards {
                projection: projection.to_string(),
                id: id.to_string(),
                shards: found.iter().filter_map(|(s, _)| s.map(|s| s.index())).collect(),
            }),
        }
    }

    /// The document `id` as stored (a JSON object): [`Views::get`] untyped.
    pub async fn get_value(&self, projection: &str, id: &str) -> Result<Option<Value>> {
        self.get(projection, id).await
    }

    /// Every shard's copy of document `id`, by shard (`None` for an unsharded projection), in
    /// shard order: for documents a projection keeps per shard and combines on read (totals).
    pub async fn get_per_shard<T: DeserializeOwned + 'static>(
        &self,
        projection: &str,
        id: &str,
    ) -> Result<Vec<(Option<Shard>, T)>> {
        self.read_all_shards(projection, id)
            .await?
            .into_iter()
            .map(|(shard, data)| Ok((shard, from_document(id, &data)?)))
            .collect()
    }

    /// The documents of `projection` that `query` selects, as `(id, document)`: filtered,
    /// sorted and paged as one read store would, across every shard (each shard's matches are
    /// merged in the query's order, ties broken by id; a document kept per shard appears once
    /// per shard).
    pub async fn query<T: DeserializeOwned + 'static>(
        &self,
        projection: &str,
        query: &Query,
    ) -> Result<Vec<(String, T)>> {
        self.query_documents(projection, query)
            .await?
            .into_iter()
            .map(|d| {
                let doc = from_document(&d.id, &d.data)?;
                Ok((d.id, doc))
            })
            .collect()
    }

    /// [`Views::query`] untyped: the documents as stored.
    pub async fn query_documents(&self, projection: &str, query: &Query) -> Result<Vec<Document>> {
        query.validate()?;
        let keys = self.active(projection).await?;
        if let [key] = keys.as_slice() {
            return self.store.view(key)?.query(query).await;
        }
        // Each shard gives its first offset + limit matches; the page is cut after the merge.
        let per_shard = Query {
            filters: query.filters.clone(),
            sort: query.sort.clone(),
            offset: 0,
            limit: query.limit.map(|l| l.saturating_add(query.offset)),
        };
        let reads = keys.iter().map(|key| {
            let per_shard = &per_shard;
            async move { self.store.view(key)?.query(per_shard).await }
        });
        let merged: Vec<Document> = try_join_all(reads).await?.into_iter().flatten().collect();
        let page = Query {
            filters: Vec::new(),
            sort: query.sort.clone(),
            offset: query.offset,
            limit: query.limit,
        };
        Ok(page.apply(merged))
    }

    /// How many documents of `projection` pass every filter, across every shard.
    pub async fn count(&self, projection: &str, filters: &[Filter]) -> Result<u64> {
        Query::counting(filters)?;
        let keys = self.active(projection).await?;
        let counts = keys
            .iter()
            .map(|key| async move { self.store.view(key)?.count(filters).await });
        Ok(try_join_all(counts).await?.into_iter().sum())
    }

    /// Document `id` in every key of the active layout that holds it.
    async fn read_all_shards(&self, projection: &str, id: &str) -> Result<Vec<(Option<Shard>, Value)>> {
        validate_id("view document id", id)?;
        let keys = self.active(projection).await?;
        let reads = keys
            .iter()
            .map(|key| async move { Ok::<_, Error>(self.store.get(key, id).await?.map(|d| (key.shard(), d))) });
        Ok(try_join_all(reads).await?.into_iter().flatten().collect())
    }
}
