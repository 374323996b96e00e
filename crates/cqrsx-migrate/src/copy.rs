//! Copying events: source pages into target imports, and the catalogue pass that adds
//! tombstones and streams whose events are all truncated.

use std::collections::HashMap;

use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{Error, EventStore, ExpectedVersion, RecordedEvent, Result, StreamId};
use futures::stream::{self, TryStreamExt};

use crate::options::Order;

/// Imports one page of source events into `target`, as `order` says.
pub(crate) async fn copy_page(
    target: &dyn EventStore,
    events: &[RecordedEvent],
    order: Order,
    concurrency: usize,
) -> Result<()> {
    match order {
        Order::Exact => {
            for run in runs(events) {
                import_run(target, run).await?;
            }
            Ok(())
        }
        Order::GroupedByStream => {
            let mut groups: Vec<Vec<RecordedEvent>> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            for event in events {
                let at = *index.entry(event.stream.key()).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[at].push(event.clone());
            }
            stream::iter(groups.into_iter().map(Ok))
                .try_for_each_concurrent(concurrency, |group| async move { import_group(target, &group).await })
                .await
        }
    }
}

/// The runs of consecutive events of one stream, in order.
fn runs(events: &[RecordedEvent]) -> impl Iterator<Item = &[RecordedEvent]> {
    events.chunk_by(|a, b| a.stream == b.stream && b.version == a.version + 1)
}

/// A stream's events of a page: runs of consecutive versions (a gap, from events truncated
/// in the source, starts another import).
async fn import_group(target: &dyn EventStore, group: &[RecordedEvent]) -> Result<()> {
    for run in runs(group) {
        import_run(target, run).await?;
    }
    Ok(())
}

/// Imports one run of one stream's consecutive events. A run partly in the target already
/// (a page read again after a restart that now reaches further) is checked for that part and
/// imported for the rest.
async fn import_run(target: &dyn EventStore, run: &[RecordedEvent]) -> Result<()> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let stream = &first.stream;
    let after = first.version - 1;
    let last = after + run.len() as u64;
    match target.import(stream, after, run.to_vec()).await {
        Ok(_) => Ok(()),
        Err(Error::Conflict { actual, .. }) if actual > after && actual < last => {
            let held = (actual - after) as usize;
            target.import(stream, after, run[..held].to_vec()).await?;
            target.import(stream, actual, run[held..].to_vec()).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// A store's whole catalogue.
pub(crate) async fn catalogue(store: &dyn EventStore) -> Result<Vec<StreamInfo>> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = store.list_streams(after.as_ref(), PAGE).await?;
        let done = page.len() < PAGE;
        after = page.last().map(|s| s.stream.clone());
        all.extend(page);
        if done || after.is_none() {
            return Ok(all);
        }
    }
}

/// After the events are copied: versions the source truncated after they were copied are
/// truncated in the target too, streams whose events are all truncated get their version in
/// the target, and deleted streams are deleted there too (at the version the source deleted
/// them, when the target never had their events). Returns the source catalogue.
pub(crate) async fn finish_catalogue(
    source: &dyn EventStore,
    target: &dyn EventStore,
    concurrency: usize,
) -> Result<Vec<StreamInfo>> {
    let streams = catalogue(source).await?;
    let held: HashMap<String, StreamInfo> = catalogue(target)
        .await?
        .into_iter()
        .map(|s| (s.stream.key().to_owned(), s))
        .collect();
    let todo: Vec<(&StreamInfo, Option<&StreamInfo>)> = streams
        .iter()
        .map(|s| (s, held.get(s.stream.key())))
        .filter(|(s, t)| match t {
            Some(t) => s.deleted && !t.deleted,
            None => s.version > 0,
        })
        .collect();
    // Truncations the source made after its events were copied (a retention run during the
    // migration): the target drops the same versions.
    let live: Vec<&StreamInfo> = streams
        .iter()
        .filter(|s| !s.deleted && held.get(s.stream.key()).is_some_and(|t| !t.deleted))
        .collect();
    stream::iter(live.into_iter().map(Ok))
        .try_for_each_concurrent(concurrency, |s| async move {
            let (kept, copied) = (first_version(source, s).await?, first_version(target, s).await?);
            if kept > copied {
                target.truncate_before(&s.stream, kept).await?;
            }
            Ok::<(), Error>(())
        })
        .await?;
    stream::iter(todo.into_iter().map(Ok))
        .try_for_each_concurrent(concurrency, |(s, t)| async move {
            let mut version = t.map_or(0, |t| t.version);
            if t.is_none() {
                target.import(&s.stream, s.version, Vec::new()).await?;
                version = s.version;
            }
            if s.deleted {
                target.delete_stream(&s.stream, ExpectedVersion::Exact(version)).await?;
            }
            Ok::<(), Error>(())
        })
        .await?;
    Ok(streams)
}

/// The version of a stream's first readable event in `store` (its version + 1 when none is).
async fn first_version(store: &dyn EventStore, info: &StreamInfo) -> Result<u64> {
    let head = store.read_stream(&info.stream, 1, 1).await?;
    Ok(head.first().map_or(info.version + 1, |e| e.version))
}

/// Refuses a target that holds a stream of the source (before a migration starts).
pub(crate) async fn preflight(source: &dyn EventStore, target: &dyn EventStore) -> Result<()> {
    let held = catalogue(target).await?;
    if held.is_empty() {
        return Ok(());
    }
    let held: HashMap<String, StreamInfo> = held.into_iter().map(|s| (s.stream.key().to_owned(), s)).collect();
    for s in catalogue(source).await? {
        if let Some(t) = held.get(s.stream.key()) {
            return Err(Error::TargetNotEmpty {
                stream: s.stream.clone(),
                reason: format!(
                    "the target already holds stream {} (version {}{}), which the source has too",
                    s.stream,
                    t.version,
                    if t.deleted { ", deleted" } else { "" }
                ),
            });
        }
    }
    Ok(())
}
