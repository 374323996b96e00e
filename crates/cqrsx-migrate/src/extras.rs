//! Copying what is not events: the latest snapshot of every stream, read models, and the
//! active version of every projection (checkpoint translated, view documents).

use std::collections::BTreeSet;
use std::time::Duration;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::raw::StreamInfo;
use cqrsx_core::raw::{Commit, ViewChange, ViewWrite};
use cqrsx_core::{Document, Error, Position, ProjectionStore, Query, ReadStore, Result, SnapshotStore};
use futures::stream::{self, TryStreamExt};

use crate::translate::PositionMap;

/// Documents per page read and per write.
const DOCS_PAGE: u64 = 500;

/// Copies the latest snapshot of every stream of the catalogue; returns how many.
pub(crate) async fn copy_snapshots(
    source: &dyn SnapshotStore,
    target: &dyn SnapshotStore,
    streams: &[StreamInfo],
    concurrency: usize,
) -> Result<u64> {
    let copied: Vec<bool> = stream::iter(streams.iter().map(Ok))
        .map_ok(|s| async move {
            match source.latest(&s.stream, None).await? {
                Some(record) => target.save(record).await.map(|_| true),
                None => Ok(false),
            }
        })
        .try_buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(copied.into_iter().filter(|c| *c).count() as u64)
}

/// Every document of a read store, in id order.
pub(crate) async fn all_documents(store: &dyn ReadStore) -> Result<Vec<Document>> {
    let mut all = Vec::new();
    loop {
        let page = store
            .query(&Query {
                offset: all.len() as u64,
                limit: Some(DOCS_PAGE),
                ..Query::all()
            })
            .await?;
        let done = (page.len() as u64) < DOCS_PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Copies a read model's documents as they are; returns how many.
pub(crate) async fn copy_read_model(source: &dyn ReadStore, target: &dyn ReadStore) -> Result<u64> {
    let docs = all_documents(source).await?;
    let n = docs.len() as u64;
    for chunk in docs.chunks(DOCS_PAGE as usize) {
        target.save_many(chunk.to_vec()).await?;
    }
    Ok(n)
}

/// The stored names of a store's projections (shards included, member slots left out) with
/// their active version.
pub(crate) async fn active_views(store: &dyn ProjectionStore) -> Result<Vec<ViewKey>> {
    let names: BTreeSet<String> = store
        .views()
        .await?
        .into_iter()
        .filter(|k| !k.is_member())
        .map(|k| k.projection().to_owned())
        .collect();
    let mut keys = Vec::new();
    for name in names {
        if let Some(version) = store.active_version(&name).await? {
            keys.push(ViewKey::new(name, version)?);
        }
    }
    Ok(keys)
}

/// What happened to one projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProjectionOutcome {
    /// Copied with this many documents.
    Copied(u64),
    /// Not copied: its checkpoint does not translate, for this reason.
    NeedsRebuild(String),
}

/// Copies the active version of a projection: its view documents and its translated
/// checkpoint, through the target's lease, commit, activate and release.
pub(crate) async fn copy_projection(
    source: &dyn ProjectionStore,
    target: &dyn ProjectionStore,
    key: &ViewKey,
    map: &PositionMap,
    owner: &str,
) -> Result<ProjectionOutcome> {
    let checkpoint = match source.checkpoint(key).await? {
        Some(c) => match map.translate(&c) {
            Ok(t) => Some(t),
            Err(why) => return Ok(ProjectionOutcome::NeedsRebuild(why)),
        },
        None => None,
    };
    let docs = all_documents(source.view(key)?.as_ref()).await?;
    let n = docs.len() as u64;
    let lease = target
        .acquire(key, owner, Duration::from_secs(300))
        .await?
        .ok_or_else(|| Error::InvalidInput(format!("projection {key} is running on the target; stop it first")))?;
    let mut writes: Vec<ViewWrite> = docs
        .into_iter()
        .map(|d| ViewWrite {
            id: d.id,
            change: ViewChange::Put {
                data: d.data,
                ttl: None,
            },
            position: Position::START,
        })
        .collect();
    let result = async {
        while writes.len() > DOCS_PAGE as usize {
            let rest = writes.split_off(DOCS_PAGE as usize);
            let chunk = std::mem::replace(&mut writes, rest);
            target
                .commit(
                    &lease,
                    Commit {
                        writes: chunk,
                        ..Commit::default()
                    },
                )
                .await?;
        }
        target
            .commit(
                &lease,
                Commit {
                    writes,
                    checkpoint,
                    ..Commit::default()
                },
            )
            .await?;
        target.activate(&lease).await
    }
    .await;
    let released = target.release(&lease).await;
    result?;
    released?;
    Ok(ProjectionOutcome::Copied(n))
}
