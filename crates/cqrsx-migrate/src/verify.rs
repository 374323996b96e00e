//! Verification: the target against the source, stream by stream, snapshot by snapshot,
//! document by document, listing every difference.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cqrsx_core::projection::ViewKey;
use cqrsx_core::raw::StreamInfo;
use cqrsx_core::{Checkpoint, Error, EventStore, RecordedEvent, Result, StreamId, Uuid};
use futures::stream::{self, TryStreamExt};

use crate::copy::catalogue;
use crate::extras::{active_views, all_documents};
use crate::hash::{document_hash, event_hash, snapshot_hash};
use crate::options::{ReadModelPair, Stores};
use crate::translate::PositionMap;

/// One way the target differs from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A source stream the target does not have.
    StreamMissing {
        /// The stream.
        stream: StreamId,
    },
    /// A target stream the source does not have.
    StreamExtra {
        /// The stream.
        stream: StreamId,
    },
    /// The stream's version differs.
    StreamVersion {
        /// The stream.
        stream: StreamId,
        /// In the source.
        source: u64,
        /// In the target.
        target: u64,
    },
    /// The stream is deleted on one side only.
    Tombstone {
        /// The stream.
        stream: StreamId,
        /// Deleted in the source.
        source: bool,
        /// Deleted in the target.
        target: bool,
    },
    /// The stream holds another number of (readable) events.
    EventCount {
        /// The stream.
        stream: StreamId,
        /// In the source.
        source: u64,
        /// In the target.
        target: u64,
    },
    /// A source event the target's stream does not hold.
    EventMissing {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// The event's id.
        event_id: Uuid,
    },
    /// A target event the source's stream does not hold.
    EventExtra {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: u64,
        /// The event's id.
        event_id: Uuid,
    },
    /// Another event id at the same version.
    EventId {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
        /// The source's id.
        source: Uuid,
        /// The target's id.
        target: Uuid,
    },
    /// Same id and version, other content (type, schema, content type, payload, metadata or
    /// recorded-at): the content hashes differ.
    EventContent {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
        /// The event's id.
        event_id: Uuid,
    },
    /// The source has a snapshot of the stream, the target none.
    SnapshotMissing {
        /// The stream.
        stream: StreamId,
        /// The source snapshot's version.
        version: u64,
    },
    /// The target's latest snapshot is of another version, or the target has one and the source none.
    SnapshotVersion {
        /// The stream.
        stream: StreamId,
        /// In the source (`None`: no snapshot).
        source: Option<u64>,
        /// In the target.
        target: Option<u64>,
    },
    /// The latest snapshots' states differ (content type, schema or payload).
    SnapshotState {
        /// The stream.
        stream: StreamId,
        /// The snapshot's version.
        version: u64,
    },
    /// A read model (or a projection's view, named `projection <name>.v<version>`) holds
    /// another number of documents.
    DocumentCount {
        /// The read model.
        read_model: String,
        /// In the source.
        source: u64,
        /// In the target.
        target: u64,
    },
    /// A source document the target does not have.
    DocumentMissing {
        /// The read model.
        read_model: String,
        /// The document id.
        id: String,
    },
    /// A target document the source does not have.
    DocumentExtra {
        /// The read model.
        read_model: String,
        /// The document id.
        id: String,
    },
    /// The document's content differs.
    DocumentContent {
        /// The read model.
        read_model: String,
        /// The document id.
        id: String,
    },
    /// A projection active in the source is not active at that version in the target (and
    /// was not reported as needing a rebuild).
    ProjectionMissing {
        /// The projection's key.
        projection: String,
    },
    /// A projection's target checkpoint is not its translated source checkpoint.
    ProjectionCheckpoint {
        /// The projection's key.
        projection: String,
        /// The translated source checkpoint.
        expected: Option<String>,
        /// The target's.
        actual: Option<String>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What verification compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySummary {
    /// Streams compared (both catalogues together).
    pub streams: u64,
    /// Source events compared.
    pub events: u64,
    /// Streams whose latest snapshots were compared.
    pub snapshots: u64,
    /// Read models compared.
    pub read_models: u64,
    /// Source documents compared (read models and projection views).
    pub documents: u64,
    /// Projections compared.
    pub projections: u64,
    /// Differences found.
    pub differences: u64,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every difference found, streams first (in key order), then snapshots, read models and
    /// projections.
    pub differences: Vec<Difference>,
    /// Projections not copied because their checkpoint does not translate, with why: they
    /// must be rebuilt on the target.
    pub needs_rebuild: Vec<(String, String)>,
    /// Counts.
    pub summary: VerifySummary,
}

impl VerifyReport {
    /// Whether the target equals the source in everything compared.
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares `target` with `source`: every stream of both catalogues (version, tombstone,
/// event count, each event's id and content hash), the latest snapshot of every source stream,
/// the documents of every read model, and every projection active in the source (translated
/// checkpoint, view documents) but those reported as needing a rebuild. Run it with the
/// writers stopped.
pub async fn verify(
    source: &Stores,
    target: &Stores,
    read_models: &[ReadModelPair],
    concurrency: usize,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let streams = compare_streams(source.events.as_ref(), target.events.as_ref(), concurrency, &mut report).await?;
    if let (Some(s), Some(t)) = (&source.snapshots, &target.snapshots) {
        let found: Vec<Vec<Difference>> = stream::iter(streams.iter().map(Ok))
            .map_ok(|info| async move {
                let (a, b) = (s.latest(&info.stream, None).await?, t.latest(&info.stream, None).await?);
                let stream = info.stream.clone();
                Ok::<_, Error>(match (a, b) {
                    (None, None) => vec![],
                    (Some(a), None) => vec![Difference::SnapshotMissing {
                        stream,
                        version: a.version,
                    }],
                    (a, b) if a.as_ref().map(|r| r.version) != b.as_ref().map(|r| r.version) => {
                        vec![Difference::SnapshotVersion {
                            stream,
                            source: a.map(|r| r.version),
                            target: b.map(|r| r.version),
                        }]
                    }
                    (Some(a), Some(b)) if snapshot_hash(&a) != snapshot_hash(&b) => {
                        vec![Difference::SnapshotState {
                            stream,
                            version: a.version,
                        }]
                    }
                    _ => vec![],
                })
            })
            .try_buffered(concurrency)
            .try_collect()
            .await?;
        report.summary.snapshots = streams.len() as u64;
        report.differences.extend(found.into_iter().flatten());
    }
    for pair in read_models {
        let (a, b) = (
            all_documents(pair.source.as_ref()).await?,
            all_documents(pair.target.as_ref()).await?,
        );
        compare_documents(&pair.name, a, b, &mut report);
        report.summary.read_models += 1;
    }
    if let (Some(s), Some(t)) = (&source.projections, &target.projections) {
        let keys = active_views(s.as_ref()).await?;
        if !keys.is_empty() {
            let map = PositionMap::build(source.events.as_ref(), target.events.as_ref()).await?;
            for key in keys {
                compare_projection(s.as_ref(), t.as_ref(), &key, &map, &mut report).await?;
            }
        }
    }
    report.summary.differences = report.differences.len() as u64;
    Ok(report)
}

async fn compare_projection(
    s: &dyn cqrsx_core::ProjectionStore,
    t: &dyn cqrsx_core::ProjectionStore,
    key: &ViewKey,
    map: &PositionMap,
    report: &mut VerifyReport,
) -> Result<()> {
    let name = key.to_string();
    let expected = match s.checkpoint(key).await? {
        Some(c) => match map.translate(&c) {
            Ok(c) => Some(c),
            Err(why) => {
                report.needs_rebuild.push((name, why));
                return Ok(());
            }
        },
        None => None,
    };
    report.summary.projections += 1;
    if t.active_version(key.projection()).await? != Some(key.version()) {
        report
            .differences
            .push(Difference::ProjectionMissing { projection: name });
        return Ok(());
    }
    let actual = t.checkpoint(key).await?;
    if actual != expected {
        let show = |c: Option<Checkpoint>| c.map(|c| c.to_string());
        report.differences.push(Difference::ProjectionCheckpoint {
            projection: name.clone(),
            expected: show(expected),
            actual: show(actual),
        });
    }
    let (a, b) = (
        all_documents(s.view(key)?.as_ref()).await?,
        all_documents(t.view(key)?.as_ref()).await?,
    );
    compare_documents(&format!("projection {name}"), a, b, report);
    Ok(())
}

fn compare_documents(
    name: &str,
    source: Vec<cqrsx_core::Document>,
    target: Vec<cqrsx_core::Document>,
    report: &mut VerifyReport,
) {
    report.summary.documents += source.len() as u64;
    if source.len() != target.len() {
        report.differences.push(Difference::DocumentCount {
            read_model: name.to_owned(),
            source: source.len() as u64,
            target: target.len() as u64,
        });
    }
    let mut held: BTreeMap<String, String> = target.into_iter().map(|d| (d.id, document_hash(&d.data))).collect();
    for doc in source {
        match held.remove(&doc.id) {
            None => report.differences.push(Difference::DocumentMissing {
                read_model: name.to_owned(),
                id: doc.id,
            }),
            Some(h) if h != document_hash(&doc.data) => report.differences.push(Difference::DocumentContent {
                read_model: name.to_owned(),
                id: doc.id,
            }),
            Some(_) => {}
        }
    }
    for id in held.into_keys() {
        report.differences.push(Difference::DocumentExtra {
            read_model: name.to_owned(),
            id,
        });
    }
}

/// Compares both catalogues and every stream's events; returns the source catalogue.
async fn compare_streams(
    source: &dyn EventStore,
    target: &dyn EventStore,
    concurrency: usize,
    report: &mut VerifyReport,
) -> Result<Vec<StreamInfo>> {
    let streams = catalogue(source).await?;
    let mut held: HashMap<String, StreamInfo> = catalogue(target)
        .await?
        .into_iter()
        .map(|s| (s.stream.key().to_owned(), s))
        .collect();
    let pairs: Vec<(StreamInfo, Option<StreamInfo>)> = streams
        .iter()
        .map(|s| (s.clone(), held.remove(s.stream.key())))
        .collect();
    let mut extra: Vec<StreamInfo> = held.into_values().collect();
    extra.sort_by(|a, b| a.stream.key().cmp(b.stream.key()));
    report.summary.streams = (pairs.len() + extra.len()) as u64;
    let found: Vec<(u64, Vec<Difference>)> = stream::iter(pairs.into_iter().map(Ok))
        .map_ok(|(s, t)| async move { compare_stream(source, target, &s, t.as_ref()).await })
        .try_buffered(concurrency)
        .try_collect()
        .await?;
    for (events, diffs) in found {
        report.summary.events += events;
        report.differences.extend(diffs);
    }
    report
        .differences
        .extend(extra.into_iter().map(|s| Difference::StreamExtra { stream: s.stream }));
    Ok(streams)
}

/// A stream's readable events (none for a deleted one).
async fn events_of(store: &dyn EventStore, info: &StreamInfo) -> Result<Vec<RecordedEvent>> {
    if info.deleted {
        return Ok(Vec::new());
    }
    match store.stream_events(&info.stream, 1, 1000).try_collect().await {
        Err(Error::StreamDeleted { .. }) => Ok(Vec::new()),
        other => other,
    }
}

async fn compare_stream(
    source: &dyn EventStore,
    target: &dyn EventStore,
    s: &StreamInfo,
    t: Option<&StreamInfo>,
) -> Result<(u64, Vec<Difference>)> {
    let stream = s.stream.clone();
    let mut out = Vec::new();
    let a = events_of(source, s).await?;
    let Some(t) = t else {
        out.push(Difference::StreamMissing { stream });
        return Ok((a.len() as u64, out));
    };
    if s.version != t.version {
        out.push(Difference::StreamVersion {
            stream: stream.clone(),
            source: s.version,
            target: t.version,
        });
    }
    if s.deleted != t.deleted {
        out.push(Difference::Tombstone {
            stream: stream.clone(),
            source: s.deleted,
            target: t.deleted,
        });
    }
    let b = events_of(target, t).await?;
    if a.len() != b.len() {
        out.push(Difference::EventCount {
            stream: stream.clone(),
            source: a.len() as u64,
            target: b.len() as u64,
        });
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let (x, y) = (a.get(i), b.get(j));
        match (x, y) {
            (Some(x), Some(y)) if x.version == y.version => {
                if x.event_id != y.event_id {
                    out.push(Difference::EventId {
                        stream: stream.clone(),
                        version: x.version,
                        source: x.event_id,
                        target: y.event_id,
                    });
                } else if event_hash(x) != event_hash(y) {
                    out.push(Difference::EventContent {
                        stream: stream.clone(),
                        version: x.version,
                        event_id: x.event_id,
                    });
                }
                i += 1;
                j += 1;
            }
            (Some(x), None) => {
                out.push(Difference::EventMissing {
                    stream: stream.clone(),
                    version: x.version,
                    event_id: x.event_id,
                });
                i += 1;
            }
            (Some(x), Some(y)) if x.version < y.version => {
                out.push(Difference::EventMissing {
                    stream: stream.clone(),
                    version: x.version,
                    event_id: x.event_id,
                });
                i += 1;
            }
            (_, Some(y)) => {
                out.push(Difference::EventExtra {
                    stream: stream.clone(),
                    version: y.version,
                    event_id: y.event_id,
                });
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok((a.len() as u64, out))
}
